// sampler.cpp — per-row token choice (sampler.h): float64 nucleus filter found by
// selection, then Gumbel-max over the kept set with Philox noise.
//
// Row pipeline: (1) scaled logits x = logit / T in float64 and their max m; (2) one exp
// pass e = exp(x - m) that also fills a histogram of (m - x) in 1/8-nat bins; (3) the
// histogram's cumulative mass names the one bin holding the nucleus boundary, and a
// 3-way quickselect over that bin's tokens finds the exact boundary value; (4) the kept
// ids (x >= boundary) are listed only when the Gumbel pass reads a list: a dense row (a
// quarter of the vocabulary or more kept) is scored in token order from x instead.
// Expected O(V), no sort. Scratch buffers are thread_local, so a warm thread allocates nothing.
#include "sampler.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <new>
#include <type_traits>

#include "philox.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
// x86-64 with GCC or Clang: AVX-512 and AVX2 forms of the row passes, chosen at run time.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define ESOLM_SAMPLER_X86 1
#include <immintrin.h>
#endif

namespace esolm {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr int kBins = 256;              // bin index fits a uint8_t
constexpr double kBinsPerNat = 8.0;     // bins cover m - x in [0, 32) nats; the rest -> last bin
// Gumbel noise from a Philox uniform is at most 36.04 (u <= 1 - 2^-52). A token whose base
// score is further than this below the running best cannot win, so its noise is never
// computed (exact pruning: every token's draw is fixed in advance by its counter).
constexpr double kGumbelMax = 37.0;
constexpr int kGapSteps = 16;           // resolution of the uniform-threshold table (1/16 nat)

struct Cand {
  double x, e;
};

struct Scratch {
  std::vector<double> x, e;
  std::vector<uint8_t> bin;
  std::vector<int32_t> kept;
  std::vector<Cand> cand;
  void reserve(int vocab) {
    if (int(x.size()) < vocab) {
      x.resize(vocab);
      e.resize(vocab);
      bin.resize(vocab);
      kept.resize(vocab);
      cand.resize(vocab);
    }
  }
};

Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

// Result of the nucleus filter over one row (views into the thread's scratch).
struct Nucleus {
  enum Kind { normal, pos_inf, all_neg_inf, empty } kind = empty;
  double threshold = kInf;  // kept iff x >= threshold
  double max = -kInf;       // max scaled logit over non-mask tokens
  const double* x = nullptr;
  bool all = false;         // kept = every non-mask token (no list is built)
  const int32_t* kept = nullptr;  // ascending ids, when !all (null when the list was skipped)
  int n_kept = 0;
  int vocab = 0, mask = -1;

  // A quarter of the vocabulary or more kept: the dense Gumbel pass (AVX-512 or AVX2: a Philox
  // block per token pair, x read in order) then costs less than gathering the kept ones.
  bool dense() const { return kind == normal && int64_t(n_kept) * 4 >= vocab; }

  template <class F>
  void for_each(F f) const {
    if (all) {
      for (int t = 0; t < vocab; ++t)
        if (t != mask) f(int32_t(t));
    } else {
      for (int i = 0; i < n_kept; ++i) f(kept[i]);
    }
  }
};

inline bool valid_temperature(double t) { return t > 0 && t < kInf; }

// ---- vector kernels (SSE2 where available; the scalar path does the same arithmetic) ----

#if ESOLM_SAMPLER_X86
// AVX-512 and AVX2 forms of the passes over a row (scale_range, exp_and_histogram, the
// dense Gumbel pass): the same float64 operations per token, in the same order, as the
// SSE2 and scalar forms (this file is built with -ffp-contract=off, so no multiply-add is
// fused), hence the same bits; chosen at run time. They handle a row's bulk and return
// where the others go on.
std::atomic<int> g_widest{int(SamplerPasses::avx512)};  // sampler_limit_passes (tests)

bool sampler_avx512() {
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
  return ok && g_widest.load(std::memory_order_relaxed) == int(SamplerPasses::avx512);
}
// The AVX2 forms, where the AVX-512 ones are not taken (an AVX2-only CPU, or a test's limit).
bool sampler_avx2() {
  static const bool ok = __builtin_cpu_supports("avx2");
  return ok && !sampler_avx512() && g_widest.load(std::memory_order_relaxed) <= int(SamplerPasses::avx2);
}

// x[t] = logit[t] / temp (NaN -> -inf) for t in [lo, end) 16 at a time; m = max(m, those x).
__attribute__((target("avx512f,avx512dq"))) int scale_range_avx512(const float* logits, double* x, int lo,
                                                                     int hi, double temp, double& m) {
  const __m512d ninf = _mm512_set1_pd(-kInf), vt = _mm512_set1_pd(temp);
  const bool div = temp != 1.0;
  __m512d vm = ninf;
  int t = lo;
  for (; t + 16 <= hi; t += 16) {
    const __m512 f = _mm512_loadu_ps(logits + t);
    __m512d a = _mm512_cvtps_pd(_mm512_castps512_ps256(f));
    __m512d b = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(f), 1)));
    a = _mm512_mask_mov_pd(a, _mm512_cmp_pd_mask(a, a, _CMP_UNORD_Q), ninf);
    b = _mm512_mask_mov_pd(b, _mm512_cmp_pd_mask(b, b, _CMP_UNORD_Q), ninf);
    if (div) {
      a = _mm512_div_pd(a, vt);
      b = _mm512_div_pd(b, vt);
    }
    _mm512_storeu_pd(x + t, a);
    _mm512_storeu_pd(x + t + 8, b);
    vm = _mm512_max_pd(vm, _mm512_max_pd(a, b));
  }
  m = std::max(m, _mm512_reduce_max_pd(vm));
  return t;
}

// scale_range_avx512's loop 8 at a time.
__attribute__((target("avx2"))) int scale_range_avx2(const float* logits, double* x, int lo, int hi, double temp,
                                                      double& m) {
  const __m256d ninf = _mm256_set1_pd(-kInf), vt = _mm256_set1_pd(temp);
  const bool div = temp != 1.0;
  __m256d vm = ninf;
  int t = lo;
  for (; t + 8 <= hi; t += 8) {
    const __m256 f = _mm256_loadu_ps(logits + t);
    __m256d a = _mm256_cvtps_pd(_mm256_castps256_ps128(f));
    __m256d b = _mm256_cvtps_pd(_mm256_extractf128_ps(f, 1));
    a = _mm256_blendv_pd(a, ninf, _mm256_cmp_pd(a, a, _CMP_UNORD_Q));
    b = _mm256_blendv_pd(b, ninf, _mm256_cmp_pd(b, b, _CMP_UNORD_Q));
    if (div) {
      a = _mm256_div_pd(a, vt);
      b = _mm256_div_pd(b, vt);
    }
    _mm256_storeu_pd(x + t, a);
    _mm256_storeu_pd(x + t + 4, b);
    vm = _mm256_max_pd(vm, _mm256_max_pd(a, b));
  }
  alignas(32) double lanes[4];
  _mm256_store_pd(lanes, vm);
  m = std::max(m, std::max(std::max(lanes[0], lanes[1]), std::max(lanes[2], lanes[3])));
  return t;
}

#endif

// x[t] = logit[t] / temperature in float64 (NaN -> -inf); returns the max over [lo, hi).
double scale_range(const float* logits, double* x, int lo, int hi, double temp) {
  double m = -kInf;
  int t = lo;
  const bool div = temp != 1.0;
#if ESOLM_SAMPLER_X86
  if (sampler_avx512()) t = scale_range_avx512(logits, x, lo, hi, temp, m);
  else if (sampler_avx2()) t = scale_range_avx2(logits, x, lo, hi, temp, m);
#endif
#if defined(__SSE2__)
  const __m128d ninf = _mm_set1_pd(-kInf), vt = _mm_set1_pd(temp);
  __m128d vm = ninf;
  for (; t + 4 <= hi; t += 4) {
    __m128 f = _mm_loadu_ps(logits + t);
    __m128d a = _mm_cvtps_pd(f), b = _mm_cvtps_pd(_mm_movehl_ps(f, f));
    __m128d na = _mm_cmpunord_pd(a, a), nb = _mm_cmpunord_pd(b, b);
    a = _mm_or_pd(_mm_andnot_pd(na, a), _mm_and_pd(na, ninf));
    b = _mm_or_pd(_mm_andnot_pd(nb, b), _mm_and_pd(nb, ninf));
    if (div) {
      a = _mm_div_pd(a, vt);
      b = _mm_div_pd(b, vt);
    }
    _mm_storeu_pd(x + t, a);
    _mm_storeu_pd(x + t + 2, b);
    vm = _mm_max_pd(vm, _mm_max_pd(a, b));
  }
  double lanes[2];
  _mm_storeu_pd(lanes, vm);
  m = std::max(m, std::max(lanes[0], lanes[1]));
#endif
  for (; t < hi; ++t) {
    double d = double(logits[t]);
    if (d != d) d = -kInf;
    if (div) d /= temp;
    x[t] = d;
    if (d > m) m = d;
  }
  return m;
}

