// layernorm.cu — one warp per row, fp32 two-pass statistics (mean, then the mean of
// squared deviations: no catastrophic cancellation), then the affine write.
// The row is re-read from L1/L2 in each pass; d = 768 is 3 KB, so this is cheap.
#include "layernorm.cuh"

namespace esolm {
namespace cuda {

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__global__ void __launch_bounds__(256)
    layernorm_kernel(const float* __restrict__ x, const float* __restrict__ w,
                     const float* __restrict__ b, void* y, DType yt, int64_t rows, int64_t d) {
  const int64_t row = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const float* xr = x + row * d;
  float s = 0.f;
  for (int64_t i = lane; i < d; i += 32) s += xr[i];
  const float mean = warp_sum(s) / float(d);
  float v = 0.f;
  for (int64_t i = lane; i < d; i += 32) {
    const float t = xr[i] - mean;
    v = fmaf(t, t, v);
  }
  const float rstd = rsqrtf(warp_sum(v) / float(d) + 1e-5f);
  for (int64_t i = lane; i < d; i += 32) {
    const float o = (xr[i] - mean) * rstd * w[i] + (b ? b[i] : 0.f);
    st_any(y, yt, row * d + i, o);
  }
}

Status launch_layernorm(const float* x, const float* w, const float* b, void* y, DType yt,
                        int64_t rows, int64_t d, cudaStream_t st) {
  if (rows <= 0) return Status::ok();
  layernorm_kernel<<<grid_1d(rows * 32, 256), 256, 0, st>>>(x, w, b, y, yt, rows, d);
  CUDA_CHECK_LAUNCH("layernorm");
  return Status::ok();
}

}  // namespace cuda
}  // namespace esolm
