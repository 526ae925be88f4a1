// kernels_avx512.cpp — the AVX-512 kernel set (CMakeLists.txt compiles simd/*_avx512.cpp
// with -mavx512f/bw/vl/dq). Returned by cpu_kernels_avx512() only when cpuid reports
// AVX-512F, BW, VL and DQ.
//
// The GEMM micro-kernel holds one 16-column panel row in one zmm register, so a tile is
// MR rows x 16 columns with one accumulator per row. BF16 panels are stored in pairs of rows
// (kernels.h) and widened in registers (a 16-bit shift or a mask: exact), so a BF16 weight is
// read from memory once, as 2 bytes; Q8 panels are sign-extended and converted (exact) and scaled per column at the
// end. Few rows (the cached steps of a generation) are bound by the weight stream, not by FMAs:
// there the panels are prefetched ahead of the loads, and pairs of panels give each row two
// independent FMA chains. Many rows (a long forward, attention over many queries) are bound
// by the FMAs: calls of up to 4 panels run 4-panel x 6-row tiles (run_tile_wide).
// Attention of few rows with hd in {32, 64, 128} is attn_few_rows below; the rest of the
// attention runs the generic kernels_impl.h code (built with these flags) on this set's
// GEMM; the floors' helpers are the generic ones.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>
#include <type_traits>

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

// Bytes ahead of the current panel row that the streaming kernel prefetches: far enough
// to cover a memory access at the rate a few-row step streams (8 KiB gave a generation
// about 10% more than 1 KiB on the 2-core EPYC; 16 KiB was slower again; on the Intel VM
// 2 KiB streamed 3-5% faster, on Zen 4 2, 4 and 8 KiB were within the noise, 2026-12-03).
// Past a panel's end it fetches the next panel's start, which the next call reads.
// -DESOLM_PREFETCH_BYTES=N rebuilds with another distance.
#ifndef ESOLM_PREFETCH_BYTES
#define ESOLM_PREFETCH_BYTES 8192
#endif
constexpr int kPrefetchBytes = ESOLM_PREFETCH_BYTES;

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

// BF16 panels here are in the pair layout (kernels.h): one 64-byte load holds rows kk
// (the low half of each 32-bit lane) and kk + 1 (the high half) of 16 columns.
static inline void load_pair16(const uint16_t* p, __m512& even, __m512& odd) {
  const __m512i w = _mm512_loadu_si512(p);
  even = _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
  odd = _mm512_castsi512_ps(_mm512_and_si512(w, _mm512_set1_epi32(int(0xffff0000u))));
}

// tile() for a BF16 pair panel: the same FMAs in the same order (k ascending).
template <int MR>
static inline void tile_pairs(const float* a, int64_t lda, const uint16_t* panel, int k, __m512 acc[MR]) {
  for (int r = 0; r < MR; ++r) acc[r] = _mm512_setzero_ps();
  const char* pf = reinterpret_cast<const char*>(panel) + kPrefetchBytes;
  int kk = 0;
  for (; kk + 2 <= k; kk += 2) {
    if (MR <= 8) _mm_prefetch(pf + kk * 32, _MM_HINT_T0);
    __m512 b0, b1;
    load_pair16(panel + kk * 16, b0, b1);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(a[r * lda + kk]), b0, acc[r]);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(a[r * lda + kk + 1]), b1, acc[r]);
  }
  if (kk < k) {  // odd k: the last pair's second row is padding (and a[k] is past the row)
    __m512 b0, b1;
    load_pair16(panel + kk * 16, b0, b1);
    for (int r = 0; r < MR; ++r) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(a[r * lda + kk]), b0, acc[r]);
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
  if constexpr (std::is_same<W, uint16_t>::value)
    tile_pairs<MR>(g.a + r0 * g.lda, g.lda, panel, g.k, acc);
  else
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

