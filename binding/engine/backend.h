// backend.h — the one interface between the engine and a compute device.
//
// The model's forward pass (model.cpp), the cache rules and the generate loop are
// written once against this interface; cpu/ and cuda/ implement it. A Tensor is a
// row-major 2-D array in the backend's memory. The engine never touches tensor data
// directly: it goes through upload/download.
//
// Numerics contract: the residual stream (embed output, linear AddTo targets) is F32
// on every backend. Activations a backend creates itself (alloc_activation) use the
// backend's preferred dtype: F32 on the CPU, BF16 on CUDA. Logits are always F32.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "sampler.h"
#include "status.h"

namespace esolm {

enum class DType { f32, bf16, i32 };

inline size_t dtype_size(DType t) { return t == DType::bf16 ? 2 : 4; }

struct Tensor {
  void* data = nullptr;  // backend memory (host memory for the CPU backend)
  DType dtype = DType::f32;
  int64_t rows = 0, cols = 0;
  bool empty() const { return data == nullptr; }
  int64_t numel() const { return rows * cols; }
  size_t bytes() const { return size_t(numel()) * dtype_size(dtype); }
};

// Rows [row0, row0 + rows) of t: a tensor is one row-major allocation on every backend.
inline Tensor row_slice(const Tensor& t, int64_t row0, int64_t rows) {
  Tensor v = t;
  v.data = static_cast<char*>(t.data) + size_t(row0 * t.cols) * dtype_size(t.dtype);
  v.rows = rows;
  return v;
}

// Epilogue of linear(): what happens to y = in · Wᵀ + bias.
enum class Epilogue {
  store,    // out = y
  gelu,     // out = GELU_tanh(y)
  add_to,   // out += y   (out is the F32 residual stream)
};

// Which (query, key) pairs attend. Slots are indices into one sequence's KV rows.
// Query row r of a sequence sits at slot q_slot0 + r.
enum class AttnMode {
  causal,         // key slot <= query slot
  bidirectional,  // every key slot < n_kv
  mixed2,         // causal, plus clean<->clean pairs (Eso-LM (A)); needs `clean`
  sequential,     // 2N input [x-half | z-half], half = n_kv / 2: x row i sees x j <= i;
                  // z row i (slot half + i) sees x j < i and itself. Eso-LM sequential phase.
};

struct AttnParams {
  int batch = 1;
  int n_q = 0;          // query rows per sequence
  int q_slot0 = 0;      // slot of query row 0
  int n_kv = 0;         // key slots [0, n_kv) per sequence are valid
  int n_heads = 1;
  int head_dim = 64;
  int capacity = 0;     // slots per sequence in the K/V tensors
  AttnMode mode = AttnMode::causal;
  const Tensor* clean = nullptr;  // mixed2 only: I32 [batch, capacity], 1 = clean token
  // Planned KV loop only (causal mode): the LoopState tensor (below). Then q_slot0 and the
  // valid query count come from backend memory at run time: q_slot0 = state[kLoopSlot0],
  // n_kv = q_slot0 + state[kLoopN]; query rows r >= state[kLoopN] get zeros. n_q is the
  // static (padded) row count and the static q_slot0 / n_kv fields are ignored.
  const Tensor* loop_state = nullptr;
};

// ---- planned KV loop ------------------------------------------------------------------
// Eso-LM (B) and AR generation know every step's shape before the first step, so the
// loop can run from tables in backend memory with no host round trip between steps, and a
// backend may record one step and replay it (CUDA graphs). engine/kv_loop.cpp drives it.
//
// StepTable, I32 [n_steps, kStepFields], one row per step:
//   slot0   first window slot (= committed slots before the step)
//   n       window length: slots [slot0, slot0 + n) are fed
//   head0   first window row that gets logits
//   k       rows [head0, head0 + k) are sampled ...
//   target  ... into slots [target, target + k)
//   commit  committed slots after the step = slot0 + commit (host bookkeeping only)
// LoopState, I32 [1, kLoopFields]: state[kLoopCursor] is the step index; loop_begin_step
// copies that table row into state[kLoopSlot0 ..] for the other ops; loop_end_step
// advances the cursor. Tokens live in z, I32 [batch, length] in slot order, with order
// I32 [batch, length] (slot -> original position) and fixed I32 [1, length] (1 = a given
// token that sampling must not overwrite).
constexpr int kStepFields = 6;
constexpr int kLoopCursor = 0, kLoopSlot0 = 1, kLoopN = 2, kLoopHead0 = 3, kLoopK = 4,
              kLoopTarget = 5, kLoopFields = 8;

static_assert(sizeof(DrawKey) == 3 * sizeof(int32_t), "a keys tensor holds DrawKeys as I32 [rows, 3]");

struct LoopTensors {
  Tensor table, state, z, order, fixed;  // described above
  Tensor tokens, positions;              // I32 [batch * n_pad, 1]: window inputs
  Tensor head_rows;                      // I32 [batch * k_pad, 1]: rows of the block output
  Tensor keys;                           // I32 [batch * k_pad, 3]: DrawKey per head row
  Tensor picks;                          // I32 [batch * k_pad, 1]: sampled tokens
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;

