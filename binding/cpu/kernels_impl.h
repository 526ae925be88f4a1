// kernels_impl.h — generic CPU kernels written with GCC vector extensions (8 floats).
// Included by kernels_portable.cpp and simd/kernels_avx2.cpp inside different
// namespaces; the compiler maps v8f to SSE pairs or to AVX2 ymm registers.
// (Includers include <vector> first: this file is included inside a namespace.)
// Numerics: fp32 accumulate; exp is a Cody–Waite + degree-6 polynomial (rel err ~2e-7).
#pragma once
#pragma GCC diagnostic ignored "-Wpsabi"
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "cpu/kernels.h"
using esolm::GemmPanelArgs;
using esolm::AttnRowsArgs;
using esolm::EpilogueKind;
using esolm::kAttnMaxGroupHeads;

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

static inline v8f ld8(const float* p) { v8f v; std::memcpy(&v, p, 32); return v; }
static inline float bf16_value(uint16_t h) {  // exact: the bits move up 16 places
  const uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
static inline void st8(float* p, v8f v) { std::memcpy(p, &v, 32); }
static inline v8f splat(float x) { return (v8f){x, x, x, x, x, x, x, x}; }
static inline float hsum(v8f v) {
  return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}
typedef float v4f __attribute__((vector_size(16)));
static inline v4f lo4(v8f v) { return __builtin_shufflevector(v, v, 0, 1, 2, 3); }
static inline v4f hi4(v8f v) { return __builtin_shufflevector(v, v, 4, 5, 6, 7); }

// 16 floats (two ymm in the AVX2 build, one zmm in the AVX-512 one): for the long
// elementwise passes (softmax, GELU); every lane is computed as in the 8-wide versions.
typedef float v16f __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
static inline v16f ld16(const float* p) { v16f v; std::memcpy(&v, p, 64); return v; }
static inline void st16(float* p, v16f v) { std::memcpy(p, &v, 64); }
static inline float hsum16(v16f v) {
  v8f lo, hi;
  std::memcpy(&lo, &v, 32);
  std::memcpy(&hi, reinterpret_cast<const char*>(&v) + 32, 32);
  return hsum(lo + hi);
}

// e^x for x in float range; x <= -87 gives 0. V: v8f or v16f, VI the int32 vector of
// the same width.
template <class V, class VI>
static inline V exp_v(V x) {
  const V lo = V{} + -87.0f, hi = V{} + 88.0f;
  x = x < lo ? lo : x;
  x = x > hi ? hi : x;
  V n = x * 1.44269504088896341f;
  n = __builtin_convertvector(__builtin_convertvector(n + (n >= 0 ? V{} + 0.5f : V{} + -0.5f), VI), V);
  V r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  V p = V{} + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  VI e = (__builtin_convertvector(n, VI) + 127) << 23;
  V scale;
  std::memcpy(&scale, &e, sizeof(V));
  V res = p * scale;
  return x <= lo ? V{} : res;
}
static inline v8f exp8(v8f x) { return exp_v<v8f, v8i>(x); }
static inline v16f exp16(v16f x) { return exp_v<v16f, v16i>(x); }

template <class V, class VI>
static inline V gelu_v(V u) {
  // 0.5 u (1 + tanh(s (u + 0.044715 u^3))), tanh(y) = 1 - 2 / (e^{2y} + 1)
  V y = 0.7978845608028654f * (u + 0.044715f * u * u * u);
  V t = 1.0f - 2.0f / (exp_v<V, VI>(y + y) + 1.0f);
  return 0.5f * u * (1.0f + t);
}
static inline v8f gelu8(v8f u) { return gelu_v<v8f, v8i>(u); }
static inline v16f gelu16v(v16f u) { return gelu_v<v16f, v16i>(u); }

typedef uint32_t v8u __attribute__((vector_size(32)));

// One panel row: 16 weights as two 8-float vectors.
static inline void load_panel_row(const float* p, v8f& b0, v8f& b1) {
  b0 = ld8(p);
  b1 = ld8(p + 8);
}

typedef int8_t v8c __attribute__((vector_size(8)));
static inline void load_panel_row(const int8_t* p, v8f& b0, v8f& b1) {
  v8c lo, hi;
  std::memcpy(&lo, p, 8);
  std::memcpy(&hi, p + 8, 8);
  b0 = __builtin_convertvector(__builtin_convertvector(lo, v8i), v8f);
  b1 = __builtin_convertvector(__builtin_convertvector(hi, v8i), v8f);
}

// BF16 panels are stored in pairs of rows ([k/2][16][2], kernels.h): one 32-bit lane holds
// a column's rows kk (low half) and kk + 1 (high half), so a row is widened by one shift
// (even) or one mask (odd) per 8 values, each folded with its load (the [k][16] layout
// took a zero-extend and a shift: twice the work, which bound the AVX2 steps of few rows).
static inline void load_panel_even(const uint16_t* p, v8f& b0, v8f& b1) {
  v8u lo, hi;
  std::memcpy(&lo, p, 32);       // columns 0..7
  std::memcpy(&hi, p + 16, 32);  // columns 8..15
  lo <<= 16;                     // bf16 -> f32 is exact: the bits move up 16 places
  hi <<= 16;
  std::memcpy(&b0, &lo, 32);
  std::memcpy(&b1, &hi, 32);
}
// The odd row of the pair at p. The pointer goes through an empty asm first, so that the
// compiler loads the pair again (from L1) instead of keeping it in two registers across
// the even row's FMAs: with 12-16 sums in AVX2's 16 registers that spilled.
static inline void load_panel_odd(const uint16_t* p, v8f& b0, v8f& b1) {
  __asm__("" : "+r"(p));
  v8u lo, hi;
  std::memcpy(&lo, p, 32);
  std::memcpy(&hi, p + 16, 32);
  const v8u mask = {0xFFFF0000u, 0xFFFF0000u, 0xFFFF0000u, 0xFFFF0000u,
                    0xFFFF0000u, 0xFFFF0000u, 0xFFFF0000u, 0xFFFF0000u};
  lo &= mask;
  hi &= mask;
  std::memcpy(&b0, &lo, 32);
  std::memcpy(&b1, &hi, 32);
}

// acc[r] += a[r, kk] * (panel row kk = b0 | b1) for the MR rows.
template <int MR>
static inline void fma_panel_row(const float* a, int64_t lda, int kk, v8f b0, v8f b1, v8f acc[][2]) {
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    const v8f av = splat(a[r * lda + kk]);
    acc[r][0] += av * b0;
    acc[r][1] += av * b1;
  }
}

