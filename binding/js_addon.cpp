// js_addon.cpp — N-API glue: the only file (with js_*.h) that includes napi.h.
// Exposes NativeModel / NativeCache (ObjectWrap) whose long calls run in AsyncWorkers
// off the event loop. Each model has a mutex: concurrent calls on one model queue.
// Errors reject with an Error whose `code` is the engine's status code name.
#include <napi.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cpu/floors.h"
#include "cpu/ops_reference.h"
#include "engine/model.h"
#include "js_common.h"
#include "js_holders.h"
#ifdef ESOLM_WITH_CUDA
#include "cuda_probe.h"
#endif

namespace esolm {

// ---- reading tensors ---------------------------------------------------------------
struct TensorEntry {
  std::string name, file, dtype;
  std::vector<int64_t> shape;
  int64_t offset = 0, nbytes = 0;
};

static float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

static float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
  if (exp == 0) {
    if (man == 0) {
      u = sign;
    } else {  // subnormal: renormalise
      exp = 127 - 15 + 1;
      while (!(man & 0x400)) {
        man <<= 1;
        --exp;
      }
      man &= 0x3ff;
      u = sign | (exp << 23) | (man << 13);
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | (man << 13);
  } else {
    u = sign | ((exp - 15 + 127) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

static Status read_tensor(const TensorEntry& e, HostTensor& out) {
  int64_t numel = 1;
  for (auto s : e.shape) numel *= s;
  const int64_t esize = e.dtype == "F32" ? 4 : 2;
  if (e.dtype != "F32" && e.dtype != "BF16" && e.dtype != "F16")
    return Status::error(Code::bad_weights, "tensor '" + e.name + "' has unsupported dtype " + e.dtype);
  if (numel * esize != e.nbytes)
    return Status::error(Code::bad_weights, "tensor '" + e.name + "' byte size does not match its shape");
  FILE* f = std::fopen(e.file.c_str(), "rb");
  if (!f) return Status::error(Code::io, "cannot open " + e.file);
  std::vector<uint8_t> raw(size_t(e.nbytes));
  bool ok = std::fseek(f, long(e.offset), SEEK_SET) == 0 &&
            std::fread(raw.data(), 1, raw.size(), f) == raw.size();
  std::fclose(f);
  if (!ok) return Status::error(Code::bad_weights, "tensor '" + e.name + "' data is truncated in " + e.file);
  out.shape = e.shape;
  out.data.resize(size_t(numel));
  if (esize == 4) {
    std::memcpy(out.data.data(), raw.data(), raw.size());
  } else {
    const uint16_t* h = reinterpret_cast<const uint16_t*>(raw.data());
    if (e.dtype == "BF16")
      for (int64_t i = 0; i < numel; ++i) out.data[i] = bf16_to_f32(h[i]);
    else
      for (int64_t i = 0; i < numel; ++i) out.data[i] = f16_to_f32(h[i]);
  }
  return Status::ok();
}

static Status make_backend(const std::string& name, int threads, const std::string& weights,
                           std::unique_ptr<Backend>& out) {
  if (name == "cpu") {
    // "bf16": every matrix BF16; "bf16-exact": BF16 except the gate-scaled ones (a BF16
    // file then runs exactly); "q8": every matrix int8 with per-row scales; else F32.
    const bool bf16 = weights == "bf16" || weights == "bf16-exact";
    out = create_cpu_backend(threads, bf16 ? DType::bf16 : DType::f32, weights != "bf16", weights == "q8");
  } else if (name == "cpu-reference") {
    out = create_cpu_reference_backend();
  } else if (name == "cuda") {
#ifdef ESOLM_WITH_CUDA
    Status s;
    out = create_cuda_backend(0, s);
    if (!s) return s;
#else
    return Status::error(Code::no_cuda, "this addon was built without CUDA");
#endif
  } else {
    return Status::error(Code::invalid_arg, "unknown backend '" + name + "'");
  }
  if (!out) return Status::error(Code::out_of_memory, "cannot create backend");
  return Status::ok();
}

// ---- workers -----------------------------------------------------------------------
class LoadWorker : public Napi::AsyncWorker {
 public:
  LoadWorker(Napi::Env env, ModelConfig cfg, std::vector<TensorEntry> entries, std::string backend,
             int threads, std::string weights)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), cfg_(cfg),
        entries_(std::move(entries)), backend_(std::move(backend)), threads_(threads), weights_(std::move(weights)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    HostWeights w;
    for (const auto& e : entries_) {
      if (w.count(e.name)) {
        status_ = Status::error(Code::bad_weights, "tensor '" + e.name + "' appears twice");
        return;
      }
      status_ = read_tensor(e, w[e.name]);
      if (!status_) return;
    }
    holder_ = std::make_shared<ModelHolder>();
    status_ = make_backend(backend_, threads_, weights_, holder_->backend);
    if (!status_) return;
    status_ = Model::create(cfg_, std::move(w), holder_->backend.get(), holder_->model);
  }
  void OnOK() override;

 private:
  Napi::Promise::Deferred deferred_;
  ModelConfig cfg_;
  std::vector<TensorEntry> entries_;
  std::string backend_;
  int threads_;
  std::string weights_;
  Status status_;
  std::shared_ptr<ModelHolder> holder_;
};

// A worker that runs `fn` under the model mutex and resolves with `result` (a JS value
// kept alive by a reference) or rejects with the Status.
class ModelCallWorker : public Napi::AsyncWorker {
 public:
  ModelCallWorker(Napi::Env env, std::shared_ptr<ModelHolder> h, std::function<Status(Model&)> fn,
                  Napi::Value result, std::vector<Napi::Value> keep_alive)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), holder_(std::move(h)),
        fn_(std::move(fn)) {
    result_ = Napi::Persistent(result);
    for (auto& v : keep_alive) keep_.push_back(Napi::Persistent(v));
  }
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute() override {
    std::lock_guard<std::mutex> lk(holder_->mu);
    if (!holder_->model) {
      status_ = Status::error(Code::disposed, "the model has been disposed");
      return;
    }
    try {
      status_ = fn_(*holder_->model);
    } catch (const std::bad_alloc&) {
      status_ = Status::error(Code::out_of_memory, "out of host memory");
    } catch (const std::exception& e) {
      status_ = Status::error(Code::internal, e.what());
    }
  }
  void OnOK() override {
    if (!status_) deferred_.Reject(make_error(Env(), status_).Value());
    else deferred_.Resolve(result_.Value());
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<ModelHolder> holder_;
  std::function<Status(Model&)> fn_;
  Status status_;
  Napi::Reference<Napi::Value> result_;
  std::vector<Napi::Reference<Napi::Value>> keep_;
};

// ---- NativeCache -------------------------------------------------------------------
class NativeCache : public Napi::ObjectWrap<NativeCache> {
 public:
  static Napi::FunctionReference* ctor;
  static Napi::Function Init(Napi::Env env) {
    Napi::Function f = DefineClass(env, "NativeCache",
                                   {InstanceMethod("dispose", &NativeCache::Dispose),
                                    InstanceAccessor("committed", &NativeCache::Committed, nullptr),
                                    InstanceMethod("reset", &NativeCache::Reset)});
    ctor = new Napi::FunctionReference(Napi::Persistent(f));
    return f;
  }
  NativeCache(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeCache>(info) {}
  std::shared_ptr<CacheHolder> holder;

 private:
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    holder.reset();
    return info.Env().Undefined();
  }
  Napi::Value Committed(const Napi::CallbackInfo& info) {
    if (!holder || !holder->cache) return Napi::Number::New(info.Env(), 0);
    return Napi::Number::New(info.Env(), holder->cache->committed);
  }
  // Called by TS through the model's call queue, so no call is using the cache.
  Napi::Value Reset(const Napi::CallbackInfo& info) {
    if (holder && holder->cache) holder->cache->committed = 0;
    return info.Env().Undefined();
  }
};
Napi::FunctionReference* NativeCache::ctor = nullptr;

// The arguments forward() and forwardScores() share: (tokens, positions, batch, n, mode, x0 | null).
struct ForwardArgs {
  std::vector<int32_t> tokens, positions, x0;
  int batch = 0, n = 0;
  AttnMode mode = AttnMode::causal;
};

static ForwardArgs forward_args(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ForwardArgs a;
  a.tokens = int32_arg(info, 0, "tokens");
  a.positions = int32_arg(info, 1, "positions");
  a.batch = int_arg(info, 2, "batch");
  a.n = int_arg(info, 3, "n");
  if (!info[4].IsString() || !parse_attn_mode(info[4].As<Napi::String>(), a.mode))
    throw make_error(env, Status::error(Code::invalid_arg, "unknown attention mode"));
  if (info[5].IsTypedArray()) a.x0 = int32_arg(info, 5, "x0");
  const int64_t count = int64_t(a.batch) * a.n;
  if (a.batch <= 0 || a.n <= 0 || int64_t(a.tokens.size()) != count || int64_t(a.positions.size()) != count ||
      (!a.x0.empty() && int64_t(a.x0.size()) != count))
    throw make_error(env, Status::error(Code::invalid_arg, "tokens/positions/x0 must hold batch * n entries"));
  return a;
}

// ---- NativeModel -------------------------------------------------------------------
class NativeModel : public Napi::ObjectWrap<NativeModel> {
 public:
  static Napi::FunctionReference* ctor;
  static Napi::Function Init(Napi::Env env) {
    Napi::Function f = DefineClass(
        env, "NativeModel",
        {InstanceMethod("forward", &NativeModel::Forward), InstanceMethod("step", &NativeModel::Step),
         InstanceMethod("forwardScores", &NativeModel::ForwardScores),
         InstanceMethod("createCache", &NativeModel::CreateCache),
         InstanceMethod("generate", &NativeModel::Generate),
         InstanceMethod("dispose", &NativeModel::Dispose),
         InstanceAccessor("backendName", &NativeModel::BackendName, nullptr)});
    ctor = new Napi::FunctionReference(Napi::Persistent(f));
    return f;
  }
  NativeModel(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeModel>(info) {}
  std::shared_ptr<ModelHolder> holder;

 private:
  std::shared_ptr<ModelHolder> live(Napi::Env env) {
    if (!holder) throw make_error(env, Status::error(Code::disposed, "the model has been disposed"));
    return holder;
  }

  // forward(tokens, positions, batch, n, mode, x0 | null, out Float32Array, logitsRows | null)
  Napi::Value Forward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto h = live(env);
    ForwardArgs a = forward_args(info);
    Napi::Float32Array out = float32_arg(info, 6, "out");
    std::vector<int> rows;
    const bool has_rows = info.Length() > 7 && info[7].IsTypedArray();
    if (has_rows)
      for (int32_t r : int32_arg(info, 7, "logitsRows")) rows.push_back(r);
    const int64_t vocab = h->model->config().vocab_size;
    const int64_t want = int64_t(a.batch) * (has_rows ? int64_t(rows.size()) : a.n) * vocab;
    if (int64_t(out.ElementLength()) != want)
      throw make_error(env, Status::error(Code::internal, "output buffer has the wrong size"));
    float* dst = out.Data();
    auto fn = [=, a = std::move(a), rows = std::move(rows)](Model& m) {
      return m.forward(a.tokens.data(), a.positions.data(), a.batch, a.n, a.mode,
                       a.x0.empty() ? nullptr : a.x0.data(), dst, has_rows ? &rows : nullptr);
    };
    auto* w = new ModelCallWorker(env, h, fn, out, {});
    w->Queue();
    return w->Promise();
  }

  // forwardScores(tokens, positions, batch, n, mode, x0 | null, targets, out Float64Array)
  Napi::Value ForwardScores(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto h = live(env);
    ForwardArgs a = forward_args(info);
    auto targets = int32_arg(info, 6, "targets");
    if (!info[7].IsTypedArray() || info[7].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array)
      throw make_error(env, Status::error(Code::invalid_arg, "expected a Float64Array for out"));
    Napi::Float64Array out = info[7].As<Napi::Float64Array>();
    const int64_t count = int64_t(a.batch) * a.n;
    if (int64_t(targets.size()) != count || int64_t(out.ElementLength()) != count)
      throw make_error(env, Status::error(Code::invalid_arg, "targets and out must hold batch * n entries"));
    double* dst = out.Data();
    auto fn = [=, a = std::move(a), targets = std::move(targets)](Model& m) {
      return m.forward_scores(a.tokens.data(), a.positions.data(), a.batch, a.n, a.mode,
                              a.x0.empty() ? nullptr : a.x0.data(), targets.data(), dst);
    };
    auto* w = new ModelCallWorker(env, h, fn, out, {});
    w->Queue();
    return w->Promise();
  }

  // step(cache, tokens, positions, n, commit, logitsFrom, out Float32Array)
  Napi::Value Step(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto h = live(env);
    if (!info[0].IsObject() || !info[0].As<Napi::Object>().InstanceOf(NativeCache::ctor->Value()))
      throw make_error(env, Status::error(Code::invalid_arg, "expected a Cache"));
    NativeCache* c = NativeCache::Unwrap(info[0].As<Napi::Object>());
    if (!c->holder || !c->holder->cache)
      throw make_error(env, Status::error(Code::disposed, "the cache has been disposed"));
    if (c->holder->owner != h)
      throw make_error(env, Status::error(Code::invalid_arg, "the cache belongs to another model"));
    auto ch = c->holder;
    auto tokens = int32_arg(info, 1, "tokens");
    auto positions = int32_arg(info, 2, "positions");
    const int n = int_arg(info, 3, "n"), commit = int_arg(info, 4, "commit"),
              from = int_arg(info, 5, "logitsFrom");
    Napi::Float32Array out = float32_arg(info, 6, "out");
    const int64_t count = int64_t(ch->cache->batch) * n;
    if (n <= 0 || int64_t(tokens.size()) != count || int64_t(positions.size()) != count)
      throw make_error(env, Status::error(Code::invalid_arg, "tokens/positions must hold batch * n entries"));
    float* dst = out.Data();
    auto fn = [=, tokens = std::move(tokens), positions = std::move(positions)](Model& m) {
      if (!ch->cache) return Status::error(Code::disposed, "the cache has been disposed");
      return m.step(*ch->cache, tokens.data(), positions.data(), n, commit, from, dst);
    };
    auto* w = new ModelCallWorker(env, h, fn, out, {info[0]});
    w->Queue();
    return w->Promise();
  }

  // generate(request, cache | null, onEvent | null) -> { promise, cancel }
  Napi::Value Generate(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto h = live(env);
    if (!info[0].IsObject()) throw make_error(env, Status::error(Code::invalid_arg, "expected a request object"));
    std::shared_ptr<CacheHolder> ch;
    if (info[1].IsObject()) {
      if (!info[1].As<Napi::Object>().InstanceOf(NativeCache::ctor->Value()))
        throw make_error(env, Status::error(Code::invalid_arg, "expected a Cache"));
      NativeCache* c = NativeCache::Unwrap(info[1].As<Napi::Object>());
      if (!c->holder || !c->holder->cache)
        throw make_error(env, Status::error(Code::disposed, "the cache has been disposed"));
      if (c->holder->owner != h)
        throw make_error(env, Status::error(Code::invalid_arg, "the cache belongs to another model"));
      ch = c->holder;
    }
    return start_generate(env, h, ch, info[0].As<Napi::Object>(), info[2]);
  }

  Napi::Value CreateCache(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto h = live(env);
    const int batch = int_arg(info, 0, "batch"), capacity = int_arg(info, 1, "capacity");
    auto ch = std::make_shared<CacheHolder>();
    ch->owner = h;
    Status s;
    {
      std::lock_guard<std::mutex> lk(h->mu);
      s = h->model->create_cache(batch, capacity, ch->cache);
    }
    if (!s) throw make_error(env, s);
    Napi::Object obj = NativeCache::ctor->New({});
    NativeCache::Unwrap(obj)->holder = ch;
    return obj;
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    if (holder) {
      std::lock_guard<std::mutex> lk(holder->mu);  // waits for a call in flight
      holder->model.reset();
    }
    holder.reset();
    return info.Env().Undefined();
  }

  Napi::Value BackendName(const Napi::CallbackInfo& info) {
    if (!holder || !holder->backend) return info.Env().Undefined();
    return Napi::String::New(info.Env(), holder->backend->name());
  }
};
Napi::FunctionReference* NativeModel::ctor = nullptr;

void LoadWorker::OnOK() {
  Napi::Env env = Env();
  if (!status_) {
    deferred_.Reject(make_error(env, status_).Value());
    return;
  }
  Napi::Object obj = NativeModel::ctor->New({});
  NativeModel::Unwrap(obj)->holder = holder_;
  deferred_.Resolve(obj);
}

// loadModel(config, entries[], backend, threads, weights) -> Promise<NativeModel>
static Napi::Value LoadModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject() || !info[1].IsArray())
    throw make_error(env, Status::error(Code::invalid_arg, "loadModel(config, entries, backend, threads)"));
  Napi::Object c = info[0].As<Napi::Object>();
  ModelConfig cfg;
  std::string arch = c.Get("arch").ToString();
  if (!parse_arch(arch, cfg.arch))
    throw make_error(env, Status::error(Code::invalid_arg, "unknown arch '" + arch + "'"));
  cfg.hidden_size = c.Get("hidden_size").ToNumber().Int32Value();
  cfg.n_heads = c.Get("n_heads").ToNumber().Int32Value();
  cfg.n_blocks = c.Get("n_blocks").ToNumber().Int32Value();
  cfg.cond_dim = c.Get("cond_dim").IsNumber() ? c.Get("cond_dim").ToNumber().Int32Value() : 0;
  cfg.vocab_size = c.Get("vocab_size").ToNumber().Int32Value();
  cfg.mask_index = c.Get("mask_index").IsNumber() ? c.Get("mask_index").ToNumber().Int32Value() : -1;
  cfg.length = c.Get("length").ToNumber().Int32Value();
  Status s = cfg.validate();
  if (!s) throw make_error(env, s);
  std::vector<TensorEntry> entries;
  Napi::Array arr = info[1].As<Napi::Array>();
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    Napi::Object o = arr.Get(i).As<Napi::Object>();
    TensorEntry e;
    e.name = o.Get("name").ToString();
    e.file = o.Get("file").ToString();
    e.dtype = o.Get("dtype").ToString();
    e.offset = int64_t(o.Get("offset").ToNumber().DoubleValue());
    e.nbytes = int64_t(o.Get("nbytes").ToNumber().DoubleValue());
    Napi::Array sh = o.Get("shape").As<Napi::Array>();
    for (uint32_t j = 0; j < sh.Length(); ++j) e.shape.push_back(int64_t(sh.Get(j).ToNumber().DoubleValue()));
    entries.push_back(std::move(e));
  }
  std::string backend = info[2].IsString() ? std::string(info[2].As<Napi::String>()) : "cpu";
  int threads = info[3].IsNumber() ? info[3].ToNumber().Int32Value() : 0;
  // CPU weight storage: "f32", "bf16", "bf16-exact" or "q8" (see make_backend).
  const std::string weights = info[4].IsString() ? std::string(info[4].As<Napi::String>()) : "f32";
  auto* w = new LoadWorker(env, cfg, std::move(entries), backend, threads, weights);
  w->Queue();
  return w->Promise();
}

