// backend_cpu.cpp — the CPU backend: F32 tensors in host memory, threads over all
// cores, SIMD inner loops from kernels.h (the widest set the CPU has).
// Linear weights are packed into 16-column panels by prepare_weight(); a weight that
// was not prepared is packed on the fly (slow, but correct). With 8-bit weights
// (create_cpu_backend(..., q8)) prepare_weight also quantizes by the rule of engine/q8.h
// (per output row, scale = max |w| / 127 and q = round(w / scale)), and upload_q8 packs
// matrices that are already 8-bit (a q8 file, or quantized by the engine on the host).
// With BF16 math (create_cpu_backend(..., bf16_math), kernels.h) every matrix is BF16 and
// linear() rounds its activations to BF16 for the vdpbf16ps kernel (linear_bf16_math).
// With int8 math (create_cpu_backend(..., q8, ..., int8_math), kernels.h) the 8-bit weights
// are packed as VNNI panels instead and linear() quantizes its activations to int8 for the
// vpdpbusd kernel (linear_int8_math).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>
#include <vector>

#include "cpu/host_memory.h"
#include "cpu/layernorm_rows.h"
#include "cpu/rope_rows.h"
#include "cpu/kernels.h"
#include "cpu/loop_ops.h"
#include "cpu/ops_reference.h"
#include "cpu/thread_pool.h"
#include "engine/backend.h"
#include "engine/q8.h"

