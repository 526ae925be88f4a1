// kernels_avx512.cpp — the AVX-512 kernel set (CMakeLists.txt compiles simd/*_avx512.cpp
// with -mavx512f/bw/vl/dq). Returned by cpu_kernels_avx512() only when cpuid reports
// AVX-512F, BW, VL and DQ.
//
// The GEMM micro-kernel holds one 16-column panel row in one zmm register, so a tile is
// MR rows x 16 columns with one accumulator per row. BF16 panels are widened in registers
// (a zero-extend and a 16-bit shift: exact), so a BF16 weight is read from memory once, as
// 2 bytes; Q8 panels are sign-extended and converted (exact) and scaled per column at the
// end. Few rows (the cached steps of a generation) are bound by the weight stream, not by FMAs:
// there the panels are prefetched ahead of the loads, and pairs of panels give each row two
// independent FMA chains. Many rows (a long forward, attention over many queries) are bound
// by the FMAs: calls of up to 4 panels run 4-panel x 6-row tiles (run_tile_wide).
// Attention runs the generic kernels_impl.h code (built with these flags) on this set's GEMM;
// the floors' helpers are the generic ones.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "cpu/kernels.h"

#if defined(__x86_64__) && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#include <immintrin.h>

namespace esolm_avx512 {
#include "cpu/kernels_impl.h"

static inline __m512 load_row16(const float* p) { return _mm512_loadu_ps(p); }
static inline __m512 load_row16(const uint16_t* p) {
  const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));  // bf16 -> f32: the bits move up 16
}

static inline __m512 load_row16(const int8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}

// Bytes ahead of the current panel row that the streaming kernel prefetches.
constexpr int kPrefetchBytes = 1024;

// acc[r] = sum_k a[r, k] * panel[k][0..15] for MR rows. Every tile accumulates each output
// in the same order (k ascending, one FMA chain per output from zero), so a row's result
// does not depend on how many rows share the call. Few rows stream the panel: prefetch it.
template <int MR, class W>
static inline void tile(const float* a, int64_t lda, const W* panel, int k, __m512 acc[MR]) {
  for (int r = 0; r < MR; ++r) acc[r] = _mm512_setzero_ps();
  const char* pf = reinterpret_cast<const char*>(panel) + kPrefetchBytes;
  for (int kk = 0; kk < k; ++kk) {
    if (MR <= 8 && (kk & 1) == 0) _mm_prefetch(pf + kk * 16 * sizeof(W), _MM_HINT_T0);
    const __m512 b = load_row16(panel + kk * 16);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(a[r * lda + kk]), b, acc[r]);
  }
}

static inline __m512 gelu16(__m512 y) { return __m512(gelu16v(v16f(y))); }

// Epilogue of 16 columns starting at column col0 of the call (16 p for the call's panel p).
template <int MR>
static inline void store_tile(const GemmPanelArgs& g, int64_t r0, const __m512 acc[MR], int col0 = 0) {
  const int ncols = g.ncols - col0;
  const __mmask16 m = ncols >= 16 ? __mmask16(0xffff) : __mmask16((1u << ncols) - 1u);
  const __m512 bias = g.bias ? _mm512_maskz_loadu_ps(m, g.bias + col0) : _mm512_setzero_ps();
  const __m512 scale = g.col_scale ? _mm512_loadu_ps(g.col_scale + col0) : _mm512_set1_ps(1.0f);
  for (int r = 0; r < MR; ++r) {
    float* c = g.c + (r0 + r) * g.ldc + col0;
    __m512 y = _mm512_fmadd_ps(acc[r], scale, bias);
    if (g.ep == EpilogueKind::gelu) y = gelu16(y);
    if (g.ep == EpilogueKind::add_to) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(m, c));
    _mm512_mask_storeu_ps(c, m, y);
  }
}

template <int MR, class W>
static inline void run_tile(const GemmPanelArgs& g, const W* panel, int64_t r0, int col0) {
  __m512 acc[MR];
  tile<MR>(g.a + r0 * g.lda, g.lda, panel, g.k, acc);
  store_tile<MR>(g, r0, acc, col0);
}

