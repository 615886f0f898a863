// MaskrtDetectionNMS, CPU twin of detection_nms_cuda (batched_nms.cu). Semantics: README.md
// (this folder) and RoIHeads._inference in train/model/roi_heads.py.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "batched_nms/batched_nms_kernel.h"
#include "batched_nms/batched_nms_math.h"
#include "batched_nms/nms_cpu_internal.h"

namespace maskrt {

// boxes: float32 [B, R, C, 4]; scores: float32 [B, R, C]; num_rois: int32 [B] or nullptr (all R);
// out_count int32 [B]; out_boxes float32 [B, K, 4]; out_scores float32 [B, K]; out_classes int32 [B, K].
// Requires R * C < 2^32 (candidate index r * C + c fits 32 bits; the binding checks).
void detection_nms_cpu(const DetectionNmsParams& p, const float* boxes, const float* scores, const int32_t* num_rois,
                       int32_t* out_count, float* out_boxes, float* out_scores, int32_t* out_classes, int threads) {
  const int64_t B = p.batch, R = p.num_rois, C = p.num_classes;
  const int64_t K = std::max(p.max_detections, 0);
  if (B <= 0) return;
  // NOTE: a class can contribute at most K detections to the top-K, so each per-class NMS stops
  // after K kept boxes: the result is the same as running it to the end.
  const int64_t per_class = std::min(K, R);
  const int64_t n_items = B * C;
  std::vector<uint64_t> kept_keys(static_cast<size_t>(n_items * per_class));
  std::vector<int32_t> kept_n(static_cast<size_t>(n_items), 0);
  const int workers = nms_detail::resolve_threads(threads);
  std::vector<nms_detail::NmsScratch> scratch(static_cast<size_t>(workers));
  std::vector<std::vector<uint32_t>> ids(static_cast<size_t>(workers));

  auto rows_of = [&](int64_t b) -> int64_t {
    if (num_rois == nullptr) return R;
    return std::min<int64_t>(std::max<int64_t>(num_rois[b], 0), R);  // clamped: TensorRT gives no checks
  };

  // Stage 2, per image: merge the classes' kept boxes, descending score, ties by flat index
  // r * C + c (the order torch's batched_nms returns), first K; zero padding after.
  auto merge_image = [&](int64_t b) {
    std::vector<uint64_t> merged;
    for (int64_t c = 0; c < C; ++c) {
      const uint64_t* slot = kept_keys.data() + (b * C + c) * per_class;
      merged.insert(merged.end(), slot, slot + kept_n[static_cast<size_t>(b * C + c)]);
    }
    const int64_t count = std::min<int64_t>(K, static_cast<int64_t>(merged.size()));
    std::partial_sort(merged.begin(), merged.begin() + count, merged.end());
    float* ob = out_boxes + b * K * 4;
    float* os = out_scores + b * K;
    int32_t* oc = out_classes + b * K;
    for (int64_t k = 0; k < count; ++k) {
      const int64_t flat = key_index(merged[static_cast<size_t>(k)]);
      const int64_t c = flat % C;
      std::memcpy(ob + 4 * k, boxes + 4 * (b * R * C + flat), 4 * sizeof(float));
      os[k] = scores[b * R * C + flat];
      oc[k] = static_cast<int32_t>(c) + p.class_offset;
    }
    std::fill(ob + 4 * count, ob + 4 * K, 0.0f);
    std::fill(os + count, os + K, 0.0f);
    std::fill(oc + count, oc + K, 0);
    out_count[b] = static_cast<int32_t>(count);
  };

  // Stage 1, one item per (image, class): filter, rank, NMS. The worker finishing the last class
  // of an image merges it (one pool of threads for both stages; the result does not depend on
  // which worker merges).
  if (per_class == 0 || C == 0) {  // nothing can be kept: zero outputs
    for (int64_t b = 0; b < B; ++b) merge_image(b);
    return;
  }
  std::vector<std::atomic<int64_t>> remaining(static_cast<size_t>(B));
  for (auto& r : remaining) r.store(C);
  nms_detail::parallel_for(n_items, threads, [&](int64_t item, int worker) {
    const int64_t b = item / C, c = item % C;
    const int64_t rows = rows_of(b);
    auto& s = scratch[static_cast<size_t>(worker)];
    auto& keys = s.keys;
    keys.clear();
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t flat = (b * R + r) * C + c;
      const float sc = scores[flat];
      // NOTE: strictly greater than the threshold (torchvision's postprocess_detections); a NaN
      // score fails it. Then the min-size filter, as _inference does, both before NMS.
      if (!(sc > p.score_threshold)) continue;
      if (!box_min_size_ok(boxes + 4 * flat, p.min_size)) continue;
      keys.push_back(desc_key_with_index(sc, static_cast<uint32_t>(r)));
    }
    // NOTE: visiting order = descending score, ties by row, i.e. by flat index r * C + c.
    std::sort(keys.begin(), keys.end());
    const int n = static_cast<int>(keys.size());
    s.resize(keys.size());
    for (int t = 0; t < n; ++t) {
      const int64_t r = key_index(keys[static_cast<size_t>(t)]);
      s.set(static_cast<size_t>(t), boxes + 4 * ((b * R + r) * C + c), static_cast<uint32_t>(r));
    }
    auto& kept_ids = ids[static_cast<size_t>(worker)];
    kept_ids.resize(keys.size());
    const int kept = nms_detail::greedy_nms_sorted(s, n, p.iou_threshold, static_cast<int>(per_class), kept_ids.data());
    uint64_t* slot = kept_keys.data() + item * per_class;
    for (int t = 0; t < kept; ++t) {
      const int64_t r = kept_ids[static_cast<size_t>(t)];
      slot[t] = desc_key_with_index(scores[(b * R + r) * C + c], static_cast<uint32_t>(r * C + c));
    }
    kept_n[static_cast<size_t>(item)] = kept;
    // acq_rel: the merging worker sees every class's kept keys of this image.
    if (remaining[static_cast<size_t>(b)].fetch_sub(1, std::memory_order_acq_rel) == 1) merge_image(b);
  });
}

}  // namespace maskrt
