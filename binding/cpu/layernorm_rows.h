// layernorm_rows.h — the CPU backend's LayerNorm of one row: mean and variance summed in
// float64 over 8 interleaved partial sums, then the F32 scale and shift; eight (sums) and
// sixteen (scale) values at a time where the CPU has AVX-512F, with the same bits as the
// scalar loop (layernorm_rows.cpp is built without fused multiply-adds).
#pragma once
#include <cstdint>

namespace esolm {

// y = (x - mean) * rstd * w (+ b when b is not null) over one row of d floats, with
// rstd = 1 / sqrt(var + 1e-5), var the population variance.
void layernorm_row(const float* x, int64_t d, const float* w, const float* b, float* y);

// For tests: layernorm_rows_allow_avx512(false) makes this process use the scalar loop only.
void layernorm_rows_allow_avx512(bool allow);

}  // namespace esolm
