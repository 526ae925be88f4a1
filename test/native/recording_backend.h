// recording_backend.h — a Backend decorator for tests: forwards every op to an inner
// backend, and (optionally) records ops as closures and replays them, the way CUDA graphs
// do. With it the CPU backend exercises the engine's recording path: a replayed step
// that depended on a host value captured at record time would repeat that value and the
// test would see different tokens. Host-synchronous ops fail while recording, as on CUDA.
#pragma once
#include <functional>
#include <memory>
#include <vector>

#include "engine/backend.h"

namespace esolm {
namespace test {

class RecordingBackend final : public Backend {
 public:
  // kv_loop: report supports_kv_loop() (false forces the engine's host loop).
  // record: report can_record() and record/replay ops as closures.
  RecordingBackend(Backend* inner, bool kv_loop, bool record) : in_(inner), kv_loop_(kv_loop), record_(record) {}

  int recordings_made = 0, replays = 0;

  const char* name() const override { return "recording"; }
  Status alloc(Tensor& t, DType dt, int64_t r, int64_t c) override { return host_only("alloc", [&] { return in_->alloc(t, dt, r, c); }); }
  void release(Tensor& t) override { in_->release(t); }
  DType activation_dtype() const override { return in_->activation_dtype(); }
  DType kv_dtype() const override { return in_->kv_dtype(); }
  DType weight_dtype() const override { return in_->weight_dtype(); }
  DType folded_weight_dtype() const override { return in_->folded_weight_dtype(); }
  Status upload_f32(Tensor& t, const float* h, int64_t n) override {
    return host_only("upload_f32", [&] { return in_->upload_f32(t, h, n); });
  }
  Status upload_i32(Tensor& t, const int32_t* h, int64_t n) override {
    return host_only("upload_i32", [&] { return in_->upload_i32(t, h, n); });
  }
  Status download_f32(const Tensor& t, int64_t r0, int64_t n, float* h) override {
    return host_only("download_f32", [&] { return in_->download_f32(t, r0, n, h); });
  }
  Status synchronize() override { return host_only("synchronize", [&] { return in_->synchronize(); }); }
  Status prepare_weight(Tensor& W) override { return host_only("prepare_weight", [&] { return in_->prepare_weight(W); }); }

  Status embed(const Tensor& table, const Tensor& tokens, Tensor& x) override {
    Tensor xo = x;
    return op([=]() mutable { return in_->embed(table, tokens, xo); });
  }
  Status layernorm(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y) override {
    Tensor yo = y;
    return op([=]() mutable { return in_->layernorm(x, w, b, yo); });
  }
  Status linear(const Tensor& a, const Tensor& W, const Tensor& bias, Tensor& out, Epilogue ep) override {
    Tensor o = out;
    return op([=]() mutable { return in_->linear(a, W, bias, o, ep); });
  }
  Status rope_qkv_store(const Tensor& qkv, const Tensor& pos, int batch, int n, int heads, int slot0, int cap,
                        Tensor& q, Tensor& kc, Tensor& vc) override {
    Tensor qo = q, ko = kc, vo = vc;
    return op([=]() mutable { return in_->rope_qkv_store(qkv, pos, batch, n, heads, slot0, cap, qo, ko, vo); });
  }
  Status attention(const Tensor& q, const Tensor& kc, const Tensor& vc, const AttnParams& p, Tensor& out) override {
    // AttnParams points at tensors the caller may not keep: copy them into the closure.
    Tensor o = out, clean = p.clean ? *p.clean : Tensor{}, state = p.loop_state ? *p.loop_state : Tensor{};
    AttnParams pc = p;
    return op([=]() mutable {
      AttnParams pp = pc;
      pp.clean = pc.clean ? &clean : nullptr;
      pp.loop_state = pc.loop_state ? &state : nullptr;
      return in_->attention(q, kc, vc, pp, o);
    });
  }
  Status gather_rows(const Tensor& x, const Tensor& index, Tensor& out) override {
    Tensor o = out;
    return op([=]() mutable { return in_->gather_rows(x, index, o); });
  }
  Status sample_rows(const Tensor& logits, int64_t rows, const SampleParams& p, const DrawKey* keys,
                     int32_t* out) override {
    return host_only("sample_rows", [&] { return in_->sample_rows(logits, rows, p, keys, out); });
  }

  bool supports_kv_loop() const override { return kv_loop_ && in_->supports_kv_loop(); }
  Status loop_begin_step(LoopTensors& lt, int batch, int length, int n_pad, int k_pad) override {
    LoopTensors c = lt;
    return op([=]() mutable { return in_->loop_begin_step(c, batch, length, n_pad, k_pad); });
  }
  Status rope_qkv_store_loop(const Tensor& qkv, const Tensor& pos, int batch, int n_pad, int heads, int cap,
                             const Tensor& state, Tensor& q, Tensor& kc, Tensor& vc) override {
    Tensor qo = q, ko = kc, vo = vc;
    return op([=]() mutable { return in_->rope_qkv_store_loop(qkv, pos, batch, n_pad, heads, cap, state, qo, ko, vo); });
  }
  Status sample_rows_to(const Tensor& logits, int64_t rows, const SampleParams& p, const Tensor& keys,
                        Tensor& out) override {
    Tensor o = out;
    return op([=]() mutable { return in_->sample_rows_to(logits, rows, p, keys, o); });
  }
  Status loop_end_step(LoopTensors& lt, int batch, int length, int k_pad) override {
    LoopTensors c = lt;
    return op([=]() mutable { return in_->loop_end_step(c, batch, length, k_pad); });
  }
  Status download_i32_async(const Tensor& t, int64_t count, int32_t* host) override {
    return host_only("download_i32_async", [&] { return in_->download_i32_async(t, count, host); });
  }

  // A recording backend stands in for CUDA, so it also claims to run ahead of the host:
  // the loop then queues several steps per wait, as it does there.
  bool is_asynchronous() const override { return record_; }
  bool can_record() const override { return record_; }
  Status begin_record() override {
    if (!record_ || recording_) return Status::error(Code::internal, "begin_record: not available now");
    recording_ = true;
    failed_ = false;
    current_.clear();
    return Status::ok();
  }
  Status end_record(int& id) override {
    if (!recording_) return Status::error(Code::internal, "end_record without begin_record");
    recording_ = false;
    if (failed_) return Status::error(Code::internal, "an op could not be recorded");
    recorded_.push_back(std::move(current_));
    id = int(recorded_.size()) - 1;
    ++recordings_made;
    return Status::ok();
  }
  Status replay(int id) override {
    if (id < 0 || id >= int(recorded_.size())) return Status::error(Code::invalid_arg, "replay: unknown id");
    ++replays;
    for (auto& f : recorded_[size_t(id)]) ESOLM_TRY(f());
    return Status::ok();
  }
  void release_recordings() override { recorded_.clear(); }

 private:
  template <class F>
  Status op(F&& f) {
    if (!recording_) return f();
    current_.emplace_back(std::forward<F>(f));
    return Status::ok();
  }
  template <class F>
  Status host_only(const char* what, F&& f) {
    if (!recording_) return f();
    failed_ = true;
    return Status::error(Code::internal, std::string(what) + " cannot run while recording");
  }

  Backend* in_;
  bool kv_loop_, record_;
  bool recording_ = false, failed_ = false;
  std::vector<std::function<Status()>> current_;
  std::vector<std::vector<std::function<Status()>>> recorded_;
};

}  // namespace test
}  // namespace esolm
