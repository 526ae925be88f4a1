// js_model.cpp — NativeModel: forward, forwardScores, step, createCache, generate,
// dispose. Long calls run in workers under the model mutex, off the event loop; each
// writes into its own native buffer, which becomes the result (an external ArrayBuffer, no
// copy) or, when the caller passed `out`, is copied into it on the main thread at the end:
// no pointer into a JS buffer is held while JS runs.
#include <napi.h>

#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/model.h"
#include "js_common.h"
#include "js_holders.h"
#include "js_worker.h"

namespace esolm {
namespace {

// Runs fn(model, buffer of n Ts) under the model lock. The result is the buffer itself as
// a new typed array, or, given `out`, the buffer copied into it (re-checked: it may have
// been detached or resized meanwhile).
template <class T, class TA>
class BufferCallWorker : public Worker {
 public:
  using Fn = std::function<Status(Model&, T*)>;
  BufferCallWorker(Napi::Env env, std::shared_ptr<ModelHolder> h, Fn fn, Napi::Value out, size_t n,
                   std::shared_ptr<CacheHolder> cache)
      : Worker(env), holder_(std::move(h)), cache_(std::move(cache)), fn_(std::move(fn)), n_(n) {
    if (!out.IsNull()) out_ = Napi::Persistent(out);
  }

 protected:
  Status Run() override {
    ModelLock lk(*holder_);
    if (!holder_->live()) return Status::error(Code::disposed, "the model has been disposed");
    buf_.reset(new T[n_]);
    return fn_(*holder_->model, buf_.get());
  }
  Napi::Value Result(Napi::Env env) override {
    if (out_.IsEmpty()) {
      T* data = buf_.release();
      Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, data, n_ * sizeof(T), [](Napi::Env, void* p) {
        delete[] static_cast<T*>(p);
      });
      return TA::New(env, n_, ab, 0);
    }
    Napi::Value v = out_.Value();
    TA a = v.As<TA>();
    if (a.ElementLength() != n_)
      throw make_error(env, Status::error(Code::invalid_arg, "the output buffer was detached or resized during the call"));
    std::memcpy(a.Data(), buf_.get(), n_ * sizeof(T));
    return v;
  }

 private:
  std::shared_ptr<ModelHolder> holder_;
  std::shared_ptr<CacheHolder> cache_;  // kept alive for the call
  Fn fn_;
  size_t n_;
  std::unique_ptr<T[]> buf_;
  Napi::Reference<Napi::Value> out_;
};

// A typed array of `type` with `want` elements, or null (the call then makes its own).
Napi::Value out_arg(const Napi::CallbackInfo& info, size_t i, napi_typedarray_type type, int64_t want, const char* what) {
  Napi::Value v = arg(info, i);
  if (v.IsNull()) return v;
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type) throw_invalid(info.Env(), what);
  if (int64_t(v.As<Napi::TypedArray>().ElementLength()) != want) throw_invalid(info.Env(), "output buffer has the wrong size");
  return v;
}

// The arguments forward() and forwardScores() share: (tokens, positions, batch, n, mode, x0 | null).
struct ForwardArgs {
  std::vector<int32_t> tokens, positions, x0;
  int batch = 0, n = 0;
  AttnMode mode = AttnMode::causal;
};

ForwardArgs forward_args(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ForwardArgs a;
  a.tokens = int32_arg(info, 0, "tokens");
  a.positions = int32_arg(info, 1, "positions");
  a.batch = int_arg(info, 2, "batch");
  a.n = int_arg(info, 3, "n");
  if (!parse_attn_mode(to_str(env, arg(info, 4), "mode"), a.mode)) throw_invalid(env, "unknown attention mode");
  a.x0 = to_i32_or_null(env, arg(info, 5), "x0");
  const int64_t count = int64_t(a.batch) * a.n;
  if (a.batch <= 0 || a.n <= 0 || int64_t(a.tokens.size()) != count || int64_t(a.positions.size()) != count ||
      (!a.x0.empty() && int64_t(a.x0.size()) != count))
    throw_invalid(env, "tokens/positions/x0 must hold batch * n entries");
  return a;
}

class NativeModel : public Napi::ObjectWrap<NativeModel> {
 public:
  NativeModel(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeModel>(info) {}
  std::shared_ptr<ModelHolder> holder;

  std::shared_ptr<ModelHolder> live(Napi::Env env) {
    if (!holder || !holder->live()) throw make_error(env, Status::error(Code::disposed, "the model has been disposed"));
    return holder;
  }

  // forward(tokens, positions, batch, n, mode, x0 | null, out Float32Array | null, logitsRows | null)
  Napi::Value Forward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto h = live(env);
    ForwardArgs a = forward_args(info);
    std::vector<int32_t> rows32 = to_i32_or_null(env, arg(info, 7), "logitsRows");
    const bool has_rows = !arg(info, 7).IsNull();
    std::vector<int> rows(rows32.begin(), rows32.end());
    const int64_t vocab = h->model->config().vocab_size;
    const int64_t want = int64_t(a.batch) * (has_rows ? int64_t(rows.size()) : a.n) * vocab;
    Napi::Value out = out_arg(info, 6, napi_float32_array, want, "expected a Float32Array or null for out");
    auto fn = [a = std::move(a), rows = std::move(rows), has_rows](Model& m, float* dst) {
      return m.forward(a.tokens.data(), a.positions.data(), a.batch, a.n, a.mode,
                       a.x0.empty() ? nullptr : a.x0.data(), dst, has_rows ? &rows : nullptr);
    };
    auto* w = new BufferCallWorker<float, Napi::Float32Array>(env, h, fn, out, size_t(want), nullptr);
    w->Queue();
    return w->Promise();
  }

