// js_common.h — helpers shared by the js_*.cpp files: Status -> JS Error with a `code`,
// strict argument and field readers (a missing or mistyped value is ERR_INVALID_ARG,
// never a default), and the per-environment addon state.
#pragma once
#include <napi.h>

#include <cmath>
#include <string>
#include <vector>

#include "engine/status.h"

namespace esolm {

inline Napi::Error make_error(Napi::Env env, const Status& s) {
  Napi::Error e = Napi::Error::New(env, s.message);
  e.Set("code", Napi::String::New(env, status_code_name(s.code)));
  return e;
}

[[noreturn]] inline void throw_invalid(Napi::Env env, const std::string& msg) {
  throw make_error(env, Status::error(Code::invalid_arg, msg));
}

// Per-environment addon state (napi instance data): each worker thread or context that
// loads the addon gets its own constructors.
struct AddonData {
  Napi::FunctionReference model_ctor, cache_ctor;
};
inline AddonData& addon_data(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

// ---- values ----------------------------------------------------------------------
inline int to_int(Napi::Env env, Napi::Value v, const std::string& name) {
  if (!v.IsNumber()) throw_invalid(env, "expected an integer for " + name);
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || d != std::floor(d) || d < -2147483648.0 || d > 2147483647.0)
    throw_invalid(env, "expected a 32-bit integer for " + name);
  return int(d);
}
inline double to_num(Napi::Env env, Napi::Value v, const std::string& name) {
  if (!v.IsNumber()) throw_invalid(env, "expected a number for " + name);
  return v.As<Napi::Number>().DoubleValue();
}
inline bool to_bool(Napi::Env env, Napi::Value v, const std::string& name) {
  if (!v.IsBoolean()) throw_invalid(env, "expected a boolean for " + name);
  return v.As<Napi::Boolean>().Value();
}
inline std::string to_str(Napi::Env env, Napi::Value v, const std::string& name) {
  if (!v.IsString()) throw_invalid(env, "expected a string for " + name);
  return v.As<Napi::String>().Utf8Value();
}
// Copies an Int32Array (native never keeps a pointer into a JS buffer).
inline std::vector<int32_t> to_i32(Napi::Env env, Napi::Value v, const std::string& name) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    throw_invalid(env, "expected an Int32Array for " + name);
  Napi::Int32Array a = v.As<Napi::Int32Array>();
  return std::vector<int32_t>(a.Data(), a.Data() + a.ElementLength());
}
// An Int32Array or null (absent is an error).
inline std::vector<int32_t> to_i32_or_null(Napi::Env env, Napi::Value v, const std::string& name) {
  if (v.IsNull()) return {};
  return to_i32(env, v, name);
}

// ---- object fields (strict: the field must exist with the right type) -------------
inline Napi::Value field(Napi::Object o, const char* k) {
  if (!o.Has(k)) throw_invalid(o.Env(), std::string("missing field ") + k);
  return o.Get(k);
}
inline int int_field(Napi::Object o, const char* k) { return to_int(o.Env(), field(o, k), k); }
inline double num_field(Napi::Object o, const char* k) { return to_num(o.Env(), field(o, k), k); }
inline bool bool_field(Napi::Object o, const char* k) { return to_bool(o.Env(), field(o, k), k); }
inline std::string str_field(Napi::Object o, const char* k) { return to_str(o.Env(), field(o, k), k); }
inline std::vector<int32_t> i32_field(Napi::Object o, const char* k) { return to_i32(o.Env(), field(o, k), k); }
inline std::vector<int32_t> i32_or_null_field(Napi::Object o, const char* k) {
  return to_i32_or_null(o.Env(), field(o, k), k);
}

// ---- positional arguments --------------------------------------------------------
inline Napi::Value arg(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i) throw_invalid(info.Env(), "missing argument " + std::to_string(i));
  return info[i];
}
inline std::vector<int32_t> int32_arg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  return to_i32(info.Env(), arg(info, i), name);
}
inline int int_arg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  return to_int(info.Env(), arg(info, i), name);
}

// Registers the sampler/plan/generation functions (js_engine.cpp).
void register_engine_functions(Napi::Env env, Napi::Object exports);

}  // namespace esolm
