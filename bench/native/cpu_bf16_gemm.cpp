// cpu_bf16_gemm.cpp — the BF16-math GEMM kernel alone (cpu/kernels.h, CpuBf16MathKernels)
// against the vdpbf16ps peak, on one thread, timed by thread CPU time (a shared machine's
// other processes then count less): one row block x 4 panels, as linear() hands it a task.
// Build: cmake -S . -B build-native -DESOLM_NATIVE_TESTS=ON && cmake --build build-native --target cpu_bf16_gemm
// Usage: build-native/cpu_bf16_gemm [rows 120] [k 768] [reps 2000]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "cpu/kernels.h"
#include "thread_cpu_time.h"

using namespace esolm;

int main(int argc, char** argv) {
  const CpuBf16MathKernels* m = cpu_bf16_math_kernels();
  if (!m) {
    std::printf("this CPU (or build) has no AVX512_BF16\n");
    return 1;
  }
  const int rows = argc > 1 ? std::atoi(argv[1]) : 120, k = argc > 2 ? std::atoi(argv[2]) : 768;
  const int reps = argc > 3 ? std::atoi(argv[3]) : 2000, n_panels = 4, k2 = (k + 1) / 2 * 2;
  double best_peak = 0;
  for (int i = 0; i < 3; ++i) {
    const double t0 = thread_cpu_seconds(), flops = m->dot_loop(20000000);
    best_peak = std::max(best_peak, flops / (thread_cpu_seconds() - t0) / 1e9);
  }
  std::vector<uint16_t> a(size_t(rows) * k2, 0x3f80), w(size_t(n_panels) * k2 * kPanel, 0x3c00);  // 1, 2^-7
  std::vector<float> c(size_t(rows) * n_panels * kPanel);
  GemmBf16Args g{a.data(), k2, rows, w.data(), int64_t(k2) * kPanel, n_panels, k, c.data(),
                 n_panels * kPanel, n_panels * kPanel, nullptr, EpilogueKind::store};
  for (int i = 0; i < 10; ++i) m->gemm(g);
  const double t0 = thread_cpu_seconds();
  for (int i = 0; i < reps; ++i) m->gemm(g);
  const double gflops = 2.0 * rows * k * n_panels * kPanel * reps / (thread_cpu_seconds() - t0) / 1e9;
  const bool right = c[0] == float(k) / 128.0f;
  std::printf("%s: %d rows x %d columns x k = %d: %.1f GFLOP/s, %.0f%% of the vdpbf16ps peak (%.1f GFLOP/s)%s\n",
              m->name, rows, n_panels * kPanel, k, gflops, 100 * gflops / best_peak, best_peak,
              right ? "" : " WRONG RESULT");
  return right ? 0 : 1;
}