  // forwardScores(tokens, positions, batch, n, mode, x0 | null, targets, out Float64Array | null)
  Napi::Value ForwardScores(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto h = live(env);
    ForwardArgs a = forward_args(info);
    auto targets = int32_arg(info, 6, "targets");
    const int64_t count = int64_t(a.batch) * a.n;
    if (int64_t(targets.size()) != count) throw_invalid(env, "targets must hold batch * n entries");
    Napi::Value out = out_arg(info, 7, napi_float64_array, count, "expected a Float64Array or null for out");
    auto fn = [a = std::move(a), targets = std::move(targets)](Model& m, double* dst) {
      return m.forward_scores(a.tokens.data(), a.positions.data(), a.batch, a.n, a.mode,
                              a.x0.empty() ? nullptr : a.x0.data(), targets.data(), dst);
    };
    auto* w = new BufferCallWorker<double, Napi::Float64Array>(env, h, fn, out, size_t(count), nullptr);
    w->Queue();
    return w->Promise();
  }

  // step(cache, tokens, positions, n, commit, logitsFrom, out Float32Array | null)
  Napi::Value Step(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto h = live(env);
    auto ch = unwrap_cache(env, arg(info, 0), h);
    auto tokens = int32_arg(info, 1, "tokens");
    auto positions = int32_arg(info, 2, "positions");
    const int n = int_arg(info, 3, "n"), commit = int_arg(info, 4, "commit"), from = int_arg(info, 5, "logitsFrom");
    const int64_t count = int64_t(ch->batch) * n;
    if (n <= 0 || int64_t(tokens.size()) != count || int64_t(positions.size()) != count)
      throw_invalid(env, "tokens/positions must hold batch * n entries");
    if (commit < 0 || commit > n || from < 0 || from > n) throw_invalid(env, "commit/logitsFrom out of range");
    const int64_t want = int64_t(ch->batch) * (n - from) * h->model->config().vocab_size;
    Napi::Value out = out_arg(info, 6, napi_float32_array, want, "expected a Float32Array or null for out");
    auto fn = [ch, tokens = std::move(tokens), positions = std::move(positions), n, commit, from](Model& m, float* dst) {
      if (ch->disposed.load()) return Status::error(Code::disposed, "the cache has been disposed");
      ESOLM_TRY(ch->ensure(m));
      return m.step(*ch->cache, tokens.data(), positions.data(), n, commit, from, dst);
    };
    auto* w = new BufferCallWorker<float, Napi::Float32Array>(env, h, fn, out, size_t(want), ch);
    w->Queue();
    return w->Promise();
  }

  // generate(request, cache | null, onEvent | null) -> { promise, cancel }
  Napi::Value Generate(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto h = live(env);
    if (!arg(info, 0).IsObject()) throw_invalid(env, "expected a request object");
    std::shared_ptr<CacheHolder> ch;
    if (!arg(info, 1).IsNull()) ch = unwrap_cache(env, info[1], h);
    Napi::Value on_event = arg(info, 2);
    if (!on_event.IsNull() && !on_event.IsFunction()) throw_invalid(env, "expected a function or null for onEvent");
    return start_generate(env, h, ch, info[0].As<Napi::Object>(), on_event);
  }

  // createCache(batch, capacity): allocated now when the model is idle, else by the first
  // call that uses it (the main thread never waits for the model lock).
  Napi::Value CreateCache(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto h = live(env);
    auto ch = std::make_shared<CacheHolder>();
    ch->owner = h;
    ch->batch = int_arg(info, 0, "batch");
    ch->capacity = int_arg(info, 1, "capacity");
    if (ch->batch <= 0 || ch->capacity <= 0) throw_invalid(env, "cache batch and capacity must be positive");
    if (h->mu.try_lock()) {
      Status s = guarded([&] { return h->live() ? ch->ensure(*h->model) : Status::ok(); });
      h->mu.unlock();
      if (!s) throw make_error(env, s);
    }
    return wrap_cache(env, ch);
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    if (holder) holder->dispose();
    holder.reset();
    return info.Env().Undefined();
  }

  Napi::Value BackendName(const Napi::CallbackInfo& info) {
    if (!holder || !holder->backend) return info.Env().Undefined();
    return Napi::String::New(info.Env(), holder->backend->name());
  }
};

}  // namespace

Napi::Function init_model_class(Napi::Env env) {
  using M = NativeModel;
  Napi::Function f = M::DefineClass(env, "NativeModel",
                                    {M::InstanceMethod("forward", &M::Forward), M::InstanceMethod("step", &M::Step),
                                     M::InstanceMethod("forwardScores", &M::ForwardScores),
                                     M::InstanceMethod("createCache", &M::CreateCache),
                                     M::InstanceMethod("generate", &M::Generate),
                                     M::InstanceMethod("dispose", &M::Dispose),
                                     M::InstanceAccessor("backendName", &M::BackendName, nullptr)});
  addon_data(env).model_ctor = Napi::Persistent(f);
  return f;
}

Napi::Value wrap_model(Napi::Env env, std::shared_ptr<ModelHolder> h) {
  Napi::Object obj = addon_data(env).model_ctor.New({});
  NativeModel::Unwrap(obj)->holder = std::move(h);
  return obj;
}

}  // namespace esolm