namespace esolm {
namespace {

struct PackedInfo {
  int64_t n = 0, k = 0;
  bool q8 = false;  // int8 panels, then one F32 scale per (padded) output row at q8_scales_offset
  bool vnni = false;  // with q8: int8 math's VNNI panels (kernels.h), scales at vnni_scales_offset
};

// Q8 packing: int8 panels [ceil(n/16)][k][16], then ceil(n/16) * 16 F32 scales.
size_t q8_scales_offset(int64_t n, int64_t k) {
  const size_t panels = size_t((n + kPanel - 1) / kPanel) * kPanel * size_t(k);
  return (panels + 63) / 64 * 64;
}

// VNNI packing (int8 math): ceil(n/16) panels of [ceil(k/4)][16][4] bytes, then the scales.
int64_t vnni_panel_bytes(int64_t k) { return (k + 3) / 4 * 4 * kPanel; }
size_t vnni_scales_offset(int64_t n, int64_t k) { return q8_scales_offset(n, (k + 3) / 4 * 4); }

uint16_t f32_to_bf16(float f) {  // round to nearest even; NaN stays NaN
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

class CpuBackend : public Backend {
 public:
  CpuBackend(int n_threads, bool reference, DType weights, bool exact_folded, bool q8, bool bf16_math = false,
             bool int8_math = false)
      : pool_(reference ? 1 : n_threads), reference_(reference), weights_(reference || q8 ? DType::f32 : weights),
        exact_folded_(exact_folded), q8_(q8 && !reference), kernels_(cpu_kernels()),
        bf16_math_(bf16_math && !reference && !q8), math_(bf16_math_ ? cpu_bf16_math_kernels() : nullptr) {
    if (bf16_math_) {  // both operands BF16: every matrix, the gate-scaled ones too
      weights_ = DType::bf16;
      exact_folded_ = false;
    }
    int8_math_ = int8_math && q8_;
    // The VNNI kernel is AVX-512 code: not with a narrower set forced (cpu_int8_math_error).
    int8_ = int8_math_ && &kernels_ == cpu_kernels_avx512() ? cpu_int8_math_kernels() : nullptr;
  }
  const char* name() const override { return reference_ ? "cpu-reference" : "cpu"; }
  DType activation_dtype() const override { return DType::f32; }
  // BF16 and int8 math (opt-in numerics) keep K and V as BF16, half the bytes their
  // attention reads (BF16 math's linears round their inputs the same way); otherwise F32.
  DType kv_dtype() const override { return bf16_math_ || int8_math_ ? DType::bf16 : DType::f32; }
  DType weight_dtype() const override { return weights_; }
  // exact_folded: keep gate-scaled matrices F32 so a BF16 file still runs exactly.
  DType folded_weight_dtype() const override { return exact_folded_ ? DType::f32 : weights_; }
  const char* kernels_name() const { return reference_ ? "reference" : kernels_.name; }

  Status alloc(Tensor& t, DType dtype, int64_t rows, int64_t cols) override {
    if (rows < 0 || cols < 0) return Status::error(Code::invalid_arg, "negative tensor shape");
    t.dtype = dtype;
    t.rows = rows;
    t.cols = cols;
    t.data = host_alloc_zeroed(t.bytes());
    if (!t.data) {
      t = Tensor{};
      return Status::error(Code::out_of_memory,
                           "cannot allocate " + std::to_string(rows * cols * 4) + " bytes");
    }
    return Status::ok();
  }

  void release(Tensor& t) override {
    if (t.data) {
      std::lock_guard<std::mutex> lk(packed_mutex_);
      packed_.erase(t.data);
      host_free(t.data);
    }
    t = Tensor{};
  }

  Status upload_f32(Tensor& t, const float* host, int64_t count) override {
    if (t.dtype == DType::i32 || count != t.numel())
      return Status::error(Code::internal, "upload_f32: size or dtype mismatch");
    if (t.dtype == DType::f32) {
      std::memcpy(t.data, host, size_t(count) * 4);
    } else {
      uint16_t* d = static_cast<uint16_t*>(t.data);
      for (int64_t i = 0; i < count; ++i) d[i] = f32_to_bf16(host[i]);
    }
    return Status::ok();
  }
  Status upload_i32(Tensor& t, const int32_t* host, int64_t count) override {
    if (t.dtype != DType::i32 || count > t.numel())
      return Status::error(Code::internal, "upload_i32: size or dtype mismatch");
    std::memcpy(t.data, host, size_t(count) * 4);
    return Status::ok();
  }
  Status download_f32(const Tensor& t, int64_t row0, int64_t n_rows, float* host) override {
    if (t.dtype == DType::i32 || row0 < 0 || row0 + n_rows > t.rows)
      return Status::error(Code::internal, "download_f32: range or dtype mismatch");
    const PackedInfo* pk = packed_info(t);
    const bool packed = pk != nullptr;
    // Element (r, c): row-major, or inside panel r / 16 at [c][r % 16] when packed (BF16:
    // the kernel set's panel layout, kernels.h).
    auto index = [&](int64_t r, int64_t c) {
      if (!packed) return r * t.cols + c;
      if (t.dtype == DType::bf16)
        return (r / kPanel) * bf16_panel_values(t.cols) + bf16_panel_index(c, int(r % kPanel));
      return (r / kPanel) * kPanel * t.cols + c * kPanel + r % kPanel;
    };
    if (pk && pk->vnni) {
      const uint8_t* u = static_cast<const uint8_t*>(t.data);
      const float* sc = reinterpret_cast<const float*>(static_cast<const char*>(t.data) + vnni_scales_offset(t.rows, t.cols));
      for (int64_t r = row0; r < row0 + n_rows; ++r)
        for (int64_t c = 0; c < t.cols; ++c)
          host[(r - row0) * t.cols + c] =
              float(int(u[(r / kPanel) * vnni_panel_bytes(t.cols) + (c / 4) * 4 * kPanel + (r % kPanel) * 4 + c % 4]) - 128) * sc[r];
      return Status::ok();
    }
    if (pk && pk->q8) {
      const int8_t* q = static_cast<const int8_t*>(t.data);
      const float* sc = reinterpret_cast<const float*>(static_cast<const char*>(t.data) + q8_scales_offset(t.rows, t.cols));
      for (int64_t r = row0; r < row0 + n_rows; ++r)
        for (int64_t c = 0; c < t.cols; ++c) host[(r - row0) * t.cols + c] = float(q[index(r, c)]) * sc[r];
      return Status::ok();
    }
    if (t.dtype == DType::f32 && !packed) {
      // Large copies (the logits of many rows) on all threads: one core does not reach
      // the machine's copy bandwidth.
      const float* src = static_cast<const float*>(t.data) + row0 * t.cols;
      const int64_t count = n_rows * t.cols, chunk = int64_t(1) << 18;
      pool_.parallel_for((count + chunk - 1) / chunk, [&](int64_t c) {
        std::memcpy(host + c * chunk, src + c * chunk, size_t(std::min(chunk, count - c * chunk)) * 4);
      });
      return Status::ok();
    }
    for (int64_t r = row0; r < row0 + n_rows; ++r)
      for (int64_t c = 0; c < t.cols; ++c)
        host[(r - row0) * t.cols + c] = t.dtype == DType::f32
                                            ? static_cast<const float*>(t.data)[index(r, c)]
                                            : bf16_to_f32(static_cast<const uint16_t*>(t.data)[index(r, c)]);
    return Status::ok();
  }
  Status synchronize() override { return Status::ok(); }

  Status prepare_weight(Tensor& W) override {
    if (reference_ || W.dtype == DType::i32) return Status::ok();
    if (packed_info(W)) return Status::ok();
    const bool q8 = q8_ && W.dtype == DType::f32;
    const bool vnni = q8 && int8_math_;
    void* packed = vnni ? pack_vnni(W) : q8 ? pack_q8(W) : pack(W);
    if (!packed) return Status::error(Code::out_of_memory, "cannot allocate packed weight");
    host_free(W.data);
    W.data = packed;
    std::lock_guard<std::mutex> lk(packed_mutex_);
    packed_[W.data] = PackedInfo{W.rows, W.cols, q8, vnni};
    return Status::ok();
  }

  bool takes_q8() const override { return q8_; }
  Status upload_q8(Tensor& W, int64_t rows, int64_t cols, const int8_t* q, const float* scales) override {
    if (!q8_ || rows < 0 || cols < 0) return Status::error(Code::internal, "upload_q8: not an 8-bit backend, or a bad shape");
    void* packed = int8_math_ ? pack_vnni_rows(rows, cols, q, scales) : pack_q8_rows(rows, cols, q, scales);
    if (!packed) return Status::error(Code::out_of_memory, "cannot allocate packed weight");
    W = Tensor{};
    W.dtype = DType::f32;  // as prepare_weight leaves a quantized weight: PackedInfo says q8
    W.rows = rows;
    W.cols = cols;
    W.data = packed;
    std::lock_guard<std::mutex> lk(packed_mutex_);
    packed_[W.data] = PackedInfo{rows, cols, true, int8_math_};
    return Status::ok();
  }

  Status embed(const Tensor& table, const Tensor& tokens, Tensor& x) override {
    const int64_t d = table.cols;
    if (x.cols != d || x.rows < tokens.rows) return Status::error(Code::internal, "embed: shape");
    const int32_t* tok = static_cast<const int32_t*>(tokens.data);
    float* out = static_cast<float*>(x.data);
    for (int64_t r = 0; r < tokens.rows; ++r) {
      int32_t t = tok[r];
      if (t < 0 || t >= table.rows) return Status::error(Code::invalid_arg, "token id out of range");
      if (table.dtype == DType::f32) {
        std::memcpy(out + r * d, static_cast<const float*>(table.data) + int64_t(t) * d, size_t(d) * 4);
      } else {
        const uint16_t* src = static_cast<const uint16_t*>(table.data) + int64_t(t) * d;
        for (int64_t i = 0; i < d; ++i) out[r * d + i] = bf16_to_f32(src[i]);
      }
    }
    return Status::ok();
  }

  Status layernorm(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y) override {
    if (reference_) return layernorm_reference(x, w, b, y);
    const int64_t d = x.cols, rows = x.rows;
    const float* xp = static_cast<const float*>(x.data);
    const float* wp = static_cast<const float*>(w.data);
    const float* bp = b.empty() ? nullptr : static_cast<const float*>(b.data);
    float* yp = static_cast<float*>(y.data);
    const int64_t chunk = 16;
    pool_.parallel_for((rows + chunk - 1) / chunk, [&](int64_t c) {
      for (int64_t r = c * chunk; r < std::min(rows, (c + 1) * chunk); ++r) layernorm_row(xp + r * d, d, wp, bp, yp + r * d);
    });
    return Status::ok();
  }

  Status linear(const Tensor& in, const Tensor& W, const Tensor& bias, Tensor& out,
                Epilogue ep) override {
    if (in.cols != W.cols || out.cols != W.rows || out.rows < in.rows)
      return Status::error(Code::internal, "linear: shape mismatch");
    if (reference_) return linear_reference(in, W, bias, out, ep);
    if (bf16_math_ && W.dtype == DType::bf16) return linear_bf16_math(in, W, bias, out, ep);
    const PackedInfo* pk = packed_info(W);
    if (pk && pk->vnni) return linear_int8_math(in, W, bias, out, ep);
    void* tmp = nullptr;
    const void* panels = W.data;
    if (!pk) {
      tmp = pack(W);
      if (!tmp) return Status::error(Code::out_of_memory, "cannot pack weight");
      panels = tmp;
    }
    const bool bf16 = W.dtype == DType::bf16;
    const bool q8 = pk && pk->q8;
    const float* scales = q8 ? reinterpret_cast<const float*>(static_cast<const char*>(panels) + q8_scales_offset(W.rows, W.cols)) : nullptr;
    const int64_t n = W.rows, k = W.cols, rows = in.rows;
    const int64_t n_panels = (n + kPanel - 1) / kPanel;
    // Tasks: for_each_linear_task. Few rows: pairs of panels per kernel call; from 16 rows
    // (batched steps, long forwards) the whole group in one call (the 4-panel x 6-row tile:
    // at 16 and 32 rows a batched step ran 8-11% faster than on two-panel tiles, Zen 4,
    // bench/forward.mjs --batches 4,16). Every tile keeps each output's FMA order.
    const int64_t panels_per_call = rows >= 16 ? 4 : 2;
    const float* a = static_cast<const float*>(in.data);
    float* c = static_cast<float*>(out.data);
    const float* bp = bias.empty() ? nullptr : static_cast<const float*>(bias.data);
    for_each_linear_task(rows, n_panels, 1, [&](int64_t r0, int64_t r1, int64_t p_begin, int64_t p_end) {
      for (int64_t p = p_begin; p < p_end; p += panels_per_call) {
        GemmPanelArgs args;
        args.n_panels = int(std::min(panels_per_call, p_end - p));  // see GemmPanelArgs
        args.panel_stride = bf16 ? bf16_panel_values(k) : kPanel * k;
        args.a = a + r0 * k;
        args.lda = k;
        args.rows = r1 - r0;
        if (q8) {
          args.panel = nullptr;
          args.panel_q8 = static_cast<const int8_t*>(panels) + p * kPanel * k;
          args.col_scale = scales + p * kPanel;
        } else if (bf16) {
          args.panel = nullptr;
          args.panel_bf16 = static_cast<const uint16_t*>(panels) + p * args.panel_stride;
        } else {
          args.panel = static_cast<const float*>(panels) + p * kPanel * k;
        }
        args.k = int(k);
        args.c = c + r0 * out.cols + p * kPanel;
        args.ldc = out.cols;
        args.ncols = int(std::min<int64_t>(args.n_panels * kPanel, n - p * kPanel));
        args.bias = bp ? bp + p * kPanel : nullptr;
        args.ep = epilogue_kind(ep);
        kernels_.gemm_panel(args);
      }
    });
    host_free(tmp);
    return Status::ok();
  }

  Status rope_qkv_store(const Tensor& qkv, const Tensor& positions, int batch, int n, int n_heads,
                        int slot0, int capacity, Tensor& q_out, Tensor& k_cache,
                        Tensor& v_cache) override {
    ESOLM_TRY(check_kv_dtypes(k_cache, v_cache));
    if (reference_)
      return rope_qkv_store_reference(qkv, positions, batch, n, n_heads, slot0, capacity, q_out, k_cache, v_cache);
    return rope_store_rows(qkv, positions, batch, n, n, n_heads, slot0, capacity, q_out, k_cache, v_cache);
  }

  Status attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                   const AttnParams& p, Tensor& out) override {
    ESOLM_TRY(check_kv_dtypes(k_cache, v_cache));
    if (p.loop_state) return attention_loop(q, k_cache, v_cache, p, out);
    if (reference_) return attention_reference(q, k_cache, v_cache, p, out);
    attention_rows(q, k_cache, v_cache, p, p.n_q, out);
    return Status::ok();
  }

  // K and V caches: both F32, or both BF16 where kv_dtype() says so (BF16 and int8 math;
  // never the reference, whose ops read F32).
  Status check_kv_dtypes(const Tensor& k_cache, const Tensor& v_cache) const {
    const DType want = kv_dtype();
    if (k_cache.dtype != want || v_cache.dtype != want)
      return Status::error(Code::internal, want == DType::bf16 ? "K and V caches must both be BF16 (BF16 or int8 math)"
                                                               : "K and V caches must both be F32");
    return Status::ok();
  }

  // attention() for p.n_q query rows of each sequence, whose rows in q and out start
  // seq_rows apart (p.n_q, or a batched loop step's padded window), in one pool call.
  void attention_rows(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const AttnParams& p,
                      int64_t seq_rows, Tensor& out) {
    const int d = p.n_heads * p.head_dim;
    // One task per (sequence, head): K and V are packed once and reused by every row. A
    // few rows (a cached step) take a group of heads per task instead, one task per thread:
    // their K and V rows then lie side by side (see kernels_avx512.cpp), and each thread
    // reads one wide run of every cache row (two tasks per thread, each half as wide, ran
    // the step's attention ~8% slower).
    const int group = p.n_q <= 8 ? std::min(kAttnMaxGroupHeads, std::max(1, p.n_heads / pool_.size())) : 1;
    const int groups = (p.n_heads + group - 1) / group;
    const int64_t tasks = int64_t(p.batch) * groups;
    const size_t scratch_floats = kernels_.attn_scratch_floats(p.n_kv, p.head_dim);
    const float* qp = static_cast<const float*>(q.data);
    const bool kv16 = k_cache.dtype == DType::bf16;  // kv_dtype (attention() checked both)
    const float* kp = kv16 ? nullptr : static_cast<const float*>(k_cache.data);
    const float* vp = kv16 ? nullptr : static_cast<const float*>(v_cache.data);
    const uint16_t* kp16 = kv16 ? static_cast<const uint16_t*>(k_cache.data) : nullptr;
    const uint16_t* vp16 = kv16 ? static_cast<const uint16_t*>(v_cache.data) : nullptr;
    const int32_t* clean = p.clean ? static_cast<const int32_t*>(p.clean->data) : nullptr;
    float* op = static_cast<float*>(out.data);
    pool_.parallel_for(tasks, [&](int64_t t) {
      thread_local std::vector<float> buf;
      if (buf.size() < scratch_floats) buf.resize(scratch_floats);
      const int h = int(t % groups) * group;
      const int b = int(t / groups);
      AttnRowsArgs a;
      a.heads = std::min(group, p.n_heads - h);
      a.q = qp + (int64_t(b) * seq_rows) * d + h * p.head_dim;
      a.q_stride = d;
      const int64_t kv0 = int64_t(b) * p.capacity * d + h * p.head_dim;
      if (kv16) {
        a.k = a.v = nullptr;
        a.k16 = kp16 + kv0;
        a.v16 = vp16 + kv0;
      } else {
        a.k = kp + kv0;
        a.v = vp + kv0;
      }
      a.kv_stride = d;
      a.out = op + (int64_t(b) * seq_rows) * d + h * p.head_dim;
      a.out_stride = d;
      a.head_dim = p.head_dim;
      a.r0 = 0;
      a.r1 = p.n_q;
      a.q_slot0 = p.q_slot0;
      a.n_kv = p.n_kv;
      a.mode = int(p.mode);
      a.clean = clean ? clean + int64_t(b) * p.capacity : nullptr;
      a.scale = float(1.0 / std::sqrt(double(p.head_dim)));
      a.scratch = buf.data();
      kernels_.attn_rows(a);
    });
  }

  Status sample_rows(const Tensor& logits, int64_t rows, const SampleParams& p, const DrawKey* keys,
                     int32_t* out) override {
    if (logits.dtype != DType::f32 || rows > logits.rows)
      return Status::error(Code::internal, "sample_rows: logits must be F32 with enough rows");
    const float* lg = static_cast<const float*>(logits.data);
    const int vocab = int(logits.cols);
    pool_.parallel_for(rows, [&](int64_t i) { out[i] = sample_row(lg + i * vocab, vocab, p, keys[i]); });
    return Status::ok();
  }

  // ---- planned KV loop: the state lives in host memory, so these read it directly.
  bool supports_kv_loop() const override { return true; }
  Status loop_begin_step(LoopTensors& lt, int batch, int length, int n_pad, int k_pad) override {
    return loop_begin_step_host(lt, batch, length, n_pad, k_pad);
  }
  Status loop_end_step(LoopTensors& lt, int batch, int length, int k_pad) override {
    return loop_end_step_host(lt, batch, length, k_pad);
  }
  Status rope_qkv_store_loop(const Tensor& qkv, const Tensor& positions, int batch, int n_pad,
                             int n_heads, int capacity, const Tensor& state, Tensor& q_out,
                             Tensor& k_cache, Tensor& v_cache) override {
    int slot0 = 0, n = 0;
    ESOLM_TRY(read_loop_state(state, n_pad, capacity, slot0, n));
    if (qkv.rows < int64_t(batch) * n_pad || positions.numel() < int64_t(batch) * n_pad ||
        q_out.rows < int64_t(batch) * n_pad || k_cache.rows < int64_t(batch) * capacity ||
        v_cache.rows < int64_t(batch) * capacity)
      return Status::error(Code::invalid_arg, "rope_qkv_store_loop: shapes");
    ESOLM_TRY(check_kv_dtypes(k_cache, v_cache));
    if (reference_) {  // sequence by sequence: the window rows of sequence b start at row b * n_pad
      for (int b = 0; b < batch; ++b) {
        Tensor qv = row_slice(q_out, int64_t(b) * n_pad, n_pad);
        Tensor kv = row_slice(k_cache, int64_t(b) * capacity, capacity);
        Tensor vv = row_slice(v_cache, int64_t(b) * capacity, capacity);
        ESOLM_TRY(rope_qkv_store(row_slice(qkv, int64_t(b) * n_pad, n), row_slice(positions, int64_t(b) * n_pad, n),
                                 1, n, n_heads, slot0, capacity, qv, kv, vv));
      }
      return Status::ok();
    }
    return rope_store_rows(qkv, positions, batch, n, n_pad, n_heads, slot0, capacity, q_out, k_cache, v_cache);
  }
  Status sample_rows_to(const Tensor& logits, int64_t rows, const SampleParams& p, const Tensor& keys,
                        Tensor& out) override {
    if (keys.dtype != DType::i32 || keys.numel() < rows * 3 || out.dtype != DType::i32 || out.numel() < rows)
      return Status::error(Code::invalid_arg, "sample_rows_to: keys must be I32 [rows, 3], out I32 [rows]");
    return sample_rows(logits, rows, p, static_cast<const DrawKey*>(keys.data), static_cast<int32_t*>(out.data));
  }
  Status download_i32_async(const Tensor& t, int64_t count, int32_t* host) override {
    if (t.dtype != DType::i32 || count < 0 || count > t.numel())
      return Status::error(Code::invalid_arg, "download_i32_async: I32 tensor with >= count values");
    if (count) std::memcpy(host, t.data, size_t(count) * sizeof(int32_t));
    return Status::ok();
  }

  Status gather_rows(const Tensor& x, const Tensor& index, Tensor& out) override {
    const int32_t* idx = static_cast<const int32_t*>(index.data);
    const size_t row_bytes = size_t(x.cols) * dtype_size(x.dtype);
    for (int64_t i = 0; i < index.rows; ++i) {
      if (idx[i] < 0 || idx[i] >= x.rows) return Status::error(Code::internal, "gather_rows: index");
      std::memcpy(static_cast<char*>(out.data) + i * row_bytes,
                  static_cast<const char*>(x.data) + idx[i] * row_bytes, row_bytes);
    }
    return Status::ok();
  }

 private:
  static constexpr int64_t kRopeRows = 32;  // rows per rope_qkv_store task

  // rope_qkv_store of the n rows of each of `batch` sequences whose rows in qkv, positions and
  // q_out start seq_rows apart (n, or a loop step's padded window n_pad): the reference's
  // arithmetic (rope_rows.h), blocks of at most kRopeRows rows of one sequence in parallel
  // (each row's result is the same whatever block it falls in). The angle table is grown
  // here, before any task reads it without the lock.
  Status rope_store_rows(const Tensor& qkv, const Tensor& positions, int batch, int n, int64_t seq_rows, int n_heads,
                         int slot0, int capacity, Tensor& q_out, Tensor& k_cache, Tensor& v_cache) {
    if (slot0 < 0 || slot0 + n > capacity) return Status::error(Code::internal, "rope_qkv_store: slots out of range");
    const int64_t d = qkv.cols / 3;
    const int hd = int(d / n_heads);
    const float* src = static_cast<const float*>(qkv.data);
    const int32_t* pos = static_cast<const int32_t*>(positions.data);
    float* qo = static_cast<float*>(q_out.data);
    // A BF16 cache (kv_dtype; the callers checked both) takes each row's K and V rounded to
    // nearest even.
    const bool kv16 = k_cache.dtype == DType::bf16;
    float* kc = kv16 ? nullptr : static_cast<float*>(k_cache.data);
    float* vc = kv16 ? nullptr : static_cast<float*>(v_cache.data);
    uint16_t* kc16 = kv16 ? static_cast<uint16_t*>(k_cache.data) : nullptr;
    uint16_t* vc16 = kv16 ? static_cast<uint16_t*>(v_cache.data) : nullptr;
    int32_t max_pos = -1;
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t i = 0; i < n; ++i)
        if (pos[b * seq_rows + i] < kRopeTablePositions) max_pos = std::max(max_pos, pos[b * seq_rows + i]);
    const double* table = max_pos >= 0 ? rope_table_through(max_pos, hd) : nullptr;
    const int64_t blocks = (n + kRopeRows - 1) / kRopeRows;
    auto task = [&](int64_t t) {
      const int64_t b = t / blocks, i0 = (t % blocks) * kRopeRows, i1 = std::min<int64_t>(n, i0 + kRopeRows);
      std::vector<double> angles;  // for positions outside the table
      thread_local std::vector<float> kv_row;  // a BF16 cache's row before rounding (this thread's)
      if (kv16) kv_row.resize(size_t(2 * d));
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t row = b * seq_rows + i, slot = b * capacity + slot0 + i;
        const double* a;
        if (pos[row] >= 0 && pos[row] < kRopeTablePositions) {
          a = table + size_t(pos[row]) * hd;
        } else {
          angles.resize(size_t(hd));
          rope_angles(pos[row], hd, angles.data(), angles.data() + hd / 2);
          a = angles.data();
        }
        if (!kv16) {
          rope_row(src + row * 3 * d, d, n_heads, hd, a, a + hd / 2, qo + row * d, kc + slot * d, vc + slot * d);
          continue;
        }
        rope_row(src + row * 3 * d, d, n_heads, hd, a, a + hd / 2, qo + row * d, kv_row.data(), kv_row.data() + d);
        for (int64_t j = 0; j < d; ++j) {
          kc16[slot * d + j] = f32_to_bf16(kv_row[size_t(j)]);
          vc16[slot * d + j] = f32_to_bf16(kv_row[size_t(d + j)]);
        }
      }
    };
    pool_.parallel_for(int64_t(batch) * blocks, task);  // one task (a single step's rows) runs here
    return Status::ok();
  }

