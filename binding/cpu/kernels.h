// kernels.h — the CPU inner loops, one set per instruction set: a portable build and an
// AVX2+FMA build of kernels_impl.h (kernels_portable.cpp, simd/kernels_avx2.cpp), and an
// AVX-512 set (simd/kernels_avx512.cpp: 16-wide GEMM, BF16 panels widened in registers).
// cpu_kernels() picks the widest the CPU supports (cpuid) at each backend creation;
// ESOLM_CPU_KERNELS=portable|avx2|avx512 forces one (an unsupported one is an error the
// backend factory reports, see cpu_kernels_choice()). BF16 math (below) is an opt-in
// GEMM beside these (simd/kernels_avx512bf16.cpp), for the AVX-512 set's BF16 panels;
// int8 math (below) another (simd/kernels_avx512vnni.cpp), for 8-bit weights.
//
// Packed weight layout for gemm: W [n, k] becomes ceil(n/16) panels, each [k][16]
// values (column j of the panel = output column 16p + j), zero-padded past n. Panels are
// F32, or BF16 (half the memory traffic; widened exactly to F32 inside the kernel), or
// Q8: int8 values with one F32 scale per output column (a quarter of the traffic; the
// kernel accumulates q in F32 and multiplies by the column's scale once, at the end).
// BF16 panels (every kernel set) store rows kk, kk+1 interleaved: [ceil(k/2)][16][2],
// element (kk, j) at (kk / 2) * 32 + 2 * j + kk % 2, a zero row past an odd k. A 32-bit lane
// then holds one column's two rows, each widened to F32 by a shift or a mask.
#pragma once
#include <cstddef>
#include <cstdint>

namespace esolm {

constexpr int kPanel = 16;  // output columns per packed panel

enum class EpilogueKind : int { store = 0, gelu = 1, add_to = 2 };

struct GemmPanelArgs {
  const float* a;      // [rows, k] row-major, stride lda
  int64_t lda;
  int64_t rows;
  const float* panel;  // [k][16] F32 panel, or null when panel_bf16 is set
  const uint16_t* panel_bf16 = nullptr;  // BF16 panel, [k][16] or pairs (widened to F32 in the kernel)
  const int8_t* panel_q8 = nullptr;      // [k][16] Q8 panel: column j is q * col_scale[j]
  const float* col_scale = nullptr;      // 16 scales (zero past ncols) of a Q8 panel
  int k;
  float* c;            // output column block start: c[r * ldc + j], j < ncols
  int64_t ldc;
  int ncols;           // valid columns: <= 16 * n_panels
  const float* bias;   // ncols values or null
  EpilogueKind ep;
  // n_panels adjacent panels in one call (columns 16p..16p+15 from the panel p *
  // `panel_stride` values further on; bias and col_scale then cover all the columns): lets
  // a kernel hold a tile several panels wide (two for few rows, four for many). Kernels
  // without one run the panels one after the other.
  int n_panels = 1;
  int64_t panel_stride = 0;
};

// Most heads one attention call takes (AttnRowsArgs::heads).
constexpr int kAttnMaxGroupHeads = 8;

// Attention of one sequence over a range of query rows, for `heads` consecutive heads
// (head h's q, k, v and out columns start h * head_dim after those given).
struct AttnRowsArgs {
  const float* q;      // query row r at q + r * q_stride (head offset applied)
  int64_t q_stride;
  const float* k;      // key slot s at k + s * kv_stride (head offset applied)
  const float* v;
  int64_t kv_stride;
  float* out;          // out row r at out + r * out_stride
  int64_t out_stride;
  int head_dim;        // even
  int r0, r1;          // query rows [r0, r1)
  int q_slot0;         // slot of query row 0
  int n_kv;
  int mode;            // AttnMode as int
  const int32_t* clean;  // mixed2: clean flag per slot of this sequence
  float scale;
  float* scratch;      // CpuKernels::attn_scratch_floats(n_kv, head_dim) floats
  int heads = 1;       // 1 ..= kAttnMaxGroupHeads
  // A BF16 cache (BF16 and int8 math, Backend::kv_dtype): K and V as BF16 values, used instead of k
  // and v when set (the same offsets and strides, in values); widened to F32 exactly.
  const uint16_t* k16 = nullptr;
  const uint16_t* v16 = nullptr;
};

struct CpuKernels {
  const char* name;
  void (*gemm_panel)(const GemmPanelArgs& a);
  void (*attn_rows)(const AttnRowsArgs& a);
  size_t (*attn_scratch_floats)(int n_kv, int head_dim);
  // Machine floors measured with this instruction set (bench/, floors.h): `iters` rounds of
  // independent FMAs on the widest registers (returns the FLOPs done), and a streaming
  // read of n floats (returns their sum, so the reads cannot be elided).
  double (*fma_loop)(int64_t iters);
  float (*read_sum)(const float* p, int64_t n);
};

// Values in one packed BF16 panel of reduction length k.
inline int64_t bf16_panel_values(int64_t k) { return (k + 1) / 2 * 2 * kPanel; }
// Offset of element (kk, j) inside a packed BF16 panel.
inline int64_t bf16_panel_index(int64_t kk, int j) { return (kk / 2) * 2 * kPanel + 2 * j + kk % 2; }

// Does this CPU have AVX-512F, BW, VL and DQ (what the avx512 set needs; the BF16 and
// int8 math kernels check their extension on top)?
inline bool cpu_has_avx512_base() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
}

const CpuKernels& cpu_kernels();
const CpuKernels& cpu_kernels_portable();
const CpuKernels* cpu_kernels_avx2();    // null when not compiled in or not supported here
const CpuKernels* cpu_kernels_avx512();  // null when not compiled in or not supported here
// The kernel set ESOLM_CPU_KERNELS asks for (or the best one); null with `why` set when
// it names an unknown set or one this CPU cannot run.
const CpuKernels* cpu_kernels_choice(const char** why);

