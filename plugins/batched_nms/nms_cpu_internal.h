// Internal pieces of the batched_nms CPU kernels: a small parallel-for and the greedy NMS core.
// Not part of the public API (batched_nms_cpu.h / batched_nms_kernel.h are).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "batched_nms/batched_nms_math.h"

namespace maskrt {
namespace nms_detail {

// threads <= 0 -> std::thread::hardware_concurrency() (at least 1).
inline int resolve_threads(int threads) {
  if (threads > 0) return threads;
  const unsigned hw = std::thread::hardware_concurrency();
  return hw > 0 ? static_cast<int>(hw) : 1;
}

// Runs fn(item, worker) for item in [0, n_items) on up to `threads` workers (the calling thread
// is worker 0). Items are handed out dynamically (an atomic counter), so uneven items (a large
// level, a crowded class) balance. Results must not depend on which worker runs an item: every
// kernel writes an item's result to the item's own slot, so output is identical for any thread
// count. The first exception thrown by an item is rethrown after all workers joined.
template <typename Fn>
void parallel_for(int64_t n_items, int threads, Fn&& fn) {
  if (n_items <= 0) return;
  const int workers = static_cast<int>(std::min<int64_t>(resolve_threads(threads), n_items));
  if (workers <= 1) {
    for (int64_t i = 0; i < n_items; ++i) fn(i, 0);
    return;
  }
  std::atomic<int64_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto run = [&](int worker) {
    try {
      for (int64_t i = next.fetch_add(1); i < n_items; i = next.fetch_add(1)) fn(i, worker);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      next.store(n_items);  // stop handing out items
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(workers - 1));
  for (int w = 1; w < workers; ++w) pool.emplace_back(run, w);
  run(0);
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
}

// Candidates of one NMS problem in visiting order (descending score, ties by index), as
// structure-of-arrays so the IoU loop vectorises. `id` is the caller's identifier of each one.
struct NmsScratch {
  std::vector<float> x1, y1, x2, y2, area;
  std::vector<int32_t> sup;  // 0/1, int32 so that it has the width of the float lanes
  std::vector<uint32_t> id;
  std::vector<uint64_t> keys;  // sort keys (desc_key_with_index), caller's use

  void resize(size_t n) {
    x1.resize(n);
    y1.resize(n);
    x2.resize(n);
    y2.resize(n);
    area.resize(n);
    sup.resize(n);
    id.resize(n);
  }
  // Stores candidate `pos` (box b = x1, y1, x2, y2) with identifier `ident`.
  void set(size_t pos, const float* b, uint32_t ident) {
    x1[pos] = b[0];
    y1[pos] = b[1];
    x2[pos] = b[2];
    y2[pos] = b[3];
    area[pos] = box_area(b);
    sup[pos] = 0;
    id[pos] = ident;
  }
};

// Greedy NMS over the first n candidates of `s` (already in visiting order). Appends the ids of
// kept candidates, in visiting order, to kept_ids and returns how many; stops after max_keep.
//
// NOTE: same decisions as the textbook loop (a candidate is kept unless a kept, earlier one has
// IoU > threshold with it). For speed, each kept box scans the rest with a branch-free loop over
// all later candidates (vectorised; already-suppressed ones are harmlessly re-marked), and the
// arrays are compacted once suppressed entries make up a quarter of what is left, so heavy
// suppression shrinks later scans. Memory is O(n): no IoU matrix.
inline int greedy_nms_sorted(NmsScratch& s, int n, float iou_threshold, int max_keep, uint32_t* kept_ids) {
  if (n <= 0 || max_keep <= 0) return 0;
  float* x1 = s.x1.data();
  float* y1 = s.y1.data();
  float* x2 = s.x2.data();
  float* y2 = s.y2.data();
  float* area = s.area.data();
  int32_t* sup = s.sup.data();
  uint32_t* id = s.id.data();
  int m = n;  // live length of the arrays
  int dead = 0;  // suppressed entries in (i, m)
  int kept = 0;
  for (int i = 0; i < m; ++i) {
    if (sup[i]) {
      --dead;
      continue;
    }
    kept_ids[kept++] = id[i];
    if (kept >= max_keep) break;
    const float ax1 = x1[i], ay1 = y1[i], ax2 = x2[i], ay2 = y2[i], aa = area[i];
    int newly = 0;
    for (int j = i + 1; j < m; ++j) {
      const float iou = box_iou_soa(ax1, ay1, ax2, ay2, aa, x1[j], y1[j], x2[j], y2[j], area[j]);
      const int32_t hit = iou_suppresses(iou, iou_threshold) ? 1 : 0;
      newly += hit & (sup[j] ^ 1);
      sup[j] |= hit;
    }
    dead += newly;
    if (dead > 16 && 4 * dead > m - i - 1) {
      int w = i + 1;
      for (int j = i + 1; j < m; ++j) {
        if (sup[j]) continue;
        x1[w] = x1[j];
        y1[w] = y1[j];
        x2[w] = x2[j];
        y2[w] = y2[j];
        area[w] = area[j];
        sup[w] = 0;
        id[w] = id[j];
        ++w;
      }
      m = w;
      dead = 0;
    }
  }
  return kept;
}

}  // namespace nms_detail
}  // namespace maskrt
