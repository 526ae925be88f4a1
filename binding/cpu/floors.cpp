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

// A buffer of ones on huge pages as tensors are, each thread's slice first touched by that
// thread, read in timed passes split over the threads.
class ReadBuffer {
 public:
  ReadBuffer(int64_t n, int threads)
      : n_(n), threads_(threads), buf_(static_cast<float*>(host_alloc_zeroed(size_t(n) * sizeof(float)))),
        sums_(size_t(threads), 0.0f) {
    if (buf_) timed_on_threads(threads_, [&](int t) { std::fill(buf_ + slice(n_, t), buf_ + slice(n_, t + 1), 1.0f); });
  }
  ~ReadBuffer() { host_free(buf_); }
  ReadBuffer(const ReadBuffer&) = delete;
  ReadBuffer& operator=(const ReadBuffer&) = delete;
  bool ok() const { return buf_ != nullptr; }
  int64_t size() const { return n_; }
  // Seconds for the threads to read the first len floats with rk's read loop; false in
  // summed_right when the loop did not see every one of them.
  double pass(const CpuKernels* rk, int64_t len) {
    return timed_on_threads(threads_, [&](int t) {
      sums_[size_t(t)] = rk->read_sum(buf_ + slice(len, t), slice(len, t + 1) - slice(len, t));
    });
  }
  bool summed_right(int64_t len) const {
    double total = 0;
    for (float s : sums_) total += s;
    return total == double(len);
  }

 private:
  int64_t slice(int64_t len, int t) const { return len * t / threads_; }
  int64_t n_;
  int threads_;
  float* buf_;
  std::vector<float> sums_;
};

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
  ReadBuffer rb(n, threads);
  if (!rb.ok()) return Status::error(Code::out_of_memory, "cannot allocate the bandwidth buffer");
  // The machine's bandwidth, not one loop's: the best read loop of every kernel set here
  // (on Zen 5 the 256-bit loop streams faster than the 512-bit one).
  double best = 1e30;
  for (const CpuKernels* rk : read_kernel_sets()) {
    for (int rep = 0; rep < 3; ++rep) {
      best = std::min(best, rb.pass(rk, n));
      if (!rb.summed_right(n)) return Status::error(Code::internal, "bandwidth read summed wrong");
    }
  }
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
  ReadBuffer rb(std::clamp<int64_t>(int64_t(bytes / sizeof(float)), int64_t(1) << 18, int64_t(128) << 20), threads);
  if (!rb.ok()) return Status::error(Code::out_of_memory, "cannot allocate the bandwidth buffer");
  // One untimed pass per read loop picks the fastest now; then the timed passes.
  const CpuKernels* fastest = nullptr;
  double best = 1e30;
  for (const CpuKernels* rk : read_kernel_sets()) {
    const double s = rb.pass(rk, rb.size());
    if (s < best) best = s, fastest = rk;
  }
  double left = bytes / sizeof(float);
  seconds = 0;
  while (left >= 1.0) {
    const int64_t len = std::min<int64_t>(rb.size(), std::max<int64_t>(int64_t(left), int64_t(threads)));
    seconds += rb.pass(fastest, len);
    if (!rb.summed_right(len)) return Status::error(Code::internal, "bandwidth read summed wrong");
    left -= double(len);
  }
  return Status::ok();
}

}  // namespace esolm
