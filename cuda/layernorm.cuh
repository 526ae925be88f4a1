// layernorm.cuh — y = LN(x) * w + b, eps 1e-5, biased variance, fp32 two-pass.
// x F32 [rows, d]; w, b F32 [d] (b may be null); y F32 or BF16 [rows, d].
#pragma once
#include "common.cuh"

namespace esolm {
namespace cuda {

Status launch_layernorm(const float* x, const float* w, const float* b, void* y, DType y_dtype,
                        int64_t rows, int64_t d, cudaStream_t stream);

}  // namespace cuda
}  // namespace esolm