// The same for two panels side by side (rows kk of both: b0 | b1 and d0 | d1).
template <int MR>
static inline void fma_panel_rows2(const float* a, int64_t lda, int kk, v8f b0, v8f b1, v8f d0, v8f d1,
                                   v8f acc0[][2], v8f acc1[][2]) {
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r) {
    const v8f av = splat(a[r * lda + kk]);
    acc0[r][0] += av * b0;
    acc0[r][1] += av * b1;
    acc1[r][0] += av * d0;
    acc1[r][1] += av * d1;
  }
}

// BF16 panels hold pairs of rows (load_panel_even / load_panel_odd); F32 and q8 ones single
// rows. Either way each output takes its FMAs in the order kk = 0, 1, ..., one chain.
template <class W>
constexpr bool kPairPanel = sizeof(W) == 2;

// Few rows (the cached steps of a generation) are bound by the weight stream: there the
// kernels prefetch each panel kFewPrefetchBytes ahead (Stream), on into the next panel.
constexpr int64_t kFewPrefetchBytes = 4096;

template <int MR, bool Stream, class W>
static inline void gemm_block(const float* a, int64_t lda, const W* panel, int k, v8f acc[][2]) {
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = splat(0.0f);
  const char* c = reinterpret_cast<const char*>(panel);
  constexpr int kRowsPerLine = 64 / (16 * int(sizeof(W)));  // panel rows per 64-byte line
  for (int kk = 0; kk < k; kk += kPairPanel<W> ? 2 : 1) {
    if (Stream && kk % kRowsPerLine == 0) __builtin_prefetch(c + int64_t(kk) * 16 * int64_t(sizeof(W)) + kFewPrefetchBytes);
    v8f b0, b1;
    if constexpr (kPairPanel<W>) {
      load_panel_even(panel + kk * 16, b0, b1);
      fma_panel_row<MR>(a, lda, kk, b0, b1, acc);
      if (kk + 1 == k) break;  // an odd k: the pair's other row is padding
      load_panel_odd(panel + kk * 16, b0, b1);
      fma_panel_row<MR>(a, lda, kk + 1, b0, b1, acc);
    } else {
      load_panel_row(panel + kk * 16, b0, b1);
      fma_panel_row<MR>(a, lda, kk, b0, b1, acc);
    }
  }
}

template <int MR>
static inline void gemm_store(const GemmPanelArgs& g, int64_t r0, v8f acc[][2]) {
  for (int r = 0; r < MR; ++r) {
    float* c = g.c + (r0 + r) * g.ldc;
    alignas(32) float tmp[16];
    v8f y0 = acc[r][0], y1 = acc[r][1];
    if (g.col_scale) {
      y0 *= ld8(g.col_scale);
      y1 *= ld8(g.col_scale + 8);
    }
    if (g.bias && g.ncols == 16) {
      y0 += ld8(g.bias);
      y1 += ld8(g.bias + 8);
    } else if (g.bias) {
      st8(tmp, y0);
      st8(tmp + 8, y1);
      for (int j = 0; j < g.ncols; ++j) tmp[j] += g.bias[j];
      y0 = ld8(tmp);
      y1 = ld8(tmp + 8);
    }
    if (g.ep == EpilogueKind::gelu) {
      y0 = gelu8(y0);
      y1 = gelu8(y1);
    }
    if (g.ncols == 16) {
      if (g.ep == EpilogueKind::add_to) {
        y0 += ld8(c);
        y1 += ld8(c + 8);
      }
      st8(c, y0);
      st8(c + 8, y1);
    } else {
      st8(tmp, y0);
      st8(tmp + 8, y1);
      if (g.ep == EpilogueKind::add_to)
        for (int j = 0; j < g.ncols; ++j) c[j] += tmp[j];
      else
        for (int j = 0; j < g.ncols; ++j) c[j] = tmp[j];
    }
  }
}

