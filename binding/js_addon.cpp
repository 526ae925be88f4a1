// js_addon.cpp — the addon's entry point: per-environment state (instance data, so worker
// threads and contexts each get their own classes) and the exports. By concern:
// js_load.cpp (loadModel), js_model.cpp (NativeModel), js_cache.cpp (NativeCache),
// js_generate.cpp (generate), js_worker.h (the async worker base), js_common.h (strict
// readers, typed errors). Only js_* files include napi.h.
#include <napi.h>

#include <string>
#include <thread>

#include "cpu/floors.h"
#include "cpu/kernels.h"
#include "cpu/ops_reference.h"
#include "js_common.h"
#include "js_holders.h"
#ifdef ESOLM_WITH_CUDA
#include "cuda_probe.h"
#endif

namespace esolm {
namespace {

Napi::Value BackendInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("addon", ESOLM_ADDON_NAME);
  o.Set("cpuKernels", cpu_kernels_in_use());
  o.Set("cpuKernelsAvailable", cpu_kernels_available());
  if (const char* why = cpu_kernels_error()) o.Set("cpuKernelsError", why);
  if (const char* why = cpu_bf16_math_error()) o.Set("cpuBf16MathError", why);
  else o.Set("cpuBf16Math", cpu_bf16_math_kernels()->name);
  if (const char* why = cpu_int8_math_error()) o.Set("cpuInt8MathError", why);
  else o.Set("cpuInt8Math", cpu_int8_math_kernels()->name);
  o.Set("hardwareThreads", Napi::Number::New(env, std::thread::hardware_concurrency()));
#ifdef ESOLM_WITH_CUDA
  CudaInfo ci;
  Status s = cuda_probe(ci);
  Napi::Object c = Napi::Object::New(env);
  c.Set("usable", s.is_ok());
  c.Set("reason", s.is_ok() ? std::string() : s.message);
  c.Set("deviceCount", ci.device_count);
  c.Set("name", ci.name);
  c.Set("computeCapability", std::to_string(ci.cc_major) + "." + std::to_string(ci.cc_minor));
  c.Set("driverVersion", ci.driver_version);
  c.Set("runtimeVersion", ci.runtime_version);
  c.Set("totalMemory", double(ci.total_memory));
  o.Set("cuda", c);
#endif
  return o;
}

// measureCpuFloors(threads = 0, effort = 1): streaming read GB/s and peak FMA GFLOP/s of
// the CPU kernel set in use (cpu/floors.h). Synchronous, a second or two: for bench/.
Napi::Value MeasureCpuFloors(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int threads = info.Length() > 0 && !info[0].IsUndefined() ? to_int(env, info[0], "threads") : 0;
  const double effort = info.Length() > 1 && !info[1].IsUndefined() ? to_num(env, info[1], "effort") : 1.0;
  CpuFloors f;
  Status s = measure_cpu_floors(threads, f, effort);
  if (!s) throw make_error(env, s);
  Napi::Object o = Napi::Object::New(env);
  o.Set("threads", f.threads);
  o.Set("kernels", f.kernels);
  o.Set("readGBps", f.read_gbps);
  o.Set("fmaGFlops", f.fma_gflops);
  o.Set("bf16DotGFlops", f.bf16_dot_gflops);
  o.Set("int8DotGOps", f.int8_dot_gops);
  return o;
}

// timeStreamingRead(threads, bytes): seconds to stream-read `bytes` bytes on `threads` cores
// (0 = all; cpu/floors.h). Synchronous, as long as the read: for bench/.
Napi::Value TimeStreamingRead(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int threads = info.Length() > 0 && !info[0].IsUndefined() ? to_int(env, info[0], "threads") : 0;
  const double bytes = info.Length() > 1 ? to_num(env, info[1], "bytes") : 0.0;
  double seconds = 0;
  Status s = time_streaming_read(threads, bytes, seconds);
  if (!s) throw make_error(env, s);
  return Napi::Number::New(env, seconds);
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  env.SetInstanceData(new AddonData());  // deleted by Node when this environment ends
  exports.Set("NativeModel", init_model_class(env));
  exports.Set("NativeCache", init_cache_class(env));
  register_load_functions(env, exports);
  exports.Set("backendInfo", Napi::Function::New(env, BackendInfo));
  exports.Set("measureCpuFloors", Napi::Function::New(env, MeasureCpuFloors));
  exports.Set("timeStreamingRead", Napi::Function::New(env, TimeStreamingRead));
  register_engine_functions(env, exports);
  return exports;
}

}  // namespace
}  // namespace esolm

static Napi::Object InitEsolmAddon(Napi::Env env, Napi::Object exports) { return esolm::Init(env, exports); }
NODE_API_MODULE(esolm_addon, InitEsolmAddon)
