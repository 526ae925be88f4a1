// q8.h — the 8-bit weight rule, shared by the engine (quantizing F32 matrices on the host),
// the CPU backend (prepare_weight) and, bit for bit, `esolm convert --dtype q8` (lib/q8.ts):
// for each output row r of W [n, k],
//   scale_r = max_c |W[r, c]| / 127            (F32 division)
//   q[r, c] = round_half_even(W[r, c] / scale_r) clamped to [-127, 127]   (F32 division)
// and an all-zero row gets scale 0 and q 0. W[r, c] ≈ q[r, c] * scale_r. Every step is one
// correctly rounded F32 operation, so JS (Math.fround of the double result) gets the same bits.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

namespace esolm {

constexpr int kQ8Max = 127;  // symmetric: -128 never occurs (a file holding it is refused)

// Quantizes row w[0, k) into q[0], q[stride], ...; returns the row's scale.
inline float q8_quantize_row(const float* w, int64_t k, int8_t* q, int64_t stride) {
  float amax = 0.0f;
  for (int64_t c = 0; c < k; ++c) amax = std::max(amax, std::fabs(w[c]));
  const float s = amax / float(kQ8Max);
  for (int64_t c = 0; c < k; ++c) {
    const float v = s == 0.0f ? 0.0f : std::nearbyint(w[c] / s);  // default rounding: half to even
    q[c * stride] = int8_t(std::max(-float(kQ8Max), std::min(float(kQ8Max), v)));
  }
  return s;
}

}  // namespace esolm
