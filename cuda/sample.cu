// sample.cu — fused sampler (see sample.cuh), one CTA of 512 threads per row.
//
// Mirrors sampler.cpp's definition, not its arithmetic order:
//   x_t = double(logit_t) / T (NaN -> -inf), mask excluded, m = max x.
//   Greedy (or invalid T): argmax of the float logits, lowest id on ties.
//   +inf present: uniform Gumbel among the +inf tokens; all -inf: uniform among all.
//   top_p < 1: keep t iff mass(x > x_t) <= p * Z (Z = sum of exp(x - m)); ties all kept.
//   Pick: argmax over kept t of x_t - log(-log u_t), u_t = draw_uniform(...), lowest id on ties.
// Nucleus threshold without a sort: (1) one pass computes e = exp(x - m) and a 256-bin
// histogram of (m - x) in 1/8 nat (mass, count, key range per bin) — the CPU's bins;
// (2) the bin holding the boundary is refined by a 4 x 8-bit radix select over an
// order-preserving 32-bit key of the float logit (x is monotone in the logit, so key order
// is x order and equal keys are equal x). Masses are summed as 64-bit fixed point
// (e * 2^S, S = 62 - bitlen(V)), so every sum is exact and order-independent: the result
// is deterministic and equals the float64 definition up to ~1e-13 of Z.
#include <math_constants.h>

#include "engine/philox.h"
#include "sample.cuh"

namespace esolm {
namespace cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kBins = 256;
constexpr double kBinsPerNat = 8.0;
constexpr double kGumbelMax = 37.0;  // Philox Gumbel noise is < 36.04 (sampler.cpp)

struct Args {
  const float* logits;
  int64_t ld;
  int vocab, mask;
  double top_p, temp;
  bool greedy, div, filter;
  uint64_t seed;
  int shift;  // S: fixed-point scale of the masses
  const DrawKey* keys;
  int32_t* out;
};

// Order-preserving key of a float (NaN as -inf, -0 as +0).
__device__ __forceinline__ uint32_t key_of(float f) {
  if (f != f) f = -INFINITY;
  if (f == 0.f) f = 0.f;
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float float_of_key(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}
__device__ __forceinline__ double scaled(float f, const Args& a) {
  double d = double(f);
  if (d != d) d = -CUDART_INF;
  if (a.div) d /= a.temp;
  return d;
}

__device__ __forceinline__ uint64_t warp_max_u64(uint64_t v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const uint64_t w = __shfl_xor_sync(~0u, v, o);
    v = w > v ? w : v;
  }
  return v;
}

// Block-wide max of a u64 (all threads get it). `red` holds kWarps entries.
__device__ uint64_t block_max_u64(uint64_t v, uint64_t* red) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  v = warp_max_u64(v);
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  v = lane < kWarps ? red[lane] : 0;
  return warp_max_u64(v);
}

// (score, id) better: larger score, then lower id; id < 0 = none.
__device__ __forceinline__ bool better(double s, int t, double bs, int bt) {
  if (t < 0) return false;
  if (bt < 0) return true;
  return s > bs || (s == bs && t < bt);
}

__device__ __forceinline__ uint64_t fixed_mass(double x, double m, int shift) {
  const double e = exp(x - m);  // x <= m; exp of -inf is 0
  return __double2ull_rn(ldexp(e, shift));
}

