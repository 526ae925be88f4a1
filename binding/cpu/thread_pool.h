// thread_pool.h — a fixed pool of worker threads for the CPU backend.
// parallel_for(n, fn) runs fn(i) for i in [0, n) on all threads (the caller included)
// and returns when every task is done. Calls from different threads are serialised:
// the pool runs one parallel_for at a time.
// A cached step is ~100 short parallel_for calls; waking a sleeping worker costs a futex
// round trip each time, so idle workers (and the caller waiting for them) first spin for
// a few tens of microseconds before they sleep.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace esolm {

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads);  // 0 = std::thread::hardware_concurrency()
  ~ThreadPool();
  int size() const { return int(workers_.size()) + 1; }
  void parallel_for(int64_t n_tasks, const std::function<void(int64_t)>& fn);
  // Like parallel_for, but each thread runs one contiguous share of [0, n_tasks) in
  // ascending order, so a kernel that streams memory task after task reads one unbroken
  // stream per thread (hardware and software prefetch restart at every jump). A thread
  // done with its share takes tasks from the end of another's, so a thread that starts
  // late or is descheduled does not hold up the call.
  void parallel_for_shares(int64_t n_tasks, const std::function<void(int64_t)>& fn);

 private:
  void worker_loop();
  void run_tasks();

  std::vector<std::thread> workers_;
  std::mutex call_mutex_;  // one parallel_for at a time
  std::mutex m_;           // guards the sleeps (cv_start_, cv_done_)
  std::condition_variable cv_start_, cv_done_;
  const std::function<void(int64_t)>* fn_ = nullptr;
  int64_t n_tasks_ = 0;
  std::atomic<int64_t> next_{0};
  std::atomic<int> active_{0};          // workers still running the current call
  std::atomic<uint64_t> generation_{0};  // bumped once per call, after fn_ and n_tasks_ are set
  std::atomic<bool> stop_{false};
};

}  // namespace esolm