// exp(d) for d <= 0: Cody–Waite reduction d = k ln2 + r, |r| <= ln2/2, degree-13 Taylor
// polynomial (truncation < 5e-18), 2^k from the exponent bits; exactly 0 below -708.
// Within ~2 ulp of a correctly rounded exp and about 2.5x faster than std::exp here.
constexpr double kLog2e = 1.4426950408889634074;
constexpr double kLn2Hi = 6.93147180369123816490e-01;  // 32 significant bits: k * hi is exact
constexpr double kLn2Lo = 1.90821492927058770002e-10;
constexpr double kShifter = 6755399441055744.0;       // 1.5 * 2^52: rounds to an integer
constexpr double kExpMin = -708.0;
constexpr double kInvFact[14] = {1.0,
                                 1.0,
                                 1.0 / 2,
                                 1.0 / 6,
                                 1.0 / 24,
                                 1.0 / 120,
                                 1.0 / 720,
                                 1.0 / 5040,
                                 1.0 / 40320,
                                 1.0 / 362880,
                                 1.0 / 3628800,
                                 1.0 / 39916800,
                                 1.0 / 479001600,
                                 1.0 / 6227020800.0};

inline double exp_nonpos(double d) {
  if (!(d >= kExpMin)) return 0.0;
  double kd = d * kLog2e + kShifter;
  uint64_t ki;
  std::memcpy(&ki, &kd, 8);
  kd -= kShifter;
  const double r = (d - kd * kLn2Hi) - kd * kLn2Lo;
  // Estrin's scheme (short dependency chains); the vector path uses the same order.
  const double* c = kInvFact;
  const double r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
  const double s0 = (c[0] + c[1] * r) + (c[2] + c[3] * r) * r2;
  const double s1 = (c[4] + c[5] * r) + (c[6] + c[7] * r) * r2;
  const double s2 = (c[8] + c[9] * r) + (c[10] + c[11] * r) * r2;
  const double s3 = c[12] + c[13] * r;
  const double p = (s0 + s1 * r4) + (s2 + s3 * r4) * r8;
  const uint64_t bits = (ki + 1023) << 52;  // low mantissa bits of kd hold k
  double scale;
  std::memcpy(&scale, &bits, 8);
  return p * scale;
}

#if defined(__SSE2__)
inline __m128d exp_nonpos_pd(__m128d d) {
  const __m128d lo = _mm_set1_pd(kExpMin), shifter = _mm_set1_pd(kShifter);
  const __m128d keep = _mm_cmpge_pd(d, lo);  // false for d < -708 (and -inf)
  d = _mm_max_pd(d, lo);
  __m128d kd = _mm_add_pd(_mm_mul_pd(d, _mm_set1_pd(kLog2e)), shifter);
  const __m128i ki = _mm_castpd_si128(kd);
  kd = _mm_sub_pd(kd, shifter);
  const __m128d r = _mm_sub_pd(_mm_sub_pd(d, _mm_mul_pd(kd, _mm_set1_pd(kLn2Hi))),
                               _mm_mul_pd(kd, _mm_set1_pd(kLn2Lo)));
  auto c = [](int i) { return _mm_set1_pd(kInvFact[i]); };
  auto lin = [&](int i) { return _mm_add_pd(c(i), _mm_mul_pd(c(i + 1), r)); };  // c_i + c_{i+1} r
  const __m128d r2 = _mm_mul_pd(r, r), r4 = _mm_mul_pd(r2, r2), r8 = _mm_mul_pd(r4, r4);
  const __m128d s0 = _mm_add_pd(lin(0), _mm_mul_pd(lin(2), r2));
  const __m128d s1 = _mm_add_pd(lin(4), _mm_mul_pd(lin(6), r2));
  const __m128d s2 = _mm_add_pd(lin(8), _mm_mul_pd(lin(10), r2));
  const __m128d s3 = lin(12);
  const __m128d p = _mm_add_pd(_mm_add_pd(s0, _mm_mul_pd(s1, r4)),
                               _mm_mul_pd(_mm_add_pd(s2, _mm_mul_pd(s3, r4)), r8));
  const __m128i bits = _mm_slli_epi64(_mm_add_epi64(ki, _mm_set1_epi64x(1023)), 52);
  return _mm_and_pd(_mm_mul_pd(p, _mm_castsi128_pd(bits)), keep);
}
#endif

#if ESOLM_SAMPLER_X86
// exp_nonpos_pd (above), 8 lanes.
__attribute__((target("avx512f,avx512dq"), always_inline)) inline __m512d exp_nonpos_pd8(__m512d d) {
  const __m512d lo = _mm512_set1_pd(kExpMin), shifter = _mm512_set1_pd(kShifter);
  const __mmask8 keep = _mm512_cmp_pd_mask(d, lo, _CMP_GE_OQ);  // false for d < -708 (and -inf)
  d = _mm512_max_pd(d, lo);
  __m512d kd = _mm512_add_pd(_mm512_mul_pd(d, _mm512_set1_pd(kLog2e)), shifter);
  const __m512i ki = _mm512_castpd_si512(kd);
  kd = _mm512_sub_pd(kd, shifter);
  const __m512d r = _mm512_sub_pd(_mm512_sub_pd(d, _mm512_mul_pd(kd, _mm512_set1_pd(kLn2Hi))),
                                  _mm512_mul_pd(kd, _mm512_set1_pd(kLn2Lo)));
  __m512d lin[7];  // lin[j] = c_2j + c_2j+1 r
  for (int j = 0; j < 7; ++j)
    lin[j] = _mm512_add_pd(_mm512_set1_pd(kInvFact[2 * j]), _mm512_mul_pd(_mm512_set1_pd(kInvFact[2 * j + 1]), r));
  const __m512d r2 = _mm512_mul_pd(r, r), r4 = _mm512_mul_pd(r2, r2), r8 = _mm512_mul_pd(r4, r4);
  const __m512d s0 = _mm512_add_pd(lin[0], _mm512_mul_pd(lin[1], r2));
  const __m512d s1 = _mm512_add_pd(lin[2], _mm512_mul_pd(lin[3], r2));
  const __m512d s2 = _mm512_add_pd(lin[4], _mm512_mul_pd(lin[5], r2));
  const __m512d s3 = lin[6];
  const __m512d p = _mm512_add_pd(_mm512_add_pd(s0, _mm512_mul_pd(s1, r4)),
                                  _mm512_mul_pd(_mm512_add_pd(s2, _mm512_mul_pd(s3, r4)), r8));
  const __m512i bits = _mm512_slli_epi64(_mm512_add_epi64(ki, _mm512_set1_epi64(1023)), 52);
  return _mm512_maskz_mov_pd(keep, _mm512_mul_pd(p, _mm512_castsi512_pd(bits)));
}

__attribute__((target("avx512f,avx512dq"))) void store_exp_nonpos_pd8(const double* d, double* e) {
  _mm512_storeu_pd(e, exp_nonpos_pd8(_mm512_loadu_pd(d)));
}

