// matmul.cuh — linear(): y = in · Wᵀ + bias with a store / GELU-tanh / add-to epilogue.
//
// Inputs are BF16 (the backend converts F32 operands first); accumulation is F32;
// out is F32 or BF16 (add_to requires F32). Three kernels, chosen by shape:
// rows <= 16 weight streaming (CUDA cores, 16-byte W loads), tensor-core mma.sync
// m16n8k16 tiles (128x128 or 64x64), and a naive path when k % 8 != 0.
#pragma once
#include "common.cuh"

namespace esolm {
namespace cuda {

Status launch_linear(const __nv_bfloat16* in, const __nv_bfloat16* W, const float* bias,
                     void* out, DType out_dtype, int64_t M, int64_t N, int64_t K, Epilogue ep,
                     int sm_count, cudaStream_t stream);

// Element-wise dtype conversion on the device (F32 <-> BF16), used for F32 operands.
Status launch_convert(const void* src, DType src_t, void* dst, DType dst_t, int64_t n,
                      cudaStream_t stream);

}  // namespace cuda
}  // namespace esolm
