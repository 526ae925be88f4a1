// kernels_avx512vnni.cpp — the int8-math GEMM (kernels.h, "int8 math"): opt-in, used only
// when a backend is created with q8 and int8_math and cpuid reports AVX512_VNNI.
// CMakeLists.txt compiles simd/*_avx512vnni.cpp with the AVX-512 flags plus -mavx512vnni.
//
// The activations of a linear() are quantized to int8 once per row, in blocks of 32 along
// k (quantize_row); the weights are VNNI panels ([ceil(k/4)][16][4] unsigned bytes, q + 128),
// so one 64-byte panel load holds four k rows of 16 columns, exactly the operand vpdpbusd
// takes, and one broadcast 32-bit group of four activations is the other: each instruction
// does 64 multiply-adds (16 for an F32 FMA).
// A tile is MR rows x NP panels: per block, NP * MR int32 sums start from the block's
// correction and take 8 vpdpbusd each; then each is converted to F32 and added, times the
// block's scale, to its F32 accumulator (NP * MR of those too). Each output is the same
// chain over the blocks in k order whatever the tile height, so a row's result does not
// depend on the rows beside it.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu/kernels.h"

#if defined(__x86_64__) && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && \
    defined(__AVX512VNNI__)
#include <immintrin.h>

namespace esolm_avx512vnni {
#include "cpu/kernels_impl.h"  // gelu8 for the epilogue
using esolm::GemmInt8Args;
using esolm::kInt8Block;
using esolm::kPanel;

constexpr int kGroupsPerBlock = kInt8Block / 4;  // vpdpbusd steps per block

// Few rows (the cached steps of a generation) are bound by the weight stream: each panel
// is prefetched this many bytes ahead, past its end into the next call's panel (as the
// AVX-512 set's BF16 and F32 panels, kernels_avx512.cpp kPrefetchBytes).
#ifndef ESOLM_INT8_PREFETCH_BYTES
#define ESOLM_INT8_PREFETCH_BYTES 8192
#endif
constexpr int64_t kPrefetchBytes = ESOLM_INT8_PREFETCH_BYTES;

// One row of k floats -> ceil(k/32) blocks; bit for bit int8_quantize_block (ops_reference.cpp):
// the same F32 division, round half to even (roundscale), clamp and sum.
static void quantize_row(const float* a, int k, int8_t* q, float* scale, int32_t* corr) {
  const int blocks = (k + kInt8Block - 1) / kInt8Block;
  const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff);
  const __m512 lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
  for (int b = 0; b < blocks; ++b) {
    const int rest = std::min(kInt8Block, k - b * kInt8Block);
    const __mmask16 m0 = rest >= 16 ? __mmask16(0xffff) : __mmask16((1u << rest) - 1u);
    const __mmask16 m1 = rest <= 16 ? __mmask16(0) : rest >= 32 ? __mmask16(0xffff) : __mmask16((1u << (rest - 16)) - 1u);
    const __m512 x0 = _mm512_maskz_loadu_ps(m0, a + b * kInt8Block);
    const __m512 x1 = _mm512_maskz_loadu_ps(m1, a + b * kInt8Block + 16);
    // |x| as bits, compared as unsigned integers: the order of the values, NaN above infinity.
    const __m512i abs = _mm512_max_epu32(_mm512_and_si512(_mm512_castps_si512(x0), abs_mask),
                                         _mm512_and_si512(_mm512_castps_si512(x1), abs_mask));
    const uint32_t amax_bits = _mm512_reduce_max_epu32(abs);
    float amax;
    std::memcpy(&amax, &amax_bits, 4);
    const float s = amax_bits >= 0x7f800000u ? std::numeric_limits<float>::quiet_NaN() : amax / 127.0f;
    scale[b] = s;
    int8_t* qb = q + b * kInt8Block;
    if (!(s > 0.0f)) {  // zero block, underflow or NaN: q = 0
      std::memset(qb, 0, kInt8Block);
      corr[b] = 0;
      continue;
    }
    const __m512 sv = _mm512_set1_ps(s);
    const __m512 y0 = _mm512_min_ps(hi, _mm512_max_ps(lo, _mm512_roundscale_ps(_mm512_div_ps(x0, sv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)));
    const __m512 y1 = _mm512_min_ps(hi, _mm512_max_ps(lo, _mm512_roundscale_ps(_mm512_div_ps(x1, sv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)));
    const __m512i i0 = _mm512_cvtps_epi32(y0), i1 = _mm512_cvtps_epi32(y1);  // already integers
    _mm_storeu_si128(reinterpret_cast<__m128i*>(qb), _mm512_cvtepi32_epi8(i0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(qb + 16), _mm512_cvtepi32_epi8(i1));
    corr[b] = -128 * _mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1));
  }
}

static inline __m512 gelu16(__m512 y) {
  alignas(64) float t[16];
  _mm512_store_ps(t, y);
  st8(t, gelu8(ld8(t)));
  st8(t + 8, gelu8(ld8(t + 8)));
  return _mm512_load_ps(t);
}

// Epilogue of the 16 columns from col0 on: acc * weight scale (+ bias), then the kind.
template <int MR>
static inline void store16(const GemmInt8Args& g, int64_t r0, const __m512 acc[MR], int col0) {
  const int ncols = g.ncols - col0;
  const __mmask16 m = ncols >= 16 ? __mmask16(0xffff) : __mmask16((1u << ncols) - 1u);
  const __m512 ws = _mm512_maskz_loadu_ps(m, g.col_scale + col0);
  const __m512 bias = g.bias ? _mm512_maskz_loadu_ps(m, g.bias + col0) : _mm512_setzero_ps();
  for (int r = 0; r < MR; ++r) {
    float* c = g.c + (r0 + r) * g.ldc + col0;
    __m512 y = _mm512_fmadd_ps(acc[r], ws, bias);
    if (g.ep == EpilogueKind::gelu) y = gelu16(y);
    if (g.ep == EpilogueKind::add_to) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(m, c));
    _mm512_mask_storeu_ps(c, m, y);
  }
}