// exp_and_histogram's loop 8 tokens at a time from t = 0 (token t in histogram copy t & 3,
// as the SSE2 loop puts it); returns the first token left.
__attribute__((target("avx512f,avx512dq"))) int exp_and_histogram_avx512(const double* x, double m, int vocab,
                                                                           double* e, uint8_t* bin,
                                                                           double (*mass)[kBins],
                                                                           int (*count)[kBins]) {
  const __m512d vm = _mm512_set1_pd(m), scale = _mm512_set1_pd(-kBinsPerNat), top = _mm512_set1_pd(double(kBins - 1));
  int t = 0;
  for (; t + 8 <= vocab; t += 8) {
    const __m512d d = _mm512_sub_pd(_mm512_loadu_pd(x + t), vm);
    _mm512_storeu_pd(e + t, exp_nonpos_pd8(d));
    alignas(32) int32_t b[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(b), _mm512_cvttpd_epi32(_mm512_min_pd(_mm512_mul_pd(d, scale), top)));
    for (int j = 0; j < 8; ++j) {
      bin[t + j] = uint8_t(b[j]);
      mass[j & 3][b[j]] += e[t + j];
      ++count[j & 3][b[j]];
    }
  }
  return t;
}

// exp_nonpos_pd (above), 4 lanes.
__attribute__((target("avx2"), always_inline)) inline __m256d exp_nonpos_pd4(__m256d d) {
  const __m256d lo = _mm256_set1_pd(kExpMin), shifter = _mm256_set1_pd(kShifter);
  const __m256d keep = _mm256_cmp_pd(d, lo, _CMP_GE_OQ);  // false for d < -708 (and -inf)
  d = _mm256_max_pd(d, lo);
  __m256d kd = _mm256_add_pd(_mm256_mul_pd(d, _mm256_set1_pd(kLog2e)), shifter);
  const __m256i ki = _mm256_castpd_si256(kd);
  kd = _mm256_sub_pd(kd, shifter);
  const __m256d r = _mm256_sub_pd(_mm256_sub_pd(d, _mm256_mul_pd(kd, _mm256_set1_pd(kLn2Hi))),
                                  _mm256_mul_pd(kd, _mm256_set1_pd(kLn2Lo)));
  __m256d lin[7];  // lin[j] = c_2j + c_2j+1 r
  for (int j = 0; j < 7; ++j)
    lin[j] = _mm256_add_pd(_mm256_set1_pd(kInvFact[2 * j]), _mm256_mul_pd(_mm256_set1_pd(kInvFact[2 * j + 1]), r));
  const __m256d r2 = _mm256_mul_pd(r, r), r4 = _mm256_mul_pd(r2, r2), r8 = _mm256_mul_pd(r4, r4);
  const __m256d s0 = _mm256_add_pd(lin[0], _mm256_mul_pd(lin[1], r2));
  const __m256d s1 = _mm256_add_pd(lin[2], _mm256_mul_pd(lin[3], r2));
  const __m256d s2 = _mm256_add_pd(lin[4], _mm256_mul_pd(lin[5], r2));
  const __m256d s3 = lin[6];
  const __m256d p = _mm256_add_pd(_mm256_add_pd(s0, _mm256_mul_pd(s1, r4)),
                                  _mm256_mul_pd(_mm256_add_pd(s2, _mm256_mul_pd(s3, r4)), r8));
  const __m256i bits = _mm256_slli_epi64(_mm256_add_epi64(ki, _mm256_set1_epi64x(1023)), 52);
  return _mm256_and_pd(_mm256_mul_pd(p, _mm256_castsi256_pd(bits)), keep);
}

__attribute__((target("avx2"))) void store_exp_nonpos_pd4(const double* d, double* e) {
  _mm256_storeu_pd(e, exp_nonpos_pd4(_mm256_loadu_pd(d)));
}

// exp_and_histogram_avx512's loop 4 tokens at a time (token t in copy t & 3).
__attribute__((target("avx2"))) int exp_and_histogram_avx2(const double* x, double m, int vocab, double* e,
                                                            uint8_t* bin, double (*mass)[kBins], int (*count)[kBins]) {
  const __m256d vm = _mm256_set1_pd(m), scale = _mm256_set1_pd(-kBinsPerNat), top = _mm256_set1_pd(double(kBins - 1));
  int t = 0;
  for (; t + 4 <= vocab; t += 4) {
    const __m256d d = _mm256_sub_pd(_mm256_loadu_pd(x + t), vm);
    const __m256d ev = exp_nonpos_pd4(d);
    _mm256_storeu_pd(e + t, ev);
    alignas(16) int32_t b[4];
    alignas(32) double es[4];
    _mm_store_si128(reinterpret_cast<__m128i*>(b), _mm256_cvttpd_epi32(_mm256_min_pd(_mm256_mul_pd(d, scale), top)));
    _mm256_store_pd(es, ev);
    for (int j = 0; j < 4; ++j) {
      bin[t + j] = uint8_t(b[j]);
      mass[j][b[j]] += es[j];
      ++count[j][b[j]];
    }
  }
  return t;
}

// The kept list of nucleus() 16 tokens at a time from t = 0: ids with x >= thr, not the
// mask, appended in ascending order by a register compress (a compress straight to memory
// is microcoded and slow on Zen 4); returns the first token left.
__attribute__((target("avx512f,avx512dq"))) int kept_list_avx512(const double* x, int vocab, double thr, int mask,
                                                                   int32_t* kept, int& n) {
  const __m512d vt = _mm512_set1_pd(thr);
  const __m512i step = _mm512_set1_epi32(16);
  __m512i ids = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  int t = 0;
  for (; t + 16 <= vocab; t += 16, ids = _mm512_add_epi32(ids, step)) {
    __mmask16 keep = __mmask16(_mm512_cmp_pd_mask(_mm512_loadu_pd(x + t), vt, _CMP_GE_OQ) |
                               (unsigned(_mm512_cmp_pd_mask(_mm512_loadu_pd(x + t + 8), vt, _CMP_GE_OQ)) << 8));
    if (mask >= t && mask < t + 16) keep &= __mmask16(~(1u << (mask - t)));
    _mm512_storeu_si512(kept + n, _mm512_maskz_compress_epi32(keep, ids));  // n + 16 <= t + 16 <= vocab
    n += __builtin_popcount(keep);
  }
  return t;
}
#endif

// e[t] = exp(x[t] - m), bin[t] = min(floor((m - x[t]) * 8), 255), and per-bin masses and
// counts (4 interleaved histogram copies break the store-to-load chains).
void exp_and_histogram(const double* x, double m, int vocab, double* e, uint8_t* bin,
                       double (*mass)[kBins], int (*count)[kBins]) {
  int t = 0;
#if ESOLM_SAMPLER_X86
  if (sampler_avx512()) t = exp_and_histogram_avx512(x, m, vocab, e, bin, mass, count);
  else if (sampler_avx2()) t = exp_and_histogram_avx2(x, m, vocab, e, bin, mass, count);
#endif
#if defined(__SSE2__)
  const __m128d vm = _mm_set1_pd(m), scale = _mm_set1_pd(-kBinsPerNat),
                top = _mm_set1_pd(double(kBins - 1));
  for (; t + 2 <= vocab; t += 2) {
    const __m128d d = _mm_sub_pd(_mm_loadu_pd(x + t), vm);
    const __m128d ee = exp_nonpos_pd(d);
    _mm_storeu_pd(e + t, ee);
    const __m128i bi = _mm_cvttpd_epi32(_mm_min_pd(_mm_mul_pd(d, scale), top));
    const int b0 = _mm_cvtsi128_si32(bi), b1 = _mm_cvtsi128_si32(_mm_srli_si128(bi, 4));
    bin[t] = uint8_t(b0);
    bin[t + 1] = uint8_t(b1);
    const int c = (t >> 1) & 1;
    mass[2 * c][b0] += e[t];
    mass[2 * c + 1][b1] += e[t + 1];
    ++count[2 * c][b0];
    ++count[2 * c + 1][b1];
  }
#endif
  for (; t < vocab; ++t) {
    const double d = x[t] - m;
    e[t] = exp_nonpos(d);
    const double fb = std::min(-d * kBinsPerNat, double(kBins - 1));
    const int b = int(fb);
    bin[t] = uint8_t(b);
    mass[0][b] += e[t];
    ++count[0][b];
  }
}

