// backend_cuda.cu — CudaBackend: the Backend (backend.h) on one CUDA device and stream.
//
// Memory: one cudaMalloc per tensor (zero-filled); host F32 <-> BF16 conversion happens
// on the host. Uploads of <= 64 KiB are staged through a ring of pinned slots and do not
// wait (no host sync inside a step); larger uploads wait for their copy. Downloads wait,
// except download_i32_async, whose copies land in a pinned staging buffer and reach their
// host pointers at the next stream synchronization (sync_stream). Ops validate shapes
// (returning invalid_arg, never touching memory out of bounds), then call the launchers of
// matmul / layernorm / rope_kv / attention / embed / sample / kv_loop. All work is ordered
// on the backend's own stream; launch errors return at once, execution errors at the next
// synchronize() / download.
//
// Planned KV loop: opt-in with ESOLM_CUDA_KV_LOOP=1 (read at construction). Recording is
// stream capture into CUDA graphs (off with ESOLM_CUDA_GRAPHS=0). While capturing, work that
// needs the host (a sync, an allocation, a copy from or to host memory, scratch growth) is
// refused with "cannot run while recording" and fails the recording. A graph keeps the
// scratch pointer it was captured with, so scratch that grows while recordings exist is
// retired, not freed, until release_recordings().
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <unordered_map>
#include <vector>

#include "attention.cuh"
#include "common.cuh"
#include "cuda_probe.h"
#include "embed.cuh"
#include "kv_loop.cuh"
#include "layernorm.cuh"
#include "matmul.cuh"
#include "rope_kv.cuh"
#include "sample.cuh"

