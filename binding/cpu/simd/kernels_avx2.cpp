// kernels_avx2.cpp — kernels_impl.h compiled with -mavx2 -mfma (CMakeLists.txt sets the
// flags for simd/*_avx2.cpp). Returned only when cpuid reports AVX2 and FMA.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu/kernels.h"

#if defined(__x86_64__)
namespace esolm_avx2 {
#include "cpu/kernels_impl.h"
}
#endif

namespace esolm {

const CpuKernels* cpu_kernels_avx2() {
#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__)
  static const CpuKernels k{"avx2+fma", esolm_avx2::gemm_panel_impl, esolm_avx2::attn_rows_impl,
                            esolm_avx2::attn_scratch_floats, esolm_avx2::fma_loop_impl,
                            esolm_avx2::read_sum_impl};
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return nullptr;
  return &k;
#else
  return nullptr;
#endif
}

}  // namespace esolm