template <int MR, bool Stream, class W>
static inline void gemm_tile(const GemmPanelArgs& g, const W* panel, int64_t r) {
  v8f acc[MR][2];
  gemm_block<MR, Stream>(g.a + r * g.lda, g.lda, panel, g.k, acc);
  gemm_store<MR>(g, r, acc);
}

template <bool Stream, class W>
static void gemm_panel_typed(const GemmPanelArgs& g, const W* panel) {
  constexpr int MR = 6;
  int64_t r = 0;
  for (; r + MR <= g.rows; r += MR) gemm_tile<MR, Stream>(g, panel, r);
  switch (g.rows - r) {
    case 5: gemm_tile<5, Stream>(g, panel, r); break;
    case 4: gemm_tile<4, Stream>(g, panel, r); break;
    case 3: gemm_tile<3, Stream>(g, panel, r); break;
    case 2: gemm_tile<2, Stream>(g, panel, r); break;
    case 1: gemm_tile<1, Stream>(g, panel, r); break;
    default: break;
  }
}

// One panel; Stream: few rows, prefetching the panel.
template <bool Stream>
static void gemm_one_panel(const GemmPanelArgs& g) {
  if (g.panel_bf16) gemm_panel_typed<Stream>(g, g.panel_bf16);
  else if (g.panel_q8) gemm_panel_typed<Stream>(g, g.panel_q8);
  else gemm_panel_typed<Stream>(g, g.panel);
}

// Panel p of a call of several, as a one-panel call.
static GemmPanelArgs one_panel_args(const GemmPanelArgs& g, int p) {
  GemmPanelArgs h = g;
  h.n_panels = 1;
  h.panel = g.panel ? g.panel + p * g.panel_stride : nullptr;
  h.panel_bf16 = g.panel_bf16 ? g.panel_bf16 + p * g.panel_stride : nullptr;
  h.panel_q8 = g.panel_q8 ? g.panel_q8 + p * g.panel_stride : nullptr;
  h.col_scale = g.col_scale ? g.col_scale + 16 * p : nullptr;
  h.bias = g.bias ? g.bias + 16 * p : nullptr;
  h.c = g.c + 16 * p;
  h.ncols = g.ncols - 16 * p < 16 ? g.ncols - 16 * p : 16;
  return h;
}

// Where a few-row kernel reading panels p and p + 1 side by side (and the next call p + 2
// and p + 3, `stride` bytes apart) prefetches `distance` bytes past offset x of each: within
// the panel while that stays inside it, else in the panel two further on, at the place the
// next call reads first. (Running straight on past panel p's end would land in panel p + 1,
// already being read, and leave the next call's second panel cold: ~10% of the stream rate
// at k = 768 in the AVX-512 set.)
static inline int64_t pair_prefetch_offset(int64_t x, int64_t stride, int64_t distance) {
  const int64_t ahead = x + distance;
  return ahead < stride ? ahead : ahead + stride;
}

// Few rows (the cached steps of a generation), up to kFewRows, stream the weights. One or
// two rows take two panels side by side (gemm_block2, each prefetched kFewPrefetchBytes
// ahead, pair_prefetch_offset): four independent FMA chains a row. Three to eight take one
// panel at a time (gemm_block with Stream): two panels' sums for three rows (12 of AVX2's
// 16 registers) and four panel halves spilled, and a three-row step ran 2.4x slower than a
// two-row one (Zen 5, build-native/cpu_step_profile --micro with ESOLM_CPU_KERNELS=avx2).
// On the Zen 4 VM the pairs took the AVX2 set's BF16 generation from 10.2 to 8.6-9.6 s
// (alternating runs). Each output keeps gemm_block's FMA order (k ascending, one chain
// from zero), so the bits do not depend on the path.
constexpr int kPairRows = 2;
constexpr int kFewRows = 8;

template <int MR, class W>
static inline void gemm_block2(const float* a, int64_t lda, const W* p0, const W* p1, int k, int64_t stride_bytes,
                               v8f acc0[][2], v8f acc1[][2]) {
  for (int r = 0; r < MR; ++r) acc0[r][0] = acc0[r][1] = acc1[r][0] = acc1[r][1] = splat(0.0f);
  const char* c0 = reinterpret_cast<const char*>(p0);
  const char* c1 = reinterpret_cast<const char*>(p1);
  constexpr int kRowsPerLine = 64 / (16 * int(sizeof(W)));  // panel rows per 64-byte line
  for (int kk = 0; kk < k; kk += kPairPanel<W> ? 2 : 1) {
    if (kk % kRowsPerLine == 0) {
      const int64_t ahead = pair_prefetch_offset(int64_t(kk) * 16 * int64_t(sizeof(W)), stride_bytes, kFewPrefetchBytes);
      __builtin_prefetch(c0 + ahead);
      __builtin_prefetch(c1 + ahead);
    }
    v8f b0, b1, d0, d1;
    if constexpr (kPairPanel<W>) {
      load_panel_even(p0 + kk * 16, b0, b1);
      load_panel_even(p1 + kk * 16, d0, d1);
      fma_panel_rows2<MR>(a, lda, kk, b0, b1, d0, d1, acc0, acc1);
      if (kk + 1 == k) break;
      load_panel_odd(p0 + kk * 16, b0, b1);
      load_panel_odd(p1 + kk * 16, d0, d1);
      fma_panel_rows2<MR>(a, lda, kk + 1, b0, b1, d0, d1, acc0, acc1);
    } else {
      load_panel_row(p0 + kk * 16, b0, b1);
      load_panel_row(p1 + kk * 16, d0, d1);
      fma_panel_rows2<MR>(a, lda, kk, b0, b1, d0, d1, acc0, acc1);
    }
  }
}

