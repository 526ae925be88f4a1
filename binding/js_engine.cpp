// js_engine.cpp — N-API exports of the model-free engine pieces (sampler, plans).
#include <napi.h>

#include "js_common.h"

namespace esolm {

void register_engine_functions(Napi::Env env, Napi::Object exports) {
  (void)env;
  (void)exports;
}

}  // namespace esolm