// A two-panel call's prefetch kPrefetchBytes ahead (kernels_impl.h pair_prefetch_offset).
static inline int64_t next_call_ahead(int64_t x, int64_t stride) { return pair_prefetch_offset(x, stride, kPrefetchBytes); }

// Two panels (32 columns) x MR rows: 2*MR accumulators; per k two panel loads and MR
// broadcasts feed 2*MR FMAs, and only MR row pointers are live (they fit in registers).
// run_tile2 for BF16 pair panels: two panel rows per load, the same FMA order.
template <int MR>
static inline void run_tile2_pairs(const GemmPanelArgs& g, const uint16_t* p0, const uint16_t* p1, int64_t r0) {
  __m512 acc0[MR], acc1[MR];
  for (int r = 0; r < MR; ++r) acc0[r] = acc1[r] = _mm512_setzero_ps();
  const float* a = g.a + r0 * g.lda;
  const char* c0 = reinterpret_cast<const char*>(p0);
  const char* c1 = reinterpret_cast<const char*>(p1);
  const int64_t stride = g.panel_stride * int64_t(sizeof(uint16_t));
  const int k = g.k;
  int kk = 0;
  for (; kk + 2 <= k; kk += 2) {
    // Few rows: the weight stream is the bound (up to 8 rows; prefetching for 5-8 rows
    // too: a 12-row batched step 20.4-20.9 ms against 21.0-24.0 ms, 3 interleaved rounds,
    // Zen 4, bench/forward.mjs --batches 3 --ns 4).
    if (MR <= 8) {
      const int64_t ahead = next_call_ahead(int64_t(kk) * 32, stride);
      _mm_prefetch(c0 + ahead, _MM_HINT_T0);
      _mm_prefetch(c1 + ahead, _MM_HINT_T0);
    }
    __m512 e0, o0, e1, o1;
    load_pair16(p0 + kk * 16, e0, o0);
    load_pair16(p1 + kk * 16, e1, o1);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const __m512 av = _mm512_set1_ps(a[r * g.lda + kk]);
      acc0[r] = _mm512_fmadd_ps(av, e0, acc0[r]);
      acc1[r] = _mm512_fmadd_ps(av, e1, acc1[r]);
    }
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const __m512 av = _mm512_set1_ps(a[r * g.lda + kk + 1]);
      acc0[r] = _mm512_fmadd_ps(av, o0, acc0[r]);
      acc1[r] = _mm512_fmadd_ps(av, o1, acc1[r]);
    }
  }
  if (kk < k) {  // odd k: see tile_pairs
    __m512 e0, o0, e1, o1;
    load_pair16(p0 + kk * 16, e0, o0);
    load_pair16(p1 + kk * 16, e1, o1);
    for (int r = 0; r < MR; ++r) {
      const __m512 av = _mm512_set1_ps(a[r * g.lda + kk]);
      acc0[r] = _mm512_fmadd_ps(av, e0, acc0[r]);
      acc1[r] = _mm512_fmadd_ps(av, e1, acc1[r]);
    }
  }
  store_tile<MR>(g, r0, acc0, 0);
  store_tile<MR>(g, r0, acc1, 16);
}