  static Status read_loop_state(const Tensor& state, int n_pad, int capacity, int& slot0, int& n) {
    if (state.dtype != DType::i32 || state.numel() < kLoopFields)
      return Status::error(Code::invalid_arg, "loop state must be I32 [1, kLoopFields]");
    const int32_t* st = static_cast<const int32_t*>(state.data);
    slot0 = st[kLoopSlot0];
    n = st[kLoopN];
    if (n < 1 || n > n_pad || slot0 < 0 || slot0 + n > capacity)
      return Status::error(Code::invalid_arg, "loop state: window outside [1, n_pad] or over capacity");
    return Status::ok();
  }
  // attention() with p.loop_state: the real window (slot0, n) from the state, rows >= n zero.
  Status attention_loop(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const AttnParams& p,
                        Tensor& out) {
    if (p.mode != AttnMode::causal) return Status::error(Code::invalid_arg, "attention: loop_state needs causal mode");
    int slot0 = 0, n = 0;
    ESOLM_TRY(read_loop_state(*p.loop_state, p.n_q, p.capacity, slot0, n));
    const int64_t d = int64_t(p.n_heads) * p.head_dim;
    if (q.rows < int64_t(p.batch) * p.n_q || out.rows < int64_t(p.batch) * p.n_q || out.cols != d ||
        out.dtype != DType::f32 || k_cache.rows < int64_t(p.batch) * p.capacity ||
        v_cache.rows < int64_t(p.batch) * p.capacity)
      return Status::error(Code::invalid_arg, "attention: shapes");
    // The n live rows of every sequence's window in one pool call (a call per sequence
    // left a batch-4 step's threads waiting on each other four times per layer); the
    // window's padding rows get zeros.
    AttnParams live = p;
    live.loop_state = nullptr;
    live.n_q = n;
    live.q_slot0 = slot0;
    live.n_kv = slot0 + n;
    if (reference_) {
      for (int b = 0; b < p.batch; ++b) {
        live.batch = 1;
        Tensor on = row_slice(out, int64_t(b) * p.n_q, n);
        ESOLM_TRY(attention_reference(row_slice(q, int64_t(b) * p.n_q, n), row_slice(k_cache, int64_t(b) * p.capacity, p.capacity),
                                      row_slice(v_cache, int64_t(b) * p.capacity, p.capacity), live, on));
      }
    } else {
      attention_rows(q, k_cache, v_cache, live, p.n_q, out);
    }
    for (int b = 0; b < p.batch; ++b)
      std::memset(static_cast<float*>(out.data) + (int64_t(b) * p.n_q + n) * d, 0, size_t(p.n_q - n) * size_t(d) * sizeof(float));
    return Status::ok();
  }
  // rope_angles() of positions [0, kRopeTablePositions), computed once per head size: a
  // step would otherwise evaluate pow, cos and sin for every row of every block.
  static constexpr int kRopeTablePositions = 1 << 16;
  // The table for head size hd, grown (to a power of two) past position max_pos, which
  // must be below kRopeTablePositions. Called by the op's own thread before its tasks read
  // rows [0, max_pos] without the lock (the addon runs one op of a model at a time).
  const double* rope_table_through(int32_t max_pos, int hd) {
    std::lock_guard<std::mutex> lk(rope_mutex_);
    if (rope_hd_ != hd) {
      rope_hd_ = hd;
      rope_rows_ = 0;
      rope_table_.clear();
    }
    if (max_pos >= rope_rows_) {
      int rows = std::max(rope_rows_, 1024);
      while (rows <= max_pos) rows *= 2;
      rope_table_.resize(size_t(rows) * hd);
      for (int r = rope_rows_; r < rows; ++r)
        rope_angles(r, hd, &rope_table_[size_t(r) * hd], &rope_table_[size_t(r) * hd + hd / 2]);
      rope_rows_ = rows;
    }
    return rope_table_.data();
  }

