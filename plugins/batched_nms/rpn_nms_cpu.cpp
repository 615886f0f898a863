// MaskrtRpnNMS, CPU twin of rpn_nms_cuda (batched_nms.cu). Semantics: README.md (this folder)
// and RegionProposalNetwork._select in train/model/rpn.py.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "batched_nms/batched_nms_kernel.h"
#include "batched_nms/batched_nms_math.h"
#include "batched_nms/nms_cpu_internal.h"

namespace maskrt {

// boxes: float32 [B, N, 4] (decoded, clipped, levels concatenated); logits: float32 [B, N];
// out_rois float32 [B, post, 4]; out_scores float32 [B, post]; out_count int32 [B].
// Requires 1 <= num_levels <= kMaxNmsLevels, level sizes >= 0 summing to N, N < 2^31 (the binding checks).
void rpn_nms_cpu(const RpnNmsParams& p, const float* boxes, const float* logits, float* out_rois,
                 float* out_scores, int32_t* out_count, int threads) {
  const int64_t B = p.batch, N = p.num_anchors, L = p.num_levels;
  const int64_t post = std::max(p.post_nms_top_n, 0);
  if (B <= 0) return;
  // Per level: anchor start, candidate count k_l = min(pre, n_l), offset of its top-k in the
  // concatenated candidate list (level-major, then rank), and its slot range for kept boxes.
  int64_t start[kMaxNmsLevels] = {}, k[kMaxNmsLevels] = {}, cand_off[kMaxNmsLevels] = {};
  int64_t slot_off[kMaxNmsLevels] = {};
  int64_t a = 0, T = 0, S = 0;
  for (int64_t l = 0; l < L; ++l) {
    const int64_t n_l = std::max(p.level_sizes[l], 0);
    start[l] = a;
    k[l] = std::min<int64_t>(std::max(p.pre_nms_top_n, 0), n_l);
    cand_off[l] = T;
    slot_off[l] = S;
    a += n_l;
    T += k[l];
    S += std::min(post, k[l]);  // NOTE: a level keeps at most post boxes that can reach the output
  }
  std::vector<uint64_t> kept_keys(static_cast<size_t>(B * S));
  std::vector<int32_t> kept_anchor(static_cast<size_t>(B * T));  // candidate position -> anchor
  std::vector<int32_t> kept_n(static_cast<size_t>(B * L), 0);
  const int workers = nms_detail::resolve_threads(threads);
  std::vector<nms_detail::NmsScratch> scratch(static_cast<size_t>(workers));
  std::vector<std::vector<uint32_t>> ids(static_cast<size_t>(workers));
  std::vector<std::vector<float>> cand_scores(static_cast<size_t>(workers));

  // Stage 2, per image: merge levels by descending score, ties by position in the concatenated
  // candidate list (batched_nms's order); first post; zero padding after.
  auto merge_image = [&](int64_t b) {
    std::vector<uint64_t> merged;
    for (int64_t l = 0; l < L; ++l) {
      const uint64_t* slot = kept_keys.data() + b * S + slot_off[l];
      merged.insert(merged.end(), slot, slot + kept_n[static_cast<size_t>(b * L + l)]);
    }
    const int64_t count = std::min<int64_t>(post, static_cast<int64_t>(merged.size()));
    std::partial_sort(merged.begin(), merged.begin() + count, merged.end());
    float* orois = out_rois + b * post * 4;
    float* oscores = out_scores + b * post;
    for (int64_t t = 0; t < count; ++t) {
      const int64_t anchor = kept_anchor[static_cast<size_t>(b * T + key_index(merged[static_cast<size_t>(t)]))];
      std::memcpy(orois + 4 * t, boxes + 4 * (b * N + anchor), 4 * sizeof(float));
      oscores[t] = sigmoid_f32(logits[b * N + anchor]);
    }
    std::fill(orois + 4 * count, orois + 4 * post, 0.0f);
    std::fill(oscores + count, oscores + post, 0.0f);
    out_count[b] = static_cast<int32_t>(count);
  };

  // Stage 1, one item per (image, level): top-k, sigmoid, filters, NMS within the level. The
  // worker finishing the last level of an image merges it (the result does not depend on which).
  std::vector<std::atomic<int64_t>> remaining(static_cast<size_t>(B));
  for (auto& r : remaining) r.store(L);
  nms_detail::parallel_for(B * L, threads, [&](int64_t item, int worker) {
    const int64_t b = item / L, l = item % L;
    const int64_t n_l = std::max(p.level_sizes[l], 0), kl = k[l];
    auto finish = [&] {
      // acq_rel: the merging worker sees every level's kept keys of this image.
      if (remaining[static_cast<size_t>(b)].fetch_sub(1, std::memory_order_acq_rel) == 1) merge_image(b);
    };
    if (kl == 0 || post == 0) {
      finish();
      return;
    }
    const float* lg = logits + b * N + start[l];
    const float* bx = boxes + 4 * (b * N + start[l]);
    auto& s = scratch[static_cast<size_t>(worker)];
    auto& keys = s.keys;
    // NOTE: top-k on the logits (same order as the probabilities, without their float32 ties),
    // descending, ties by anchor index: the stable sort of _select and ONNX TopK's rule. The
    // keys are unique, so nth_element + sort gives exactly the stable sort's first k.
    keys.resize(static_cast<size_t>(n_l));
    for (int64_t i = 0; i < n_l; ++i) keys[static_cast<size_t>(i)] = desc_key_with_index(lg[i], static_cast<uint32_t>(i));
    if (kl < n_l) std::nth_element(keys.begin(), keys.begin() + kl, keys.end());
    std::sort(keys.begin(), keys.begin() + kl);
    auto& sc = cand_scores[static_cast<size_t>(worker)];
    sc.resize(static_cast<size_t>(kl));
    s.resize(static_cast<size_t>(kl));
    int n = 0;
    for (int64_t q = 0; q < kl; ++q) {
      const int64_t i = key_index(keys[static_cast<size_t>(q)]);
      const float score = sigmoid_f32(lg[i]);
      sc[static_cast<size_t>(q)] = score;
      kept_anchor[static_cast<size_t>(b * T + cand_off[l] + q)] = static_cast<int32_t>(start[l] + i);
      // NOTE: min-size, then score >= score_threshold (not strict, unlike the box head), as _select.
      if (!box_min_size_ok(bx + 4 * i, p.min_size) || !(score >= p.score_threshold)) continue;
      s.set(static_cast<size_t>(n++), bx + 4 * i, static_cast<uint32_t>(q));
    }
    // Visiting order = rank order: within a level, descending sigmoid with ties by rank is the
    // rank order itself (sigmoid is monotone; equal probabilities keep the logit order).
    auto& kept_ids = ids[static_cast<size_t>(worker)];
    kept_ids.resize(static_cast<size_t>(n));
    const int kept = nms_detail::greedy_nms_sorted(s, n, p.iou_threshold, static_cast<int>(std::min(post, kl)),
                                                   kept_ids.data());
    uint64_t* slot = kept_keys.data() + b * S + slot_off[l];
    for (int t = 0; t < kept; ++t) {
      const uint32_t q = kept_ids[static_cast<size_t>(t)];
      slot[t] = desc_key_with_index(sc[q], static_cast<uint32_t>(cand_off[l] + q));
    }
    kept_n[static_cast<size_t>(item)] = kept;
    finish();
  });
}

}  // namespace maskrt