template <int MR, class W>
static inline void run_tile2_wide(const GemmPanelArgs& g, const W* p0, const W* p1, int64_t r0) {
  __m512 acc0[MR], acc1[MR];
  for (int r = 0; r < MR; ++r) acc0[r] = acc1[r] = _mm512_setzero_ps();
  const float* a = g.a + r0 * g.lda;
  const char* c0 = reinterpret_cast<const char*>(p0);
  const char* c1 = reinterpret_cast<const char*>(p1);
  const int64_t stride = g.panel_stride * int64_t(sizeof(W));
  for (int kk = 0; kk < g.k; ++kk) {
    if (MR <= 8 && (kk & 1) == 0) {  // few rows: the weight stream is the bound (above)
      const int64_t ahead = next_call_ahead(int64_t(kk) * 16 * int64_t(sizeof(W)), stride);
      _mm_prefetch(c0 + ahead, _MM_HINT_T0);
      _mm_prefetch(c1 + ahead, _MM_HINT_T0);
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

// F32 and Q8 panels one row per k, BF16 panels in pairs.
template <int MR, class W>
static inline void run_tile2(const GemmPanelArgs& g, const W* p0, const W* p1, int64_t r0) {
  if constexpr (std::is_same<W, uint16_t>::value)
    run_tile2_pairs<MR>(g, p0, p1, r0);
  else
    run_tile2_wide<MR>(g, p0, p1, r0);
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

// Bytes ahead of each panel row that the many-row tile prefetches into L1: its NV panel
// streams come from L2, and on an Intel Xeon (2 FMA ports) the tile ran at 62-68% of the
// FMA peak without it, 73-75% with it (bench/native/cpu_gemm_tile: 120 rows x 4 panels, F32).
constexpr int kWidePrefetchBytes = 512;

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
  if constexpr (std::is_same<W, uint16_t>::value) {
    // BF16 pair panels: the even row of each pair by a shift, then the odd row by a mask of
    // the same 64 bytes loaded again (an L1 hit), so no more than NV panel registers live.
    const __m512i odd_mask = _mm512_set1_epi32(int(0xffff0000u));
    for (int kk = 0; kk < g.k; kk += 2) {
      __m512 b[NV];
      for (int v = 0; v < NV; ++v)
        _mm_prefetch(reinterpret_cast<const char*>(p0 + v * g.panel_stride + kk * 16) + kWidePrefetchBytes, _MM_HINT_T0);
      for (int v = 0; v < NV; ++v)
        b[v] = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_loadu_si512(p0 + v * g.panel_stride + kk * 16), 16));
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        const __m512 av = _mm512_set1_ps(a[r * g.lda + kk]);
        for (int v = 0; v < NV; ++v) acc[v][r] = _mm512_fmadd_ps(av, b[v], acc[v][r]);
      }
      if (kk + 1 == g.k) break;  // odd k: the last pair's second row is padding
      for (int v = 0; v < NV; ++v)
        b[v] = _mm512_castsi512_ps(_mm512_and_si512(_mm512_loadu_si512(p0 + v * g.panel_stride + kk * 16), odd_mask));
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        const __m512 av = _mm512_set1_ps(a[r * g.lda + kk + 1]);
        for (int v = 0; v < NV; ++v) acc[v][r] = _mm512_fmadd_ps(av, b[v], acc[v][r]);
      }
    }
  } else {
    for (int kk = 0; kk < g.k; ++kk) {
      __m512 b[NV];
      if (sizeof(W) == 4 || kk % (4 / sizeof(W)) == 0)  // once per 64-byte line of each panel
        for (int v = 0; v < NV; ++v)
          _mm_prefetch(reinterpret_cast<const char*>(p0 + v * g.panel_stride + kk * 16) + kWidePrefetchBytes, _MM_HINT_T0);
      for (int v = 0; v < NV; ++v) b[v] = load_row16(p0 + v * g.panel_stride + kk * 16);
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        const __m512 av = _mm512_set1_ps(a[r * g.lda + kk]);
        for (int v = 0; v < NV; ++v) acc[v][r] = _mm512_fmadd_ps(av, b[v], acc[v][r]);
      }
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

// ---- attention of a few query rows (the cached steps of a generation) ----------------
// A task holds a few consecutive heads of one sequence (AttnRowsArgs::heads) and reads
// their K and V rows once for all its query rows (up to four at a time). One slot's row
// of a head is 4 * hd bytes of a 4 * hidden-byte row, so a head alone would touch a new
// page per slot and defeat the hardware prefetcher: the kernel walks the slots in blocks
// of kAttnBlock, every head of the task in turn inside a block (the block's pages stay in
// the TLB), and prefetches each head's rows kAttnAheadSlots slots ahead itself (into L2:
// that many slots of four lines each would overrun L1's miss buffers). Per row
// the arithmetic is that of one row alone (q.k over hd/16 lanes in order, the masked
// softmax, O = sum_s p_s V_s in slot order), so a row's output does not depend on the
// rows or heads beside it.
// 32 slots ahead: on the 2-vCPU Zen 4 VM the few-row attention ran ~35% faster than with
// 16 (build-native/cpu_step_profile --micro, interleaved builds; 48 and 64 were no better),
// and a generation ~6% faster. -DESOLM_ATTN_AHEAD=N rebuilds with another distance.
#ifndef ESOLM_ATTN_AHEAD
#define ESOLM_ATTN_AHEAD 32
#endif
constexpr int kAttnAheadSlots = ESOLM_ATTN_AHEAD;
constexpr int kAttnBlock = 32;
constexpr int kAttnFewRows = 4;  // rows per pass: NV * kAttnFewRows accumulators for O

// One head's row of a slot: NV lines of F32, NV / 2 of BF16.
template <int NV, class T>
static inline void prefetch_slot(const T* p) {
  constexpr int kLines = (NV * int(sizeof(T)) + 3) / 4;
#pragma GCC unroll 8
  for (int j = 0; j < kLines; ++j) _mm_prefetch(reinterpret_cast<const char*>(p) + 64 * j, _MM_HINT_T1);
}

// 16 K or V values as F32 (BF16 widened exactly: load_row16).
static inline __m512 load_kv16(const float* p) { return _mm512_loadu_ps(p); }
static inline __m512 load_kv16(const uint16_t* p) { return load_row16(p); }

template <class T> static inline const T* cache_k(const AttnRowsArgs& a);
template <> inline const float* cache_k<float>(const AttnRowsArgs& a) { return a.k; }
template <> inline const uint16_t* cache_k<uint16_t>(const AttnRowsArgs& a) { return a.k16; }
template <class T> static inline const T* cache_v(const AttnRowsArgs& a);
template <> inline const float* cache_v<float>(const AttnRowsArgs& a) { return a.v; }
template <> inline const uint16_t* cache_v<uint16_t>(const AttnRowsArgs& a) { return a.v16; }

// The q.k partial sums of R rows against one slot's K row (hd = 16 * NV): one 16-lane
// vector per row, a multiply then FMAs along hd.
template <int NV, int R, class T>
static inline void qk_partials(const __m512 (&q)[R][NV], const T* k, __m512 (&t)[R]) {
  __m512 kv[NV];
  for (int j = 0; j < NV; ++j) kv[j] = load_kv16(k + 16 * j);
  for (int i = 0; i < R; ++i) {
    t[i] = _mm512_mul_ps(q[i][0], kv[0]);
    for (int j = 1; j < NV; ++j) t[i] = _mm512_fmadd_ps(q[i][j], kv[j], t[i]);
  }
}

// _mm512_reduce_add_ps of four vectors at once, the same tree (so the same bits): its
// first step (hi 256 + lo 256) for slots a, b by reduce_pairs, the rest by reduce_fours on
// two such pairs; returns the four sums in slot order. One horizontal sum per slot spent
// ~8 shuffles and adds on each row's score; this spends ~2.5 (in generations over a BF16
// K/V, the attention of 2-4 rows 8-28% faster per call, Zen 5: bench/results, 2026-12-03 late).
static inline __m512 reduce_pairs(__m512 a, __m512 b) {  // [a: hi + lo halves | b: the same]
  return _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0xEE), _mm512_shuffle_f32x4(a, b, 0x44));
}
static inline __m128 reduce_fours(__m512 ab, __m512 cd) {
  const __m512 x = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0xDD), _mm512_shuffle_f32x4(ab, cd, 0x88));  // hi 128 + lo 128
  const __m512 y = _mm512_add_ps(x, _mm512_permute_ps(x, 0x4E));  // lanes [0] + [2], [1] + [3]
  const __m512 z = _mm512_add_ps(y, _mm512_permute_ps(y, 0xB1));  // then [0] + [1]
  return _mm512_castps512_ps128(_mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), z));
}