namespace esolm {
namespace cuda {
namespace {

uint16_t f32_to_bf16(float f) {  // round to nearest even; NaN stays NaN
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

Status bad(const std::string& m) { return Status::error(Code::invalid_arg, m); }

bool env_is(const char* name, const char* value) {
  const char* v = std::getenv(name);
  return v && std::strcmp(v, value) == 0;
}

// An I32 tensor with at least n elements.
bool i32_at_least(const Tensor& t, int64_t n) {
  return t.data && t.dtype == DType::i32 && t.numel() >= n;
}

class CudaBackend final : public Backend {
 public:
  CudaBackend(int dev, int sm)
      : dev_(dev), sm_(sm), kv_loop_(env_is("ESOLM_CUDA_KV_LOOP", "1")),
        graphs_enabled_(!env_is("ESOLM_CUDA_GRAPHS", "0")) {}
  ~CudaBackend() override {
    cudaSetDevice(dev_);
    if (capturing_) abandon_capture();
    if (stream_) cudaStreamSynchronize(stream_);
    for (cudaGraphExec_t g : graphs_) cudaGraphExecDestroy(g);
    for (void* p : retired_scratch_) cudaFree(p);
    if (staging_) cudaFreeHost(staging_);
    for (auto& kv : free_) cudaFree(kv.second);
    for (auto& kv : live_) cudaFree(kv.first);
    if (scratch_) cudaFree(scratch_);
    if (tickets_) cudaFree(tickets_);
    for (auto& sl : ring_) {
      if (sl.ev) cudaEventDestroy(sl.ev);
      if (sl.host) cudaFreeHost(sl.host);
    }
    if (keys_d_) cudaFree(keys_d_);
    if (picks_d_) cudaFree(picks_d_);
    if (keys_h_) cudaFreeHost(keys_h_);
    if (picks_h_) cudaFreeHost(picks_h_);
    if (stream_) cudaStreamDestroy(stream_);
  }
  Status init() {
    CUDA_TRY(cudaSetDevice(dev_));
    CUDA_TRY(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    // Split-K tickets of the skinny GEMM: zeroed once, left zeroed by every kernel.
    const size_t tb = linear_ticket_count() * sizeof(unsigned);
    if (cudaMalloc(&tickets_, tb) != cudaSuccess || cudaMemset(tickets_, 0, tb) != cudaSuccess) {
      cudaGetLastError();
      if (tickets_) cudaFree(tickets_);
      tickets_ = nullptr;  // the skinny GEMM then runs without split-K
    }
    // Pinned staging ring for small uploads (optional: without it uploads wait).
    ring_.resize(kRingSlots);
    for (auto& sl : ring_) {
      if (cudaHostAlloc(&sl.host, kSlotBytes, cudaHostAllocDefault) != cudaSuccess ||
          cudaEventCreateWithFlags(&sl.ev, cudaEventDisableTiming) != cudaSuccess) {
        cudaGetLastError();
        for (auto& x : ring_) {
          if (x.ev) cudaEventDestroy(x.ev);
          if (x.host) cudaFreeHost(x.host);
        }
        ring_.clear();
        break;
      }
    }
    return reserve(size_t(1) << 20);
  }
  const char* name() const override { return "cuda"; }
  DType activation_dtype() const override { return DType::bf16; }
  DType weight_dtype() const override { return DType::bf16; }
  bool is_asynchronous() const override { return true; }  // ops are queued on stream_

  Status alloc(Tensor& t, DType dtype, int64_t rows, int64_t cols) override {
    if (capturing_) return refuse_while_recording("alloc");
    if (rows < 0 || cols < 0) return bad("alloc: negative shape");
    ESOLM_TRY(use_device());
    Tensor n;
    n.dtype = dtype;
    n.rows = rows;
    n.cols = cols;
    const size_t bytes = align(std::max<size_t>(n.bytes(), 16));
    ESOLM_TRY(device_alloc(bytes, &n.data));
    cudaError_t e = cudaMemsetAsync(n.data, 0, bytes, stream_);
    if (e != cudaSuccess) {
      device_free(n.data);
      return cuda_status(e, "alloc memset");
    }
    t = n;
    return Status::ok();
  }
  // Freed blocks go to a cache, not cudaFree: the engine allocates and frees per call
  // (scratch caches, head buffers) and cudaFree would synchronize the device each time.
  // Reuse is safe without a sync because every use of a block is ordered on stream_.
  void release(Tensor& t) override {
    if (t.data) device_free(t.data);
    t = Tensor{};
  }
  Status upload_f32(Tensor& t, const float* host, int64_t count) override {
    if (count != t.numel()) return bad("upload_f32: count != numel");
    if (t.dtype == DType::f32) return copy_in(t, host);
    if (t.dtype == DType::bf16) {
      std::vector<uint16_t> h(static_cast<size_t>(count));
      for (int64_t i = 0; i < count; ++i) h[size_t(i)] = f32_to_bf16(host[i]);
      return copy_in(t, h.data());
    }
    std::vector<int32_t> h(static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i) h[size_t(i)] = int32_t(host[i]);
    return copy_in(t, h.data());
  }
  Status upload_i32(Tensor& t, const int32_t* host, int64_t count) override {
    if (count != t.numel()) return bad("upload_i32: count != numel");
    if (t.dtype == DType::i32) return copy_in(t, host);
    std::vector<float> f(static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i) f[size_t(i)] = float(host[i]);
    return upload_f32(t, f.data(), count);
  }
  Status download_f32(const Tensor& t, int64_t row0, int64_t n_rows, float* host) override {
    if (capturing_) return refuse_while_recording("download_f32");
    if (row0 < 0 || n_rows < 0 || row0 + n_rows > t.rows) return bad("download_f32: bad rows");
    const int64_t n = n_rows * t.cols;
    if (n == 0) return Status::ok();
    ESOLM_TRY(use_device());
    const size_t es = dtype_size(t.dtype);
    const char* src = static_cast<const char*>(t.data) + size_t(row0 * t.cols) * es;
    if (t.dtype == DType::f32) {
      CUDA_TRY(cudaMemcpyAsync(host, src, size_t(n) * 4, cudaMemcpyDeviceToHost, stream_));
      return sync_stream();
    }
    std::vector<uint32_t> raw(size_t(n * es + 3) / 4);
    CUDA_TRY(cudaMemcpyAsync(raw.data(), src, size_t(n) * es, cudaMemcpyDeviceToHost, stream_));
    ESOLM_TRY(sync_stream());
    if (t.dtype == DType::bf16) {
      const uint16_t* h = reinterpret_cast<const uint16_t*>(raw.data());
      for (int64_t i = 0; i < n; ++i) host[i] = bf16_to_f32(h[i]);
    } else {
      const int32_t* h = reinterpret_cast<const int32_t*>(raw.data());
      for (int64_t i = 0; i < n; ++i) host[i] = float(h[i]);
    }
    return Status::ok();
  }
  Status synchronize() override {
    if (capturing_) return refuse_while_recording("synchronize");
    ESOLM_TRY(use_device());
    return sync_stream();
  }

  // ---- ops ----------------------------------------------------------------------
  Status embed(const Tensor& table, const Tensor& tokens, Tensor& x) override {
    if (tokens.dtype != DType::i32 || x.dtype != DType::f32) return bad("embed: dtypes");
    if (x.rows != tokens.numel() || x.cols != table.cols) return bad("embed: shapes");
    if (table.dtype == DType::i32) return bad("embed: table dtype");
    ESOLM_TRY(use_device());
    return launch_embed(table.data, table.dtype, table.rows, static_cast<const int32_t*>(tokens.data),
                        static_cast<float*>(x.data), x.rows, x.cols, stream_);
  }

  Status layernorm(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y) override {
    if (x.dtype != DType::f32 || w.dtype != DType::f32) return bad("layernorm: x, w must be F32");
    if (w.numel() != x.cols || (!b.empty() && (b.numel() != x.cols || b.dtype != DType::f32)))
      return bad("layernorm: w/b size");
    if (y.rows != x.rows || y.cols != x.cols || y.dtype == DType::i32) return bad("layernorm: y");
    ESOLM_TRY(use_device());
    return launch_layernorm(static_cast<const float*>(x.data), static_cast<const float*>(w.data),
                            b.empty() ? nullptr : static_cast<const float*>(b.data), y.data,
                            y.dtype, x.rows, x.cols, stream_);
  }

  Status linear(const Tensor& in, const Tensor& W, const Tensor& bias, Tensor& out,
                Epilogue ep) override {
    if (in.cols != W.cols || out.rows < in.rows || out.cols != W.rows)
      return bad("linear: shapes");
    if (!bias.empty() && (bias.dtype != DType::f32 || bias.numel() != W.rows))
      return bad("linear: bias must be F32 [1, n]");
    if (ep == Epilogue::add_to && out.dtype != DType::f32) return bad("linear: add_to needs F32");
    if (out.dtype == DType::i32 || in.dtype == DType::i32 || W.dtype == DType::i32)
      return bad("linear: dtypes");
    ESOLM_TRY(use_device());
    // F32 operands are converted to BF16 in scratch (the tensor cores take BF16).
    const size_t in_b = in.dtype == DType::bf16 ? 0 : align(size_t(in.numel()) * 2);
    const size_t w_b = W.dtype == DType::bf16 ? 0 : align(size_t(W.numel()) * 2);
    // Split-K partials of the skinny GEMM (if it cannot be had, the GEMM runs unsplit).
    const size_t part_f = tickets_ ? linear_workspace_floats(in.rows, W.rows, in.cols, sm_) : 0;
    size_t part_b = align(part_f * 4);
    if (in_b + w_b + part_b) {
      Status rs = reserve(in_b + w_b + part_b);
      if (!rs && part_b) {
        part_b = 0;
        rs = in_b + w_b ? reserve(in_b + w_b) : Status::ok();
      }
      ESOLM_TRY(rs);
    }
    const void* a = in.data;
    const void* w = W.data;
    if (in_b) {
      ESOLM_TRY(launch_convert(in.data, in.dtype, scratch_, DType::bf16, in.numel(), stream_));
      a = scratch_;
    }
    if (w_b) {
      void* dst = static_cast<char*>(scratch_) + in_b;
      ESOLM_TRY(launch_convert(W.data, W.dtype, dst, DType::bf16, W.numel(), stream_));
      w = dst;
    }
    float* part = part_b ? reinterpret_cast<float*>(static_cast<char*>(scratch_) + in_b + w_b) : nullptr;
    return launch_linear(static_cast<const __nv_bfloat16*>(a), static_cast<const __nv_bfloat16*>(w),
                         bias.empty() ? nullptr : static_cast<const float*>(bias.data), out.data,
                         out.dtype, in.rows, W.rows, in.cols, ep, sm_, stream_, part,
                         part_b / 4, part_b ? tickets_ : nullptr);
  }

  Status rope_qkv_store(const Tensor& qkv, const Tensor& positions, int batch, int n, int n_heads,
                        int slot0, int capacity, Tensor& q_out, Tensor& k_cache,
                        Tensor& v_cache) override {
    if (slot0 < 0 || slot0 + int64_t(n) > capacity) return bad("rope_qkv_store: slots over capacity");
    return rope(qkv, positions, batch, n, n_heads, slot0, nullptr, capacity, q_out, k_cache, v_cache,
                "rope_qkv_store");
  }

  Status attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                   const AttnParams& p, Tensor& out) override {
    const int64_t d = int64_t(p.n_heads) * p.head_dim;
    if (p.batch < 0 || p.n_q < 0 || p.n_heads <= 0 || p.head_dim <= 0) return bad("attention: params");
    if (q.cols != d || out.cols != d || q.rows < int64_t(p.batch) * p.n_q ||
        out.rows < int64_t(p.batch) * p.n_q)
      return bad("attention: q/out shapes");
    if (k_cache.cols != d || v_cache.cols != d || k_cache.rows < int64_t(p.batch) * p.capacity ||
        v_cache.rows < int64_t(p.batch) * p.capacity || k_cache.dtype != v_cache.dtype)
      return bad("attention: cache shapes");
    if (p.loop_state) {
      if (p.mode != AttnMode::causal) return bad("attention: loop_state needs causal mode");
      if (!i32_at_least(*p.loop_state, kLoopFields)) return bad("attention: loop_state must be I32 [1, kLoopFields]");
    } else if (p.n_kv < 0 || p.n_kv > p.capacity || p.q_slot0 < 0 || p.q_slot0 + int64_t(p.n_q) > p.capacity) {
      return bad("attention: slots over capacity");
    }
    if (p.mode == AttnMode::mixed2 &&
        (!p.clean || p.clean->dtype != DType::i32 || p.clean->numel() < int64_t(p.batch) * p.capacity))
      return bad("attention: mixed2 needs clean I32 [batch, capacity]");
    if (p.mode == AttnMode::sequential && p.n_kv % 2 != 0) return bad("attention: sequential needs even n_kv");
    if (out.dtype == DType::i32) return bad("attention: out dtype");
    if (q.dtype != k_cache.dtype) return bad("attention: q and cache dtypes differ");
    ESOLM_TRY(use_device());
    AttnArgs a;
    a.q = q.data; a.q_t = q.dtype;
    a.k = k_cache.data; a.v = v_cache.data; a.kv_t = k_cache.dtype;
    a.out = out.data; a.out_t = out.dtype;
    a.clean = p.mode == AttnMode::mixed2 ? static_cast<const int32_t*>(p.clean->data) : nullptr;
    a.loop_state = p.loop_state ? static_cast<const int32_t*>(p.loop_state->data) : nullptr;
    a.batch = p.batch; a.n_q = p.n_q; a.q_slot0 = p.q_slot0; a.n_kv = p.n_kv;
    a.n_heads = p.n_heads; a.head_dim = p.head_dim; a.capacity = p.capacity; a.mode = p.mode;
    const size_t ws = attention_workspace_floats(a, sm_);
    if (ws) ESOLM_TRY(reserve(ws * 4));
    return launch_attention(a, static_cast<float*>(scratch_), scratch_bytes_ / 4, sm_, stream_);
  }

  Status gather_rows(const Tensor& x, const Tensor& index, Tensor& out) override {
    if (index.dtype != DType::i32 || out.rows != index.numel() || out.cols != x.cols ||
        out.dtype != x.dtype)
      return bad("gather_rows: shapes/dtypes");
    ESOLM_TRY(use_device());
    return launch_gather_rows(x.data, x.rows, static_cast<const int32_t*>(index.data), out.data,
                              out.rows, x.cols * int64_t(dtype_size(x.dtype)), stream_);
  }

  // Fused device sampler (sample.cu): keys go up through a pinned buffer, one int32 per row
  // comes back; the only host wait is for the picks.
  Status sample_rows(const Tensor& logits, int64_t rows, const SampleParams& p,
                     const DrawKey* keys, int32_t* out) override {
    if (capturing_) return refuse_while_recording("sample_rows");
    if (logits.dtype != DType::f32 || rows < 0 || rows > logits.rows)
      return Status::error(Code::internal, "sample_rows: logits must be F32 with enough rows");
    if (rows == 0) return Status::ok();
    if (logits.cols > 0x7fffffff) return Backend::sample_rows(logits, rows, p, keys, out);
    ESOLM_TRY(use_device());
    if (rows > pick_cap_) {
      ESOLM_TRY(sync_stream());
      if (keys_d_) cudaFree(keys_d_);
      if (picks_d_) cudaFree(picks_d_);
      if (keys_h_) cudaFreeHost(keys_h_);
      if (picks_h_) cudaFreeHost(picks_h_);
      keys_d_ = nullptr; picks_d_ = nullptr; keys_h_ = nullptr; picks_h_ = nullptr;
      pick_cap_ = 0;
      const int64_t cap = std::max<int64_t>(rows, 256);
      cudaError_t e = cudaMalloc(&keys_d_, size_t(cap) * sizeof(DrawKey));
      if (e == cudaSuccess) e = cudaMalloc(&picks_d_, size_t(cap) * sizeof(int32_t));
      if (e == cudaSuccess) e = cudaHostAlloc(&keys_h_, size_t(cap) * sizeof(DrawKey), cudaHostAllocDefault);
      if (e == cudaSuccess) e = cudaHostAlloc(&picks_h_, size_t(cap) * sizeof(int32_t), cudaHostAllocDefault);
      if (e != cudaSuccess) {
        cudaGetLastError();
        return cuda_status(e, "sample_rows buffers");
      }
      pick_cap_ = cap;
    }
    std::memcpy(keys_h_, keys, size_t(rows) * sizeof(DrawKey));
    CUDA_TRY(cudaMemcpyAsync(keys_d_, keys_h_, size_t(rows) * sizeof(DrawKey), cudaMemcpyHostToDevice, stream_));
    ESOLM_TRY(launch_sample_rows(static_cast<const float*>(logits.data), logits.cols, int(logits.cols),
                                 rows, p, keys_d_, picks_d_, stream_));
    CUDA_TRY(cudaMemcpyAsync(picks_h_, picks_d_, size_t(rows) * sizeof(int32_t), cudaMemcpyDeviceToHost, stream_));
    ESOLM_TRY(sync_stream());
    std::memcpy(out, picks_h_, size_t(rows) * sizeof(int32_t));
    return Status::ok();
  }

  // ---- planned KV loop ----------------------------------------------------------------
  bool supports_kv_loop() const override { return kv_loop_; }

  Status loop_begin_step(LoopTensors& lt, int batch, int length, int n_pad, int k_pad) override {
    if (batch < 1 || length < 1 || n_pad < 1 || k_pad < 1) return bad("loop_begin_step: sizes must be >= 1");
    if (!i32_at_least(lt.table, 1) || lt.table.cols != kStepFields)
      return bad("loop_begin_step: table must be I32 [n_steps, kStepFields]");
    ESOLM_TRY(check_loop_tensors(lt, batch, length, "loop_begin_step"));
    const int64_t rn = int64_t(batch) * n_pad, rk = int64_t(batch) * k_pad;
    if (!i32_at_least(lt.tokens, rn) || !i32_at_least(lt.positions, rn))
      return bad("loop_begin_step: tokens and positions must be I32 [batch * n_pad, 1]");
    if (!i32_at_least(lt.head_rows, rk)) return bad("loop_begin_step: head_rows must be I32 [batch * k_pad, 1]");
    if (!i32_at_least(lt.keys, 3 * rk) || lt.keys.cols != 3) return bad("loop_begin_step: keys must be I32 [batch * k_pad, 3]");
    ESOLM_TRY(use_device());
    cuda::LoopArgs a = loop_args(lt, batch, length, k_pad);
    a.n_pad = n_pad;
    return launch_loop_begin_step(a, stream_);
  }

  Status rope_qkv_store_loop(const Tensor& qkv, const Tensor& positions, int batch, int n_pad,
                             int n_heads, int capacity, const Tensor& state, Tensor& q_out,
                             Tensor& k_cache, Tensor& v_cache) override {
    if (!i32_at_least(state, kLoopFields)) return bad("rope_qkv_store_loop: state must be I32 [1, kLoopFields]");
    return rope(qkv, positions, batch, n_pad, n_heads, 0, static_cast<const int32_t*>(state.data), capacity,
                q_out, k_cache, v_cache, "rope_qkv_store_loop");
  }

  Status sample_rows_to(const Tensor& logits, int64_t rows, const SampleParams& p, const Tensor& keys,
                        Tensor& out) override {
    if (logits.dtype != DType::f32 || rows < 0 || rows > logits.rows || logits.cols > 0x7fffffff)
      return bad("sample_rows_to: logits must be F32 [>= rows, vocab]");
    if (!i32_at_least(keys, 3 * rows) || keys.cols != 3) return bad("sample_rows_to: keys must be I32 [>= rows, 3]");
    if (!i32_at_least(out, rows)) return bad("sample_rows_to: out must be I32 with >= rows elements");
    if (rows == 0) return Status::ok();
    ESOLM_TRY(use_device());
    return launch_sample_rows(static_cast<const float*>(logits.data), logits.cols, int(logits.cols), rows, p,
                              static_cast<const DrawKey*>(keys.data), static_cast<int32_t*>(out.data), stream_);
  }

  Status loop_end_step(LoopTensors& lt, int batch, int length, int k_pad) override {
    if (batch < 1 || length < 1 || k_pad < 1) return bad("loop_end_step: sizes must be >= 1");
    ESOLM_TRY(check_loop_tensors(lt, batch, length, "loop_end_step"));
    if (!i32_at_least(lt.picks, int64_t(batch) * k_pad)) return bad("loop_end_step: picks must be I32 [batch * k_pad, 1]");
    ESOLM_TRY(use_device());
    return launch_loop_end_step(loop_args(lt, batch, length, k_pad), stream_);
  }

  // The copy goes to the pinned staging buffer now; sync_stream() hands it to `host`.
  Status download_i32_async(const Tensor& t, int64_t count, int32_t* host) override {
    if (capturing_) return refuse_while_recording("download_i32_async");
    if (t.dtype != DType::i32 || count < 0 || count > t.numel()) return bad("download_i32_async: needs I32 and count <= numel");
    if (count == 0) return Status::ok();
    if (!host) return bad("download_i32_async: null host pointer");
    ESOLM_TRY(use_device());
    const size_t bytes = size_t(count) * sizeof(int32_t);
    if (staging_used_ + bytes > staging_bytes_) {
      ESOLM_TRY(sync_stream());  // delivers the pending copies: the whole buffer is free again
      if (bytes > staging_bytes_) {
        const size_t want = std::max({bytes, 2 * staging_bytes_, size_t(64) << 10});
        if (staging_) cudaFreeHost(staging_);
        staging_ = nullptr;
        staging_bytes_ = 0;
        void* p = nullptr;
        cudaError_t e = cudaHostAlloc(&p, want, cudaHostAllocDefault);
        if (e != cudaSuccess) {
          cudaGetLastError();
          return cuda_status(e, "download_i32_async staging buffer");
        }
        staging_ = static_cast<char*>(p);
        staging_bytes_ = want;
      }
    }
    CUDA_TRY(cudaMemcpyAsync(staging_ + staging_used_, t.data, bytes, cudaMemcpyDeviceToHost, stream_));
    pending_.push_back(PendingCopy{staging_used_, bytes, host});
    staging_used_ += bytes;
    return Status::ok();
  }

  // ---- recording (CUDA graphs) ------------------------------------------------------
  bool can_record() const override { return graphs_enabled_; }

  Status begin_record() override {
    if (!graphs_enabled_) return Status::error(Code::internal, "begin_record: recording is off (ESOLM_CUDA_GRAPHS=0)");
    if (capturing_) return refuse_while_recording("begin_record");
    ESOLM_TRY(use_device());
    CUDA_TRY(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    capturing_ = true;
    capture_failed_ = false;
    return Status::ok();
  }

  Status end_record(int& id) override {
    if (!capturing_) return Status::error(Code::internal, "end_record: not recording");
    ESOLM_TRY(use_device());
    cudaGraph_t graph = nullptr;
    const cudaError_t e = cudaStreamEndCapture(stream_, &graph);
    const bool refused = capture_failed_;
    capturing_ = false;
    capture_failed_ = false;
    if (refused || e != cudaSuccess || !graph) {
      if (graph) cudaGraphDestroy(graph);
      cudaGetLastError();  // an invalidated capture leaves its error behind
      if (refused) return Status::error(Code::internal, "end_record: an op could not be recorded");
      return cuda_status(e == cudaSuccess ? cudaErrorStreamCaptureInvalidated : e, "end_record");
    }
    cudaGraphExec_t exec = nullptr;
    const cudaError_t ie = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);  // the executable graph does not need it
    if (ie != cudaSuccess) {
      cudaGetLastError();
      return cuda_status(ie, "cudaGraphInstantiate");
    }
    id = int(graphs_.size());
    graphs_.push_back(exec);
    return Status::ok();
  }

  Status replay(int id) override {
    if (capturing_) return refuse_while_recording("replay");
    if (id < 0 || size_t(id) >= graphs_.size()) return bad("replay: no recording with this id");
    ESOLM_TRY(use_device());
    CUDA_TRY(cudaGraphLaunch(graphs_[size_t(id)], stream_));
    return Status::ok();
  }

  void release_recordings() override {
    use_device();
    if (capturing_) abandon_capture();
    if (graphs_.empty() && retired_scratch_.empty()) return;
    sync_stream();  // an error here resurfaces at the next synchronize()
    for (cudaGraphExec_t g : graphs_) cudaGraphExecDestroy(g);
    graphs_.clear();
    for (void* p : retired_scratch_) cudaFree(p);
    retired_scratch_.clear();
  }

 private:
  static constexpr int kRingSlots = 64;
  static constexpr size_t kSlotBytes = size_t(64) << 10;
  struct Slot {
    void* host = nullptr;
    cudaEvent_t ev = nullptr;
    bool used = false;
  };
  struct PendingCopy {  // a download_i32_async waiting for the next sync_stream()
    size_t offset, bytes;
    int32_t* host;
  };
  static size_t align(size_t b) { return (b + 255) & ~size_t(255); }

  // Make dev_ current on the calling thread; set only when it differs, so that ops recorded
  // into a graph make no call beyond a query.
  Status use_device() const {
    int cur = -1;
    if (cudaGetDevice(&cur) == cudaSuccess && cur == dev_) return Status::ok();
    CUDA_TRY(cudaSetDevice(dev_));
    return Status::ok();
  }

  // The one full wait on the stream: afterwards every download_i32_async issued before it
  // is copied to its host pointer.
  Status sync_stream() {
    const cudaError_t e = cudaStreamSynchronize(stream_);
    if (e == cudaSuccess)
      for (const PendingCopy& p : pending_) std::memcpy(p.host, staging_ + p.offset, p.bytes);
    pending_.clear();
    staging_used_ = 0;
    return cuda_status(e, "cudaStreamSynchronize");
  }

  Status refuse_while_recording(const char* op) {
    capture_failed_ = true;
    return Status::error(Code::internal, std::string(op) + ": cannot run while recording");
  }
  void abandon_capture() {
    cudaGraph_t g = nullptr;
    cudaStreamEndCapture(stream_, &g);
    if (g) cudaGraphDestroy(g);
    cudaGetLastError();
    capturing_ = false;
    capture_failed_ = false;
  }

  // Shared body of rope_qkv_store and rope_qkv_store_loop (loop_state null for the former).
  Status rope(const Tensor& qkv, const Tensor& positions, int batch, int n, int n_heads, int slot0,
              const int32_t* loop_state, int capacity, Tensor& q_out, Tensor& k_cache,
              Tensor& v_cache, const std::string& op) {
    const int64_t d = q_out.cols, rows = int64_t(batch) * n;
    if (batch < 0 || n < 0 || capacity < 0 || n_heads <= 0 || d % n_heads != 0 || (d / n_heads) % 2 != 0)
      return bad(op + ": heads");
    if (qkv.cols != 3 * d || qkv.rows < rows || q_out.rows < rows) return bad(op + ": qkv/q shapes");
    if (positions.dtype != DType::i32 || positions.numel() < rows) return bad(op + ": positions");
    if (k_cache.cols != d || v_cache.cols != d || k_cache.rows < int64_t(batch) * capacity ||
        v_cache.rows < int64_t(batch) * capacity)
      return bad(op + ": cache shapes");
    if (qkv.dtype == DType::i32 || q_out.dtype == DType::i32 || k_cache.dtype == DType::i32 ||
        v_cache.dtype == DType::i32)
      return bad(op + ": dtypes");
    ESOLM_TRY(use_device());
    return launch_rope_qkv_store(qkv.data, qkv.dtype, static_cast<const int32_t*>(positions.data),
                                 batch, n, n_heads, int(d / n_heads), slot0, loop_state, capacity,
                                 q_out.data, q_out.dtype, k_cache.data, k_cache.dtype, v_cache.data,
                                 v_cache.dtype, stream_);
  }

  // Checks shared by loop_begin_step and loop_end_step (state, z, order, fixed).
  static Status check_loop_tensors(const LoopTensors& lt, int batch, int length, const std::string& op) {
    if (!i32_at_least(lt.state, kLoopFields)) return bad(op + ": state must be I32 [1, kLoopFields]");
    const int64_t zn = int64_t(batch) * length;
    if (!i32_at_least(lt.z, zn) || !i32_at_least(lt.order, zn))
      return bad(op + ": z and order must be I32 [batch, length]");
    if (!i32_at_least(lt.fixed, length)) return bad(op + ": fixed must be I32 [1, length]");
    return Status::ok();
  }
  static cuda::LoopArgs loop_args(LoopTensors& lt, int batch, int length, int k_pad) {
    cuda::LoopArgs a;
    a.table = static_cast<const int32_t*>(lt.table.data);
    a.n_steps = lt.table.rows;
    a.state = static_cast<int32_t*>(lt.state.data);
    a.z = static_cast<int32_t*>(lt.z.data);
    a.order = static_cast<const int32_t*>(lt.order.data);
    a.fixed = static_cast<const int32_t*>(lt.fixed.data);
    a.tokens = static_cast<int32_t*>(lt.tokens.data);
    a.positions = static_cast<int32_t*>(lt.positions.data);
    a.head_rows = static_cast<int32_t*>(lt.head_rows.data);
    a.keys = static_cast<int32_t*>(lt.keys.data);
    a.picks = static_cast<const int32_t*>(lt.picks.data);
    a.batch = batch;
    a.length = length;
    a.k_pad = k_pad;
    return a;
  }

  Status copy_in(Tensor& t, const void* host) {
    if (capturing_) return refuse_while_recording("upload");
    if (t.numel() == 0) return Status::ok();
    ESOLM_TRY(use_device());
    if (!ring_.empty() && t.bytes() <= kSlotBytes) {
      // Small upload: stage in a pinned slot, copy asynchronously, no wait. A slot is
      // reused only after its previous copy has completed (its event).
      Slot& sl = ring_[ring_next_];
      ring_next_ = (ring_next_ + 1) % ring_.size();
      if (sl.used) CUDA_TRY(cudaEventSynchronize(sl.ev));
      std::memcpy(sl.host, host, t.bytes());
      CUDA_TRY(cudaMemcpyAsync(t.data, sl.host, t.bytes(), cudaMemcpyHostToDevice, stream_));
      CUDA_TRY(cudaEventRecord(sl.ev, stream_));
      sl.used = true;
      return Status::ok();
    }
    CUDA_TRY(cudaMemcpyAsync(t.data, host, t.bytes(), cudaMemcpyHostToDevice, stream_));
    return sync_stream();  // the host buffer may be a temporary
  }
  // Grow the scratch buffer to at least `bytes` (ops run in stream order, so one buffer
  // is shared by all ops and by the recordings; the old one is freed after a wait for
  // queued work that may still read it, or retired while a recording may replay it).
  Status reserve(size_t bytes) {
    if (bytes <= scratch_bytes_) return Status::ok();
    if (capturing_) return refuse_while_recording("scratch growth");
    bytes = align(bytes + bytes / 4);
    if (scratch_) {
      if (graphs_.empty()) {
        ESOLM_TRY(sync_stream());
        cudaFree(scratch_);
      } else {
        retired_scratch_.push_back(scratch_);
      }
      scratch_ = nullptr;
      scratch_bytes_ = 0;
    }
    cudaError_t e = cudaMalloc(&scratch_, bytes);
    if (e != cudaSuccess) {
      cudaGetLastError();
      scratch_ = nullptr;
      return Status::error(Code::out_of_memory, std::string("cudaMalloc (scratch) failed: ") +
                                                    cudaGetErrorName(e));
    }
    scratch_bytes_ = bytes;
    return Status::ok();
  }

  Status device_alloc(size_t bytes, void** p) {
    auto it = free_.lower_bound(bytes);
    if (it != free_.end() && it->first <= bytes + bytes / 4) {  // close fit: reuse
      *p = it->second;
      live_[*p] = it->first;
      free_.erase(it);
      return Status::ok();
    }
    cudaError_t e = cudaMalloc(p, bytes);
    if (e != cudaSuccess) {  // give the cached blocks back and retry once
      cudaGetLastError();
      sync_stream();
      for (auto& kv : free_) cudaFree(kv.second);
      free_.clear();
      e = cudaMalloc(p, bytes);
    }
    if (e != cudaSuccess) {
      cudaGetLastError();
      *p = nullptr;
      return Status::error(Code::out_of_memory, "cudaMalloc of " + std::to_string(bytes) +
                                                    " bytes failed: " + cudaGetErrorName(e));
    }
    live_[*p] = bytes;
    return Status::ok();
  }
  void device_free(void* p) {
    auto it = live_.find(p);
    if (it == live_.end()) return;  // not ours: ignore rather than corrupt the heap
    free_.emplace(it->second, p);
    live_.erase(it);
  }

  std::multimap<size_t, void*> free_;
  std::unordered_map<void*, size_t> live_;
  int dev_, sm_;
  cudaStream_t stream_ = nullptr;
  void* scratch_ = nullptr;
  size_t scratch_bytes_ = 0;
  unsigned* tickets_ = nullptr;
  std::vector<Slot> ring_;
  size_t ring_next_ = 0;
  DrawKey* keys_d_ = nullptr;
  int32_t* picks_d_ = nullptr;
  DrawKey* keys_h_ = nullptr;
  int32_t* picks_h_ = nullptr;
  int64_t pick_cap_ = 0;
  const bool kv_loop_, graphs_enabled_;  // ESOLM_CUDA_KV_LOOP=1, ESOLM_CUDA_GRAPHS!=0
  bool capturing_ = false, capture_failed_ = false;
  std::vector<cudaGraphExec_t> graphs_;  // replay id = index
  std::vector<void*> retired_scratch_;   // old scratch buffers the graphs may still use
  char* staging_ = nullptr;              // pinned, for download_i32_async
  size_t staging_bytes_ = 0, staging_used_ = 0;
  std::vector<PendingCopy> pending_;
};

}  // namespace
}  // namespace cuda

std::unique_ptr<Backend> create_cuda_backend(int device, Status& status) {
  CudaInfo info;
  status = cuda_probe(info, device);
  if (!status) return nullptr;
  auto be = std::make_unique<cuda::CudaBackend>(device, info.sm_count);
  status = be->init();
  if (!status) {
    if (status.code != Code::out_of_memory) status.code = Code::no_cuda;
    return nullptr;
  }
  return be;
}

}  // namespace esolm