  // ---- memory ---------------------------------------------------------------
  // Allocate rows x cols of dtype (zero-filled). On failure returns out_of_memory.
  virtual Status alloc(Tensor& t, DType dtype, int64_t rows, int64_t cols) = 0;
  virtual void release(Tensor& t) = 0;  // no-op on an empty tensor; leaves t empty
  // Activation dtype this backend prefers for LayerNorm outputs, q/k/v, MLP hidden.
  virtual DType activation_dtype() const = 0;
  // Dtype for weight matrices (embedding, linear weights). Vectors (norm, bias) are F32.
  virtual DType weight_dtype() const = 0;
  // (optional) Dtype for matrices the model rescales at load (attn_out and mlp.2 times the
  // adaLN gates): a BF16 file's values stop being BF16-exact there. Defaults to weight_dtype().
  virtual DType folded_weight_dtype() const { return weight_dtype(); }
  // (optional) Dtype of the K/V cache rows (Model::create_cache). Defaults to activation_dtype().
  virtual DType kv_dtype() const { return activation_dtype(); }
  // Host F32 -> tensor (converted to t.dtype); `count` must equal t.numel().
  virtual Status upload_f32(Tensor& t, const float* host, int64_t count) = 0;
  virtual Status upload_i32(Tensor& t, const int32_t* host, int64_t count) = 0;
  // Tensor -> host F32 (converted from t.dtype). Rows [row0, row0 + n_rows).
  virtual Status download_f32(const Tensor& t, int64_t row0, int64_t n_rows, float* host) = 0;
  virtual Status synchronize() = 0;
  // (optional) True when ops are queued and run later, so the host can run ahead of the
  // device (CUDA); the planned KV loop then waits only every few steps.
  virtual bool is_asynchronous() const { return false; }
  // (optional) Called once for each linear weight W [n, k] after upload; a backend may
  // re-layout it (the CPU backend packs panels). Defaults to nothing.
  virtual Status prepare_weight(Tensor& W) { (void)W; return Status::ok(); }
  // (optional) True when the backend keeps linear weights 8-bit (engine/q8.h). The model
  // then hands every linear matrix over through upload_q8 (quantizing F32 ones on the host
  // first), instead of alloc + upload_f32 + prepare_weight.
  virtual bool takes_q8() const { return false; }
  // (optional, with takes_q8) A linear weight W [rows, cols] from int8 values q (row-major)
  // and one scale per row: W[r, c] = q[r * cols + c] * scales[r]. Allocates W.
  virtual Status upload_q8(Tensor& W, int64_t rows, int64_t cols, const int8_t* q, const float* scales);

  // ---- ops ------------------------------------------------------------------
  // x[r] = table[tokens[r]]        table [V, d] (weight dtype), tokens I32 [rows, 1], x F32 [rows, d]
  virtual Status embed(const Tensor& table, const Tensor& tokens, Tensor& x) = 0;

  // y = LN(x) * w + b (eps 1e-5, biased variance, two-pass). x F32 [rows, d];
  // w, b F32 [1, d] (b may be empty); y [rows, d] in activation dtype.
  virtual Status layernorm(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y) = 0;

  // y = in · Wᵀ + bias, then the epilogue. in [rows, k]; W [n, k]; bias F32 [1, n] or empty;
  // out [rows, n]. `rows` is in.rows.
  virtual Status linear(const Tensor& in, const Tensor& W, const Tensor& bias, Tensor& out,
                        Epilogue ep) = 0;

  // Split qkv [batch*n, 3d] (cols q | k | v), apply rotary to q and k by `positions`
  // (I32 [batch*n, 1], original token positions; half-split rotate, base 10000 over the
  // full head dim), write q to q_out [batch*n, d] and k, v into the caches
  // k_cache/v_cache [batch*capacity, d] at slots [slot0, slot0 + n) of each sequence.
  virtual Status rope_qkv_store(const Tensor& qkv, const Tensor& positions, int batch, int n,
                                int n_heads, int slot0, int capacity, Tensor& q_out,
                                Tensor& k_cache, Tensor& v_cache) = 0;

  // out[b, r] = softmax(q·kᵀ / sqrt(head_dim) + mask) · v over visible slots.
  // q [batch*n_q, d]; caches [batch*capacity, d]; out [batch*n_q, d] activation dtype.
  virtual Status attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                           const AttnParams& p, Tensor& out) = 0;

  // out[i] = x[index[i]]   (row gather; x and out same dtype/cols; index I32 [m, 1])
  virtual Status gather_rows(const Tensor& x, const Tensor& index, Tensor& out) = 0;

  // (optional) One token per row of logits (F32 [>= rows, vocab] in this backend's memory),
  // the same choice as esolm::sample_row(row, vocab, p, keys[i]) (sampler.h); out is host
  // memory [rows]. Defaults to downloading the rows and sampling them on the host.
  virtual Status sample_rows(const Tensor& logits, int64_t rows, const SampleParams& p,
                             const DrawKey* keys, int32_t* out);

