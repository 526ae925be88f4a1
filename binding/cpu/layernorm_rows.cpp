// layernorm_rows.cpp — see layernorm_rows.h. Built with -ffp-contract=off (CMakeLists.txt):
// each product is rounded before its sum, in the vector loops and the scalar ones alike.
#include "cpu/layernorm_rows.h"

#include <atomic>
#include <cmath>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define ESOLM_LN_AVX512 1
#endif

namespace esolm {
namespace {

std::atomic<bool> g_allow_avx512{true};

inline double tree8(const double p[8]) { return ((p[0] + p[4]) + (p[1] + p[5])) + ((p[2] + p[6]) + (p[3] + p[7])); }

// The 8 partial sums over [0, i8): part[j] += x[i + j] (or its squared distance from `mean`).
inline void sums_scalar(const float* x, int64_t i8, double part[8]) {
  for (int64_t i = 0; i < i8; i += 8)
    for (int j = 0; j < 8; ++j) part[j] += x[i + j];
}
inline void squares_scalar(const float* x, int64_t i8, double mean, double part[8]) {
  for (int64_t i = 0; i < i8; i += 8)
    for (int j = 0; j < 8; ++j) {
      const double t = x[i + j] - mean;
      part[j] += t * t;
    }
}
inline void scale_scalar(const float* x, int64_t i0, int64_t d, float m, float rstd, const float* w, const float* b,
                         float* y) {
  for (int64_t i = i0; i < d; ++i) {
    const float v = (x[i] - m) * rstd * w[i];
    y[i] = b ? v + b[i] : v;
  }
}

#if ESOLM_LN_AVX512
bool use_avx512() {
  static const bool ok = __builtin_cpu_supports("avx512f");
  return ok && g_allow_avx512.load(std::memory_order_relaxed);
}

// The partial sums of sums_scalar / squares_scalar, lane j holding part[j].
__attribute__((target("avx512f"))) void sums_avx512(const float* x, int64_t i8, double part[8]) {
  __m512d acc = _mm512_loadu_pd(part);
  for (int64_t i = 0; i < i8; i += 8) acc = _mm512_add_pd(acc, _mm512_cvtps_pd(_mm256_loadu_ps(x + i)));
  _mm512_storeu_pd(part, acc);
}
__attribute__((target("avx512f"))) void squares_avx512(const float* x, int64_t i8, double mean, double part[8]) {
  const __m512d mv = _mm512_set1_pd(mean);
  __m512d acc = _mm512_loadu_pd(part);
  for (int64_t i = 0; i < i8; i += 8) {
    const __m512d t = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + i)), mv);
    acc = _mm512_add_pd(acc, _mm512_mul_pd(t, t));
  }
  _mm512_storeu_pd(part, acc);
}
// scale_scalar over [0, d / 16 * 16); returns where the scalar loop goes on.
__attribute__((target("avx512f"))) int64_t scale_avx512(const float* x, int64_t d, float m, float rstd,
                                                         const float* w, const float* b, float* y) {
  const __m512 mv = _mm512_set1_ps(m), rv = _mm512_set1_ps(rstd);
  int64_t i = 0;
  for (; i + 16 <= d; i += 16) {
    __m512 v = _mm512_mul_ps(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x + i), mv), rv), _mm512_loadu_ps(w + i));
    if (b) v = _mm512_add_ps(v, _mm512_loadu_ps(b + i));
    _mm512_storeu_ps(y + i, v);
  }
  return i;
}
#endif

}  // namespace

void layernorm_row(const float* x, int64_t d, const float* w, const float* b, float* y) {
  const int64_t i8 = d / 8 * 8;
#if ESOLM_LN_AVX512
  const bool wide = use_avx512();
#else
  const bool wide = false;
#endif
  double part[8] = {};
#if ESOLM_LN_AVX512
  if (wide) sums_avx512(x, i8, part);
#endif
  if (!wide) sums_scalar(x, i8, part);
  double mean = tree8(part);
  for (int64_t i = i8; i < d; ++i) mean += x[i];
  mean /= double(d);
  for (double& p : part) p = 0;
#if ESOLM_LN_AVX512
  if (wide) squares_avx512(x, i8, mean, part);
#endif
  if (!wide) squares_scalar(x, i8, mean, part);
  double var = tree8(part);
  for (int64_t i = i8; i < d; ++i) {
    const double t = x[i] - mean;
    var += t * t;
  }
  var /= double(d);
  const float rstd = float(1.0 / std::sqrt(var + 1e-5));
  const float m = float(mean);
  int64_t i0 = 0;
#if ESOLM_LN_AVX512
  if (wide) i0 = scale_avx512(x, d, m, rstd, w, b, y);
#endif
  scale_scalar(x, i0, d, m, rstd, w, b, y);
}

void layernorm_rows_allow_avx512(bool allow) { g_allow_avx512.store(allow); }

}  // namespace esolm
