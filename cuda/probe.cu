// probe.cu — cuda_probe(): driver / runtime / device discovery with human reasons
// (PACKAGING-NOTES.md §3.3). Only status-returning CUDA calls; safe with no driver.
#include <cstdio>

#include "common.cuh"
#include "cuda_probe.h"

namespace esolm {

static std::string cuda_ver(int v) {
  char b[32];
  std::snprintf(b, sizeof b, "%d.%d", v / 1000, (v % 1000) / 10);
  return b;
}

Status cuda_probe(CudaInfo& info, int device) {
  info = CudaInfo{};
  info.device = device;
  cudaRuntimeGetVersion(&info.runtime_version);
  cudaDriverGetVersion(&info.driver_version);  // 0 when libcuda.so.1 is absent
  cudaError_t e = cudaGetDeviceCount(&info.device_count);
  if (e != cudaSuccess) {
    info.error_name = cudaGetErrorName(e);
    info.device_count = 0;
    if (e == cudaErrorInsufficientDriver && info.driver_version == 0)
      info.reason = "No NVIDIA driver found (libcuda.so.1 not loadable)";
    else if (e == cudaErrorInsufficientDriver)
      info.reason = "Driver supports CUDA " + cuda_ver(info.driver_version) + "; this build needs " +
                    cuda_ver(info.runtime_version) + " (R580+)";
    else if (e == cudaErrorNoDevice)
      info.reason = "No CUDA device visible (CUDA_VISIBLE_DEVICES, container without --gpus?)";
    else if (e == cudaErrorCompatNotSupportedOnDevice)
      info.reason = "Remove the CUDA forward-compat libraries from LD_LIBRARY_PATH";
    else
      info.reason = std::string("cudaGetDeviceCount failed: ") + cudaGetErrorString(e);
    cudaGetLastError();  // clear the sticky-free error state
    return Status::error(Code::no_cuda, info.reason + " [" + info.error_name + "]");
  }
  if (info.device_count == 0 || device < 0 || device >= info.device_count) {
    info.reason = info.device_count == 0 ? "No CUDA device visible"
                                         : "CUDA device index out of range";
    return Status::error(Code::no_cuda, info.reason);
  }
  cudaDeviceProp prop;
  e = cudaGetDeviceProperties(&prop, device);
  if (e != cudaSuccess) {
    info.error_name = cudaGetErrorName(e);
    info.reason = std::string("cudaGetDeviceProperties failed: ") + cudaGetErrorString(e);
    cudaGetLastError();
    return Status::error(Code::no_cuda, info.reason);
  }
  info.name = prop.name;
  info.cc_major = prop.major;
  info.cc_minor = prop.minor;
  info.total_memory = prop.totalGlobalMem;
  info.sm_count = prop.multiProcessorCount;
  if (prop.major < 8) {
    info.reason = "GPU sm_" + std::to_string(prop.major) + std::to_string(prop.minor) +
                  " not supported by this build (needs sm_80+)";
    return Status::error(Code::no_cuda, info.reason);
  }
  info.usable = true;
  return Status::ok();
}

Status cuda_mem_info(int device, size_t& free_bytes, size_t& total_bytes) {
  free_bytes = total_bytes = 0;
  cudaError_t e = cudaSetDevice(device);
  if (e == cudaSuccess) e = cudaMemGetInfo(&free_bytes, &total_bytes);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return Status::error(Code::no_cuda, std::string("cudaMemGetInfo: ") + cudaGetErrorName(e));
  }
  return Status::ok();
}

}  // namespace esolm
