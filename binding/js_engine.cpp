// js_engine.cpp — N-API exports of the model-free engine pieces (sampler, plans).
#include <napi.h>

#include "engine/schedule.h"
#include "js_common.h"

namespace esolm {
namespace {

uint32_t u32_arg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  const double v = to_num(info.Env(), arg(info, i), name);
  if (!(v >= 0 && v <= 4294967295.0) || v != double(uint32_t(v)))
    throw_invalid(info.Env(), std::string("expected an unsigned 32-bit integer for ") + name);
  return uint32_t(v);
}

// planEsolmSteps(length, nGiven, steps, alpha0, planSeedHi, planSeedLo, blockLen)
//   -> { stepSizes: Int32Array, nDiffusion }
// The step sizes of an Eso-LM plan. They depend on the given positions only through their
// count, so the batcher can tell cheaply (no model, no orders) which requests share them.
Napi::Value PlanEsolmSteps(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  EsoPlanOptions po;
  po.length = int_arg(info, 0, "length");
  const int n_given = int_arg(info, 1, "nGiven");
  po.steps = int_arg(info, 2, "steps");
  po.alpha0 = to_num(env, arg(info, 3), "alpha0");
  po.plan_seed = (uint64_t(u32_arg(info, 4, "planSeedHi")) << 32) | u32_arg(info, 5, "planSeedLo");
  po.block_len = int_arg(info, 6, "blockLen");
  // Bounds before anything is sized by them (a plan holds O(length) entries).
  if (po.length < 1 || po.length > (1 << 24)) throw_invalid(env, "length must be in [1, 2^24]");
  if (n_given < 0 || n_given > po.length) throw_invalid(env, "nGiven must be in [0, length]");
  for (int i = 0; i < n_given; ++i) po.given.push_back(i);
  Plan plan;
  Status s = plan_esolm(po, plan);
  if (!s) throw make_error(env, s);
  Napi::Int32Array sizes = Napi::Int32Array::New(env, plan.step_sizes.size());
  std::copy(plan.step_sizes.begin(), plan.step_sizes.end(), sizes.Data());
  Napi::Object o = Napi::Object::New(env);
  o.Set("stepSizes", sizes);
  o.Set("nDiffusion", plan.n_diffusion);
  return o;
}

}  // namespace

void register_engine_functions(Napi::Env env, Napi::Object exports) {
  exports.Set("planEsolmSteps", Napi::Function::New(env, PlanEsolmSteps));
}

}  // namespace esolm
