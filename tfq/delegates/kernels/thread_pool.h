// A small thread pool created once (per delegate) and reused by every invoke.
//
// The calling thread takes part in every job and waits only for tasks that a
// worker has actually started, never for a worker to wake up: on a loaded
// machine (2 cores shared with other processes) a sleeping worker can take
// milliseconds to be scheduled, longer than a whole batch-1 layer. Tasks are
// claimed with a compare-and-swap on (job sequence, next task), so a worker
// that wakes late can never run a task of a job it did not read.
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
  // Claims and runs tasks of the current job; returns when none is left.
  void Drain(int tid);

  std::vector<std::thread> workers_;
  std::mutex run_mutex_;  // one job at a time
  std::mutex sleep_mutex_;
  std::condition_variable cv_;
  std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};
  // Job state: high 32 bits the job sequence, low 32 bits the next task.
  std::atomic<uint64_t> state_{0};
  std::atomic<int64_t> num_tasks_{0};
  std::atomic<TaskFn> fn_{nullptr};
  std::atomic<void*> ctx_{nullptr};
  std::atomic<int64_t> done_{0};
};

}  // namespace tfq

#endif  // TFQ_DELEGATES_KERNELS_THREAD_POOL_H_
