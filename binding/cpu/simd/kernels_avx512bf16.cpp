// kernels_avx512bf16.cpp — the BF16-math GEMM (kernels.h, "BF16 math"): opt-in, used only
// when a backend is created with bf16_math and cpuid reports AVX512_BF16. CMakeLists.txt
// compiles simd/*_avx512bf16.cpp with the AVX-512 flags plus -mavx512bf16.
//
// The activations of a linear() are rounded to BF16 pairs once per row (vcvtne2ps2bf16);
// the weights are the AVX-512 set's BF16 pair panels ([ceil(k/2)][16][2]), so one 64-byte
// panel load holds two k rows of 16 columns, exactly the operand vdpbf16ps takes, and one
// broadcast 32-bit pair of a row's activations is the other: each instruction does 32
// multiply-adds (16 for an F32 FMA), with no widening of the weights.
// A tile is MR rows x NP panels (NP * MR accumulators, NP panel registers; the pair is
// broadcast from memory). Each output is one chain from zero, pairs in k order, whatever
// the tile height, so a row's result does not depend on the rows beside it.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu/kernels.h"

#if defined(__x86_64__) && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && \
    defined(__AVX512BF16__)
#include <immintrin.h>

namespace esolm_avx512bf16 {
#include "cpu/kernels_impl.h"  // gelu8 for the epilogue
using esolm::GemmBf16Args;
using esolm::kPanel;

// One row of k floats -> ceil(k/2) * 2 BF16 values; the masked loads read zeros past k,
// so an odd k ends in a zero pad.
static void to_bf16_pairs(const float* a, int k, uint16_t* out) {
  int i = 0;
  for (; i + 32 <= k; i += 32) {
    const __m512bh h = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(a + i));
    _mm512_storeu_si512(out + i, (__m512i)h);
  }
  if (i < k) {
    const int rest = k - i, padded = (rest + 1) / 2 * 2;
    const __mmask16 m0 = rest >= 16 ? __mmask16(0xffff) : __mmask16((1u << rest) - 1u);
    const __mmask16 m1 = rest <= 16 ? __mmask16(0) : __mmask16((1u << (rest - 16)) - 1u);
    const __m512bh h = _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(m1, a + i + 16), _mm512_maskz_loadu_ps(m0, a + i));
    _mm512_mask_storeu_epi16(out + i, __mmask32((uint64_t(1) << padded) - 1u), (__m512i)h);
  }
}

static inline __m512bh load_pairs(const uint16_t* p) { return (__m512bh)_mm512_loadu_si512(p); }
static inline __m512bh broadcast_pair(const uint16_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return (__m512bh)_mm512_set1_epi32(v);
}

static inline __m512 gelu16(__m512 y) {
  alignas(64) float t[16];
  _mm512_store_ps(t, y);
  st8(t, gelu8(ld8(t)));
  st8(t + 8, gelu8(ld8(t + 8)));
  return _mm512_load_ps(t);
}

// Epilogue of the 16 columns from col0 on.
template <int MR>
static inline void store16(const GemmBf16Args& g, int64_t r0, const __m512 acc[MR], int col0) {
  const int ncols = g.ncols - col0;
  const __mmask16 m = ncols >= 16 ? __mmask16(0xffff) : __mmask16((1u << ncols) - 1u);
  const __m512 bias = g.bias ? _mm512_maskz_loadu_ps(m, g.bias + col0) : _mm512_setzero_ps();
  for (int r = 0; r < MR; ++r) {
    float* c = g.c + (r0 + r) * g.ldc + col0;
    __m512 y = _mm512_add_ps(acc[r], bias);
    if (g.ep == EpilogueKind::gelu) y = gelu16(y);
    if (g.ep == EpilogueKind::add_to) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(m, c));
    _mm512_mask_storeu_ps(c, m, y);
  }
}

