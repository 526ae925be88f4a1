// kernels.h — the CPU inner loops, compiled twice from kernels_impl.h: a portable build
// and an AVX2+FMA build (simd/kernels_avx2.cpp). cpu_kernels() picks one at run time
// (cpuid), or the portable one when ESOLM_CPU_KERNELS=portable.
//
// Packed weight layout for gemm: W [n, k] becomes ceil(n/16) panels, each [k][16]
// values (column j of the panel = output column 16p + j), zero-padded past n. Panels are
// F32, or BF16 (half the memory traffic; widened exactly to F32 inside the kernel).
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
  int k;
  float* c;            // output column block start: c[r * ldc + j], j < ncols
  int64_t ldc;
  int ncols;           // <= 16 valid columns in this panel
  const float* bias;   // ncols values or null
  EpilogueKind ep;
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
  int head_dim;        // <= 256, multiple of 8
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
};

const CpuKernels& cpu_kernels();
const CpuKernels& cpu_kernels_portable();
const CpuKernels* cpu_kernels_avx2();  // null when not compiled in

}  // namespace esolm
