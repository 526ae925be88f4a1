// kernels_portable.cpp — the portable build of kernels_impl.h and the run-time choice
// between it, the AVX2+FMA build and the AVX-512 set.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu/kernels.h"

namespace esolm_portable {
#include "cpu/kernels_impl.h"
}

namespace esolm {

const CpuKernels& cpu_kernels_portable() {
  static const CpuKernels k{"portable", esolm_portable::gemm_panel_impl,
                            esolm_portable::attn_rows_impl,
                            esolm_portable::attn_scratch_floats,
                            esolm_portable::fma_loop_impl,
                            esolm_portable::read_sum_impl};
  return k;
}

// Evaluated at each backend creation, so ESOLM_CPU_KERNELS can be changed between them.
const CpuKernels* cpu_kernels_choice(const char** why) {
  const char* force = std::getenv("ESOLM_CPU_KERNELS");
  const CpuKernels* avx512 = cpu_kernels_avx512();
  const CpuKernels* avx2 = cpu_kernels_avx2();
  if (why) *why = nullptr;
  if (!force || !*force || std::strcmp(force, "auto") == 0)
    return avx512 ? avx512 : avx2 ? avx2 : &cpu_kernels_portable();
  if (std::strcmp(force, "portable") == 0) return &cpu_kernels_portable();
  if (std::strcmp(force, "avx2") == 0 && avx2) return avx2;
  if (std::strcmp(force, "avx512") == 0 && avx512) return avx512;
  if (why)
    *why = (std::strcmp(force, "avx2") == 0 || std::strcmp(force, "avx512") == 0)
               ? "ESOLM_CPU_KERNELS names a kernel set this CPU (or this build) cannot run"
               : "ESOLM_CPU_KERNELS must be auto, portable, avx2 or avx512";
  return nullptr;
}

const CpuKernels& cpu_kernels() {
  const CpuKernels* k = cpu_kernels_choice(nullptr);
  return k ? *k : cpu_kernels_portable();
}

}  // namespace esolm
