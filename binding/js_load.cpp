// js_load.cpp — loadModel(): reads the config and tensor list strictly, then reads,
// decodes and uploads the weights off the event loop (engine/weights, Model::create).
#include <napi.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "cpu/ops_reference.h"
#include "engine/model.h"
#include "engine/weights.h"
#include "js_common.h"
#include "js_holders.h"
#include "js_worker.h"

namespace esolm {
namespace {

Status make_backend(const std::string& name, int threads, const std::string& weights, bool bf16_math,
                    bool int8_math, std::unique_ptr<Backend>& out) {
  if (name == "cpu") {
    // "bf16": every matrix BF16; "bf16-exact": BF16 except the gate-scaled ones (a BF16
    // file then runs exactly); "q8": every matrix int8 with per-row scales; else F32.
    // bf16_math: BF16 activations too (vdpbf16ps), every matrix BF16.
    if (bf16_math && weights != "bf16")
      return Status::error(Code::invalid_arg, "BF16 math runs on BF16 weights (weights \"bf16\")");
    if (bf16_math && cpu_bf16_math_error()) return Status::error(Code::invalid_arg, cpu_bf16_math_error());
    // int8_math: int8 activations too (vpdpbusd), on the 8-bit weights.
    if (int8_math && weights != "q8")
      return Status::error(Code::invalid_arg, "int8 math runs on 8-bit weights (weights \"q8\")");
    if (int8_math && cpu_int8_math_error()) return Status::error(Code::invalid_arg, cpu_int8_math_error());
    const bool bf16 = weights == "bf16" || weights == "bf16-exact";
    out = create_cpu_backend(threads, bf16 ? DType::bf16 : DType::f32, weights != "bf16", weights == "q8", bf16_math,
                             int8_math);
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

int64_t physical_memory() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? int64_t(pages) * page : INT64_MAX;
}

class LoadWorker : public Worker {
 public:
  LoadWorker(Napi::Env env, ModelConfig cfg, std::vector<TensorEntry> entries, std::string backend, int threads,
             std::string weights, bool bf16_math, bool int8_math)
      : Worker(env), cfg_(cfg), entries_(std::move(entries)), backend_(std::move(backend)), threads_(threads),
        weights_(std::move(weights)), bf16_math_(bf16_math), int8_math_(int8_math) {}

 protected:
  Status Run() override {
    // Safety net behind the TS check: host F32 copies plus the backend's copy.
    int64_t bytes = 0;
    ESOLM_TRY(host_bytes(entries_, bytes));
    if (bytes > physical_memory())
      return Status::error(Code::out_of_memory, "the weights need " + std::to_string(bytes) +
                                                    " bytes of host memory, more than this machine has");
    HostWeights w;
    ESOLM_TRY(read_weights(entries_, w));
    holder_ = std::make_shared<ModelHolder>();
    ESOLM_TRY(make_backend(backend_, threads_, weights_, bf16_math_, int8_math_, holder_->backend));
    return Model::create(cfg_, std::move(w), holder_->backend.get(), holder_->model);
  }
  Napi::Value Result(Napi::Env env) override { return wrap_model(env, holder_); }

 private:
  ModelConfig cfg_;
  std::vector<TensorEntry> entries_;
  std::string backend_;
  int threads_;
  std::string weights_;
  bool bf16_math_;
  bool int8_math_;
  std::shared_ptr<ModelHolder> holder_;
};

int64_t to_int64(Napi::Env env, Napi::Value v, const std::string& name) {
  const double d = to_num(env, v, name);
  if (!(d >= 0 && d <= 9007199254740991.0) || d != double(int64_t(d)))
    throw_invalid(env, "expected a non-negative integer for " + name);
  return int64_t(d);
}

// loadModel(config, entries[], backend, threads, weights[, math]) -> Promise<NativeModel>
Napi::Value LoadModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!arg(info, 0).IsObject() || !arg(info, 1).IsArray())
    throw_invalid(env, "loadModel(config, entries, backend, threads, weights)");
  Napi::Object c = info[0].As<Napi::Object>();
  ModelConfig cfg;
  const std::string arch = str_field(c, "arch");
  if (!parse_arch(arch, cfg.arch)) throw_invalid(env, "unknown arch '" + arch + "'");
  cfg.hidden_size = int_field(c, "hidden_size");
  cfg.n_heads = int_field(c, "n_heads");
  cfg.n_blocks = int_field(c, "n_blocks");
  cfg.cond_dim = int_field(c, "cond_dim");
  cfg.vocab_size = int_field(c, "vocab_size");
  cfg.mask_index = int_field(c, "mask_index");
  cfg.length = int_field(c, "length");
  Status s = cfg.validate();
  if (!s) throw make_error(env, s);
  std::vector<TensorEntry> entries;
  Napi::Array arr = info[1].As<Napi::Array>();
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    Napi::Value item = arr.Get(i);
    if (!item.IsObject()) throw_invalid(env, "expected a tensor entry object");
    Napi::Object o = item.As<Napi::Object>();
    TensorEntry e;
    e.name = str_field(o, "name");
    e.file = str_field(o, "file");
    e.dtype = str_field(o, "dtype");
    e.offset = to_int64(env, field(o, "offset"), "offset");
    e.nbytes = to_int64(env, field(o, "nbytes"), "nbytes");
    Napi::Value shape = field(o, "shape");
    if (!shape.IsArray()) throw_invalid(env, "expected an array for shape");
    Napi::Array sh = shape.As<Napi::Array>();
    for (uint32_t j = 0; j < sh.Length(); ++j) e.shape.push_back(to_int64(env, sh.Get(j), "shape"));
    entries.push_back(std::move(e));
  }
  const std::string backend = to_str(env, arg(info, 2), "backend");
  const int threads = to_int(env, arg(info, 3), "threads");
  // CPU weight storage: "f32", "bf16", "bf16-exact" or "q8" (see make_backend).
  const std::string weights = to_str(env, arg(info, 4), "weights");
  // CPU matrix products: "f32" (default), "bf16" (BF16 activations, vdpbf16ps) or "int8"
  // (int8 activations, vpdpbusd); see make_backend.
  const std::string math = info.Length() > 5 && !info[5].IsUndefined() ? to_str(env, info[5], "math") : "f32";
  if (math != "f32" && math != "bf16" && math != "int8") throw_invalid(env, "math must be \"f32\", \"bf16\" or \"int8\"");
  auto* w = new LoadWorker(env, cfg, std::move(entries), backend, threads, weights, backend == "cpu" && math == "bf16",
                           backend == "cpu" && math == "int8");
  w->Queue();
  return w->Promise();
}

}  // namespace

void register_load_functions(Napi::Env env, Napi::Object exports) {
  exports.Set("loadModel", Napi::Function::New(env, LoadModel));
}

}  // namespace esolm