// Boundary value inside one bin. c[0, n) are the bin's tokens, `above` the mass strictly
// above all of them, budget = p * Z. Returns the smallest value v in the bin with
// mass(x > v) <= budget; the bin is chosen so that its largest value qualifies.
double select_boundary(Cand* c, int n, double above, double budget) {
  int lo = 0, hi = n;
  double best = kInf;
  while (lo < hi) {
    double a = c[lo].x, b = c[lo + (hi - lo) / 2].x, d = c[hi - 1].x;
    double v = std::max(std::min(a, b), std::min(std::max(a, b), d));  // median of three
    // 3-way partition of [lo, hi): [lo, gt) > v, [gt, lt) == v, [lt, hi) < v.
    int gt = lo, i = lo, lt = hi;
    double mass_gt = 0, mass_eq = 0;
    while (i < lt) {
      if (c[i].x > v) {
        mass_gt += c[i].e;
        std::swap(c[gt++], c[i++]);
      } else if (c[i].x < v) {
        std::swap(c[i], c[--lt]);
      } else {
        mass_eq += c[i].e;
        ++i;
      }
    }
    if (above + mass_gt <= budget) {
      best = v;  // v is kept; look for a smaller kept value below it
      above += mass_gt + mass_eq;
      if (above > budget) break;
      lo = lt;
    } else {
      hi = gt;  // v is cut; the boundary is strictly above v
    }
  }
  return best;
}

// The nucleus filter. need_list: build the kept list even when nothing is filtered;
// dense_skips_list: no list for a dense() row (the dense Gumbel pass does not read one).
Nucleus nucleus(const float* logits, int vocab, const SampleParams& p, bool need_list, bool dense_skips_list = false) {
  Nucleus nu;
  if (vocab <= 0) return nu;
  Scratch& s = scratch();
  try {
    s.reserve(vocab);
  } catch (const std::bad_alloc&) {
    return nu;  // kind empty: the caller sees -1, nothing throws across the API
  }
  const int mask = (p.mask_index >= 0 && p.mask_index < vocab) ? p.mask_index : -1;
  const double temp = valid_temperature(p.temperature) ? p.temperature : 1.0;
  double* x = s.x.data();
  int32_t* kept = s.kept.data();
  nu.x = x;
  nu.kept = kept;
  nu.vocab = vocab;
  nu.mask = mask;

  double m;
  if (mask < 0) {
    m = scale_range(logits, x, 0, vocab, temp);
  } else {
    m = std::max(scale_range(logits, x, 0, mask, temp), scale_range(logits, x, mask + 1, vocab, temp));
    x[mask] = -kInf;
  }
  nu.max = m;
  if (vocab - (mask >= 0) == 0) return nu;

  // Degenerate rows: +inf logits take all the mass (kept: exactly those), an all -inf
  // row has no mass anywhere (kept: every token, equally likely).
  if (m == kInf || m == -kInf) {
    int n = 0;
    for (int t = 0; t < vocab; ++t)
      if (t != mask && x[t] == m) kept[n++] = t;
    nu.kind = m == kInf ? Nucleus::pos_inf : Nucleus::all_neg_inf;
    nu.threshold = m;
    nu.n_kept = n;
    return nu;
  }
  nu.kind = Nucleus::normal;
  const bool filter = p.top_p < 1.0;  // top_p >= 1 (or NaN): no filtering, as the reference

  if (!filter) {
    nu.threshold = -kInf;
    nu.all = true;
    nu.n_kept = vocab - (mask >= 0);
    if (need_list) {
      nu.for_each([&](int32_t t) { kept[t - (mask >= 0 && t > mask)] = t; });
      nu.all = false;
    }
    return nu;
  }

  // Pass 2: exp, and the mass histogram over the distance from the max.
  double* e = s.e.data();
  uint8_t* bin = s.bin.data();
  double mass[4][kBins];
  int count[4][kBins];
  std::memset(mass, 0, sizeof mass);
  std::memset(count, 0, sizeof count);
  exp_and_histogram(x, m, vocab, e, bin, mass, count);
  if (mask >= 0) --count[0][bin[mask]];  // uncount the mask (only the sum over copies matters)
  double bin_mass[kBins], z = 0;
  int bin_count[kBins];
  for (int b = 0; b < kBins; ++b) {
    bin_mass[b] = (mass[0][b] + mass[1][b]) + (mass[2][b] + mass[3][b]);
    bin_count[b] = count[0][b] + count[1][b] + count[2][b] + count[3][b];
    z += bin_mass[b];
  }

  // bin(x) is monotone in x, so every value in bin b is below every value in bins < b and
  // the largest value of bin b has exactly H_b = mass(bins < b) above it. The boundary
  // lies in the last non-empty bin whose H_b fits the budget.
  const double budget = std::max(p.top_p, 0.0) * z;
  int bstar = 0;
  double hstar = 0, h = 0;
  for (int b = 0; b < kBins; ++b) {
    if (bin_count[b] == 0) continue;
    if (h > budget) break;
    bstar = b;
    hstar = h;
    h += bin_mass[b];
  }

  // Pass 3: tokens of bins < b* are kept, tokens of bin b* are the boundary candidates
  // (ascending ids: select_boundary's sums depend on their order).
  Cand* cand = s.cand.data();
  int nc = 0;
  {
    int t = 0;
#if defined(__SSE2__)
    const __m128i vb = _mm_set1_epi8(char(uint8_t(bstar)));
    for (; t + 16 <= vocab; t += 16) {
      unsigned on = unsigned(_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bin + t)), vb)));
      if (mask >= t && mask < t + 16) on &= ~(1u << (mask - t));
      for (; on; on &= on - 1) {
        const int j = t + __builtin_ctz(on);
        cand[nc++] = Cand{x[j], e[j]};
      }
    }
#endif
    for (; t < vocab; ++t)
      if (bin[t] == bstar && t != mask) cand[nc++] = Cand{x[t], e[t]};
  }
  const double thr = select_boundary(cand, nc, hstar, budget);

  // Kept: x >= thr, every token tied at the boundary included. bin() is monotone in x and
  // thr is a value of bin b*, so these are the tokens of bins < b* and those of b* at or
  // above thr: their count is known without a pass over the row.
  int k = 0;
  for (int b = 0; b < bstar; ++b) k += bin_count[b];
  for (int i = 0; i < nc; ++i) k += int(cand[i].x >= thr);
  nu.threshold = thr;
  nu.n_kept = k;
  if (!need_list && dense_skips_list && nu.dense()) {  // the caller reads x and the threshold only
    nu.kept = nullptr;
    return nu;
  }
  int n = 0, t0 = 0;
#if ESOLM_SAMPLER_X86
  if (sampler_avx512()) t0 = kept_list_avx512(x, vocab, thr, mask, kept, n);
#endif
  for (int t = t0; t < vocab; ++t) {  // branch-free: kept and cut tokens can alternate at random
    kept[n] = t;
    n += int(x[t] >= thr) & int(t != mask);
  }
  nu.n_kept = n;  // equals k; the list's own count is what its readers walk
  return nu;
}

inline double gumbel(double u) { return -std::log(-std::log(u)); }

// Noise sources. noise(t, gap, g) sets g = Gumbel noise of token t and returns true, or
// returns false when it proves g < gap - 1/16 (the token cannot reach the running best).

// Philox: tokens 2i and 2i+1 share one Philox block. A uniform below
// exp(-exp(-k/16)) has noise below k/16; the table holds those bounds, rounded down.
struct PhiloxNoise {
  uint64_t seed;
  DrawKey key;
  uint32_t cached = 0xFFFFFFFFu;
  Philox4 block{};

  static const double* u_bounds() {
    static const struct Table {
      double v[int(kGumbelMax) * kGapSteps + 1];
      Table() {
        for (int k = 0; k <= int(kGumbelMax) * kGapSteps; ++k)
          v[k] = std::exp(-std::exp(-double(k) / kGapSteps)) * (1.0 - 1e-14);
      }
    } table;
    return table.v;
  }

  // The noise of uniform u against the gap, once gap <= kGumbelMax is known (or NaN / -inf).
  static bool from_uniform(double u, double gap, double& g) {
    if (gap >= 2.0 / kGapSteps) {
      const int k = int(gap * kGapSteps) - 1;  // one step of slack against rounding in b + g
      if (u < u_bounds()[k]) return false;
    }
    g = gumbel(u);
    return true;
  }

