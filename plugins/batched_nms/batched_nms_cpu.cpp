#include "batched_nms/batched_nms_cpu.h"

#include <algorithm>
#include <numeric>
#include <vector>

#include "batched_nms/batched_nms_math.h"
#include "batched_nms/nms_cpu_internal.h"

namespace maskrt {

namespace {

// Keys (desc_key_with_index) of one group, ascending = visiting order -> NMS -> kept keys appended.
void nms_group(const float* boxes, const uint64_t* keys, int64_t n, float iou_threshold, int64_t max_keep,
               nms_detail::NmsScratch& s, std::vector<uint32_t>& ids, std::vector<uint64_t>& kept_keys) {
  s.resize(static_cast<size_t>(n));
  for (int64_t t = 0; t < n; ++t) {
    const uint32_t i = key_index(keys[t]);
    s.set(static_cast<size_t>(t), boxes + 4 * static_cast<int64_t>(i), static_cast<uint32_t>(t));
  }
  ids.resize(static_cast<size_t>(n));
  const int64_t cap = max_keep >= 0 ? std::min(max_keep, n) : n;
  const int kept = nms_detail::greedy_nms_sorted(s, static_cast<int>(n), iou_threshold, static_cast<int>(cap),
                                                 ids.data());
  for (int t = 0; t < kept; ++t) kept_keys.push_back(keys[ids[static_cast<size_t>(t)]]);
}

}  // namespace

int64_t nms_cpu(const float* boxes, const float* scores, const int64_t* classes, int64_t n,
                float iou_threshold, int64_t max_keep, int64_t* keep) {
  if (n <= 0 || max_keep == 0) return 0;
  // NOTE: rank = descending score, ties by input index (desc_key_with_index is unique per index).
  std::vector<uint64_t> keys(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) keys[static_cast<size_t>(i)] = desc_key_with_index(scores[i], static_cast<uint32_t>(i));
  nms_detail::NmsScratch s;
  std::vector<uint32_t> ids;
  std::vector<uint64_t> kept;
  if (classes == nullptr) {
    std::sort(keys.begin(), keys.end());
    nms_group(boxes, keys.data(), n, iou_threshold, max_keep, s, ids, kept);
  } else {
    // Group by class (any int64 values), visiting order inside each group; each group is an
    // independent NMS, then the kept boxes of all groups merge in global visiting order.
    std::sort(keys.begin(), keys.end(), [classes](uint64_t a, uint64_t b) {
      const int64_t ca = classes[key_index(a)], cb = classes[key_index(b)];
      return ca != cb ? ca < cb : a < b;
    });
    size_t begin = 0;
    while (begin < keys.size()) {
      size_t end = begin + 1;
      const int64_t c = classes[key_index(keys[begin])];
      while (end < keys.size() && classes[key_index(keys[end])] == c) ++end;
      nms_group(boxes, keys.data() + begin, static_cast<int64_t>(end - begin), iou_threshold, max_keep, s, ids, kept);
      begin = end;
    }
    std::sort(kept.begin(), kept.end());
    if (max_keep >= 0 && static_cast<int64_t>(kept.size()) > max_keep) kept.resize(static_cast<size_t>(max_keep));
  }
  for (size_t t = 0; t < kept.size(); ++t) keep[t] = static_cast<int64_t>(key_index(kept[t]));
  return static_cast<int64_t>(kept.size());
}

void box_iou_cpu(const float* a, int64_t n, const float* b, int64_t m, float* out) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < m; ++j) out[i * m + j] = box_iou(a + 4 * i, b + 4 * j);
}

}  // namespace maskrt