static inline __m512i broadcast_group(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

// Rows [r0, r0 + MR) x the NP panels from p0 (columns col0 ..).
template <int MR, int NP>
static inline void tile(const GemmInt8Args& g, const uint8_t* p0, int64_t r0, int col0) {
  __m512 acc[NP][MR];
  for (int j = 0; j < NP; ++j)
    for (int r = 0; r < MR; ++r) acc[j][r] = _mm512_setzero_ps();
  const int8_t* a = g.a + r0 * g.lda;
  const float* as = g.a_scale + r0 * g.ld_blocks;
  const int32_t* ac = g.a_corr + r0 * g.ld_blocks;
  const int groups = (g.k + 3) / 4, blocks = (g.k + kInt8Block - 1) / kInt8Block;
  for (int b = 0; b < blocks; ++b) {
    __m512i s[NP][MR];
    for (int r = 0; r < MR; ++r) {
      const __m512i c0 = _mm512_set1_epi32(ac[r * g.ld_blocks + b]);
      for (int j = 0; j < NP; ++j) s[j][r] = c0;
    }
    const int g0 = b * kGroupsPerBlock, g1 = std::min(groups, g0 + kGroupsPerBlock);
    auto step = [&](int gi) __attribute__((always_inline)) {
      if (MR <= 8) {
        const int64_t x = int64_t(gi) * 4 * kPanel;
        for (int j = 0; j < NP; ++j)
          _mm_prefetch(reinterpret_cast<const char*>(p0 + j * g.panel_stride) +
                           (NP == 2 ? pair_prefetch_offset(x, g.panel_stride, kPrefetchBytes) : x + kPrefetchBytes),
                       _MM_HINT_T0);
      }
      __m512i w[NP];
      for (int j = 0; j < NP; ++j) w[j] = _mm512_loadu_si512(p0 + j * g.panel_stride + gi * 4 * kPanel);
      for (int r = 0; r < MR; ++r) {
        const __m512i av = broadcast_group(a + r * g.lda + gi * 4);
        for (int j = 0; j < NP; ++j) s[j][r] = _mm512_dpbusd_epi32(s[j][r], w[j], av);
      }
    };
    if (g1 - g0 == kGroupsPerBlock) {
#pragma GCC unroll 8
      for (int gi = g0; gi < g0 + kGroupsPerBlock; ++gi) step(gi);
    } else {
      for (int gi = g0; gi < g1; ++gi) step(gi);
    }
    for (int r = 0; r < MR; ++r) {
      const __m512 sc = _mm512_set1_ps(as[r * g.ld_blocks + b]);
      for (int j = 0; j < NP; ++j) acc[j][r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[j][r]), sc, acc[j][r]);
    }
  }
  for (int j = 0; j < NP; ++j) store16<MR>(g, r0, acc[j], col0 + 16 * j);
}

// The last `rest` (< R + 1) rows of NP panels as one tile.
template <int NP, int R>
static inline void tail(const GemmInt8Args& g, const uint8_t* p0, int64_t r, int col0, int rest) {
  if constexpr (R > 0) {
    if (rest == R) tile<R, NP>(g, p0, r, col0);
    else tail<NP, R - 1>(g, p0, r, col0, rest);
  }
}

// All rows of NP panels: tiles of kRows rows, then one shorter tile.
template <int NP>
static void panels(const GemmInt8Args& g, const uint8_t* p0, int col0) {
  // 2 * NP * kRows accumulators (F32 and the block's int32) + NP panel registers <= 32
  constexpr int kRows = NP == 2 ? 6 : 12;
  int64_t r = 0;
  for (; r + kRows <= g.rows; r += kRows) tile<kRows, NP>(g, p0, r, col0);
  tail<NP, kRows - 1>(g, p0, r, col0, int(g.rows - r));
}

// Panels two at a time (a row's broadcast group then feeds two instructions), the odd
// last one alone.
static void gemm(const GemmInt8Args& g) {
  int p = 0;
  for (; p + 2 <= g.n_panels; p += 2) panels<2>(g, g.panel + p * g.panel_stride, 16 * p);
  if (p < g.n_panels) panels<1>(g, g.panel + p * g.panel_stride, 16 * p);
}

static double dot_loop(int64_t iters) {
  __m512i acc[12];
  for (int j = 0; j < 12; ++j) acc[j] = _mm512_set1_epi32(j);
  const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-2);
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 12
    for (int j = 0; j < 12; ++j) acc[j] = _mm512_dpbusd_epi32(acc[j], a, b);
  }
  __m512i s = acc[0];
  for (int j = 1; j < 12; ++j) s = _mm512_add_epi32(s, acc[j]);
  volatile int sink = _mm512_reduce_add_epi32(s);
  (void)sink;
  return double(iters) * 12 * 64 * 2;
}

}  // namespace esolm_avx512vnni
#endif

namespace esolm {

const CpuInt8MathKernels* cpu_int8_math_kernels() {
#if defined(__x86_64__) && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && \
    defined(__AVX512VNNI__)
  static const CpuInt8MathKernels k{"avx512vnni", esolm_avx512vnni::quantize_row, esolm_avx512vnni::gemm,
                                    esolm_avx512vnni::dot_loop};
  if (!cpu_has_avx512_base() || !__builtin_cpu_supports("avx512vnni")) return nullptr;
  return &k;
#else
  return nullptr;
#endif
}

}  // namespace esolm
