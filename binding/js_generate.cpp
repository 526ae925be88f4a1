// js_generate.cpp — N-API glue for engine/generate: one AsyncProgressQueueWorker per
// generation (the whole loop runs off the event loop under the model lock); each step
// event is queued to JS in order; cancel() sets a flag the loop checks between steps.
// A callback that throws cancels the generation, which then rejects with ERR_ABORTED
// whose `cause` is the thrown value. Request fields are read strictly (js_common.h).
#include <napi.h>

#include <atomic>
#include <memory>
#include <string>

#include "engine/generate.h"
#include "js_common.h"
#include "js_holders.h"
#include "js_worker.h"

namespace esolm {
namespace {

class GenerateWorker : public Napi::AsyncProgressQueueWorker<StepEvent> {
 public:
  GenerateWorker(Napi::Env env, std::shared_ptr<ModelHolder> h, std::shared_ptr<CacheHolder> ch,
                 GenerateRequest req, Napi::Value on_event, std::shared_ptr<std::atomic<bool>> cancel)
      : Napi::AsyncProgressQueueWorker<StepEvent>(env), deferred_(Napi::Promise::Deferred::New(env)),
        holder_(std::move(h)), cache_(std::move(ch)), req_(std::move(req)), cancel_(std::move(cancel)) {
    if (on_event.IsFunction()) callback_ = Napi::Persistent(on_event.As<Napi::Function>());
  }
  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute(const ExecutionProgress& progress) override {
    ModelLock lk(*holder_);
    if (!holder_->live()) {
      status_ = Status::error(Code::disposed, "the model has been disposed");
      return;
    }
    Model& model = *holder_->model;
    KVCache* cache = nullptr;
    if (cache_) {
      if (cache_->disposed.load()) {
        status_ = Status::error(Code::disposed, "the cache has been disposed");
        return;
      }
      status_ = guarded([&] { return cache_->ensure(model); });
      if (!status_) return;
      cache = cache_->cache.get();
    }
    const bool stream = !callback_.IsEmpty();
    status_ = guarded([&] {
      return generate(model, req_, cache,
                      [&](const StepEvent& ev) {
                        if (stream) progress.Send(&ev, 1);
                      },
                      cancel_.get(), result_);
    });
  }

