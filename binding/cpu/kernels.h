// kernels.h — the CPU inner loops, one set per instruction set: a portable build and an
// AVX2+FMA build of kernels_impl.h (kernels_portable.cpp, simd/kernels_avx2.cpp), and an
// AVX-512 set (simd/kernels_avx512.cpp: 16-wide GEMM, BF16 panels widened in registers).
// cpu_kernels() picks the widest the CPU supports (cpuid) at each backend creation;
// ESOLM_CPU_KERNELS=portable|avx2|avx512 forces one (an unsupported one is an error the
// backend factory reports, see cpu_kernels_choice()).
//
// Packed weight layout for gemm: W [n, k] becomes ceil(n/16) panels, each [k][16]
// values (column j of the panel = output column 16p + j), zero-padded past n. Panels are
// F32, or BF16 (half the memory traffic; widened exactly to F32 inside the kernel), or
// Q8: int8 values with one F32 scale per output column (a quarter of the traffic; the
// kernel accumulates q in F32 and multiplies by the column's scale once, at the end).
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
  const uint16_t* panel_bf16 = nullptr;  // [k][16] BF16 panel (widened to F32 in the kernel)
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

// One (sequence, head) attention over a range of query rows.
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

const CpuKernels& cpu_kernels();
const CpuKernels& cpu_kernels_portable();
const CpuKernels* cpu_kernels_avx2();    // null when not compiled in or not supported here
const CpuKernels* cpu_kernels_avx512();  // null when not compiled in or not supported here
// The kernel set ESOLM_CPU_KERNELS asks for (or the best one); null with `why` set when
// it names an unknown set or one this CPU cannot run.
const CpuKernels* cpu_kernels_choice(const char** why);

}  // namespace esolm