// Rows [r0, r0 + MR) x the NP panels from p0 (columns col0 ..).
template <int MR, int NP>
static inline void tile(const GemmBf16Args& g, const uint16_t* p0, int64_t r0, int col0) {
  __m512 acc[NP][MR];
  for (int j = 0; j < NP; ++j)
    for (int r = 0; r < MR; ++r) acc[j][r] = _mm512_setzero_ps();
  const uint16_t* a = g.a + r0 * g.lda;
  const int pairs = (g.k + 1) / 2;
  for (int i = 0; i < pairs; ++i) {
    __m512bh b[NP];
    for (int j = 0; j < NP; ++j) b[j] = load_pairs(p0 + j * g.panel_stride + i * 2 * kPanel);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const __m512bh av = broadcast_pair(a + r * g.lda + 2 * i);
      for (int j = 0; j < NP; ++j) acc[j][r] = _mm512_dpbf16_ps(acc[j][r], av, b[j]);
    }
  }
  for (int j = 0; j < NP; ++j) store16<MR>(g, r0, acc[j], col0 + 16 * j);
}

// All rows of NP panels: tiles of kRows rows, then one shorter tile.
template <int NP>
static void panels(const GemmBf16Args& g, const uint16_t* p0, int col0) {
  // NP * kRows accumulators + NP panel registers + the broadcast <= 32 zmm. Two panels:
  // 8 rows measured faster than 10, 12 or 14 (fewer row pointers to keep in registers).
  constexpr int kRows = NP == 2 ? 8 : 14;
  int64_t r = 0;
  for (; r + kRows <= g.rows; r += kRows) tile<kRows, NP>(g, p0, r, col0);
  switch (g.rows - r) {
    case 13: tile<13, NP>(g, p0, r, col0); break;
    case 12: tile<12, NP>(g, p0, r, col0); break;
    case 11: tile<11, NP>(g, p0, r, col0); break;
    case 10: tile<10, NP>(g, p0, r, col0); break;
    case 9: tile<9, NP>(g, p0, r, col0); break;
    case 8: tile<8, NP>(g, p0, r, col0); break;
    case 7: tile<7, NP>(g, p0, r, col0); break;
    case 6: tile<6, NP>(g, p0, r, col0); break;
    case 5: tile<5, NP>(g, p0, r, col0); break;
    case 4: tile<4, NP>(g, p0, r, col0); break;
    case 3: tile<3, NP>(g, p0, r, col0); break;
    case 2: tile<2, NP>(g, p0, r, col0); break;
    case 1: tile<1, NP>(g, p0, r, col0); break;
    default: break;
  }
}

// Panels two at a time (a row's broadcast pair then feeds two instructions), the odd
// last one alone.
static void gemm(const GemmBf16Args& g) {
  int p = 0;
  for (; p + 2 <= g.n_panels; p += 2) panels<2>(g, g.panel + p * g.panel_stride, 16 * p);
  if (p < g.n_panels) panels<1>(g, g.panel + p * g.panel_stride, 16 * p);
}

static double dot_loop(int64_t iters) {
  __m512 acc[12];
  for (int j = 0; j < 12; ++j) acc[j] = _mm512_set1_ps(float(j) * 1e-3f);
  const __m512bh a = (__m512bh)_mm512_set1_epi16(0x3a83), b = (__m512bh)_mm512_set1_epi16(0x3a83);  // ~1e-3
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 12
    for (int j = 0; j < 12; ++j) acc[j] = _mm512_dpbf16_ps(acc[j], a, b);
  }
  __m512 s = acc[0];
  for (int j = 1; j < 12; ++j) s = _mm512_add_ps(s, acc[j]);
  volatile float sink = _mm512_reduce_add_ps(s);
  (void)sink;
  return double(iters) * 12 * 32 * 2;
}

}  // namespace esolm_avx512bf16
#endif

namespace esolm {

const CpuBf16MathKernels* cpu_bf16_math_kernels() {
#if defined(__x86_64__) && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && \
    defined(__AVX512BF16__)
  static const CpuBf16MathKernels k{"avx512bf16", esolm_avx512bf16::to_bf16_pairs, esolm_avx512bf16::gemm,
                                    esolm_avx512bf16::dot_loop};
  if (!cpu_has_avx512_base() || !__builtin_cpu_supports("avx512bf16")) return nullptr;
  return &k;
#else
  return nullptr;
#endif
}

}  // namespace esolm