// One panel (16 columns): tiles of 14 rows, or of 8 (prefetching) for few rows.
template <class W>
static void gemm_panel_typed16(const GemmPanelArgs& g, const W* panel, int col0) {
  constexpr int MR = 14;  // 14 accumulators + the panel row + broadcasts fit in 32 zmm
  int64_t r = 0;
  if (g.rows <= 16) {
    for (; r + 8 <= g.rows; r += 8) run_tile<8>(g, panel, r, col0);
  } else {
    for (; r + MR <= g.rows; r += MR) run_tile<MR>(g, panel, r, col0);
  }
  switch (g.rows - r) {
    case 13: run_tile<13>(g, panel, r, col0); break;
    case 12: run_tile<12>(g, panel, r, col0); break;
    case 11: run_tile<11>(g, panel, r, col0); break;
    case 10: run_tile<10>(g, panel, r, col0); break;
    case 9: run_tile<9>(g, panel, r, col0); break;
    case 8: run_tile<8>(g, panel, r, col0); break;
    case 7: run_tile<7>(g, panel, r, col0); break;
    case 6: run_tile<6>(g, panel, r, col0); break;
    case 5: run_tile<5>(g, panel, r, col0); break;
    case 4: run_tile<4>(g, panel, r, col0); break;
    case 3: run_tile<3>(g, panel, r, col0); break;
    case 2: run_tile<2>(g, panel, r, col0); break;
    case 1: run_tile<1>(g, panel, r, col0); break;
    default: break;
  }
}

// Two panels (32 columns) x MR rows: 2*MR accumulators; per k two panel loads and MR
// broadcasts feed 2*MR FMAs, and only MR row pointers are live (they fit in registers).
template <int MR, class W>
static inline void run_tile2(const GemmPanelArgs& g, const W* p0, const W* p1, int64_t r0) {
  __m512 acc0[MR], acc1[MR];
  for (int r = 0; r < MR; ++r) acc0[r] = acc1[r] = _mm512_setzero_ps();
  const float* a = g.a + r0 * g.lda;
  const char* pf0 = reinterpret_cast<const char*>(p0) + kPrefetchBytes;
  const char* pf1 = reinterpret_cast<const char*>(p1) + kPrefetchBytes;
  for (int kk = 0; kk < g.k; ++kk) {
    if (MR <= 4 && (kk & 1) == 0) {  // few rows: the weight stream is the bound
      _mm_prefetch(pf0 + kk * 16 * sizeof(W), _MM_HINT_T0);
      _mm_prefetch(pf1 + kk * 16 * sizeof(W), _MM_HINT_T0);
    }
    const __m512 b0 = load_row16(p0 + kk * 16), b1 = load_row16(p1 + kk * 16);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const __m512 av = _mm512_set1_ps(a[r * g.lda + kk]);
      acc0[r] = _mm512_fmadd_ps(av, b0, acc0[r]);
      acc1[r] = _mm512_fmadd_ps(av, b1, acc1[r]);
    }
  }
  store_tile<MR>(g, r0, acc0, 0);
  store_tile<MR>(g, r0, acc1, 16);
}

template <class W>
static void gemm_two_panels16(const GemmPanelArgs& g, const W* p0) {
  constexpr int MR = 8;
  const W* p1 = p0 + g.panel_stride;
  int64_t r = 0;
  for (; r + MR <= g.rows; r += MR) run_tile2<MR>(g, p0, p1, r);
  switch (g.rows - r) {
    case 7: run_tile2<7>(g, p0, p1, r); break;
    case 6: run_tile2<6>(g, p0, p1, r); break;
    case 5: run_tile2<5>(g, p0, p1, r); break;
    case 4: run_tile2<4>(g, p0, p1, r); break;
    case 3: run_tile2<3>(g, p0, p1, r); break;
    case 2: run_tile2<2>(g, p0, p1, r); break;
    case 1: run_tile2<1>(g, p0, p1, r); break;
    default: break;
  }
}

// Many rows (a large forward, attention over many queries): NV adjacent panels x MR rows,
// NV*MR accumulators. Per k, NV panel loads and MR broadcasts feed NV*MR FMAs; the 4 x 6
// tile (24 accumulators + 4 panel rows + a broadcast in 32 zmm) needs the fewest loads per
// FMA, and only 6 rows of A are live: fewer L1 set conflicts than 8 or more rows when the
// row stride is a multiple of 4 KiB (k = 1024, 3072). Same accumulation order as tile().
template <int NV, int MR, class W>
static inline void run_tile_wide(const GemmPanelArgs& g, const W* p0, int64_t r0, int col0) {
  __m512 acc[NV][MR];
  for (int v = 0; v < NV; ++v)
    for (int r = 0; r < MR; ++r) acc[v][r] = _mm512_setzero_ps();
  const float* a = g.a + r0 * g.lda;
  // The tile's output lines (cold when the output is large, e.g. the logits): fetched
  // while the FMAs run, so the stores at the end do not wait on memory.
  for (int r = 0; r < MR; ++r) {
    const char* c = reinterpret_cast<const char*>(g.c + (r0 + r) * g.ldc + col0);
    for (int off = 0; off < NV * 64 + 63; off += 64) _mm_prefetch(c + off, _MM_HINT_T0);
  }
  for (int kk = 0; kk < g.k; ++kk) {
    __m512 b[NV];
    for (int v = 0; v < NV; ++v) b[v] = load_row16(p0 + v * g.panel_stride + kk * 16);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const __m512 av = _mm512_set1_ps(a[r * g.lda + kk]);
      for (int v = 0; v < NV; ++v) acc[v][r] = _mm512_fmadd_ps(av, b[v], acc[v][r]);
    }
  }
  for (int v = 0; v < NV; ++v) store_tile<MR>(g, r0, acc[v], col0 + 16 * v);
}