  void OnProgress(const StepEvent* ev, size_t count) override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    for (size_t i = 0; i < count && callback_error_.IsEmpty(); ++i) {
      const StepEvent& e = ev[i];
      Napi::Object o = Napi::Object::New(env);
      o.Set("step", e.step);
      o.Set("steps", e.n_steps);
      o.Set("nfe", e.nfe);
      o.Set("phase", e.phase);
      o.Set("perSequence", e.per_sequence);
      Napi::Int32Array pos = Napi::Int32Array::New(env, e.positions.size());
      Napi::Int32Array tok = Napi::Int32Array::New(env, e.tokens.size());
      std::copy(e.positions.begin(), e.positions.end(), pos.Data());
      std::copy(e.tokens.begin(), e.tokens.end(), tok.Data());
      o.Set("positions", pos);
      o.Set("tokens", tok);
      try {
        callback_.Call({o});
      } catch (const Napi::Error& err) {
        callback_error_ = Napi::Persistent(static_cast<Napi::Value>(err.Value()));
        cancel_->store(true);
      }
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    if (!callback_error_.IsEmpty()) {
      Napi::Error e = make_error(env, Status::error(Code::aborted, "generation aborted: the step callback threw"));
      e.Set("cause", callback_error_.Value());
      deferred_.Reject(e.Value());
      return;
    }
    if (!status_) {
      deferred_.Reject(make_error(env, status_).Value());
      return;
    }
    Napi::Object o = Napi::Object::New(env);
    Napi::Int32Array tokens = Napi::Int32Array::New(env, result_.tokens.size());
    std::copy(result_.tokens.begin(), result_.tokens.end(), tokens.Data());
    o.Set("tokens", tokens);
    o.Set("nfe", result_.nfe);
    o.Set("steps", result_.steps);
    o.Set("nDiffusion", result_.n_diffusion);
    o.Set("replayedSteps", result_.replayed_steps);
    Napi::Object t = Napi::Object::New(env);
    t.Set("totalMs", result_.timings.total_ms);
    t.Set("forwardMs", result_.timings.forward_ms);
    t.Set("sampleMs", result_.timings.sample_ms);
    t.Set("planMs", result_.timings.plan_ms);
    t.Set("diffusionMs", result_.timings.diffusion_ms);
    t.Set("sequentialMs", result_.timings.sequential_ms);
    o.Set("timings", t);
    deferred_.Resolve(o);
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<ModelHolder> holder_;
  std::shared_ptr<CacheHolder> cache_;
  GenerateRequest req_;
  std::shared_ptr<std::atomic<bool>> cancel_;
  Napi::FunctionReference callback_;
  Napi::Reference<Napi::Value> callback_error_;  // what the callback threw, if it did
  Status status_;
  GenerateResult result_;
};

}  // namespace

Napi::Value start_generate(Napi::Env env, std::shared_ptr<ModelHolder> h, std::shared_ptr<CacheHolder> ch,
                           Napi::Object r, Napi::Value on_event) {
  GenerateRequest req;
  const std::string method = str_field(r, "method");
  if (method == "esolm") req.method = Method::esolm;
  else if (method == "mdlm") req.method = Method::mdlm;
  else if (method == "ar") req.method = Method::ar;
  else throw make_error(env, Status::error(Code::invalid_arg, "unknown method '" + method + "'"));
  req.batch = int_field(r, "batch");
  req.length = int_field(r, "length");
  req.steps = int_field(r, "steps");
  req.alpha0 = num_field(r, "alpha0");
  req.block_len = int_field(r, "blockLen");
  req.block_shuffle = bool_field(r, "blockShuffle");
  req.sample.top_p = num_field(r, "topP");
  req.sample.temperature = num_field(r, "temperature");
  req.sample.greedy = bool_field(r, "greedy");
  // The seed arrives as two 32-bit halves (a JS number cannot hold 64 bits).
  const double hi = num_field(r, "seedHi"), lo = num_field(r, "seedLo");
  if (!(hi >= 0 && hi <= 4294967295.0 && hi == double(uint32_t(hi)) && lo >= 0 && lo <= 4294967295.0 &&
        lo == double(uint32_t(lo))))
    throw_invalid(env, "seedHi/seedLo must be 32-bit unsigned integers");
  req.sample.seed = (uint64_t(uint32_t(hi)) << 32) | uint32_t(lo);
  req.bos = int_field(r, "bos");
  for (int32_t v : i32_or_null_field(r, "stepSizes")) req.step_sizes.push_back(v);
  std::vector<int32_t> order = i32_or_null_field(r, "order");
  const int n_orders = int_field(r, "orderCount");
  if (!order.empty()) {
    if (n_orders <= 0 || order.size() % size_t(n_orders) != 0)
      throw make_error(env, Status::error(Code::invalid_arg, "order must hold orderCount equal-length orders"));
    const size_t len = order.size() / size_t(n_orders);
    for (int i = 0; i < n_orders; ++i)
      req.order.emplace_back(order.begin() + i * len, order.begin() + (i + 1) * len);
  }
  req.given_positions = i32_field(r, "givenPositions");
  req.given_tokens = i32_field(r, "givenTokens");
  auto cancel = std::make_shared<std::atomic<bool>>(false);
  auto* w = new GenerateWorker(env, h, ch, std::move(req), on_event, cancel);
  Napi::Promise promise = w->Promise();
  w->Queue();
  Napi::Object out = Napi::Object::New(env);
  out.Set("promise", promise);
  out.Set("cancel", Napi::Function::New(env, [cancel](const Napi::CallbackInfo& info) {
            cancel->store(true);
            return info.Env().Undefined();
          }));
  return out;
}

}  // namespace esolm