template <int MR, class W>
static void gemm_pair_rows(const GemmPanelArgs& h0, const GemmPanelArgs& h1, const W* p0, const W* p1, int64_t stride_bytes) {
  v8f acc0[MR][2], acc1[MR][2];
  gemm_block2<MR>(h0.a, h0.lda, p0, p1, h0.k, stride_bytes, acc0, acc1);
  gemm_store<MR>(h0, 0, acc0);
  gemm_store<MR>(h1, 0, acc1);
}

template <class W>
static void gemm_pair_few(const GemmPanelArgs& h0, const GemmPanelArgs& h1, const W* p0, const W* p1, int64_t stride) {
  const int64_t stride_bytes = stride * int64_t(sizeof(W));
  switch (h0.rows) {
    case 2: return gemm_pair_rows<2>(h0, h1, p0, p1, stride_bytes);
    case 1: return gemm_pair_rows<1>(h0, h1, p0, p1, stride_bytes);
    default: return;
  }
}

static void gemm_panel_impl(const GemmPanelArgs& g) {
  const bool few = g.rows >= 1 && g.rows <= kFewRows;
  int p = 0;
  if (few && g.rows <= kPairRows) {
    for (; p + 2 <= g.n_panels; p += 2) {
      const GemmPanelArgs h0 = one_panel_args(g, p), h1 = one_panel_args(g, p + 1);
      if (g.panel_bf16) gemm_pair_few(h0, h1, h0.panel_bf16, h1.panel_bf16, g.panel_stride);
      else if (g.panel_q8) gemm_pair_few(h0, h1, h0.panel_q8, h1.panel_q8, g.panel_stride);
      else gemm_pair_few(h0, h1, h0.panel, h1.panel, g.panel_stride);
    }
  }
  for (; p < g.n_panels; ++p) {  // the rest one after the other
    if (few) gemm_one_panel<true>(one_panel_args(g, p));
    else gemm_one_panel<false>(one_panel_args(g, p));
  }
}

// Key slot `s` visible from query slot `qs`? (modes: see backend.h AttnMode)
static inline bool attn_visible(const AttnRowsArgs& a, int qs, int s) {
  switch (a.mode) {
    case 0: return s <= qs;                                  // causal
    case 1: return true;                                     // bidirectional
    case 2: return s <= qs || (a.clean[qs] && a.clean[s]);   // mixed2
    default: {                                               // sequential
      int half = a.n_kv / 2;
      if (qs < half) return s <= qs;
      return s < qs - half || s == qs;
    }
  }
}

// Keys at or past the returned slot are never visible from query slot qs.
static inline int attn_key_end(const AttnRowsArgs& a, int qs) {
  int e = (a.mode == 0 || a.mode == 3) ? qs + 1 : a.n_kv;
  return e < a.n_kv ? e : a.n_kv;
}

// Few query rows (cached steps): each row reads K and V straight from the cache — one dot
// product per key, a masked softmax, then O = sum_s p_s V_s — instead of packing K and V
// into panels, which would copy the whole cache for a handful of rows.
constexpr int kAttnDirectRows = 8;
constexpr int kAttnDirectMaxHd = 256;  // the output row lives in registers

// A row of attention scores for query slot qs, computed for slots [0, end), padded past n
// (>= end) to a multiple of 8: masks the slots qs cannot see, replaces every score x by
// exp(x - max) (0 for masked slots and padding) and returns their sum.
static inline float softmax_exp_row(const AttnRowsArgs& a, int qs, float* row, int end, int n) {
  const float neg = -std::numeric_limits<float>::infinity();
  if (a.mode == 2 || a.mode == 3)
    for (int s = 0; s < end; ++s)
      if (!attn_visible(a, qs, s)) row[s] = neg;
  const int kk = (n + 7) / 8 * 8;
  for (int s = end; s < kk; ++s) row[s] = neg;
  v8f mx = splat(neg);
  for (int s = 0; s < kk; s += 8) {
    v8f x = ld8(row + s);
    mx = x > mx ? x : mx;
  }
  float m = mx[0];
  for (int i = 1; i < 8; ++i) m = mx[i] > m ? mx[i] : m;
  v8f sum = splat(0.0f);
  const v8f mv = splat(m), ninf = splat(neg);
  for (int s = 0; s < kk; s += 8) {
    v8f x = ld8(row + s);
    v8f e = exp8(x - mv);
    e = x == ninf ? splat(0.0f) : e;
    st8(row + s, e);
    sum += e;
  }
  return hsum(sum);
}

