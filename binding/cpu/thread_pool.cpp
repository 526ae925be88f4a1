// thread_pool.cpp — see thread_pool.h. Tasks are handed out by an atomic counter, so
// uneven tasks balance themselves; the caller thread works too.
#include "cpu/thread_pool.h"

#include <chrono>
#include <memory>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
static inline void cpu_relax() { _mm_pause(); }
#else
static inline void cpu_relax() { std::this_thread::yield(); }
#endif

namespace esolm {
namespace {

// How long an idle thread polls before it sleeps: long enough to cover the gap between
// two ops of a step, short enough not to steal a shared machine's cores when idle.
constexpr auto kSpin = std::chrono::microseconds(100);

// Polls cond() for up to kSpin; true as soon as it holds.
template <class Cond>
bool spin_until(Cond cond) {
  const auto t_end = std::chrono::steady_clock::now() + kSpin;
  for (int i = 0;; ++i) {
    if (cond()) return true;
    cpu_relax();
    if ((i & 63) == 63 && std::chrono::steady_clock::now() > t_end) return false;
  }
}

}  // namespace

ThreadPool::ThreadPool(int n_threads) {
  if (n_threads <= 0) n_threads = int(std::thread::hardware_concurrency());
  if (n_threads <= 0) n_threads = 1;
  for (int i = 0; i + 1 < n_threads; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lk(m_);
    stop_.store(true);
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
    auto ready = [&] { return stop_.load() || generation_.load() != seen; };
    if (!spin_until(ready)) {
      std::unique_lock<std::mutex> lk(m_);
      cv_start_.wait(lk, ready);
    }
    if (stop_.load()) return;
    seen = generation_.load();
    run_tasks();
    if (active_.fetch_sub(1) == 1) {
      std::lock_guard<std::mutex> lk(m_);  // the caller may be between its check and its wait
      cv_done_.notify_all();
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
  fn_ = &fn;
  n_tasks_ = n_tasks;
  next_.store(0);
  active_.store(int(workers_.size()));
  {
    std::lock_guard<std::mutex> lk(m_);  // a worker between its check and its wait sees this
    generation_.fetch_add(1);
  }
  cv_start_.notify_all();
  run_tasks();
  auto done = [&] { return active_.load() == 0; };
  if (!spin_until(done)) {
    std::unique_lock<std::mutex> lk(m_);
    cv_done_.wait(lk, done);
  }
  fn_ = nullptr;
}

namespace {

// One thread's share of the tasks: [front, back) packed in one word, so that its owner
// (taking from the front) and a thief (taking from the back) never both take a task.
struct alignas(64) Share {
  std::atomic<uint64_t> range{0};
  static uint64_t pack(uint32_t front, uint32_t back) { return uint64_t(back) << 32 | front; }
  bool take_front(int64_t& task) {
    uint64_t r = range.load();
    for (;;) {
      const uint32_t f = uint32_t(r), b = uint32_t(r >> 32);
      if (f >= b) return false;
      if (range.compare_exchange_weak(r, pack(f + 1, b))) {
        task = f;
        return true;
      }
    }
  }
  bool take_back(int64_t& task) {
    uint64_t r = range.load();
    for (;;) {
      const uint32_t f = uint32_t(r), b = uint32_t(r >> 32);
      if (f >= b) return false;
      if (range.compare_exchange_weak(r, pack(f, b - 1))) {
        task = b - 1;
        return true;
      }
    }
  }
};

}  // namespace

void ThreadPool::parallel_for_shares(int64_t n_tasks, const std::function<void(int64_t)>& fn) {
  const int64_t n_shares = std::min<int64_t>(size(), n_tasks);
  if (n_shares <= 1 || n_tasks > int64_t(UINT32_MAX)) return parallel_for(n_tasks, fn);
  std::unique_ptr<Share[]> shares(new Share[size_t(n_shares)]);
  for (int64_t s = 0; s < n_shares; ++s)
    shares[s].range.store(Share::pack(uint32_t(n_tasks * s / n_shares), uint32_t(n_tasks * (s + 1) / n_shares)));
  parallel_for(n_shares, [&](int64_t s) {
    int64_t task;
    while (shares[s].take_front(task)) fn(task);
    for (int64_t o = 1; o < n_shares; ++o)
      while (shares[(s + o) % n_shares].take_back(task)) fn(task);
  });
}

}  // namespace esolm