  // linear() with BF16 math (kernels.h): the input rows rounded to BF16 pairs once, then
  // tasks of (a group of panels x a block of rows) as in linear(), each one kernel call.
  Status linear_bf16_math(const Tensor& in, const Tensor& W, const Tensor& bias, Tensor& out, Epilogue ep) {
    if (!math_ || &kernels_ != cpu_kernels_avx512())
      return Status::error(Code::invalid_arg, cpu_bf16_math_error() ? cpu_bf16_math_error() : "BF16 math is unavailable");
    const PackedInfo* pk = packed_info(W);
    void* tmp = nullptr;
    const void* panels = W.data;
    if (!pk) {
      tmp = pack(W);
      if (!tmp) return Status::error(Code::out_of_memory, "cannot pack weight");
      panels = tmp;
    }
    const int64_t n = W.rows, k = W.cols, rows = in.rows, k2 = (k + 1) / 2 * 2;
    // The pool runs one parallel_for at a time anyway: one caller at a time owns the buffer.
    std::lock_guard<std::mutex> lk(math_rows_mutex_);
    if (math_rows_.size() < size_t(rows * k2)) math_rows_.resize(size_t(rows * k2));
    uint16_t* a16 = math_rows_.data();
    const float* a = static_cast<const float*>(in.data);
    constexpr int64_t kConvertRows = 16;
    pool_.parallel_for((rows + kConvertRows - 1) / kConvertRows, [&](int64_t t) {
      for (int64_t r = t * kConvertRows; r < std::min(rows, (t + 1) * kConvertRows); ++r)
        math_->to_bf16_pairs(a + r * k, int(k), a16 + r * k2);
    });
    const int64_t panel_values = bf16_panel_values(k);
    const int64_t n_panels = (n + kPanel - 1) / kPanel;
    constexpr int64_t kTileRows = 8;  // row blocks of whole kernel tiles
    float* c = static_cast<float*>(out.data);
    const float* bp = bias.empty() ? nullptr : static_cast<const float*>(bias.data);
    for_each_linear_task(rows, n_panels, kTileRows, [&](int64_t r0, int64_t r1, int64_t p0, int64_t p1) {
      GemmBf16Args args;
      args.a = a16 + r0 * k2;
      args.lda = k2;
      args.rows = r1 - r0;
      args.panel = static_cast<const uint16_t*>(panels) + p0 * panel_values;
      args.panel_stride = panel_values;
      args.n_panels = int(p1 - p0);
      args.k = int(k);
      args.c = c + r0 * out.cols + p0 * kPanel;
      args.ldc = out.cols;
      args.ncols = int(std::min(n, p1 * kPanel) - p0 * kPanel);
      args.bias = bp ? bp + p0 * kPanel : nullptr;
      args.ep = epilogue_kind(ep);
      math_->gemm(args);
    });
    host_free(tmp);
    return Status::ok();
  }

