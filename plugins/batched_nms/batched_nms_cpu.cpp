#include "batched_nms/batched_nms_cpu.h"

#include <algorithm>
#include <numeric>
#include <vector>

#include "batched_nms/batched_nms_math.h"

namespace maskrt {

int64_t nms_cpu(const float* boxes, const float* scores, const int64_t* classes, int64_t n,
                float iou_threshold, int64_t max_keep, int64_t* keep) {
  if (n <= 0) return 0;
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [scores](int64_t a, int64_t b) { return scores[a] > scores[b]; });

  std::vector<float> areas(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) areas[i] = box_area(boxes + 4 * i);

  std::vector<uint8_t> suppressed(static_cast<size_t>(n), 0);
  int64_t kept = 0;
  for (int64_t ii = 0; ii < n; ++ii) {
    const int64_t i = order[ii];
    if (suppressed[i]) continue;
    keep[kept++] = i;
    if (max_keep >= 0 && kept >= max_keep) break;
    const float* bi = boxes + 4 * i;
    for (int64_t jj = ii + 1; jj < n; ++jj) {
      const int64_t j = order[jj];
      if (suppressed[j]) continue;
      if (classes != nullptr && classes[j] != classes[i]) continue;
      if (box_iou_with_areas(bi, areas[i], boxes + 4 * j, areas[j]) > iou_threshold) suppressed[j] = 1;
    }
  }
  return kept;
}

void box_iou_cpu(const float* a, int64_t n, const float* b, int64_t m, float* out) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < m; ++j) out[i * m + j] = box_iou(a + 4 * i, b + 4 * j);
}

}  // namespace maskrt
