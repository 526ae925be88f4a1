// cpu_pool_memory_test.cpp — the CPU backend's thread pool (parallel_for,
// parallel_for_shares) and host blocks (host_alloc_zeroed / host_free).
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include "check.h"
#include "cpu/host_memory.h"
#include "cpu/thread_pool.h"

using namespace esolm;

// Every task runs exactly once, for pools of 1-4 threads and task counts around them.
static void test_exactly_once() {
  for (int threads : {1, 2, 3, 4}) {
    ThreadPool pool(threads);
    for (int64_t n : {0, 1, 2, 3, 5, 7, 64, 1001}) {
      for (bool shares : {false, true}) {
        std::vector<std::atomic<int>> runs(size_t(n > 0 ? n : 1));
        for (auto& r : runs) r.store(0);
        auto fn = [&](int64_t i) { runs[size_t(i)].fetch_add(1); };
        if (shares) pool.parallel_for_shares(n, fn);
        else pool.parallel_for(n, fn);
        int bad = 0;
        for (int64_t i = 0; i < n; ++i) bad += runs[size_t(i)].load() != 1;
        CHECK(bad == 0, "threads %d, n %lld, shares %d: %d tasks not run exactly once", threads, (long long)n,
              int(shares), bad);
      }
    }
  }
}

// A thread stuck in its share's first task: the other threads take the rest of that
// share from its end, so the call does not wait for the stuck thread to walk it.
static void test_shares_steal() {
  ThreadPool pool(2);
  const int64_t n = 40;  // shares [0, 20) and [20, 40)
  std::vector<std::thread::id> who(static_cast<size_t>(n));
  std::vector<std::atomic<int>> runs(static_cast<size_t>(n));
  for (auto& r : runs) r.store(0);
  pool.parallel_for_shares(n, [&](int64_t i) {
    if (i == 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    who[size_t(i)] = std::this_thread::get_id();
    runs[size_t(i)].fetch_add(1);
  });
  int stolen = 0, bad = 0;
  for (int64_t i = 0; i < n; ++i) bad += runs[size_t(i)].load() != 1;
  for (int64_t i = 1; i < 20; ++i) stolen += who[size_t(i)] != who[0];
  CHECK(bad == 0, "%d tasks not run exactly once", bad);
  CHECK(stolen > 0, "no task of the stuck thread's share ran on another thread");
  // The owner walks its share front to back: the second share's owner ran task 20 first,
  // and everything of that share on the same thread.
  int same = 0;
  for (int64_t i = 20; i < n; ++i) same += who[size_t(i)] == who[20];
  CHECK(same == 20, "the second share was split (%d of 20 tasks on its owner)", same);
}

static void test_host_blocks() {
  for (size_t bytes : {size_t(0), size_t(1), size_t(4096), (size_t(1) << 20) - 1, size_t(1) << 20,
                       (size_t(5) << 20) + 3, size_t(64) << 20}) {
    unsigned char* p = static_cast<unsigned char*>(host_alloc_zeroed(bytes));
    CHECK(p != nullptr, "%zu bytes: null", bytes);
    if (!p) continue;
    size_t nonzero = 0;
    for (size_t i = 0; i < bytes; i += 997) nonzero += p[i] != 0;
    if (bytes) nonzero += p[bytes - 1] != 0;
    CHECK(nonzero == 0, "%zu bytes: not zeroed", bytes);
    if (bytes >= (size_t(1) << 20))
      CHECK(reinterpret_cast<uintptr_t>(p) % (size_t(2) << 20) == 0, "%zu bytes: not 2 MiB aligned", bytes);
    if (bytes) std::memset(p, 0xab, bytes);  // every byte writable
    host_free(p);
  }
  host_free(nullptr);
  // A freed mapped block is kept and handed out again (host_memory.cpp): zeroed again.
  for (int i = 0; i < 3; ++i) {
    unsigned char* p = static_cast<unsigned char*>(host_alloc_zeroed(size_t(3) << 20));
    CHECK(p && p[12345] == 0 && p[(size_t(3) << 20) - 1] == 0, "round %d: a reused block is not zeroed", i);
    if (p) std::memset(p, 0x5a, size_t(3) << 20);
    host_free(p);
  }
}

int main() {
  test_exactly_once();
  test_shares_steal();
  test_host_blocks();
  std::printf("%s: %d passed, %d failed\n", g_fail ? "FAILED" : "PASSED", g_pass, g_fail);
  return g_fail ? 1 : 0;
}