__global__ void __launch_bounds__(kThreads) sample_kernel(Args a) {
  __shared__ unsigned long long mass[kBins];
  __shared__ unsigned int cnt[kBins], lo[kBins], hi[kBins];
  __shared__ uint64_t red[kWarps];
  __shared__ double red_s[kWarps];
  __shared__ int red_t[kWarps];
  __shared__ uint32_t s_lo, s_hi, s_prefix;
  __shared__ unsigned long long s_h;
  __shared__ double s_budget;

  const int64_t row = blockIdx.x;
  const float* lg = a.logits + row * a.ld;
  const int V = a.vocab, mask = a.mask, tid = threadIdx.x;
  int32_t* out = a.out + row;
  if (V - (mask >= 0 ? 1 : 0) <= 0) {
    if (tid == 0) *out = -1;
    return;
  }

  // ---- max key over non-mask tokens (lowest id among equals): greedy pick and m.
  uint64_t best = 0;
  for (int t = tid; t < V; t += kThreads) {
    if (t == mask) continue;
    const uint64_t pk = (uint64_t(key_of(lg[t])) << 32) | uint64_t(0xFFFFFFFFu - uint32_t(t));
    best = pk > best ? pk : best;
  }
  best = block_max_u64(best, red);
  const int top = int(0xFFFFFFFFu - uint32_t(best & 0xFFFFFFFFu));
  if (a.greedy) {
    if (tid == 0) *out = top;
    return;
  }
  const double m = scaled(float_of_key(uint32_t(best >> 32)), a);
  const bool pos_inf = m == CUDART_INF, neg_inf = m == -CUDART_INF;

  // ---- nucleus threshold (normal rows with top_p < 1): keep iff key >= thr_key.
  uint32_t thr_key = 0;
  if (!pos_inf && !neg_inf && a.filter) {
    for (int b = tid; b < kBins; b += kThreads) {
      mass[b] = 0;
      cnt[b] = 0;
      lo[b] = 0xFFFFFFFFu;
      hi[b] = 0;
    }
    __syncthreads();
    for (int t = tid; t < V; t += kThreads) {
      if (t == mask) continue;
      const float f = lg[t];
      const double x = scaled(f, a);
      const double d = x - m;
      const int b = int(fmin(-d * kBinsPerNat, double(kBins - 1)));
      const uint32_t k = key_of(f);
      atomicAdd(&mass[b], (unsigned long long)fixed_mass(x, m, a.shift));
      atomicAdd(&cnt[b], 1u);
      atomicMin(&lo[b], k);
      atomicMax(&hi[b], k);
    }
    __syncthreads();
    if (tid == 0) {
      unsigned long long z = 0;
      for (int b = 0; b < kBins; ++b) z += mass[b];
      const double budget = fmax(a.top_p, 0.0) * double(z);
      // The boundary lies in the last non-empty bin whose mass above fits the budget.
      int bstar = 0;
      unsigned long long h = 0, hstar = 0;
      for (int b = 0; b < kBins; ++b) {
        if (cnt[b] == 0) continue;
        if (double(h) > budget) break;
        bstar = b;
        hstar = h;
        h += mass[b];
      }
      s_budget = budget;
      s_h = hstar;
      s_lo = lo[bstar];
      s_hi = hi[bstar];
      s_prefix = cnt[bstar] == 1 ? hi[bstar] : 0;
      // One token in the bin: its value is the boundary. Else refine by radix below.
      cnt[0] = cnt[bstar];
    }
    __syncthreads();
    const bool single = cnt[0] == 1;
    const uint32_t klo = s_lo, khi = s_hi;
    const double budget = s_budget;
    if (single) {
      thr_key = s_prefix;
    } else {
      for (int level = 0; level < 4; ++level) {
        const int shift = 24 - 8 * level;
        const uint32_t prefix = s_prefix;
        __syncthreads();
        for (int b = tid; b < kBins; b += kThreads) {
          mass[b] = 0;
          cnt[b] = 0;
        }
        __syncthreads();
        for (int t = tid; t < V; t += kThreads) {
          if (t == mask) continue;
          const float f = lg[t];
          const uint32_t k = key_of(f);
          if (k < klo || k > khi) continue;
          if (level > 0 && (k >> (shift + 8)) != prefix) continue;
          const int dg = int((k >> shift) & 0xFFu);
          atomicAdd(&mass[dg], (unsigned long long)fixed_mass(scaled(f, a), m, a.shift));
          atomicAdd(&cnt[dg], 1u);
        }
        __syncthreads();
        if (tid == 0) {
          // Digits from high to low (larger key = larger x): same walk as over the bins.
          unsigned long long h = s_h, hstar = s_h;
          int dstar = -1;
          for (int dg = kBins - 1; dg >= 0; --dg) {
            if (cnt[dg] == 0) continue;
            if (double(h) > budget) break;
            dstar = dg;
            hstar = h;
            h += mass[dg];
          }
          if (dstar < 0) dstar = 0;  // unreachable: the bin's largest value qualifies
          s_prefix = (prefix << 8) | uint32_t(dstar);
          s_h = hstar;
        }
        __syncthreads();
      }
      thr_key = s_prefix;
    }
  }

  // ---- Gumbel-max over the kept set. Tokens 2j, 2j+1 share one Philox block.
  const DrawKey key = a.keys[row];
  double bs = 0;
  int bt = -1;
  const int pairs = (V + 1) / 2;
  for (int j = tid; j < pairs; j += kThreads) {
    double base[2];
    bool need[2];
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int t = 2 * j + e;
      need[e] = false;
      base[e] = 0;
      if (t >= V || t == mask) continue;
      const float f = lg[t];
      const double x = scaled(f, a);
      if (pos_inf) {
        if (x != CUDART_INF) continue;
      } else if (!neg_inf) {
        if (a.filter && key_of(f) < thr_key) continue;
        if (x == -CUDART_INF) continue;  // cannot beat the (finite) top
        base[e] = x;
        if (bt >= 0 && bs - x > kGumbelMax) continue;  // exact pruning: noise < 36.04
      }
      need[e] = true;
    }
    if (!need[0] && !need[1]) continue;
    Philox4 c{{uint32_t(j), key.position, key.round, key.sequence}};
    const Philox4 r = philox4x32_10(c, uint32_t(a.seed), uint32_t(a.seed >> 32));
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      if (!need[e]) continue;
      const double u = e ? philox_u53(r.v[2], r.v[3]) : philox_u53(r.v[0], r.v[1]);
      const double s = base[e] - log(-log(u));
      if (better(s, 2 * j + e, bs, bt)) {
        bs = s;
        bt = 2 * j + e;
      }
    }
  }
  // Block argmax of (score, id).
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const double s2 = __shfl_xor_sync(~0u, bs, o);
    const int t2 = __shfl_xor_sync(~0u, bt, o);
    if (better(s2, t2, bs, bt)) {
      bs = s2;
      bt = t2;
    }
  }
  const int warp = tid >> 5, lane = tid & 31;
  __syncthreads();
  if (lane == 0) {
    red_s[warp] = bs;
    red_t[warp] = bt;
  }
  __syncthreads();
  if (tid == 0) {
    double fs = red_s[0];
    int ft = red_t[0];
    for (int w = 1; w < kWarps; ++w)
      if (better(red_s[w], red_t[w], fs, ft)) {
        fs = red_s[w];
        ft = red_t[w];
      }
    *out = ft;
  }
}

}  // namespace

