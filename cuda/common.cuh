// common.cuh — shared helpers of the CUDA backend: error → Status conversion, bf16
// load/store helpers usable for any DType, and the launch-check macro.
//
// Invariant: every CUDA runtime call and every kernel launch in cuda/ is checked, and a
// failure becomes an esolm::Status whose message carries cudaGetErrorName (never an abort).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "engine/backend.h"
#include "engine/status.h"

namespace esolm {
namespace cuda {

inline Status cuda_status(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return Status::ok();
  Code c = (e == cudaErrorMemoryAllocation) ? Code::out_of_memory : Code::internal;
  return Status::error(c, std::string(what) + ": " + cudaGetErrorName(e) + " (" +
                              cudaGetErrorString(e) + ")");
}

// Device-side typed access by runtime dtype (uniform branch per launch; used by the
// memory-bound kernels so they accept F32 or BF16 tensors alike).
__device__ __forceinline__ float ld_any(const void* p, DType t, int64_t i) {
  if (t == DType::bf16) return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
  if (t == DType::i32) return float(static_cast<const int32_t*>(p)[i]);
  return static_cast<const float*>(p)[i];
}
__device__ __forceinline__ void st_any(void* p, DType t, int64_t i, float v) {
  if (t == DType::bf16) static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
  else if (t == DType::i32) static_cast<int32_t*>(p)[i] = int32_t(v);
  else static_cast<float*>(p)[i] = v;
}

inline unsigned grid_1d(int64_t n, int threads) {
  int64_t g = (n + threads - 1) / threads;
  if (g > (int64_t(1) << 30)) g = int64_t(1) << 30;
  return unsigned(g < 1 ? 1 : g);
}

}  // namespace cuda
}  // namespace esolm

// Return a Status from the enclosing function if a CUDA call failed.
#define CUDA_TRY(expr)                                                         \
  do {                                                                         \
    cudaError_t esolm_cuda_e_ = (expr);                                        \
    if (esolm_cuda_e_ != cudaSuccess)                                          \
      return ::esolm::cuda::cuda_status(esolm_cuda_e_, #expr);                 \
  } while (0)

// After a <<<>>> launch: report configuration / launch errors.
#define CUDA_CHECK_LAUNCH(name) CUDA_TRY(cudaGetLastError())