  // ---- planned KV loop (optional; see LoopTensors) ------------------------------------
  // A backend that implements the five loop ops returns true; the engine then runs
  // Eso-LM (B) and AR generation through them. Shapes n_pad, k_pad are static; the
  // step's real n, k (<= n_pad, k_pad) are read from backend memory.
  virtual bool supports_kv_loop() const { return false; }
  // Reads row state[kLoopCursor] of lt.table into state[kLoopSlot0 ..] and fills, for
  // b < batch, r < n_pad (n, head0, k, slot0, target from that row):
  //   tokens[b*n_pad + r]    = r < n ? z[b, slot0 + r] : 0
  //   positions[b*n_pad + r] = r < n ? order[b, slot0 + r] : 0
  // and for r < k_pad, with rr = min(r, k - 1) (padding rows repeat the last real row):
  //   head_rows[b*k_pad + r] = b*n_pad + head0 + rr
  //   keys[b*k_pad + r]      = {b, order[b, target + rr], 0}   (DrawKey: sequence, position, round)
  virtual Status loop_begin_step(LoopTensors& lt, int batch, int length, int n_pad, int k_pad);
  // rope_qkv_store for the window rows [0, n_pad) of each sequence with slot0 = state[kLoopSlot0];
  // rows r >= state[kLoopN] are not written to the caches (their q_out rows are unspecified).
  virtual Status rope_qkv_store_loop(const Tensor& qkv, const Tensor& positions, int batch,
                                     int n_pad, int n_heads, int capacity, const Tensor& state,
                                     Tensor& q_out, Tensor& k_cache, Tensor& v_cache);
  // sample_rows with keys I32 [rows, 3] and out I32 [rows, 1] in backend memory; no host wait.
  virtual Status sample_rows_to(const Tensor& logits, int64_t rows, const SampleParams& p,
                                const Tensor& keys, Tensor& out);
  // z[b, target + r] = picks[b*k_pad + r] for r < k unless fixed[target + r]; then
  // state[kLoopCursor] += 1.
  virtual Status loop_end_step(LoopTensors& lt, int batch, int length, int k_pad);
  // Copies count I32 values from t to host memory; `host` is filled by the next
  // synchronize() (the CPU backend copies at once). No wait here.
  virtual Status download_i32_async(const Tensor& t, int64_t count, int32_t* host);

  // ---- recording (optional) -------------------------------------------------------
  // A backend that can record returns true: between begin_record() and end_record() ops
  // are recorded, not run, and replay() runs the recording. Recorded ops must take every
  // value that changes between replays from backend memory (the loop ops above), and the
  // tensors they use must outlive the recording. Host-side work that cannot be recorded
  // (a scratch buffer growing, an upload) makes the op or end_record fail; the engine then
  // runs that step eagerly. release_recordings() frees them all.
  virtual bool can_record() const { return false; }
  virtual Status begin_record();
  virtual Status end_record(int& id);
  virtual Status replay(int id);
  virtual void release_recordings() {}
};

// Samples rows of host logits (the default sample_rows, also used by the CPU backend).
void sample_rows_host(const float* logits, int64_t rows, int vocab, const SampleParams& p,
                      const DrawKey* keys, int32_t* out);

// Factories. create_cuda_backend is defined only in the CUDA addon (ESOLM_WITH_CUDA).
// weights: F32, or BF16 to halve the weight memory and traffic. exact_folded keeps the
// gate-scaled matrices F32, so that a BF16 file runs exactly (folded_weight_dtype()).
// q8: every linear matrix stored as int8 with one F32 scale per output row (a quarter of
// the F32 traffic; `weights` is then ignored and activations stay F32).
// bf16_math: every linear matrix BF16 (`weights` and exact_folded are then ignored) and
// linear() rounds its activations to BF16, for the AVX512_BF16 kernel (cpu/kernels.h):
// opt-in, as it changes numerics. Check cpu_bf16_math_error() first: without the
// instruction set, linear() fails with invalid_arg.
// int8_math (with q8): the 8-bit matrices packed for AVX512_VNNI and linear() quantizes its
// activations to int8 (cpu/kernels.h, "int8 math"): opt-in, as it changes numerics. Check
// cpu_int8_math_error() first: without the instruction set, linear() fails with invalid_arg.
// Both math modes keep the K/V cache in BF16 (kv_dtype).
std::unique_ptr<Backend> create_cpu_backend(int n_threads /* 0 = all cores */,
                                            DType weights = DType::f32, bool exact_folded = true,
                                            bool q8 = false, bool bf16_math = false,
                                            bool int8_math = false);
// Plain loops with float64 accumulation, one thread: the oracle for kernel tests.
std::unique_ptr<Backend> create_cpu_reference_backend();
#ifdef ESOLM_WITH_CUDA
std::unique_ptr<Backend> create_cuda_backend(int device, Status& status);
#endif

}  // namespace esolm