Status launch_sample_rows(const float* logits, int64_t ld, int vocab, int64_t rows,
                          const SampleParams& p, const DrawKey* keys, int32_t* out,
                          cudaStream_t stream) {
  if (rows <= 0) return Status::ok();
  if (rows > 0x7fffffff) return Status::error(Code::invalid_arg, "sample_rows: too many rows");
  Args a;
  a.logits = logits;
  a.ld = ld;
  a.vocab = vocab;
  a.mask = (p.mask_index >= 0 && p.mask_index < vocab) ? p.mask_index : -1;
  const bool valid_t = p.temperature > 0 && p.temperature < INFINITY;
  a.greedy = p.greedy || !valid_t;
  a.temp = valid_t ? p.temperature : 1.0;
  a.div = a.temp != 1.0;
  a.top_p = p.top_p;
  a.filter = p.top_p < 1.0;  // NaN or >= 1: no filtering
  a.seed = p.seed;
  int bits = 0;
  while (bits < 31 && (int64_t(1) << bits) <= int64_t(vocab)) ++bits;  // bitlen(vocab)
  a.shift = 62 - bits;
  a.keys = keys;
  a.out = out;
  sample_kernel<<<unsigned(rows), kThreads, 0, stream>>>(a);
  CUDA_CHECK_LAUNCH("sample_rows");
  return Status::ok();
}

}  // namespace cuda
}  // namespace esolm
