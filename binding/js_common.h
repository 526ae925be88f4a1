// js_common.h — small N-API helpers shared by the js_*.cpp files: argument readers
// that throw a typed ERR_INVALID_ARG error, and Status -> JS Error with a `code`.
#pragma once
#include <napi.h>

#include <string>
#include <vector>

#include "engine/status.h"

namespace esolm {

inline Napi::Error make_error(Napi::Env env, const Status& s) {
  Napi::Error e = Napi::Error::New(env, s.message);
  e.Set("code", Napi::String::New(env, status_code_name(s.code)));
  return e;
}

inline std::vector<int32_t> int32_arg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info.Length() <= i || !info[i].IsTypedArray() ||
      info[i].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    throw make_error(info.Env(), Status::error(Code::invalid_arg, std::string("expected an Int32Array for ") + name));
  Napi::Int32Array a = info[i].As<Napi::Int32Array>();
  return std::vector<int32_t>(a.Data(), a.Data() + a.ElementLength());
}

inline Napi::Float32Array float32_arg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info.Length() <= i || !info[i].IsTypedArray() ||
      info[i].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    throw make_error(info.Env(), Status::error(Code::invalid_arg, std::string("expected a Float32Array for ") + name));
  return info[i].As<Napi::Float32Array>();
}

inline int int_arg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info.Length() <= i || !info[i].IsNumber())
    throw make_error(info.Env(), Status::error(Code::invalid_arg, std::string("expected a number for ") + name));
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (v != double(int64_t(v)) || v < -2147483648.0 || v > 2147483647.0)
    throw make_error(info.Env(), Status::error(Code::invalid_arg, std::string("expected an integer for ") + name));
  return int(v);
}

// Registers the sampler/plan/generation functions (js_engine.cpp).
void register_engine_functions(Napi::Env env, Napi::Object exports);

}  // namespace esolm
