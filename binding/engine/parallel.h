// parallel.h — runs independent rows on all cores with plain std::threads (for engine
// work outside a backend's own pool: sampling rows on the host, scoring rows). Worth it
// only for work of ~0.1 ms or more per row; below min_rows_per_thread rows per thread
// everything runs on the caller's thread.
#pragma once
#include <algorithm>
#include <cstdint>
#include <thread>
#include <vector>

namespace esolm {

template <class F>
void parallel_rows(int64_t n, int64_t min_rows_per_thread, F fn) {
  const int64_t hw = std::max(1u, std::thread::hardware_concurrency());
  const int64_t nt = std::min<int64_t>(hw, n / std::max<int64_t>(1, min_rows_per_thread));
  if (nt <= 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::vector<std::thread> ts;
  for (int64_t t = 1; t < nt; ++t)
    ts.emplace_back([&fn, t, nt, n] {
      for (int64_t i = t; i < n; i += nt) fn(i);
    });
  for (int64_t i = 0; i < n; i += nt) fn(i);
  for (auto& th : ts) th.join();
}

}  // namespace esolm
