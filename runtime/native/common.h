// Shared helpers of the native runtime core (maskrt._core): thread count and a small task runner.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

namespace maskrt {
namespace core {

// threads <= 0 means "all hardware threads" (at least 1).
inline int resolve_threads(int threads) {
  if (threads > 0) return threads;
  const unsigned hc = std::thread::hardware_concurrency();
  return hc ? static_cast<int>(hc) : 1;
}

// Runs fn(task, worker) for every task in [0, n) on up to `threads` threads, the calling thread
// included (worker 0). Tasks are handed out in increasing order from a shared counter, so a
// worker's scratch (indexed by `worker` in [0, number of workers)) is never shared.
// NOTE: results must not depend on which worker runs which task: every kernel here writes a
// disjoint part of its output per task, so 1 thread and N threads give identical bytes.
// An exception thrown by fn (e.g. std::bad_alloc) stops the remaining tasks and is rethrown here
// after every thread has joined.
template <class Fn>
void parallel_tasks(int64_t n, int threads, Fn&& fn) {
  if (n <= 0) return;
  const int t = static_cast<int>(std::min<int64_t>(resolve_threads(threads), n));
  if (t <= 1) {
    for (int64_t i = 0; i < n; ++i) fn(i, 0);
    return;
  }
  std::atomic<int64_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto worker = [&](int w) {
    try {
      for (;;) {
        const int64_t i = next.fetch_add(1, std::memory_order_relaxed);
        if (i >= n) break;
        fn(i, w);
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      next.store(n, std::memory_order_relaxed);
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(t - 1));
  for (int w = 1; w < t; ++w) {
    try {
      pool.emplace_back(worker, w);
    } catch (const std::system_error&) {
      break;  // could not start another thread: the ones running (and this one) do the rest
    }
  }
  worker(0);
  for (auto& th : pool) th.join();
  if (error) std::rethrow_exception(error);
}

// The number of workers parallel_tasks(n, threads, ...) may use (size of per-worker scratch).
inline int num_workers(int64_t n, int threads) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(resolve_threads(threads), n)));
}

// Splits [0, total) into about `parts` contiguous bands of at least `min_band` items: the
// band boundaries of band b are [band_begin(b), band_begin(b + 1)).
struct Bands {
  int64_t total = 0, count = 1;
  Bands(int64_t total_, int64_t parts, int64_t min_band) : total(total_) {
    const int64_t by_size = std::max<int64_t>(1, total_ / std::max<int64_t>(1, min_band));
    count = std::max<int64_t>(1, std::min(parts, by_size));
  }
  int64_t begin(int64_t b) const { return total * b / count; }
};

}  // namespace core
}  // namespace maskrt