// Rows [r0, r0 + R) of a.heads heads, hd = 16 * NV, K and V of type T (F32, or a BF16
// cache). Scores of head h, row i at a.scratch + (h * R + i) * ld; O accumulates in the
// output rows block by block.
template <int NV, int R, class T>
static void attn_few_pass(const AttnRowsArgs& a, int r0) {
  const T* const kc = cache_k<T>(a);
  const T* const vc = cache_v<T>(a);
  const float neg = -std::numeric_limits<float>::infinity();
  const int hd = 16 * NV, G = a.heads;
  int end[R], end_max = 0;
  for (int i = 0; i < R; ++i) {
    end[i] = attn_key_end(a, a.q_slot0 + r0 + i);
    end_max = end[i] > end_max ? end[i] : end_max;
  }
  const int ld = (end_max + 15) / 16 * 16 + 16;
  // S = q.k for every visible slot: one pass over K.
  for (int s0 = 0; s0 < end_max; s0 += kAttnBlock) {
    const int s1 = s0 + kAttnBlock < end_max ? s0 + kAttnBlock : end_max;
    for (int h = 0; h < G; ++h) {
      __m512 q[R][NV];
      for (int i = 0; i < R; ++i)
        for (int j = 0; j < NV; ++j) q[i][j] = _mm512_loadu_ps(a.q + int64_t(r0 + i) * a.q_stride + h * hd + 16 * j);
      float* sc = a.scratch + int64_t(h) * R * ld;
      const T* kh = kc + h * hd;
      auto partials = [&](int s, __m512 (&t)[R]) {
        const T* k = kh + int64_t(s) * a.kv_stride;
        if (s + kAttnAheadSlots < end_max) prefetch_slot<NV>(k + kAttnAheadSlots * a.kv_stride);
        qk_partials<NV, R>(q, k, t);
      };
      int s = s0;
      for (; s + 4 <= s1; s += 4) {  // four slots' sums at once (reduce_pairs, reduce_fours)
        __m512 pair[2][R];
        for (int half = 0; half < 2; ++half) {
          __m512 t0[R], t1[R];
          partials(s + 2 * half, t0);
          partials(s + 2 * half + 1, t1);
          for (int i = 0; i < R; ++i) pair[half][i] = reduce_pairs(t0[i], t1[i]);
        }
        const __m128i slots = _mm_add_epi32(_mm_set1_epi32(s), _mm_setr_epi32(0, 1, 2, 3));
        for (int i = 0; i < R; ++i) {
          const __m128 dots = _mm_mul_ps(reduce_fours(pair[0][i], pair[1][i]), _mm_set1_ps(a.scale));
          const __mmask8 visible = _mm_cmplt_epi32_mask(slots, _mm_set1_epi32(end[i]));
          _mm_storeu_ps(sc + i * ld + s, _mm_mask_blend_ps(visible, _mm_set1_ps(neg), dots));
        }
      }
      for (; s < s1; ++s) {
        __m512 t[R];
        partials(s, t);
        for (int i = 0; i < R; ++i) sc[i * ld + s] = s < end[i] ? _mm512_reduce_add_ps(t[i]) * a.scale : neg;
      }
    }
  }
  // Masked softmax per head and row (kernels_impl.h, as the direct kernel).
  float inv[kAttnMaxGroupHeads][R];
  for (int h = 0; h < G; ++h)
    for (int i = 0; i < R; ++i) {
      float* row = a.scratch + (int64_t(h) * R + i) * ld;
      const float sum = softmax_exp_row(a, a.q_slot0 + r0 + i, row, end[i], end_max);
      inv[h][i] = end[i] > 0 ? 1.0f / sum : 0.0f;
    }
  // O = sum_s p_s V_s: one pass over V, the sums kept in the output rows between blocks.
  for (int s0 = 0; s0 < end_max || s0 == 0; s0 += kAttnBlock) {
    const int s1 = s0 + kAttnBlock < end_max ? s0 + kAttnBlock : end_max;
    const bool last = s1 >= end_max;
    for (int h = 0; h < G; ++h) {
      const float* sc = a.scratch + int64_t(h) * R * ld;
      __m512 acc[R][NV];
      for (int i = 0; i < R; ++i)
        for (int j = 0; j < NV; ++j)
          acc[i][j] = s0 == 0 ? _mm512_setzero_ps() : _mm512_loadu_ps(a.out + int64_t(r0 + i) * a.out_stride + h * hd + 16 * j);
      for (int s = s0; s < s1; ++s) {
        const T* v = vc + int64_t(s) * a.kv_stride + h * hd;
        if (s + kAttnAheadSlots < end_max) prefetch_slot<NV>(v + kAttnAheadSlots * a.kv_stride);
        __m512 vv[NV];
        for (int j = 0; j < NV; ++j) vv[j] = load_kv16(v + 16 * j);
        for (int i = 0; i < R; ++i) {
          const float p = sc[i * ld + s];
          if (p == 0.0f) continue;  // masked (or underflowed) slots add nothing
          const __m512 pv = _mm512_set1_ps(p);
          for (int j = 0; j < NV; ++j) acc[i][j] = _mm512_fmadd_ps(pv, vv[j], acc[i][j]);
        }
      }
      for (int i = 0; i < R; ++i) {
        float* o = a.out + int64_t(r0 + i) * a.out_stride + h * hd;
        const __m512 iv = _mm512_set1_ps(last ? inv[h][i] : 1.0f);
        for (int j = 0; j < NV; ++j) _mm512_storeu_ps(o + 16 * j, last ? _mm512_mul_ps(acc[i][j], iv) : acc[i][j]);
      }
    }
    if (last) break;
  }
}

