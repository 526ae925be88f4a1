// cpu_gemm_tile.cpp — the many-row GEMM tile of the CPU kernel set in use (cpu/kernels.h,
// CpuKernels::gemm_panel) alone, F32 panels, on one thread, against the FMA peak measured
// by the same set, timed by thread CPU time: one row block x 4 panels, as linear() hands
// a task of a long forward to the kernel.
// Build: cmake -S . -B build-native -DESOLM_NATIVE_TESTS=ON && cmake --build build-native --target cpu_gemm_tile
// Usage: build-native/cpu_gemm_tile [rows 120] [k 768] [reps 2000]   (ESOLM_CPU_KERNELS picks the set)
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "cpu/kernels.h"
#include "thread_cpu_time.h"

using namespace esolm;

int main(int argc, char** argv) {
  const CpuKernels& kn = cpu_kernels();
  const int rows = argc > 1 ? std::atoi(argv[1]) : 120, k = argc > 2 ? std::atoi(argv[2]) : 768;
  const int reps = argc > 3 ? std::atoi(argv[3]) : 2000, n_panels = 4;
  double peak = 0;
  for (int i = 0; i < 3; ++i) {
    const double t0 = thread_cpu_seconds(), flops = kn.fma_loop(20000000);
    peak = std::max(peak, flops / (thread_cpu_seconds() - t0) / 1e9);
  }
  std::vector<float> a(size_t(rows) * k, 1.0f), w(size_t(n_panels) * k * kPanel, 0.5f), c(size_t(rows) * n_panels * kPanel);
  GemmPanelArgs g{};
  g.a = a.data();
  g.lda = k;
  g.rows = rows;
  g.panel = w.data();
  g.k = k;
  g.c = c.data();
  g.ldc = n_panels * kPanel;
  g.ncols = n_panels * kPanel;
  g.bias = nullptr;
  g.ep = EpilogueKind::store;
  g.n_panels = n_panels;
  g.panel_stride = int64_t(k) * kPanel;
  for (int i = 0; i < 10; ++i) kn.gemm_panel(g);
  const double t0 = thread_cpu_seconds();
  for (int i = 0; i < reps; ++i) kn.gemm_panel(g);
  const double gflops = 2.0 * rows * k * n_panels * kPanel * reps / (thread_cpu_seconds() - t0) / 1e9;
  const bool right = c[0] == 0.5f * float(k);
  std::printf("%s: %d rows x %d columns x k = %d, F32: %.1f GFLOP/s, %.0f%% of the FMA peak (%.1f GFLOP/s)%s\n", kn.name,
              rows, n_panels * kPanel, k, gflops, 100 * gflops / peak, peak, right ? "" : " WRONG RESULT");
  return right ? 0 : 1;
}