  double uniform(int32_t token) {
    uint32_t t = uint32_t(token);
    if ((t >> 1) != cached) {
      cached = t >> 1;
      Philox4 c{{cached, key.position, key.round, key.sequence}};
      block = philox4x32_10(c, uint32_t(seed), uint32_t(seed >> 32));
    }
    // Same words as draw_uniform() (philox.h).
    return (t & 1u) ? philox_u53(block.v[2], block.v[3]) : philox_u53(block.v[0], block.v[1]);
  }

  bool operator()(int32_t token, double gap, double& g) {
    if (gap > kGumbelMax) return false;  // also catches +inf; NaN / -inf fall through
    return from_uniform(uniform(token), gap, g);
  }
};

struct ArrayNoise {
  const double* u;
  bool operator()(int32_t token, double, double& g) const {
    g = gumbel(u[token]);
    return true;
  }
};

// The running argmax of base(t) + noise(t); ties go to the lowest id.
struct Best {
  int32_t token = -1;
  double score = -kInf;
  double gap(double b) const { return token >= 0 ? score - b : -kInf; }
  void offer(int32_t t, double score_t) {
    if (token < 0 || score_t > score || (score_t == score && t < token)) {
      token = t;
      score = score_t;
    }
  }
  // Token t of base b whose Philox uniform is u: PhiloxNoise's test and noise.
  void offer_uniform(int32_t t, double b, double u) {
    const double margin = gap(b);
    double g;
    if (margin > kGumbelMax || !PhiloxNoise::from_uniform(u, margin, g)) return;
    offer(t, b + g);
  }
};

#if ESOLM_SAMPLER_X86
// The first t with x[t] == m, 8 at a time; where the scalar scan goes on when none of the
// whole blocks has it.
__attribute__((target("avx512f,avx512dq"))) int first_at_max_avx512(const double* x, int vocab, double m) {
  const __m512d vm = _mm512_set1_pd(m);
  int t = 0;
  for (; t + 8 <= vocab; t += 8)
    if (const __mmask8 at = _mm512_cmp_pd_mask(_mm512_loadu_pd(x + t), vm, _CMP_EQ_OQ)) return t + __builtin_ctz(at);
  return t;
}

// first_at_max_avx512, 4 at a time.
__attribute__((target("avx2"))) int first_at_max_avx2(const double* x, int vocab, double m) {
  const __m256d vm = _mm256_set1_pd(m);
  int t = 0;
  for (; t + 4 <= vocab; t += 4)
    if (const int at = _mm256_movemask_pd(_mm256_cmp_pd(_mm256_loadu_pd(x + t), vm, _CMP_EQ_OQ))) return t + __builtin_ctz(at);
  return t;
}
#endif

// The token scored first, so that pruning bites from the start: the first kept token at
// the row's max (normal rows), else the first kept one; -1 when none is kept.
int32_t first_scored(const Nucleus& nu) {
  int32_t top = -1;
  if (nu.kind == Nucleus::normal) {
    // The max is finite here and every token at it is kept (bin 0; the mask's x is -inf):
    // the first kept token at the max is the first token at the max.
    int t = 0;
#if ESOLM_SAMPLER_X86
    if (sampler_avx512()) t = first_at_max_avx512(nu.x, nu.vocab, nu.max);
    else if (sampler_avx2()) t = first_at_max_avx2(nu.x, nu.vocab, nu.max);
#endif
    for (; t < nu.vocab; ++t)
      if (nu.x[t] == nu.max) return t;
  } else if (nu.n_kept > 0) {
    top = nu.kept[0];
  }
  return top;
}

// argmax over kept t of base(t) + noise(t).
template <class Base, class Noise>
int32_t gumbel_argmax(const Nucleus& nu, Base base, Noise& noise) {
  Best best;
  auto offer = [&](int32_t t, double b) {
    double g;
    if (noise(t, best.gap(b), g)) best.offer(t, b + g);
  };
  const int32_t top = first_scored(nu);
  if (top >= 0) offer(top, base(top));
  nu.for_each([&](int32_t t) {
    if (t != top) offer(t, base(t));
  });
  return best.token;
}