// One query row's score for one key, as every path computes it: the dot product in
// 8-lane chunks (one FMA chain), summed across lanes, then the odd tail.
static inline float direct_dot(const float* q, const float* k, int hd, int hd8) {
  v8f c = splat(0.0f);
  for (int d = 0; d < hd8; d += 8) c += ld8(q + d) * ld8(k + d);
  float t = hsum(c);
  for (int d = hd8; d < hd; ++d) t += q[d] * k[d];
  return t;
}

// The few-row call reads K and V once for all its rows and heads: slots in blocks of
// kDirectBlock, every head in turn inside a block (one head's slot row is 4 * hd bytes of
// a longer row, so a head alone would step to a new page every few slots), each head's
// rows prefetched kDirectAhead slots ahead. Reading them once per row and head instead
// left the AVX2 set's generation attention at about a third of the read rate.
constexpr int kDirectBlock = 32;
constexpr int kDirectAhead = 32;

// direct_dot for four keys at once: four independent FMA chains, the same arithmetic each.
static inline void direct_dot4(const float* q, const float* k0, int64_t stride, int hd, int hd8, float scale, float* out) {
  const float *k1 = k0 + stride, *k2 = k1 + stride, *k3 = k2 + stride;
  v8f c0 = splat(0.0f), c1 = c0, c2 = c0, c3 = c0;
  for (int d = 0; d < hd8; d += 8) {
    const v8f qd = ld8(q + d);
    c0 += qd * ld8(k0 + d);
    c1 += qd * ld8(k1 + d);
    c2 += qd * ld8(k2 + d);
    c3 += qd * ld8(k3 + d);
  }
  if (hd8 == hd) {  // the four hsums at once, each in hsum's order (a 4x4 transpose)
    const v4f a0 = lo4(c0) + hi4(c0), a1 = lo4(c1) + hi4(c1), a2 = lo4(c2) + hi4(c2), a3 = lo4(c3) + hi4(c3);
    const v4f x01 = __builtin_shufflevector(a0, a1, 0, 4, 1, 5), y01 = __builtin_shufflevector(a0, a1, 2, 6, 3, 7);
    const v4f x23 = __builtin_shufflevector(a2, a3, 0, 4, 1, 5), y23 = __builtin_shufflevector(a2, a3, 2, 6, 3, 7);
    const v4f r0 = __builtin_shufflevector(x01, x23, 0, 1, 4, 5), r1 = __builtin_shufflevector(x01, x23, 2, 3, 6, 7);
    const v4f r2 = __builtin_shufflevector(y01, y23, 0, 1, 4, 5), r3 = __builtin_shufflevector(y01, y23, 2, 3, 6, 7);
    const v4f t = ((r0 + r1) + (r2 + r3)) * scale;  // lane j: hsum(c_j) * scale
    std::memcpy(out, &t, 16);
    return;
  }
  float t0 = hsum(c0), t1 = hsum(c1), t2 = hsum(c2), t3 = hsum(c3);
  for (int d = hd8; d < hd; ++d) {
    t0 += q[d] * k0[d];
    t1 += q[d] * k1[d];
    t2 += q[d] * k2[d];
    t3 += q[d] * k3[d];
  }
  out[0] = t0 * scale;
  out[1] = t1 * scale;
  out[2] = t2 * scale;
  out[3] = t3 * scale;
}

static inline void prefetch_head_row(const float* p, int hd) {
  for (int off = 0; off < hd; off += 16) __builtin_prefetch(p + off, 0, 2);  // into L2, as the AVX-512 set
}

