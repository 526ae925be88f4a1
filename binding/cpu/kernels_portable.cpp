// kernels_portable.cpp — the portable build of kernels_impl.h and the run-time choice
// between it and the AVX2+FMA build.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "cpu/kernels.h"

namespace esolm_portable {
#include "cpu/kernels_impl.h"
}

namespace esolm {

const CpuKernels& cpu_kernels_portable() {
  static const CpuKernels k{"portable", esolm_portable::gemm_panel_impl,
                            esolm_portable::attn_rows_impl,
                            esolm_portable::attn_scratch_floats};
  return k;
}

// Evaluated at each backend creation, so ESOLM_CPU_KERNELS can be changed between them.
const CpuKernels& cpu_kernels() {
  const char* force = std::getenv("ESOLM_CPU_KERNELS");
  if (force && std::strcmp(force, "portable") == 0) return cpu_kernels_portable();
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_kernels_avx2())
    return *cpu_kernels_avx2();
#endif
  return cpu_kernels_portable();
}

}  // namespace esolm