#if ESOLM_SAMPLER_X86
// Philox4x32-10 (philox.h) on 16 counters at once, with the same 32-bit operations, so the
// same words. The products of 32-bit lanes come from two 32x32->64 multiplies (even lanes,
// then odd lanes shifted down); hi/lo are picked back into 32-bit lanes by blends.
__attribute__((target("avx512f,avx512dq"), always_inline)) inline void philox16(__m512i& c0, __m512i& c1, __m512i& c2,
                                                                               __m512i& c3, uint32_t k0, uint32_t k1) {
  const __m512i m0 = _mm512_set1_epi64(0xD2511F53u), m1 = _mm512_set1_epi64(0xCD9E8D57u);
  const __mmask16 odd = 0xAAAA;
  for (int i = 0; i < 10; ++i) {
    const __m512i e0 = _mm512_mul_epu32(c0, m0), o0 = _mm512_mul_epu32(_mm512_srli_epi64(c0, 32), m0);
    const __m512i e1 = _mm512_mul_epu32(c2, m1), o1 = _mm512_mul_epu32(_mm512_srli_epi64(c2, 32), m1);
    const __m512i hi0 = _mm512_mask_blend_epi32(odd, _mm512_srli_epi64(e0, 32), o0);
    const __m512i lo0 = _mm512_mask_blend_epi32(odd, e0, _mm512_slli_epi64(o0, 32));
    const __m512i hi1 = _mm512_mask_blend_epi32(odd, _mm512_srli_epi64(e1, 32), o1);
    const __m512i lo1 = _mm512_mask_blend_epi32(odd, e1, _mm512_slli_epi64(o1, 32));
    c0 = _mm512_xor_si512(_mm512_xor_si512(hi1, c1), _mm512_set1_epi32(int(k0)));
    c1 = lo1;
    c2 = _mm512_xor_si512(_mm512_xor_si512(hi0, c3), _mm512_set1_epi32(int(k1)));
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
}

// philox_u53 on 8 (hi, lo) word pairs.
__attribute__((target("avx512f,avx512dq"), always_inline)) inline __m512d philox_u53_pd8(__m256i hi, __m256i lo) {
  __m512i bits = _mm512_xor_si512(_mm512_slli_epi64(_mm512_cvtepu32_epi64(hi), 21),
                                  _mm512_srli_epi64(_mm512_cvtepu32_epi64(lo), 11));
  bits = _mm512_and_si512(bits, _mm512_set1_epi64((int64_t(1) << 53) - 1));
  bits = _mm512_min_epu64(bits, _mm512_set1_epi64((int64_t(1) << 53) - 2));
  return _mm512_mul_pd(_mm512_add_pd(_mm512_cvtepu64_pd(bits), _mm512_set1_pd(0.5)),
                       _mm512_set1_pd(1.0 / 9007199254740992.0));
}

// The uniforms draw_uniform(seed, key, ids[j]) of 16 token ids, as two halves of 8.
__attribute__((target("avx512f,avx512dq"), always_inline)) inline void philox_uniforms16(__m512i ids, uint64_t seed,
                                                                                        const DrawKey& key,
                                                                                        __m512d& u_lo, __m512d& u_hi) {
  __m512i c0 = _mm512_srli_epi32(ids, 1), c1 = _mm512_set1_epi32(int(key.position));
  __m512i c2 = _mm512_set1_epi32(int(key.round)), c3 = _mm512_set1_epi32(int(key.sequence));
  philox16(c0, c1, c2, c3, uint32_t(seed), uint32_t(seed >> 32));
  const __mmask16 second = _mm512_test_epi32_mask(ids, _mm512_set1_epi32(1));  // odd id: words 2, 3
  const __m512i hi = _mm512_mask_blend_epi32(second, c0, c2), lo = _mm512_mask_blend_epi32(second, c1, c3);
  u_lo = philox_u53_pd8(_mm512_castsi512_si256(hi), _mm512_castsi512_si256(lo));
  u_hi = philox_u53_pd8(_mm512_extracti64x4_epi64(hi, 1), _mm512_extracti64x4_epi64(lo, 1));
}

__attribute__((target("avx512f,avx512dq"))) void uniforms16_for_test(const int32_t* ids, uint64_t seed,
                                                                      const DrawKey& key, double* u) {
  __m512d u_lo, u_hi;
  philox_uniforms16(_mm512_loadu_si512(ids), seed, key, u_lo, u_hi);
  _mm512_storeu_pd(u, u_lo);
  _mm512_storeu_pd(u + 8, u_hi);
}

// Lanes of `valid` that PhiloxNoise would not prune against the running best (gap = best -
// base, the same float64 operations and table): the rest cannot win. The best only rises
// while a block is offered, and pruning only grows with the gap, so testing a whole block
// against the best it started with drops nothing that the one-by-one test keeps.
__attribute__((target("avx512f,avx512dq"), always_inline)) inline __mmask8 may_win_pd8(__mmask8 valid, __m512d u,
                                                                                      __m512d base, double best) {
  const __m512d gap = _mm512_sub_pd(_mm512_set1_pd(best), base);
  const __mmask8 beyond = _mm512_cmp_pd_mask(gap, _mm512_set1_pd(kGumbelMax), _CMP_GT_OQ);
  const __mmask8 bounded = _mm512_mask_cmp_pd_mask(valid & ~beyond, gap, _mm512_set1_pd(2.0 / kGapSteps), _CMP_GE_OQ);
  const __m256i k = _mm256_sub_epi32(_mm512_cvttpd_epi32(_mm512_mul_pd(gap, _mm512_set1_pd(double(kGapSteps)))),
                                     _mm256_set1_epi32(1));
  const __m512d bound = _mm512_mask_i32gather_pd(_mm512_setzero_pd(), bounded, k, PhiloxNoise::u_bounds(), 8);
  const __mmask8 below = _mm512_mask_cmp_pd_mask(bounded, u, bound, _CMP_LT_OQ);
  return valid & ~beyond & ~below;
}

// gumbel_argmax with Philox noise over a dense nucleus (most of the vocabulary kept, as in
// the flat rows of an untrained or high-temperature model), 32 consecutive tokens at a
// time: one Philox block per token pair (as the scalar pass draws them), x read in order
// instead of gathered, kept = x >= threshold and not the mask (the nucleus' kept set:
// bins are monotone in x), and the pruning test against one bound per 32 tokens, that of
// their largest x (a lane's own gap is at least that one, so its own bound is at least as
// high: nothing the one-by-one test keeps is dropped). Survivors are scored one by one.
__attribute__((target("avx512f,avx512dq"))) int32_t philox_argmax_dense_avx512(const Nucleus& nu, PhiloxNoise& noise) {
  Best best;
  const double* x = nu.x;
  const int32_t top = first_scored(nu);
  if (top >= 0) best.offer_uniform(top, x[top], noise.uniform(top));
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i even = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14), odd = _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15);
  const __m512d thr = _mm512_set1_pd(nu.all ? -kInf : nu.threshold), ninf = _mm512_set1_pd(-kInf);
  const double* bounds = PhiloxNoise::u_bounds();
  alignas(64) double u[32], b[32];
  for (int t0 = 0; t0 < nu.vocab; t0 += 32) {
    // x of tokens t0 .. t0 + 31 (-inf past the vocabulary), split into even and odd tokens.
    __m512d xs[4];
    for (int q = 0; q < 4; ++q) {
      const int n = nu.vocab - (t0 + 8 * q);
      const __mmask8 in = n >= 8 ? __mmask8(0xFF) : n <= 0 ? __mmask8(0) : __mmask8((1u << n) - 1);
      xs[q] = _mm512_mask_loadu_pd(ninf, in, x + t0 + 8 * q);
    }
    // Groups: 0 = even tokens t0 + 2k (k < 8), 1 = odd t0 + 2k + 1, 2 and 3 the same from t0 + 16.
    __m512d xg[4] = {_mm512_permutex2var_pd(xs[0], even, xs[1]), _mm512_permutex2var_pd(xs[0], odd, xs[1]),
                     _mm512_permutex2var_pd(xs[2], even, xs[3]), _mm512_permutex2var_pd(xs[2], odd, xs[3])};
    __mmask8 kept[4];
    __m512d xmax = ninf;
    for (int g = 0; g < 4; ++g) {
      kept[g] = _mm512_cmp_pd_mask(xg[g], thr, _CMP_GE_OQ) & _mm512_cmp_pd_mask(xg[g], ninf, _CMP_NEQ_OQ);
      xmax = _mm512_mask_max_pd(xmax, kept[g], xmax, xg[g]);
    }
    // Token t0 + 16 h + 2 k + o is lane k of group 2 h + o.
    const auto token_of = [t0](int g, int k) { return t0 + 16 * (g >> 1) + 2 * k + (g & 1); };
    for (const int32_t t : {top, nu.mask})  // scored first / never kept
      if (t >= t0 && t < t0 + 32) kept[2 * ((t - t0) >> 4) + ((t - t0) & 1)] &= __mmask8(~(1u << (((t - t0) & 15) >> 1)));
    if (!(kept[0] | kept[1] | kept[2] | kept[3])) continue;
    // One Philox block per pair t0 / 2 + lane: words 0, 1 for the even token, 2, 3 for the odd.
    __m512i c0 = _mm512_add_epi32(_mm512_set1_epi32(t0 >> 1), lane), c1 = _mm512_set1_epi32(int(noise.key.position));
    __m512i c2 = _mm512_set1_epi32(int(noise.key.round)), c3 = _mm512_set1_epi32(int(noise.key.sequence));
    philox16(c0, c1, c2, c3, uint32_t(noise.seed), uint32_t(noise.seed >> 32));
    __m512d ug[4] = {philox_u53_pd8(_mm512_castsi512_si256(c0), _mm512_castsi512_si256(c1)),
                     philox_u53_pd8(_mm512_castsi512_si256(c2), _mm512_castsi512_si256(c3)),
                     philox_u53_pd8(_mm512_extracti64x4_epi64(c0, 1), _mm512_extracti64x4_epi64(c1, 1)),
                     philox_u53_pd8(_mm512_extracti64x4_epi64(c2, 1), _mm512_extracti64x4_epi64(c3, 1))};
    if (best.token >= 0) {
      const double gap_min = best.score - _mm512_reduce_max_pd(xmax);
      if (gap_min > kGumbelMax) continue;  // no token here can win
      if (gap_min >= 2.0 / kGapSteps) {
        const __m512d bound = _mm512_set1_pd(bounds[int(gap_min * kGapSteps) - 1]);
        for (int g = 0; g < 4; ++g) kept[g] &= __mmask8(~_mm512_cmp_pd_mask(ug[g], bound, _CMP_LT_OQ));
      }
    }
    for (int g = 0; g < 4; ++g) {
      if (!kept[g]) continue;
      _mm512_store_pd(u + 8 * g, ug[g]);
      _mm512_store_pd(b + 8 * g, xg[g]);
      for (unsigned on = kept[g]; on; on &= on - 1) {
        const int k = __builtin_ctz(on);
        best.offer_uniform(token_of(g, k), b[8 * g + k], u[8 * g + k]);
      }
    }
  }
  return best.token;
}