  // linear() with int8 math (kernels.h) on a VNNI-packed weight: the input rows quantized
  // once (per row: blocks of int8, their scales and corrections), then tasks of (a group of
  // panels x a block of rows) as in linear(), each one kernel call.
  Status linear_int8_math(const Tensor& in, const Tensor& W, const Tensor& bias, Tensor& out, Epilogue ep) {
    if (!int8_)
      return Status::error(Code::invalid_arg, cpu_int8_math_error() ? cpu_int8_math_error() : "int8 math is unavailable");
    const int64_t n = W.rows, k = W.cols, rows = in.rows;
    const int64_t blocks = (k + kInt8Block - 1) / kInt8Block, lda = blocks * kInt8Block;
    // The pool runs one parallel_for at a time anyway: one caller at a time owns the buffers.
    std::lock_guard<std::mutex> lk(math_rows_mutex_);
    std::vector<int8_t>& qbuf = int8_rows_;
    std::vector<float>& sbuf = int8_scales_;
    std::vector<int32_t>& cbuf = int8_corrections_;
    if (qbuf.size() < size_t(rows * lda)) qbuf.resize(size_t(rows * lda));
    if (sbuf.size() < size_t(rows * blocks)) sbuf.resize(size_t(rows * blocks));
    if (cbuf.size() < size_t(rows * blocks)) cbuf.resize(size_t(rows * blocks));
    int8_t* qa = qbuf.data();
    float* sa = sbuf.data();
    int32_t* ca = cbuf.data();
    const float* a = static_cast<const float*>(in.data);
    constexpr int64_t kConvertRows = 16;
    pool_.parallel_for((rows + kConvertRows - 1) / kConvertRows, [&](int64_t t) {
      for (int64_t r = t * kConvertRows; r < std::min(rows, (t + 1) * kConvertRows); ++r)
        int8_->quantize_row(a + r * k, int(k), qa + r * lda, sa + r * blocks, ca + r * blocks);
    });
    const uint8_t* panels = static_cast<const uint8_t*>(W.data);
    const float* scales = reinterpret_cast<const float*>(static_cast<const char*>(W.data) + vnni_scales_offset(n, k));
    const int64_t panel_bytes = vnni_panel_bytes(k);
    const int64_t n_panels = (n + kPanel - 1) / kPanel;
    float* c = static_cast<float*>(out.data);
    const float* bp = bias.empty() ? nullptr : static_cast<const float*>(bias.data);
    // Row blocks of up to 120 rows: a multiple of the kernel's 6- and 12-row tiles.
    for_each_linear_task(rows, n_panels, 1, [&](int64_t r0, int64_t r1, int64_t p0, int64_t p1) {
      GemmInt8Args args;
      args.a = qa + r0 * lda;
      args.lda = lda;
      args.a_scale = sa + r0 * blocks;
      args.a_corr = ca + r0 * blocks;
      args.ld_blocks = blocks;
      args.rows = r1 - r0;
      args.panel = panels + p0 * panel_bytes;
      args.panel_stride = panel_bytes;
      args.n_panels = int(p1 - p0);
      args.k = int(k);
      args.col_scale = scales + p0 * kPanel;
      args.c = c + r0 * out.cols + p0 * kPanel;
      args.ldc = out.cols;
      args.ncols = int(std::min(n, p1 * kPanel) - p0 * kPanel);
      args.bias = bp ? bp + p0 * kPanel : nullptr;
      args.ep = epilogue_kind(ep);
      int8_->gemm(args);
    });
    return Status::ok();
  }

