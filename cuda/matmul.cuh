// matmul.cuh — linear(): y = in · Wᵀ + bias with a store / GELU-tanh / add-to epilogue.
//
// Inputs are BF16 (the backend converts F32 operands first); accumulation is F32;
// out is F32 or BF16 (add_to requires F32). Three kernels, chosen by shape:
// 3-16 rows (17-64 for block-sized N, K): skinny tensor-core kernel with split-K (tokens in
// mma's N dimension); 1-2 rows: weight-streaming GEMV; else mma.sync m16n8k16 tiles
// (128x128 or 64x64); a naive path when k % 8 != 0. See plan_skinny in matmul.cu.
#pragma once
#include "common.cuh"

namespace esolm {
namespace cuda {

// ws / tickets: split-K partials (linear_workspace_floats(M, N, K) floats) and a zeroed
// array of linear_ticket_count() counters that the kernels leave zeroed. Either may be null:
// the skinny kernel then runs without split-K.
Status launch_linear(const __nv_bfloat16* in, const __nv_bfloat16* W, const float* bias,
                     void* out, DType out_dtype, int64_t M, int64_t N, int64_t K, Epilogue ep,
                     int sm_count, cudaStream_t stream, float* ws = nullptr,
                     size_t ws_floats = 0, unsigned* tickets = nullptr);
size_t linear_workspace_floats(int64_t M, int64_t N, int64_t K, int sm_count);
size_t linear_ticket_count();

// Element-wise dtype conversion on the device (F32 <-> BF16), used for F32 operands.
Status launch_convert(const void* src, DType src_t, void* dst, DType dst_t, int64_t n,
                      cudaStream_t stream);

}  // namespace cuda
}  // namespace esolm
