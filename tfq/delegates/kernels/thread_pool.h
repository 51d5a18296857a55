// A small thread pool created once (per delegate) and reused by every invoke.
// Workers spin briefly after a job (batch-1 layers take tens of microseconds,
// less than a futex wake-up), then sleep on a condition variable.
#ifndef TFQ_DELEGATES_KERNELS_THREAD_POOL_H_
#define TFQ_DELEGATES_KERNELS_THREAD_POOL_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace tfq {

class ThreadPool {
 public:
  // num_threads counts the calling thread: 1 means no worker threads.
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Runs fn(task, thread_index) for every task in [0, n) and returns when all
  // are done. thread_index < num_threads() (0 is the caller).
  template <class F>
  void ParallelFor(int64_t n, F&& fn) {
    using Fn = std::remove_reference_t<F>;
    Run(n, [](void* ctx, int64_t task, int tid) { (*static_cast<Fn*>(ctx))(task, tid); },
        const_cast<void*>(static_cast<const void*>(&fn)));
  }

 private:
  using TaskFn = void (*)(void* ctx, int64_t task, int tid);
  void Run(int64_t n, TaskFn fn, void* ctx);
  void WorkerLoop(int tid);
  void Drain(int tid);

  std::vector<std::thread> workers_;
  std::mutex run_mutex_;  // one job at a time
  std::mutex mutex_;
  std::condition_variable cv_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int64_t> next_task_{0};
  std::atomic<int> active_{0};
  std::atomic<bool> stop_{false};
  int64_t num_tasks_ = 0;
  TaskFn fn_ = nullptr;
  void* ctx_ = nullptr;
};

}  // namespace tfq

#endif  // TFQ_DELEGATES_KERNELS_THREAD_POOL_H_