  // The task split of every linear(): task = a group of panels x a block of rows.
  // Many rows: a row block (<= 120 rows, rounded up to whole `tile_rows`) stays in L2 while
  // it meets every panel of a 4-panel group; consecutive tasks share the group's panels,
  // which then stay in L2 too. Few rows (cached steps, bound by the weight stream): groups
  // of 4 panels handed out by parallel_for_shares, so that each thread streams one
  // contiguous run of the matrix (8-panel groups dealt to whichever thread came next made
  // a generation 2-4% slower: each jump restarts the prefetch).
  // fn(r0, r1, p0, p1) runs rows [r0, r1) against panels [p0, p1) on the pool.
  template <class Fn>
  void for_each_linear_task(int64_t rows, int64_t n_panels, int64_t tile_rows, const Fn& fn) {
    constexpr int64_t kRowBlock = 120, kFewRows = 64;
    const int64_t panels_per_task = 4;
    const int64_t n_groups = (n_panels + panels_per_task - 1) / panels_per_task;
    auto group = [&](int64_t g, int64_t r0, int64_t r1) {
      const int64_t p0 = g * panels_per_task, p1 = std::min(n_panels, p0 + panels_per_task);
      if (r0 < r1) fn(r0, r1, p0, p1);
    };
    if (rows < kFewRows) {
      pool_.parallel_for_shares(n_groups, [&](int64_t g) { group(g, 0, rows); });
      return;
    }
    const int64_t row_split = (rows + kRowBlock - 1) / kRowBlock;
    const int64_t rows_per = ((rows + row_split - 1) / row_split + tile_rows - 1) / tile_rows * tile_rows;
    pool_.parallel_for(n_groups * row_split, [&](int64_t task) {
      const int64_t g = task / row_split, rs = task % row_split;
      const int64_t r0 = rs * rows_per;
      group(g, r0, std::min(rows, r0 + rows_per));
    });
  }
  static EpilogueKind epilogue_kind(Epilogue ep) {
    return ep == Epilogue::store ? EpilogueKind::store : ep == Epilogue::gelu ? EpilogueKind::gelu : EpilogueKind::add_to;
  }