// gumbel_argmax with Philox noise, 16 kept tokens at a time: their uniforms in vector
// registers, the pruning test on the block, and only the survivors scored one by one
// (with the same PhiloxNoise arithmetic), so the same token. x = null: every base is 0.
__attribute__((target("avx512f,avx512dq"))) int32_t philox_argmax_avx512(const Nucleus& nu, const double* x,
                                                                           PhiloxNoise& noise) {
  Best best;
  auto base = [x](int32_t t) { return x ? x[t] : 0.0; };
  const int32_t top = first_scored(nu);
  if (top >= 0) best.offer_uniform(top, base(top), noise.uniform(top));
  const int n = nu.all ? nu.vocab : nu.n_kept;
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  alignas(64) int32_t id[16];
  alignas(64) double u[16], b[16];
  for (int i = 0; i < n; i += 16) {
    __mmask16 valid = n - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1);
    const __m512i ids = nu.all ? _mm512_add_epi32(_mm512_set1_epi32(i), lane) : _mm512_maskz_loadu_epi32(valid, nu.kept + i);
    valid &= _mm512_cmpneq_epi32_mask(ids, _mm512_set1_epi32(top));
    if (nu.all) valid &= _mm512_cmpneq_epi32_mask(ids, _mm512_set1_epi32(nu.mask));
    if (!valid) continue;
    __m512d u_lo, u_hi;
    philox_uniforms16(ids, noise.seed, noise.key, u_lo, u_hi);
    __m512d b_lo = _mm512_setzero_pd(), b_hi = _mm512_setzero_pd();
    if (x) {
      b_lo = _mm512_mask_i32gather_pd(b_lo, __mmask8(valid), _mm512_castsi512_si256(ids), x, 8);
      b_hi = _mm512_mask_i32gather_pd(b_hi, __mmask8(valid >> 8), _mm512_extracti64x4_epi64(ids, 1), x, 8);
    }
    if (best.token >= 0)
      valid = __mmask16(may_win_pd8(__mmask8(valid), u_lo, b_lo, best.score) |
                        (unsigned(may_win_pd8(__mmask8(valid >> 8), u_hi, b_hi, best.score)) << 8));
    if (!valid) continue;
    _mm512_store_si512(id, ids);
    _mm512_store_pd(u, u_lo);
    _mm512_store_pd(u + 8, u_hi);
    _mm512_store_pd(b, b_lo);
    _mm512_store_pd(b + 8, b_hi);
    for (unsigned on = valid; on; on &= on - 1) {
      const int j = __builtin_ctz(on);
      best.offer_uniform(id[j], b[j], u[j]);
    }
  }
  return best.token;
}
#endif

#if ESOLM_SAMPLER_X86
// philox16 on 8 counters (the same 32-bit operations, so the same words).
__attribute__((target("avx2"), always_inline)) inline void philox8(__m256i& c0, __m256i& c1, __m256i& c2, __m256i& c3,
                                                                    uint32_t k0, uint32_t k1) {
  const __m256i m0 = _mm256_set1_epi64x(0xD2511F53u), m1 = _mm256_set1_epi64x(0xCD9E8D57u);
  for (int i = 0; i < 10; ++i) {
    const __m256i e0 = _mm256_mul_epu32(c0, m0), o0 = _mm256_mul_epu32(_mm256_srli_epi64(c0, 32), m0);
    const __m256i e1 = _mm256_mul_epu32(c2, m1), o1 = _mm256_mul_epu32(_mm256_srli_epi64(c2, 32), m1);
    const __m256i hi0 = _mm256_blend_epi32(_mm256_srli_epi64(e0, 32), o0, 0xAA);  // odd lanes from the second
    const __m256i lo0 = _mm256_blend_epi32(e0, _mm256_slli_epi64(o0, 32), 0xAA);
    const __m256i hi1 = _mm256_blend_epi32(_mm256_srli_epi64(e1, 32), o1, 0xAA);
    const __m256i lo1 = _mm256_blend_epi32(e1, _mm256_slli_epi64(o1, 32), 0xAA);
    c0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), _mm256_set1_epi32(int(k0)));
    c1 = lo1;
    c2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), _mm256_set1_epi32(int(k1)));
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
}

// Four 64-bit integers below 2^52 as doubles, exactly: their bits under 2^52's exponent.
__attribute__((target("avx2"), always_inline)) inline __m256d u64_to_pd4(__m256i v) {
  const __m256d two52 = _mm256_set1_pd(4503599627370496.0);
  return _mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(v, _mm256_castpd_si256(two52))), two52);
}

// philox_u53 on 4 (hi, lo) word pairs. AVX2 has no unsigned 64-bit min or conversion: the
// cap is a compare (bits can exceed it only as 2^53 - 1), and double(bits) is the exact sum
// of its two 32-bit halves, each converted by the 2^52 trick.
__attribute__((target("avx2"), always_inline)) inline __m256d philox_u53_pd4(__m128i hi, __m128i lo) {
  __m256i bits = _mm256_xor_si256(_mm256_slli_epi64(_mm256_cvtepu32_epi64(hi), 21),
                                  _mm256_srli_epi64(_mm256_cvtepu32_epi64(lo), 11));
  bits = _mm256_and_si256(bits, _mm256_set1_epi64x((int64_t(1) << 53) - 1));
  bits = _mm256_blendv_epi8(bits, _mm256_set1_epi64x((int64_t(1) << 53) - 2),
                            _mm256_cmpeq_epi64(bits, _mm256_set1_epi64x((int64_t(1) << 53) - 1)));
  const __m256d whole = _mm256_add_pd(_mm256_mul_pd(u64_to_pd4(_mm256_srli_epi64(bits, 32)), _mm256_set1_pd(4294967296.0)),
                                      u64_to_pd4(_mm256_and_si256(bits, _mm256_set1_epi64x(0xFFFFFFFF))));
  return _mm256_mul_pd(_mm256_add_pd(whole, _mm256_set1_pd(0.5)), _mm256_set1_pd(1.0 / 9007199254740992.0));
}