// Rows [r0, r1) (at most kAttnDirectRows) of a.heads heads. Per row the arithmetic is that
// of the row alone (direct_dot per visible key, the masked softmax, O = sum_s p_s V_s in
// slot order, kept in the output row between blocks), so a row's output does not depend
// on the rows or heads beside it. Scores of head h, row i at a.scratch + (h * R + i) * ld.
// NV > 0: hd = 8 * NV known at compile time, so the output row's sums stay in registers
// (with a run-time hd they went through the stack at every key; the AVX2 generation's
// attention took 2.07 s that way, 1.85 s templated, before the L2 prefetch).
template <int NV>
static void attn_rows_direct_t(const AttnRowsArgs& a) {
  const int hd = NV > 0 ? 8 * NV : a.head_dim, nv = NV > 0 ? NV : hd / 8, hd8 = 8 * nv;
  const int G = a.heads, R = a.r1 - a.r0;
  int end[kAttnDirectRows], end_max = 0;
  for (int i = 0; i < R; ++i) {
    end[i] = attn_key_end(a, a.q_slot0 + a.r0 + i);
    end_max = end[i] > end_max ? end[i] : end_max;
  }
  const int ld = (end_max + 7) / 8 * 8 + 8;
  auto scores = [&](int h, int i) { return a.scratch + int64_t(h * R + i) * ld; };
  auto q_row = [&](int h, int i) { return a.q + int64_t(a.r0 + i) * a.q_stride + h * hd; };
  auto o_row = [&](int h, int i) { return a.out + int64_t(a.r0 + i) * a.out_stride + h * hd; };
  // S = q.k for every visible slot: one pass over K.
  for (int s0 = 0; s0 < end_max; s0 += kDirectBlock) {
    const int s1 = s0 + kDirectBlock < end_max ? s0 + kDirectBlock : end_max;
    for (int h = 0; h < G; ++h) {
      const float* kh = a.k + h * hd;
      // The first row's pass prefetches, a slot at a time between its dot products, not
      // the block's kDirectBlock slots in one burst ahead of them, which held the core
      // while the miss buffers drained: on the Zen 5 VM the AVX2 set's attention of 1-2
      // rows over cold K and V took 1.5-2.3x the time of a streaming read of them in a
      // burst, 1.3-1.6x interleaved (cpu_step_profile --attn-layers 60 --micro; in a
      // generation the per-call medians moved by 0-10%, within the host's noise).
      auto ahead = [&](int s) {
        if (s + kDirectAhead < end_max) prefetch_head_row(kh + int64_t(s + kDirectAhead) * a.kv_stride, hd);
      };
      for (int i = 0; i < R; ++i) {
        const int e = s1 < end[i] ? s1 : end[i];
        int s = s0;
        for (; s + 4 <= e; s += 4) {
          if (i == 0)
            for (int u = 0; u < 4; ++u) ahead(s + u);
          direct_dot4(q_row(h, i), kh + int64_t(s) * a.kv_stride, a.kv_stride, hd, hd8, a.scale, scores(h, i) + s);
        }
        for (; s < e; ++s) {
          if (i == 0) ahead(s);
          scores(h, i)[s] = direct_dot(q_row(h, i), kh + int64_t(s) * a.kv_stride, hd, hd8) * a.scale;
        }
        if (i == 0)
          for (; s < s1; ++s) ahead(s);  // slots the first row does not see
      }
    }
  }
  // The masked softmax of every (head, row).
  float inv[kAttnMaxGroupHeads][kAttnDirectRows];
  for (int h = 0; h < G; ++h)
    for (int i = 0; i < R; ++i)
      inv[h][i] = end[i] > 0 ? 1.0f / softmax_exp_row(a, a.q_slot0 + a.r0 + i, scores(h, i), end[i], end[i]) : 0.0f;
  // O = sum_s p_s V_s: one pass over V.
  for (int h = 0; h < G; ++h)
    for (int i = 0; i < R; ++i)
      for (int d = 0; d < hd; ++d) o_row(h, i)[d] = 0.0f;
  for (int s0 = 0; s0 < end_max; s0 += kDirectBlock) {
    const int s1 = s0 + kDirectBlock < end_max ? s0 + kDirectBlock : end_max;
    const bool last = s1 >= end_max;
    for (int h = 0; h < G; ++h) {
      auto ahead = [&](int s) {  // as in the K pass
        if (s + kDirectAhead < end_max) prefetch_head_row(a.v + int64_t(s + kDirectAhead) * a.kv_stride + h * hd, hd);
      };
      for (int i = 0; i < R; ++i) {
        const float* sc = scores(h, i);
        float* o = o_row(h, i);
        v8f acc[kAttnDirectMaxHd / 8];
        for (int j = 0; j < nv; ++j) acc[j] = ld8(o + 8 * j);
        float tail[8] = {};
        for (int d = nv * 8; d < hd; ++d) tail[d - nv * 8] = o[d];
        const int e = s1 < end[i] ? s1 : end[i];
        for (int s = s0; s < e; ++s) {
          if (i == 0) ahead(s);
          if (sc[s] == 0.0f) continue;  // masked (or underflowed) keys add nothing
          const v8f p = splat(sc[s]);
          const float* v = a.v + int64_t(s) * a.kv_stride + h * hd;
          for (int j = 0; j < nv; ++j) acc[j] += p * ld8(v + 8 * j);
          for (int d = nv * 8; d < hd; ++d) tail[d - nv * 8] += sc[s] * v[d];
        }
        const float f = last ? inv[h][i] : 1.0f;
        for (int j = 0; j < nv; ++j) st8(o + 8 * j, last ? acc[j] * splat(f) : acc[j]);
        for (int d = nv * 8; d < hd; ++d) o[d] = last ? tail[d - nv * 8] * f : tail[d - nv * 8];
        if (i == 0)
          for (int s = e > s0 ? e : s0; s < s1; ++s) ahead(s);  // slots the first row does not see
      }
    }
  }
}

static void attn_rows_direct(const AttnRowsArgs& a) {
  switch (a.head_dim) {
    case 32: return attn_rows_direct_t<4>(a);
    case 64: return attn_rows_direct_t<8>(a);
    case 128: return attn_rows_direct_t<16>(a);
    default: return attn_rows_direct_t<0>(a);
  }
}