  const PackedInfo* packed_info(const Tensor& t) {
    std::lock_guard<std::mutex> lk(packed_mutex_);
    auto it = packed_.find(t.data);
    return it == packed_.end() ? nullptr : &it->second;
  }

  // W [n, k] -> ceil(n/16) panels of W's dtype, zero-padded: [k][16], or BF16 in the
  // kernel set's layout (kernels.h).
  template <class T>
  void pack_into(const Tensor& W, T* out) {
    const int64_t n = W.rows, k = W.cols, n_panels = (n + kPanel - 1) / kPanel;
    const bool bf16 = W.dtype == DType::bf16;
    const int64_t panel_values = bf16 ? bf16_panel_values(k) : kPanel * k;
    const T* w = static_cast<const T*>(W.data);
    pool_.parallel_for(n_panels, [&](int64_t p) {
      T* dst = out + p * panel_values;
      for (int j = 0; j < kPanel && p * kPanel + j < n; ++j) {
        const T* src = w + (p * kPanel + j) * k;
        if (bf16)
          for (int64_t kk = 0; kk < k; ++kk) dst[bf16_panel_index(kk, j)] = src[kk];
        else
          for (int64_t kk = 0; kk < k; ++kk) dst[kk * kPanel + j] = src[kk];
      }
    });
  }
  // W [n, k] F32 -> Q8 panels and per-row scales (layout: q8_scales_offset).
  void* pack_q8(const Tensor& W) {
    const int64_t n = W.rows, k = W.cols, n_panels = (n + kPanel - 1) / kPanel;
    const size_t off = q8_scales_offset(n, k);
    char* out = static_cast<char*>(host_alloc_zeroed(off + size_t(n_panels * kPanel) * sizeof(float)));
    if (!out) return nullptr;
    const float* w = static_cast<const float*>(W.data);
    int8_t* q = reinterpret_cast<int8_t*>(out);
    float* sc = reinterpret_cast<float*>(out + off);
    pool_.parallel_for(n_panels, [&](int64_t p) {
      int8_t* dst = q + p * kPanel * k;
      for (int j = 0; j < kPanel && p * kPanel + j < n; ++j) {
        sc[p * kPanel + j] = q8_quantize_row(w + (p * kPanel + j) * k, k, dst + j, kPanel);
      }
    });
    return out;
  }
  // int8 rows q [n, k] and n scales -> Q8 panels and scales (layout: q8_scales_offset).
  void* pack_q8_rows(int64_t n, int64_t k, const int8_t* q, const float* scales) {
    const int64_t n_panels = (n + kPanel - 1) / kPanel;
    const size_t off = q8_scales_offset(n, k);
    char* out = static_cast<char*>(host_alloc_zeroed(off + size_t(n_panels * kPanel) * sizeof(float)));
    if (!out) return nullptr;
    int8_t* dst = reinterpret_cast<int8_t*>(out);
    pool_.parallel_for(n_panels, [&](int64_t p) {
      int8_t* panel = dst + p * kPanel * k;
      for (int j = 0; j < kPanel && p * kPanel + j < n; ++j) {
        const int8_t* src = q + (p * kPanel + j) * k;
        for (int64_t kk = 0; kk < k; ++kk) panel[kk * kPanel + j] = src[kk];
      }
    });
    std::memcpy(out + off, scales, size_t(n) * sizeof(float));
    return out;
  }
  // W [n, k] F32 -> VNNI panels (q8 rule, engine/q8.h; stored as q + 128) and row scales.
  void* pack_vnni(const Tensor& W) {
    const int64_t n = W.rows, k = W.cols;
    std::vector<int8_t> q(static_cast<size_t>(n * k));
    std::vector<float> sc(static_cast<size_t>(n));
    const float* w = static_cast<const float*>(W.data);
    pool_.parallel_for(n, [&](int64_t r) { sc[size_t(r)] = q8_quantize_row(w + r * k, k, &q[size_t(r * k)], 1); });
    return pack_vnni_rows(n, k, q.data(), sc.data());
  }
  // int8 rows q [n, k] and n scales -> VNNI panels and scales (layout: vnni_scales_offset).
  void* pack_vnni_rows(int64_t n, int64_t k, const int8_t* q, const float* scales) {
    const int64_t n_panels = (n + kPanel - 1) / kPanel, panel_bytes = vnni_panel_bytes(k);
    const size_t off = vnni_scales_offset(n, k);
    char* out = static_cast<char*>(host_alloc_zeroed(off + size_t(n_panels * kPanel) * sizeof(float)));
    if (!out) return nullptr;
    uint8_t* dst = reinterpret_cast<uint8_t*>(out);
    pool_.parallel_for(n_panels, [&](int64_t p) {
      uint8_t* panel = dst + p * panel_bytes;
      std::memset(panel, 128, size_t(panel_bytes));  // q = 0 past k and past n
      for (int j = 0; j < kPanel && p * kPanel + j < n; ++j) {
        const int8_t* src = q + (p * kPanel + j) * k;
        for (int64_t kk = 0; kk < k; ++kk) panel[(kk / 4) * 4 * kPanel + 4 * j + kk % 4] = uint8_t(int(src[kk]) + 128);
      }
    });
    std::memcpy(out + off, scales, size_t(n) * sizeof(float));
    return out;
  }
  void* pack(const Tensor& W) {
    const int64_t n_panels = (W.rows + kPanel - 1) / kPanel;
    const int64_t panel_values = W.dtype == DType::bf16 ? bf16_panel_values(W.cols) : kPanel * W.cols;
    void* out = host_alloc_zeroed(size_t(n_panels * panel_values) * dtype_size(W.dtype));
    if (!out) return nullptr;
    if (W.dtype == DType::bf16) pack_into(W, static_cast<uint16_t*>(out));
    else pack_into(W, static_cast<float*>(out));
    return out;
  }

