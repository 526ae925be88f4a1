// cuda_probe.h — what CUDA device is usable, without creating a backend.
//
// Plain C++ header (no CUDA headers) so tests, benches and the N-API glue can call it.
// cuda_probe() never aborts: with no driver, an old driver, no device or a GPU older
// than sm_80 it fills `reason` and returns Code::no_cuda.
#pragma once
#include <string>

#include "engine/status.h"

namespace esolm {

struct CudaInfo {
  int device_count = 0;
  int device = 0;             // the device described below
  std::string name;           // e.g. "NVIDIA H100 80GB HBM3"
  int cc_major = 0, cc_minor = 0;
  int driver_version = 0;     // cudaDriverGetVersion (0 = no driver)
  int runtime_version = 0;    // cudaRuntimeGetVersion (the static cudart linked in)
  size_t total_memory = 0;    // bytes
  int sm_count = 0;
  bool usable = false;
  std::string error_name;     // cudaGetErrorName of the failing call, if any
  std::string reason;         // human reason when !usable
};

// Probe `device` (default 0). Returns ok when usable, else Code::no_cuda with info.reason.
Status cuda_probe(CudaInfo& info, int device = 0);

// Free and total device memory of `device` (cudaMemGetInfo); no_cuda when unusable.
Status cuda_mem_info(int device, size_t& free_bytes, size_t& total_bytes);

}  // namespace esolm