// Attention of query rows [r0, r1) of one sequence and head (a.heads > 1: each head in
// turn) as two small GEMMs per block of rows: S = Q·Kᵀ with K packed as 16-key panels, a masked softmax in place,
// then O = P·V with V packed as 16-column panels — the same micro-kernel as linear()
// (Gemm: a kernel set with its own, wider GEMM passes it; all panels in one call).
template <void (*Gemm)(const GemmPanelArgs&) = gemm_panel_impl>
static void attn_rows_impl(const AttnRowsArgs& a) {
  if (a.k16) {
    // A BF16 cache (BF16 and int8 math): the visible slots of the call's heads widened to
    // F32 (exact), then the F32 path. (The AVX-512 set reads BF16 directly for few rows with
    // hd 32, 64 or 128, kernels_avx512.cpp.)
    int max_end = 0;
    for (int r = a.r0; r < a.r1; ++r) {
      const int e = attn_key_end(a, a.q_slot0 + r);
      max_end = e > max_end ? e : max_end;
    }
    const int w = a.heads * a.head_dim;
    thread_local std::vector<float> kf, vf;
    kf.resize(size_t(max_end) * w + 1);
    vf.resize(size_t(max_end) * w + 1);
    for (int s = 0; s < max_end; ++s)
      for (int j = 0; j < w; ++j) {
        kf[size_t(s) * w + j] = bf16_value(a.k16[int64_t(s) * a.kv_stride + j]);
        vf[size_t(s) * w + j] = bf16_value(a.v16[int64_t(s) * a.kv_stride + j]);
      }
    AttnRowsArgs f = a;
    f.k16 = f.v16 = nullptr;
    f.k = kf.data();
    f.v = vf.data();
    f.kv_stride = w;
    return attn_rows_impl<Gemm>(f);
  }
  if (a.r1 - a.r0 <= kAttnDirectRows && a.head_dim <= kAttnDirectMaxHd) return attn_rows_direct(a);
  if (a.heads > 1) {  // one head at a time
    for (int h = 0; h < a.heads; ++h) {
      AttnRowsArgs one = a;
      one.heads = 1;
      one.q += h * a.head_dim;
      one.k += h * a.head_dim;
      one.v += h * a.head_dim;
      one.out += h * a.head_dim;
      attn_rows_impl<Gemm>(one);
    }
    return;
  }
  const int hd = a.head_dim;
  int max_end = 0;
  for (int r = a.r0; r < a.r1; ++r) {
    int e = attn_key_end(a, a.q_slot0 + r);
    max_end = e > max_end ? e : max_end;
  }
  if (max_end <= 0) return;
  const int n_kp = (max_end + 15) / 16;       // key panels for S
  const int n_vp = (hd + 15) / 16;            // column panels for O
  const int ld_s = n_kp * 16;
  constexpr int kRows = 48;                   // query rows per block (multiple of 6)
  // Panels and score rows lie one cache line further apart than they need: with strides
  // that are multiples of 4 KiB (1024 keys, head_dim 64) the rows a GEMM tile reads
  // together would all fall in one L1 set.
  const size_t kps = size_t(hd + 1) * 16, vps = size_t(ld_s + 1) * 16, lds = size_t(ld_s) + 16;
  float* kp = a.scratch;                                  // n_kp panels [hd][16], kps apart
  float* vp = kp + n_kp * kps;                            // n_vp panels [ld_s][16], vps apart
  float* sm = vp + n_vp * vps;                            // [kRows][ld_s], rows lds apart
  for (int p = 0; p < n_kp; ++p)
    for (int j = 0; j < 16; ++j) {
      const int s = p * 16 + j;
      float* dst = kp + p * kps + j;
      if (s < max_end) {
        const float* src = a.k + int64_t(s) * a.kv_stride;
        for (int d = 0; d < hd; ++d) dst[d * 16] = src[d];
      } else {
        for (int d = 0; d < hd; ++d) dst[d * 16] = 0.0f;
      }
    }
  for (int p = 0; p < n_vp; ++p)
    for (int s = 0; s < ld_s; ++s) {
      float* dst = vp + p * vps + size_t(s) * 16;
      const int c0 = p * 16;
      if (s < max_end && c0 + 16 <= hd) {
        std::memcpy(dst, a.v + int64_t(s) * a.kv_stride + c0, 16 * sizeof(float));
        continue;
      }
      for (int j = 0; j < 16; ++j)
        dst[j] = (s < max_end && c0 + j < hd) ? a.v[int64_t(s) * a.kv_stride + c0 + j] : 0.0f;
    }
  const float neg = -std::numeric_limits<float>::infinity();
  for (int b0 = a.r0; b0 < a.r1; b0 += kRows) {
    const int b1 = b0 + kRows < a.r1 ? b0 + kRows : a.r1;
    int cend = 0;
    for (int r = b0; r < b1; ++r) {
      int e = attn_key_end(a, a.q_slot0 + r);
      cend = e > cend ? e : cend;
    }
    const int cp = (cend + 15) / 16;
    {
      GemmPanelArgs g;
      g.a = a.q + int64_t(b0) * a.q_stride;
      g.lda = a.q_stride;
      g.rows = b1 - b0;
      g.panel = kp;
      g.n_panels = cp;
      g.panel_stride = int64_t(kps);
      g.k = hd;
      g.c = sm;
      g.ldc = int64_t(lds);
      g.ncols = cp * 16;
      g.bias = nullptr;
      g.ep = EpilogueKind::store;
      Gemm(g);
    }
    const int kk = cp * 16;  // reduction length of P·V (zero-padded keys)
    for (int r = b0; r < b1; ++r) {
      float* row = sm + size_t(r - b0) * lds;
      const int qs = a.q_slot0 + r;
      const int end = attn_key_end(a, qs);
      // 16 keys at a time (kk is a multiple of 16). Keys at or past end16 are all hidden:
      // their probabilities are zero, not computed.
      const int end16 = (end + 15) / 16 * 16;
      const bool masked = a.mode == 2 || a.mode == 3;
      const v16i lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
      v16f mx = v16f{} + neg;
      for (int s = 0; s < end16; s += 16) {  // scale, mask and max in one pass
        v16f x = ld16(row + s) * a.scale;
        if (s + 16 > end) x = lane + s >= end ? v16f{} + neg : x;
        if (masked)
          for (int j = 0; j < 16 && s + j < end; ++j)
            if (!attn_visible(a, qs, s + j)) x[j] = neg;
        st16(row + s, x);
        mx = x > mx ? x : mx;
      }
      alignas(64) float mxs[16];
      st16(mxs, mx);
      float m = mxs[0];
      for (int i = 1; i < 16; ++i) m = mxs[i] > m ? mxs[i] : m;
      v16f sum = {};
      for (int s = 0; s < end16; s += 16) {
        const v16f x = ld16(row + s);
        v16f e = exp16(x - m);
        e = x == neg ? v16f{} : e;
        st16(row + s, e);
        sum += e;
      }
      const float inv = 1.0f / hsum16(sum);
      for (int s = 0; s < end16; s += 16) st16(row + s, ld16(row + s) * inv);
      for (int s = end16; s < kk; s += 16) st16(row + s, v16f{});
    }
    {
      GemmPanelArgs g;
      g.a = sm;
      g.lda = int64_t(lds);
      g.rows = b1 - b0;
      g.panel = vp;
      g.n_panels = n_vp;
      g.panel_stride = int64_t(vps);
      g.k = kk;
      g.c = a.out + int64_t(b0) * a.out_stride;
      g.ldc = a.out_stride;
      g.ncols = hd;
      g.bias = nullptr;
      g.ep = EpilogueKind::store;
      Gemm(g);
    }
  }
}