// The uniforms of tokens t0 .. t0 + 15 (t0 even): one Philox block per pair t0 / 2 + lane,
// words 0, 1 for the even token, 2, 3 for the odd (as PhiloxNoise::uniform). ug[0] and
// ug[1]: the even tokens of pairs 0-3 and 4-7; ug[2] and ug[3]: their odd tokens.
__attribute__((target("avx2"), always_inline)) inline void block_uniforms_avx2(int t0, uint64_t seed, const DrawKey& key,
                                                                                __m256d (&ug)[4]) {
  __m256i c0 = _mm256_add_epi32(_mm256_set1_epi32(t0 >> 1), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  __m256i c1 = _mm256_set1_epi32(int(key.position)), c2 = _mm256_set1_epi32(int(key.round));
  __m256i c3 = _mm256_set1_epi32(int(key.sequence));
  philox8(c0, c1, c2, c3, uint32_t(seed), uint32_t(seed >> 32));
  ug[0] = philox_u53_pd4(_mm256_castsi256_si128(c0), _mm256_castsi256_si128(c1));
  ug[1] = philox_u53_pd4(_mm256_extracti128_si256(c0, 1), _mm256_extracti128_si256(c1, 1));
  ug[2] = philox_u53_pd4(_mm256_castsi256_si128(c2), _mm256_castsi256_si128(c3));
  ug[3] = philox_u53_pd4(_mm256_extracti128_si256(c2, 1), _mm256_extracti128_si256(c3, 1));
}

__attribute__((target("avx2"))) double block_uniform_for_test(int32_t token, uint64_t seed, const DrawKey& key) {
  __m256d ug[4];
  const int j = token & 15;
  block_uniforms_avx2(token - j, seed, key, ug);
  alignas(32) double u[4];
  _mm256_store_pd(u, ug[2 * (j & 1) + ((j >> 1) >= 4)]);
  return u[(j >> 1) & 3];
}

// philox_argmax_dense_avx512 16 tokens (8 Philox blocks) at a time: kept = x >= threshold
// and not -inf, a whole block skipped or pre-filtered against the bound of its largest x,
// the survivors scored one by one by offer_uniform (the scalar test and noise), so the
// same token as the scalar pass.
__attribute__((target("avx2"))) int32_t philox_argmax_dense_avx2(const Nucleus& nu, PhiloxNoise& noise) {
  Best best;
  const double* x = nu.x;
  const int32_t top = first_scored(nu);
  if (top >= 0) best.offer_uniform(top, x[top], noise.uniform(top));
  const double thr = nu.all ? -kInf : nu.threshold;
  const __m256d vthr = _mm256_set1_pd(thr), ninf = _mm256_set1_pd(-kInf);
  const double* bounds = PhiloxNoise::u_bounds();
  alignas(32) double ue[8], uo[8];  // uniforms of the even and the odd token of each pair
  for (int t0 = 0; t0 < nu.vocab; t0 += 16) {
    unsigned kept = 0;
    double xmax = -kInf;
    if (t0 + 16 <= nu.vocab) {
      __m256d vmax = ninf;
      for (int q = 0; q < 4; ++q) {
        const __m256d xs = _mm256_loadu_pd(x + t0 + 4 * q);
        const __m256d k = _mm256_and_pd(_mm256_cmp_pd(xs, vthr, _CMP_GE_OQ), _mm256_cmp_pd(xs, ninf, _CMP_NEQ_OQ));
        kept |= unsigned(_mm256_movemask_pd(k)) << (4 * q);
        vmax = _mm256_max_pd(vmax, _mm256_blendv_pd(ninf, xs, k));
      }
      alignas(32) double lanes[4];
      _mm256_store_pd(lanes, vmax);
      xmax = std::max(std::max(lanes[0], lanes[1]), std::max(lanes[2], lanes[3]));
    } else {
      for (int t = t0; t < nu.vocab; ++t)
        if (x[t] >= thr && x[t] != -kInf) {
          kept |= 1u << (t - t0);
          xmax = std::max(xmax, x[t]);
        }
    }
    for (const int32_t t : {top, nu.mask})  // scored first / never kept
      if (t >= t0 && t < t0 + 16) kept &= ~(1u << (t - t0));
    if (!kept) continue;
    double bound = 0;  // below every uniform: nothing pre-filtered
    if (best.token >= 0) {
      const double gap_min = best.score - xmax;
      if (gap_min > kGumbelMax) continue;  // no token here can win
      if (gap_min >= 2.0 / kGapSteps) bound = bounds[int(gap_min * kGapSteps) - 1];
    }
    __m256d ug[4];
    block_uniforms_avx2(t0, noise.seed, noise.key, ug);
    // Pair k's even token is bit 2k of `kept`, its odd token bit 2k + 1.
    const __m256d vb = _mm256_set1_pd(bound);
    unsigned may_win = 0;
    for (int g = 0; g < 4; ++g) {
      const unsigned above = unsigned(_mm256_movemask_pd(_mm256_cmp_pd(ug[g], vb, _CMP_GE_OQ)));
      for (int k = 0; k < 4; ++k)
        if (above >> k & 1u) may_win |= 1u << (2 * (4 * (g & 1) + k) + (g >> 1));
    }
    kept &= may_win;
    if (!kept) continue;
    _mm256_store_pd(ue, ug[0]);
    _mm256_store_pd(ue + 4, ug[1]);
    _mm256_store_pd(uo, ug[2]);
    _mm256_store_pd(uo + 4, ug[3]);
    for (unsigned on = kept; on; on &= on - 1) {
      const int j = __builtin_ctz(on);
      best.offer_uniform(t0 + j, x[t0 + j], (j & 1) ? uo[j >> 1] : ue[j >> 1]);
    }
  }
  return best.token;
}
#endif

int32_t greedy_row(const float* logits, int vocab, int mask) {
  int32_t best = -1;
  double bv = -kInf;
  for (int t = 0; t < vocab; ++t) {
    if (t == mask) continue;
    double v = double(logits[t]);
    if (v != v) v = -kInf;  // NaN never wins
    if (best < 0 || v > bv) {
      best = t;
      bv = v;
    }
  }
  return best;
}

template <class Noise>
int32_t sample_impl(const float* logits, int vocab, const SampleParams& p, Noise& noise) {
  if (p.greedy || !valid_temperature(p.temperature)) return greedy_row(logits, vocab, p.mask_index);
#if ESOLM_SAMPLER_X86
  const bool dense_pass = std::is_same_v<Noise, PhiloxNoise> && (sampler_avx512() || sampler_avx2());
#else
  const bool dense_pass = false;
#endif
  Nucleus nu = nucleus(logits, vocab, p, false, dense_pass);
  if (nu.kind == Nucleus::empty) return -1;
#if ESOLM_SAMPLER_X86
  if constexpr (std::is_same_v<Noise, PhiloxNoise>) {
    if (sampler_avx512()) {
      if (nu.dense()) return philox_argmax_dense_avx512(nu, noise);
      return philox_argmax_avx512(nu, nu.kind == Nucleus::normal ? nu.x : nullptr, noise);
    }
    if (sampler_avx2() && nu.dense()) return philox_argmax_dense_avx2(nu, noise);
  }
#endif
  if (nu.kind != Nucleus::normal)  // uniform over the kept set
    return gumbel_argmax(nu, [](int32_t) { return 0.0; }, noise);
  const double* x = nu.x;
  return gumbel_argmax(nu, [x](int32_t t) { return x[t]; }, noise);
}

}  // namespace

double top_p_threshold(const float* logits, int vocab, const SampleParams& p,
                       std::vector<int32_t>* kept) {
  Nucleus nu = nucleus(logits, vocab, p, kept != nullptr);
  if (kept) kept->assign(nu.kept, nu.kept + nu.n_kept);
  return nu.threshold;
}

int32_t sample_row(const float* logits, int vocab, const SampleParams& p, const DrawKey& key) {
  PhiloxNoise noise{p.seed, key};
  return sample_impl(logits, vocab, p, noise);
}

int32_t sample_row_with_uniforms(const float* logits, int vocab, const SampleParams& p,
                                 const double* uniforms) {
  ArrayNoise noise{uniforms};
  return sample_impl(logits, vocab, p, noise);
}

void sampler_limit_passes(SamplerPasses widest) {
#if ESOLM_SAMPLER_X86
  g_widest.store(int(widest));
#else
  (void)widest;
#endif
}

SamplerPasses sampler_widest_passes() {
#if ESOLM_SAMPLER_X86
  return sampler_avx512() ? SamplerPasses::avx512 : sampler_avx2() ? SamplerPasses::avx2 : SamplerPasses::sse2;
#else
  return SamplerPasses::sse2;
#endif
}

void sampler_exp_for_test(const double* d, double* e, int n) {
  int i = 0;
#if ESOLM_SAMPLER_X86
  if (sampler_avx512())
    for (; i + 8 <= n; i += 8) store_exp_nonpos_pd8(d + i, e + i);
  else if (sampler_avx2())
    for (; i + 4 <= n; i += 4) store_exp_nonpos_pd4(d + i, e + i);
#endif
#if defined(__SSE2__)
  for (; i + 2 <= n; i += 2) _mm_storeu_pd(e + i, exp_nonpos_pd(_mm_loadu_pd(d + i)));
#endif
  for (; i < n; ++i) e[i] = exp_nonpos(d[i]);
}

bool sampler_uniforms_for_test(uint64_t seed, const DrawKey& key, const int32_t* tokens, int n, double* u) {
#if ESOLM_SAMPLER_X86
  if (sampler_avx2()) {
    for (int i = 0; i < n; ++i) u[i] = block_uniform_for_test(tokens[i], seed, key);
    return true;
  }
  if (!sampler_avx512()) return false;
  for (int i = 0; i < n; i += 16) {
    int32_t ids[16] = {};
    double out[16];
    std::copy(tokens + i, tokens + std::min(n, i + 16), ids);
    uniforms16_for_test(ids, seed, key, out);
    std::copy(out, out + std::min(16, n - i), u + i);
  }
  return true;
#else
  (void)seed, (void)key, (void)tokens, (void)n, (void)u;
  return false;
#endif
}

bool mdlm_stays_masked(uint64_t seed, const DrawKey& key, double r) {
  if (!(r > 0.0)) return false;  // r <= 0 or NaN: always reveal
  if (r >= 1.0) return true;
  // One uniform per (sequence, position, round), on a token id no vocabulary reaches.
  return draw_uniform(seed, key.sequence, key.position, key.round, 0xFFFFFFFFu) < r;
}

int32_t sample_row_mdlm(const float* logits, int vocab, const SampleParams& p, double r,
                        const DrawKey& key) {
  const bool has_mask = p.mask_index >= 0 && p.mask_index < vocab;
  if (has_mask && mdlm_stays_masked(p.seed, key, r)) return p.mask_index;
  DrawKey token_key = key;
  token_key.round = 0;  // the token a position reveals does not depend on the step
  const int32_t t = sample_row(logits, vocab, p, token_key);
  return t < 0 && has_mask ? p.mask_index : t;  // nothing to reveal: stays masked
}

}  // namespace esolm