template <int NV, class T>
static void attn_few_rows_t(const AttnRowsArgs& a) {
  int r = a.r0;
  for (; r + kAttnFewRows <= a.r1; r += kAttnFewRows) attn_few_pass<NV, kAttnFewRows, T>(a, r);
  switch (a.r1 - r) {
    case 3: attn_few_pass<NV, 3, T>(a, r); break;
    case 2: attn_few_pass<NV, 2, T>(a, r); break;
    case 1: attn_few_pass<NV, 1, T>(a, r); break;
    default: break;
  }
}

template <int NV>
static void attn_few_rows(const AttnRowsArgs& a) {
  if (a.k16) return attn_few_rows_t<NV, uint16_t>(a);
  attn_few_rows_t<NV, float>(a);
}

// Few rows with hd in {32, 64, 128} (and at most kAttnMaxGroupHeads heads) read K and V
// once per four rows; the rest is the generic kernel (direct rows or packed panels).
static void attn_rows16(const AttnRowsArgs& a) {
  if (a.r1 - a.r0 <= kAttnDirectRows && a.heads <= kAttnMaxGroupHeads) {
    switch (a.head_dim) {
      case 32: return attn_few_rows<2>(a);
      case 64: return attn_few_rows<4>(a);
      case 128: return attn_few_rows<8>(a);
      default: break;
    }
  }
  attn_rows_impl<gemm_panel16>(a);
}

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
    const char* ahead = reinterpret_cast<const char*>(p + i) + kReadPrefetchBytes;  // kernels_impl.h
    for (int line = 0; line < 4; ++line) _mm_prefetch(ahead + 64 * line, _MM_HINT_T0);
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
  if (!cpu_has_avx512_base()) return nullptr;
  return &k;
#else
  return nullptr;
#endif
}

}  // namespace esolm