static Napi::Value BackendInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("addon", ESOLM_ADDON_NAME);
  o.Set("cpuKernels", cpu_kernels_in_use());
  o.Set("cpuKernelsAvailable", cpu_kernels_available());
  if (const char* why = cpu_kernels_error()) o.Set("cpuKernelsError", why);
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

// measureCpuFloors(threads, effort = 1): streaming read GB/s and peak FMA GFLOP/s of the
// CPU kernel set in use (cpu/floors.h). Synchronous, a second or two: for bench/.
static Napi::Value MeasureCpuFloors(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CpuFloors f;
  Status s = measure_cpu_floors(info[0].IsNumber() ? info[0].ToNumber().Int32Value() : 0, f,
                                info[1].IsNumber() ? info[1].ToNumber().DoubleValue() : 1.0);
  if (!s) throw make_error(env, s);
  Napi::Object o = Napi::Object::New(env);
  o.Set("threads", f.threads);
  o.Set("kernels", f.kernels);
  o.Set("readGBps", f.read_gbps);
  o.Set("fmaGFlops", f.fma_gflops);
  return o;
}

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("NativeModel", NativeModel::Init(env));
  exports.Set("NativeCache", NativeCache::Init(env));
  exports.Set("loadModel", Napi::Function::New(env, LoadModel));
  exports.Set("backendInfo", Napi::Function::New(env, BackendInfo));
  exports.Set("measureCpuFloors", Napi::Function::New(env, MeasureCpuFloors));
  register_engine_functions(env, exports);
  return exports;
}

}  // namespace esolm

static Napi::Object InitEsolmAddon(Napi::Env env, Napi::Object exports) { return esolm::Init(env, exports); }
NODE_API_MODULE(esolm_addon, InitEsolmAddon)
