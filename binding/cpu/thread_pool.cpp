// thread_pool.cpp — see thread_pool.h. Tasks are handed out by an atomic counter, so
// uneven tasks balance themselves; the caller thread works too.
#include "cpu/thread_pool.h"

namespace esolm {

ThreadPool::ThreadPool(int n_threads) {
  if (n_threads <= 0) n_threads = int(std::thread::hardware_concurrency());
  if (n_threads <= 0) n_threads = 1;
  for (int i = 0; i + 1 < n_threads; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lk(m_);
    stop_ = true;
  }
  cv_start_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::run_tasks() {
  for (;;) {
    int64_t i = next_.fetch_add(1);
    if (i >= n_tasks_) break;
    (*fn_)(i);
  }
}

void ThreadPool::worker_loop() {
  uint64_t seen = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lk(m_);
      cv_start_.wait(lk, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
    }
    run_tasks();
    {
      std::lock_guard<std::mutex> lk(m_);
      if (--active_ == 0) cv_done_.notify_all();
    }
  }
}

void ThreadPool::parallel_for(int64_t n_tasks, const std::function<void(int64_t)>& fn) {
  if (n_tasks <= 0) return;
  if (workers_.empty() || n_tasks == 1) {
    for (int64_t i = 0; i < n_tasks; ++i) fn(i);
    return;
  }
  std::lock_guard<std::mutex> call_lock(call_mutex_);
  {
    std::lock_guard<std::mutex> lk(m_);
    fn_ = &fn;
    n_tasks_ = n_tasks;
    next_.store(0);
    active_ = int(workers_.size());
    ++generation_;
  }
  cv_start_.notify_all();
  run_tasks();
  std::unique_lock<std::mutex> lk(m_);
  cv_done_.wait(lk, [&] { return active_ == 0; });
  fn_ = nullptr;
}

}  // namespace esolm