// ---- BF16 math (opt-in: create_cpu_backend(..., bf16_math), Model.load math: 'bf16') ----
// vdpbf16ps (AVX512_BF16) multiplies 16 pairs of BF16 values and adds both products of a
// pair to one F32 lane: 32 multiply-adds per instruction against 16 for an F32 FMA, on the
// BF16 weights as stored. Both operands must be BF16, so linear() rounds its activations
// to BF16 first (round to nearest even, subnormals to zero, as vcvtne2ps2bf16 does): a
// numerics change (about 3 significant digits on the activations), hence opt-in.
// Activations: each row as BF16 pairs, ceil(k/2) * 2 values (a zero past an odd k).
// Weights: BF16 pair panels (the layout above). Every output accumulates in F32 from zero,
// pair by pair in k order, whatever the tile, so a row's result does not depend on how
// many rows share the call.
struct GemmBf16Args {
  const uint16_t* a;      // BF16 pairs, row r at a + r * lda
  int64_t lda;            // values (even)
  int64_t rows;
  const uint16_t* panel;  // first of n_panels pair panels, panel_stride values apart
  int64_t panel_stride;
  int n_panels;
  int k;
  float* c;               // c[r * ldc + j], j < ncols (<= 16 * n_panels)
  int64_t ldc;
  int ncols;
  const float* bias;      // ncols values or null
  EpilogueKind ep;
};

struct CpuBf16MathKernels {
  const char* name;
  // One row of k floats -> ceil(k/2) * 2 BF16 values (the pair layout of GemmBf16Args::a).
  void (*to_bf16_pairs)(const float* a, int k, uint16_t* out);
  void (*gemm)(const GemmBf16Args& g);
  // `iters` rounds of independent vdpbf16ps on zmm registers; returns the FLOPs done (2 per
  // multiply-add), for the floors (floors.h).
  double (*dot_loop)(int64_t iters);
};
// Null when not compiled in or this CPU lacks AVX512_BF16 (or AVX-512F/BW/VL/DQ).
const CpuBf16MathKernels* cpu_bf16_math_kernels();

// ---- int8 math (opt-in: create_cpu_backend(..., q8, ..., int8_math), Model.load math: 'int8') ----
// vpdpbusd (AVX512_VNNI) multiplies 4 unsigned bytes by 4 signed bytes and adds the four
// products to one int32 lane: 64 multiply-adds per instruction against 16 for an F32 FMA.
// The weights are the q8 values (engine/q8.h) as stored, biased to unsigned; linear()
// quantizes its activations to int8 once per row (int8_quantize_block, ops_reference.h):
// a numerics change beyond 8-bit weights, hence opt-in.
// Activations: each row in blocks of kInt8Block values along k, each block its own scale
// s_b = max |a| / 127 and q = round_half_even(a / s_b) (zero past k), with the block's
// correction -128 * sum(q) (the weights are stored as u = q_w + 128, so sum u * q_a -
// 128 * sum q_a = sum q_w * q_a exactly, in int32). Why 32: an activation outlier (LayerNorm
// outputs have a few) coarsens only the 31 values beside it; the per-block work (start
// from the correction, convert the int32 sum, one F32 FMA by s_b) is 3 instructions per 8
// vpdpbusd, and a 32-byte block is half a cache line of the row. Every int32 block sum is
// below 2^24 (255 * 127 * 32), so its conversion to F32 is exact.
// Weights: VNNI panels, ceil(n/16) panels of [ceil(k/4)][16][4] bytes: element (kk, j) at
// (kk / 4) * 64 + 4 * j + kk % 4, u = q + 128 (128, i.e. q = 0, past k and past n); then
// one F32 scale per (padded) output column, as for Q8 panels.
// Each output: acc = sum over blocks in k order of float(int32 block sum) * s_b (F32 FMAs
// from zero), then acc * w_scale[col] (+ bias, epilogue): whatever the tile, so a row's
// result does not depend on how many rows share the call.
constexpr int kInt8Block = 32;

struct GemmInt8Args {
  const int8_t* a;          // quantized rows, row r at a + r * lda (lda = blocks * kInt8Block)
  int64_t lda;
  const float* a_scale;     // s_b of row r, block b at a_scale[r * ld_blocks + b]
  const int32_t* a_corr;    // -128 * sum(q) of that block, same indexing
  int64_t ld_blocks;
  int64_t rows;
  const uint8_t* panel;     // first of n_panels VNNI panels, panel_stride bytes apart
  int64_t panel_stride;
  int n_panels;
  int k;
  const float* col_scale;   // 16 * n_panels weight scales (zero past n)
  float* c;                 // c[r * ldc + j], j < ncols (<= 16 * n_panels)
  int64_t ldc;
  int ncols;
  const float* bias;        // ncols values or null
  EpilogueKind ep;
};

struct CpuInt8MathKernels {
  const char* name;
  // One row of k floats -> ceil(k/32) blocks: q (32 bytes each, zero past k), s_b and the
  // correction; bit for bit int8_quantize_block (ops_reference.h) on each block.
  void (*quantize_row)(const float* a, int k, int8_t* q, float* scale, int32_t* corr);
  void (*gemm)(const GemmInt8Args& g);
  // `iters` rounds of independent vpdpbusd on zmm registers; returns the integer ops done
  // (2 per multiply-add), for the floors (floors.h).
  double (*dot_loop)(int64_t iters);
};
// Null when not compiled in or this CPU lacks AVX512_VNNI (or AVX-512F/BW/VL/DQ).
const CpuInt8MathKernels* cpu_int8_math_kernels();

}  // namespace esolm
