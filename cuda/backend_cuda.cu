// backend_cuda.cu — CudaBackend: the Backend (backend.h) on one CUDA device and stream.
//
// Memory: one cudaMalloc per tensor (zero-filled); host F32 <-> BF16 conversion happens
// on the host. Uploads of <= 64 KiB are staged through a ring of pinned slots and do not
// wait (no host sync inside a step); larger uploads wait for their copy. Downloads wait. Ops validate shapes (returning invalid_arg,
// never touching memory out of bounds), then call the launchers of matmul / layernorm /
// rope_kv / attention / embed. All work is ordered on the backend's own stream; launch
// errors return at once, execution errors at the next synchronize() / download.
#include <algorithm>
#include <cstring>
#include <map>
#include <unordered_map>
#include <vector>

#include "attention.cuh"
#include "common.cuh"
#include "cuda_probe.h"
#include "embed.cuh"
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

class CudaBackend final : public Backend {
 public:
  CudaBackend(int dev, int sm) : dev_(dev), sm_(sm) {}
  ~CudaBackend() override {
    cudaSetDevice(dev_);
    if (stream_) cudaStreamSynchronize(stream_);
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

  Status alloc(Tensor& t, DType dtype, int64_t rows, int64_t cols) override {
    if (rows < 0 || cols < 0) return bad("alloc: negative shape");
    CUDA_TRY(cudaSetDevice(dev_));
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
    if (row0 < 0 || n_rows < 0 || row0 + n_rows > t.rows) return bad("download_f32: bad rows");
    const int64_t n = n_rows * t.cols;
    if (n == 0) return Status::ok();
    CUDA_TRY(cudaSetDevice(dev_));
    const size_t es = dtype_size(t.dtype);
    const char* src = static_cast<const char*>(t.data) + size_t(row0 * t.cols) * es;
    if (t.dtype == DType::f32) {
      CUDA_TRY(cudaMemcpyAsync(host, src, size_t(n) * 4, cudaMemcpyDeviceToHost, stream_));
      CUDA_TRY(cudaStreamSynchronize(stream_));
      return Status::ok();
    }
    std::vector<uint32_t> raw(size_t(n * es + 3) / 4);
    CUDA_TRY(cudaMemcpyAsync(raw.data(), src, size_t(n) * es, cudaMemcpyDeviceToHost, stream_));
    CUDA_TRY(cudaStreamSynchronize(stream_));
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
    CUDA_TRY(cudaSetDevice(dev_));
    CUDA_TRY(cudaStreamSynchronize(stream_));
    return Status::ok();
  }

  // ---- ops ----------------------------------------------------------------------
  Status embed(const Tensor& table, const Tensor& tokens, Tensor& x) override {
    if (tokens.dtype != DType::i32 || x.dtype != DType::f32) return bad("embed: dtypes");
    if (x.rows != tokens.numel() || x.cols != table.cols) return bad("embed: shapes");
    if (table.dtype == DType::i32) return bad("embed: table dtype");
    CUDA_TRY(cudaSetDevice(dev_));
    return launch_embed(table.data, table.dtype, table.rows, static_cast<const int32_t*>(tokens.data),
                        static_cast<float*>(x.data), x.rows, x.cols, stream_);
  }

  Status layernorm(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y) override {
    if (x.dtype != DType::f32 || w.dtype != DType::f32) return bad("layernorm: x, w must be F32");
    if (w.numel() != x.cols || (!b.empty() && (b.numel() != x.cols || b.dtype != DType::f32)))
      return bad("layernorm: w/b size");
    if (y.rows != x.rows || y.cols != x.cols || y.dtype == DType::i32) return bad("layernorm: y");
    CUDA_TRY(cudaSetDevice(dev_));
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
    CUDA_TRY(cudaSetDevice(dev_));
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
    const int64_t d = q_out.cols, rows = int64_t(batch) * n;
    if (batch < 0 || n < 0 || n_heads <= 0 || d % n_heads != 0 || (d / n_heads) % 2 != 0)
      return bad("rope_qkv_store: heads");
    if (qkv.cols != 3 * d || qkv.rows < rows || q_out.rows < rows) return bad("rope_qkv_store: qkv/q shapes");
    if (positions.dtype != DType::i32 || positions.numel() < rows) return bad("rope_qkv_store: positions");
    if (slot0 < 0 || slot0 + n > capacity) return bad("rope_qkv_store: slots over capacity");
    if (k_cache.cols != d || v_cache.cols != d || k_cache.rows < int64_t(batch) * capacity ||
        v_cache.rows < int64_t(batch) * capacity)
      return bad("rope_qkv_store: cache shapes");
    if (qkv.dtype == DType::i32 || q_out.dtype == DType::i32 || k_cache.dtype == DType::i32 ||
        v_cache.dtype == DType::i32)
      return bad("rope_qkv_store: dtypes");
    CUDA_TRY(cudaSetDevice(dev_));
    return launch_rope_qkv_store(qkv.data, qkv.dtype, static_cast<const int32_t*>(positions.data),
                                 batch, n, n_heads, int(d / n_heads), slot0, capacity, q_out.data,
                                 q_out.dtype, k_cache.data, k_cache.dtype, v_cache.data,
                                 v_cache.dtype, stream_);
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
    if (p.n_kv < 0 || p.n_kv > p.capacity || p.q_slot0 < 0 || p.q_slot0 + p.n_q > p.capacity)
      return bad("attention: slots over capacity");
    if (p.mode == AttnMode::mixed2 &&
        (!p.clean || p.clean->dtype != DType::i32 || p.clean->numel() < int64_t(p.batch) * p.capacity))
      return bad("attention: mixed2 needs clean I32 [batch, capacity]");
    if (p.mode == AttnMode::sequential && p.n_kv % 2 != 0) return bad("attention: sequential needs even n_kv");
    if (out.dtype == DType::i32) return bad("attention: out dtype");
    if (q.dtype != k_cache.dtype) return bad("attention: q and cache dtypes differ");
    CUDA_TRY(cudaSetDevice(dev_));
    AttnArgs a;
    a.q = q.data; a.q_t = q.dtype;
    a.k = k_cache.data; a.v = v_cache.data; a.kv_t = k_cache.dtype;
    a.out = out.data; a.out_t = out.dtype;
    a.clean = p.mode == AttnMode::mixed2 ? static_cast<const int32_t*>(p.clean->data) : nullptr;
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
    CUDA_TRY(cudaSetDevice(dev_));
    return launch_gather_rows(x.data, x.rows, static_cast<const int32_t*>(index.data), out.data,
                              out.rows, x.cols * int64_t(dtype_size(x.dtype)), stream_);
  }

  // Fused device sampler (sample.cu): keys go up through a pinned buffer, one int32 per row
  // comes back; the only host wait is for the picks.
  Status sample_rows(const Tensor& logits, int64_t rows, const SampleParams& p,
                     const DrawKey* keys, int32_t* out) override {
    if (logits.dtype != DType::f32 || rows < 0 || rows > logits.rows)
      return Status::error(Code::internal, "sample_rows: logits must be F32 with enough rows");
    if (rows == 0) return Status::ok();
    if (logits.cols > 0x7fffffff) return Backend::sample_rows(logits, rows, p, keys, out);
    CUDA_TRY(cudaSetDevice(dev_));
    if (rows > pick_cap_) {
      CUDA_TRY(cudaStreamSynchronize(stream_));
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
    CUDA_TRY(cudaStreamSynchronize(stream_));
    std::memcpy(out, picks_h_, size_t(rows) * sizeof(int32_t));
    return Status::ok();
  }

 private:
  static constexpr int kRingSlots = 64;
  static constexpr size_t kSlotBytes = size_t(64) << 10;
  struct Slot {
    void* host = nullptr;
    cudaEvent_t ev = nullptr;
    bool used = false;
  };
  static size_t align(size_t b) { return (b + 255) & ~size_t(255); }
  Status copy_in(Tensor& t, const void* host) {
    if (t.numel() == 0) return Status::ok();
    CUDA_TRY(cudaSetDevice(dev_));
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
    CUDA_TRY(cudaStreamSynchronize(stream_));  // the host buffer may be a temporary
    return Status::ok();
  }
  // Grow the scratch buffer to at least `bytes` (ops run in stream order, so one buffer
  // is shared by all ops; cudaFree waits for queued work that may still read it).
  Status reserve(size_t bytes) {
    if (bytes <= scratch_bytes_) return Status::ok();
    bytes = align(bytes + bytes / 4);
    if (scratch_) {
      CUDA_TRY(cudaStreamSynchronize(stream_));
      cudaFree(scratch_);
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
      cudaStreamSynchronize(stream_);
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