// Scratch floats attn_rows_impl needs for n_kv keys and head_dim hd.
static inline size_t attn_scratch_floats(int n_kv, int hd) {
  const size_t ld_s = size_t((n_kv + 15) / 16) * 16, n_vp = size_t((hd + 15) / 16);
  const size_t packed = ld_s * (hd + 1) + n_vp * (ld_s + 1) * 16 + 48 * (ld_s + 16) + 64;
  const size_t direct = size_t(kAttnMaxGroupHeads) * kAttnDirectRows * (ld_s + 16);  // attn_rows_direct
  return packed > direct ? packed : direct;
}

// Machine floors (CpuKernels::fma_loop / read_sum): 12 independent accumulators keep
// both FMA pipes busy; the streaming read sums 4 vectors at a time, prefetching ahead.
static double fma_loop_impl(int64_t iters) {
  v8f acc[12];
  for (int j = 0; j < 12; ++j) acc[j] = splat(float(j) * 1e-3f);
  const v8f b = splat(0.999999f), c = splat(1e-3f);
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 12
    for (int j = 0; j < 12; ++j) acc[j] = acc[j] * b + c;
  }
  v8f s = acc[0];
  for (int j = 1; j < 12; ++j) s += acc[j];
  volatile float sink = hsum(s);
  (void)sink;
  return double(iters) * 12 * 8 * 2;
}

// Bytes ahead that the streaming read prefetches: the engine's weight stream prefetches
// too, and on the 2-vCPU Intel VM a plain loop read 27-30 GB/s against 35-38 with the
// prefetch, below what the kernels streamed (so it was not the floor). Past the end it
// touches nothing: a prefetch never faults.
constexpr int kReadPrefetchBytes = 2048;

static float read_sum_impl(const float* p, int64_t n) {
  v8f s0 = splat(0.0f), s1 = s0, s2 = s0, s3 = s0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    __builtin_prefetch(reinterpret_cast<const char*>(p + i) + kReadPrefetchBytes);
    __builtin_prefetch(reinterpret_cast<const char*>(p + i) + kReadPrefetchBytes + 64);
    s0 += ld8(p + i);
    s1 += ld8(p + i + 8);
    s2 += ld8(p + i + 16);
    s3 += ld8(p + i + 24);
  }
  float t = hsum((s0 + s1) + (s2 + s3));
  for (; i < n; ++i) t += p[i];
  return t;
}
