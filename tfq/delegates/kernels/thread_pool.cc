#include "thread_pool.h"

#include <algorithm>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TFQ_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define TFQ_PAUSE() asm volatile("yield")
#else
#define TFQ_PAUSE() ((void)0)
#endif

namespace tfq {
namespace {
constexpr int kWorkerSpins = 4000;    // then sleep on the condition variable
constexpr int kCallerSpins = 2000;    // then yield while a started task finishes
constexpr uint64_t kClosed = 0xFFFFFFFFu;  // task index of a job being set up
constexpr int64_t kMaxTasks = 0x7FFFFFFF;
}  // namespace

ThreadPool::ThreadPool(int num_threads) {
  if (num_threads < 1) num_threads = 1;
  if (num_threads > 64) num_threads = 64;
  workers_.reserve(num_threads - 1);
  for (int t = 1; t < num_threads; ++t) workers_.emplace_back([this, t] { WorkerLoop(t); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(sleep_mutex_);
    stop_.store(true);
  }
  cv_.notify_all();
  for (auto& w : workers_) w.join();
}

void ThreadPool::Drain(int tid) {
  uint64_t s = state_.load(std::memory_order_acquire);
  // Completed tasks are published once, when this thread finds no more: one
  // contended atomic per task (the claim) instead of two.
  int64_t ran = 0;
  for (;;) {
    const uint64_t seq = s >> 32, next = s & 0xFFFFFFFFu;
    if (next == kClosed) break;
    const int64_t n = num_tasks_.load(std::memory_order_relaxed);
    const TaskFn fn = fn_.load(std::memory_order_relaxed);
    void* ctx = ctx_.load(std::memory_order_relaxed);
    if (static_cast<int64_t>(next) >= n) break;
    // Guided claims: a share of what is left (at least one task), so that a
    // job of n tasks costs about 2 * threads * log(n) claims of the shared
    // line, not n (each one a cache-line transfer between cores, which
    // dominated 10-20 us nodes at 2 threads).
    const int64_t left = n - static_cast<int64_t>(next);
    const int64_t take = std::max<int64_t>(1, left / (2 * num_threads()));
    // Succeeds only if the job did not change since `s` was read, so n, fn
    // and ctx belong to this job.
    if (state_.compare_exchange_weak(s, (seq << 32) | (next + take), std::memory_order_acq_rel,
                                     std::memory_order_acquire)) {
      for (int64_t t = 0; t < take; ++t) fn(ctx, static_cast<int64_t>(next) + t, tid);
      ran += take;
      s = state_.load(std::memory_order_acquire);
    }
  }
  if (ran > 0) done_.fetch_add(ran, std::memory_order_acq_rel);
}

void ThreadPool::WorkerLoop(int tid) {
  uint64_t seen_seq = 0;
  for (;;) {
    int spins = 0;
    for (;;) {
      if (stop_.load(std::memory_order_acquire)) return;
      const uint64_t s = state_.load(std::memory_order_acquire);
      if ((s >> 32) != seen_seq && (s & 0xFFFFFFFFu) != kClosed) {
        seen_seq = s >> 32;
        break;
      }
      if (++spins < kWorkerSpins) {
        TFQ_PAUSE();
        continue;
      }
      std::unique_lock<std::mutex> lock(sleep_mutex_);
      sleepers_.fetch_add(1);
      cv_.wait(lock, [&] {
        const uint64_t s2 = state_.load();
        return stop_.load() || ((s2 >> 32) != seen_seq && (s2 & 0xFFFFFFFFu) != kClosed);
      });
      sleepers_.fetch_sub(1);
      spins = 0;
    }
    Drain(tid);
  }
}

void ThreadPool::Run(int64_t n, TaskFn fn, void* ctx) {
  if (n <= 0) return;
  if (workers_.empty() || n == 1 || n > kMaxTasks) {
    for (int64_t i = 0; i < n; ++i) fn(ctx, i, 0);
    return;
  }
  std::lock_guard<std::mutex> run_lock(run_mutex_);
  const uint64_t seq = (state_.load() >> 32) + 1;
  state_.store((seq << 32) | kClosed, std::memory_order_release);  // close: no claims
  num_tasks_.store(n, std::memory_order_relaxed);
  fn_.store(fn, std::memory_order_relaxed);
  ctx_.store(ctx, std::memory_order_relaxed);
  done_.store(0, std::memory_order_relaxed);
  // seq_cst store and load: a worker going to sleep either sees the open job
  // or is counted in sleepers_ (a missed wake-up would only cost parallelism).
  state_.store(seq << 32);  // open: task 0 is next
  if (sleepers_.load() > 0) {
    std::lock_guard<std::mutex> lock(sleep_mutex_);
    cv_.notify_all();
  }
  Drain(0);
  // Every task is claimed; wait for the ones workers are still running.
  for (int spin = 0; done_.load(std::memory_order_acquire) != n; ++spin) {
    if (spin < kCallerSpins) TFQ_PAUSE();
    else std::this_thread::yield();
  }
}

}  // namespace tfq