// The last rows - r0 < MR rows of an NV-panel column block.
template <int NV, int MR, class W>
static inline void run_rows_tail(const GemmPanelArgs& g, const W* p0, int64_t r0, int col0) {
  if constexpr (MR > 0) {
    if (g.rows - r0 == MR) return run_tile_wide<NV, MR>(g, p0, r0, col0);
    run_rows_tail<NV, MR - 1>(g, p0, r0, col0);
  }
}

// All rows of the NV panels starting at p0 (columns col0 .. col0 + 16 NV of the call).
// Fewer panels than 4 (the last of a weight) take taller tiles to keep >= 8 FMA chains.
template <int NV, class W>
static void gemm_rows_wide(const GemmPanelArgs& g, const W* p0, int col0) {
  constexpr int MR = NV == 4 ? 6 : NV == 3 ? 8 : NV == 2 ? 8 : 14;
  int64_t r = 0;
  for (; r + MR <= g.rows; r += MR) run_tile_wide<NV, MR>(g, p0, r, col0);
  run_rows_tail<NV, MR - 1>(g, p0, r, col0);
}

// n_panels > 2 adjacent panels, 4 at a time.
template <class W>
static void gemm_wide16(const GemmPanelArgs& g, const W* panel) {
  int p = 0;
  for (; p + 4 <= g.n_panels; p += 4) gemm_rows_wide<4>(g, panel + p * g.panel_stride, 16 * p);
  const W* rest = panel + p * g.panel_stride;
  switch (g.n_panels - p) {
    case 3: gemm_rows_wide<3>(g, rest, 16 * p); break;
    case 2: gemm_rows_wide<2>(g, rest, 16 * p); break;
    case 1: gemm_rows_wide<1>(g, rest, 16 * p); break;
    default: break;
  }
}

template <class W>
static void gemm_typed16(const GemmPanelArgs& g, const W* panel) {
  if (g.n_panels > 2) return gemm_wide16(g, panel);
  if (g.n_panels < 2) return gemm_panel_typed16(g, panel, 0);
  gemm_two_panels16(g, panel);  // also for one row: two independent FMA chains per k
}

static void gemm_panel16(const GemmPanelArgs& g) {
  if (g.panel_bf16) gemm_typed16(g, g.panel_bf16);
  else if (g.panel_q8) gemm_typed16(g, g.panel_q8);
  else gemm_typed16(g, g.panel);
}

// Attention over many query rows on this set's GEMM (few rows: the generic direct path).
static void attn_rows16(const AttnRowsArgs& a) { attn_rows_impl<gemm_panel16>(a); }

static double fma_loop16(int64_t iters) {
  __m512 acc[12];
  for (int j = 0; j < 12; ++j) acc[j] = _mm512_set1_ps(float(j) * 1e-3f);
  const __m512 b = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-3f);
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 12
    for (int j = 0; j < 12; ++j) acc[j] = _mm512_fmadd_ps(acc[j], b, c);
  }
  __m512 s = acc[0];
  for (int j = 1; j < 12; ++j) s = _mm512_add_ps(s, acc[j]);
  volatile float sink = _mm512_reduce_add_ps(s);
  (void)sink;
  return double(iters) * 12 * 16 * 2;
}

static float read_sum16(const float* p, int64_t n) {
  __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    s0 = _mm512_add_ps(s0, _mm512_loadu_ps(p + i));
    s1 = _mm512_add_ps(s1, _mm512_loadu_ps(p + i + 16));
    s2 = _mm512_add_ps(s2, _mm512_loadu_ps(p + i + 32));
    s3 = _mm512_add_ps(s3, _mm512_loadu_ps(p + i + 48));
  }
  float t = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
  for (; i < n; ++i) t += p[i];
  return t;
}

}  // namespace esolm_avx512
#endif

namespace esolm {

const CpuKernels* cpu_kernels_avx512() {
#if defined(__x86_64__) && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
  static const CpuKernels k{"avx512", esolm_avx512::gemm_panel16, esolm_avx512::attn_rows16,
                            esolm_avx512::attn_scratch_floats, esolm_avx512::fma_loop16,
                            esolm_avx512::read_sum16};
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") ||
      !__builtin_cpu_supports("avx512vl") || !__builtin_cpu_supports("avx512dq"))
    return nullptr;
  return &k;
#else
  return nullptr;
#endif
}

}  // namespace esolm
