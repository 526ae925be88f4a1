// rope_rows.cpp — see rope_rows.h. Built with -ffp-contract=off (CMakeLists.txt): each
// rotation is two float64 products rounded apart, then their sum, as in the reference.
#include "cpu/rope_rows.h"

#include <atomic>
#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define ESOLM_ROPE_AVX512 1
#endif

namespace esolm {
namespace {

std::atomic<bool> g_allow_avx512{true};

// Rotates pairs [j0, half) of one head: x1 = src[j], x2 = src[j + half].
inline void rotate_scalar(const float* src, float* dst, int j0, int half, const double* cs, const double* sn) {
  for (int j = j0; j < half; ++j) {
    const double x1 = src[j], x2 = src[j + half];
    dst[j] = float(x1 * cs[j] - x2 * sn[j]);
    dst[j + half] = float(x2 * cs[j] + x1 * sn[j]);
  }
}

#if ESOLM_ROPE_AVX512
bool use_avx512() {
  static const bool ok = __builtin_cpu_supports("avx512f");
  return ok && g_allow_avx512.load(std::memory_order_relaxed);
}

// Pairs [0, half / 8 * 8) of one head, eight at a time; returns where the scalar loop goes on.
__attribute__((target("avx512f"))) int rotate_avx512(const float* src, float* dst, int half, const double* cs,
                                                     const double* sn) {
  int j = 0;
  for (; j + 8 <= half; j += 8) {
    const __m512d x1 = _mm512_cvtps_pd(_mm256_loadu_ps(src + j)), x2 = _mm512_cvtps_pd(_mm256_loadu_ps(src + j + half));
    const __m512d c = _mm512_loadu_pd(cs + j), s = _mm512_loadu_pd(sn + j);
    _mm256_storeu_ps(dst + j, _mm512_cvtpd_ps(_mm512_sub_pd(_mm512_mul_pd(x1, c), _mm512_mul_pd(x2, s))));
    _mm256_storeu_ps(dst + j + half, _mm512_cvtpd_ps(_mm512_add_pd(_mm512_mul_pd(x2, c), _mm512_mul_pd(x1, s))));
  }
  return j;
}
#endif

}  // namespace

void rope_row(const float* r, int64_t d, int n_heads, int hd, const double* cs, const double* sn, float* q_out,
              float* k_out, float* v_out) {
  const int half = hd / 2;
#if ESOLM_ROPE_AVX512
  const bool wide = use_avx512();
#endif
  for (int h = 0; h < n_heads; ++h) {
    const int64_t o = int64_t(h) * hd;
    int jq = 0, jk = 0;
#if ESOLM_ROPE_AVX512
    if (wide) {
      jq = rotate_avx512(r + o, q_out + o, half, cs, sn);
      jk = rotate_avx512(r + d + o, k_out + o, half, cs, sn);
    }
#endif
    rotate_scalar(r + o, q_out + o, jq, half, cs, sn);
    rotate_scalar(r + d + o, k_out + o, jk, half, cs, sn);
  }
  std::memcpy(v_out, r + 2 * d, size_t(d) * sizeof(float));
}

void rope_rows_allow_avx512(bool allow) { g_allow_avx512.store(allow); }

}  // namespace esolm
