// floors.cpp — see floors.h. Each measurement runs on `threads` std::threads started
// together; the figure is the total work over the wall time of the slowest thread.
#include "cpu/floors.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <thread>
#include <vector>

#include "cpu/host_memory.h"
#include "cpu/kernels.h"

namespace esolm {
namespace {

// Seconds for fn(t) to run on threads t = 0..n-1 at once.
double timed_on_threads(int n, const std::function<void(int)>& fn) {
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> ts;
  for (int t = 0; t < n; ++t)
    ts.emplace_back([&, t] {
      ready.fetch_add(1);
      while (!go.load()) std::this_thread::yield();
      fn(t);
    });
  while (ready.load() < n) std::this_thread::yield();
  const auto t0 = std::chrono::steady_clock::now();
  go.store(true);
  for (auto& t : ts) t.join();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The kernel sets built here and supported by this CPU, widest first.
std::vector<const CpuKernels*> read_kernel_sets() {
  std::vector<const CpuKernels*> sets;
  for (const CpuKernels* rk : {cpu_kernels_avx512(), cpu_kernels_avx2(), &cpu_kernels_portable()})
    if (rk) sets.push_back(rk);
  return sets;
}

}  // namespace

Status measure_cpu_floors(int threads, CpuFloors& out, double effort) {
  if (!(effort > 0.0 && effort <= 1.0)) return Status::error(Code::invalid_arg, "floors: effort must be in (0, 1]");
  if (threads <= 0) threads = int(std::thread::hardware_concurrency());
  if (threads <= 0) threads = 1;
  const CpuKernels& k = cpu_kernels();
  out = CpuFloors{};
  out.threads = threads;
  out.kernels = k.name;

  // Streaming read: 512 MiB, far past any cache, each thread its own contiguous slice.
  const int64_t n = std::max<int64_t>(int64_t(1) << 16, int64_t(double(int64_t(128) << 20) * effort));
  float* buf = static_cast<float*>(host_alloc_zeroed(size_t(n) * sizeof(float)));  // as tensors are
  if (!buf) return Status::error(Code::out_of_memory, "cannot allocate the bandwidth buffer");
  timed_on_threads(threads, [&](int t) {  // first touch by the reading thread
    const int64_t a = n * t / threads, b = n * (t + 1) / threads;
    std::fill(buf + a, buf + b, 1.0f);
  });
  // The machine's bandwidth, not one loop's: the best read loop of every kernel set here
  // (on Zen 5 the 256-bit loop streams faster than the 512-bit one).
  std::vector<float> sums(static_cast<size_t>(threads), 0.0f);
  double best = 1e30;
  for (const CpuKernels* rk : read_kernel_sets()) {
    for (int rep = 0; rep < 3; ++rep) {
      best = std::min(best, timed_on_threads(threads, [&](int t) {
        const int64_t a = n * t / threads, b = n * (t + 1) / threads;
        sums[size_t(t)] = rk->read_sum(buf + a, b - a);
      }));
      double total = 0;
      for (float s : sums) total += s;
      if (total != double(n)) {
        host_free(buf);
        return Status::error(Code::internal, "bandwidth read summed wrong");
      }
    }
  }
  host_free(buf);
  out.read_gbps = double(n) * sizeof(float) / best / 1e9;

  // Peak FMA: 0.05-0.5 s of independent FMAs per repetition (widest to portable).
  const int64_t iters = std::max<int64_t>(1024, int64_t(double(16 << 20) * effort));
  double flops = 0;
  best = 1e30;
  for (int rep = 0; rep < 3; ++rep)
    best = std::min(best, timed_on_threads(threads, [&](int t) {
      const double f = k.fma_loop(iters);
      if (t == 0) flops = f;
    }));
  out.fma_gflops = flops * threads / best / 1e9;

  // Peak of BF16 math's instruction (kernels.h), the same way.
  if (const CpuBf16MathKernels* m = cpu_bf16_math_kernels()) {
    best = 1e30;
    for (int rep = 0; rep < 3; ++rep)
      best = std::min(best, timed_on_threads(threads, [&](int t) {
        const double f = m->dot_loop(iters);
        if (t == 0) flops = f;
      }));
    out.bf16_dot_gflops = flops * threads / best / 1e9;
  }
  // And of int8 math's (2 ops per multiply-add, as for the FLOPs).
  if (const CpuInt8MathKernels* m = cpu_int8_math_kernels()) {
    best = 1e30;
    for (int rep = 0; rep < 3; ++rep)
      best = std::min(best, timed_on_threads(threads, [&](int t) {
        const double f = m->dot_loop(iters);
        if (t == 0) flops = f;
      }));
    out.int8_dot_gops = flops * threads / best / 1e9;
  }
  return Status::ok();
}

Status time_streaming_read(int threads, double bytes, double& seconds) {
  if (!(bytes > 0.0 && bytes < 1e15)) return Status::error(Code::invalid_arg, "streaming read: bytes must be in (0, 1e15)");
  if (threads <= 0) threads = int(std::thread::hardware_concurrency());
  if (threads <= 0) threads = 1;
  // 512 MiB, far past any cache (less only when fewer bytes are asked for, as in tests).
  const int64_t n = std::clamp<int64_t>(int64_t(bytes / sizeof(float)), int64_t(1) << 18, int64_t(128) << 20);
  float* buf = static_cast<float*>(host_alloc_zeroed(size_t(n) * sizeof(float)));
  if (!buf) return Status::error(Code::out_of_memory, "cannot allocate the bandwidth buffer");
  timed_on_threads(threads, [&](int t) {  // first touch by the reading thread
    const int64_t a = n * t / threads, b = n * (t + 1) / threads;
    std::fill(buf + a, buf + b, 1.0f);
  });
  std::vector<float> sums(static_cast<size_t>(threads), 0.0f);
  auto pass = [&](const CpuKernels* rk, int64_t len) {  // len floats, split over the threads
    return timed_on_threads(threads, [&](int t) {
      const int64_t a = len * t / threads, b = len * (t + 1) / threads;
      sums[size_t(t)] = rk->read_sum(buf + a, b - a);
    });
  };
  // One untimed pass per read loop picks the fastest now; then the timed passes.
  const CpuKernels* fastest = nullptr;
  double best = 1e30;
  for (const CpuKernels* rk : read_kernel_sets()) {
    const double s = pass(rk, n);
    if (s < best) best = s, fastest = rk;
  }
  double left = bytes / sizeof(float);
  seconds = 0;
  while (left >= 1.0) {
    const int64_t len = std::min<int64_t>(n, std::max<int64_t>(int64_t(left), int64_t(threads)));
    seconds += pass(fastest, len);
    left -= double(len);
  }
  host_free(buf);
  return Status::ok();
}

}  // namespace esolm