  ThreadPool pool_;
  bool reference_;
  DType weights_;
  bool exact_folded_;
  bool q8_;
  const CpuKernels& kernels_;
  bool bf16_math_;                    // linear() on BF16 matrices runs linear_bf16_math
  const CpuBf16MathKernels* math_;    // null when bf16_math_ is off or the CPU lacks it
  std::mutex math_rows_mutex_;        // guards the math modes' input buffers below
  std::vector<uint16_t> math_rows_;   // linear_bf16_math's rounded input rows, reused
  std::vector<int8_t> int8_rows_;     // linear_int8_math's quantized input rows, reused,
  std::vector<float> int8_scales_;    // their block scales
  std::vector<int32_t> int8_corrections_;  // and block corrections (kernels.h)
  bool int8_math_ = false;             // 8-bit weights packed as VNNI panels, linear() runs linear_int8_math
  const CpuInt8MathKernels* int8_ = nullptr;  // null when int8_math_ is off or it cannot run here
  std::mutex packed_mutex_;
  std::unordered_map<const void*, PackedInfo> packed_;
  std::mutex rope_mutex_;
  int rope_hd_ = 0, rope_rows_ = 0;
  std::vector<double> rope_table_;  // [rope_rows_][hd]: cos of the half, then sin
};

}  // namespace

std::unique_ptr<Backend> create_cpu_backend(int n_threads, DType weights, bool exact_folded, bool q8, bool bf16_math,
                                            bool int8_math) {
  return std::unique_ptr<Backend>(new (std::nothrow) CpuBackend(n_threads, false, weights, exact_folded, q8, bf16_math,
                                                                int8_math));
}

std::unique_ptr<Backend> create_cpu_reference_backend() {
  return std::unique_ptr<Backend>(new (std::nothrow) CpuBackend(1, true, DType::f32, true, false));
}

const char* cpu_kernels_in_use() { return cpu_kernels().name; }

std::string cpu_kernels_available() {
  std::string s;
  for (const CpuKernels* k : {cpu_kernels_avx512(), cpu_kernels_avx2(), &cpu_kernels_portable()})
    if (k) s += (s.empty() ? "" : " ") + std::string(k->name);
  return s;
}

const char* cpu_kernels_error() {
  const char* why = nullptr;
  return cpu_kernels_choice(&why) ? nullptr : why;
}

const char* cpu_bf16_math_error() {
  if (!cpu_bf16_math_kernels())
    return "BF16 math (math: 'bf16') needs a CPU with AVX512_BF16 (vdpbf16ps); this CPU (or this build) has none";
  const char* why = nullptr;
  const CpuKernels* k = cpu_kernels_choice(&why);
  if (!k) return why;
  if (k != cpu_kernels_avx512())
    return "BF16 math (math: 'bf16') runs with the avx512 kernel set; ESOLM_CPU_KERNELS forces another";
  return nullptr;
}

const char* cpu_int8_math_error() {
  if (!cpu_int8_math_kernels())
    return "int8 math (math: 'int8') needs a CPU with AVX512_VNNI (vpdpbusd); this CPU (or this build) has none";
  const char* why = nullptr;
  const CpuKernels* k = cpu_kernels_choice(&why);
  if (!k) return why;
  if (k != cpu_kernels_avx512()) return "int8 math (math: 'int8') runs with the avx512 kernel set; ESOLM_CPU_KERNELS forces another";
  return nullptr;
}

const char* cpu_backend_kernels(const Backend& be) {
  const auto* c = dynamic_cast<const CpuBackend*>(&be);
  return c ? c->kernels_name() : "";
}

}  // namespace esolm
