// RPN and detection NMS: parameters and CPU kernels (the CPU twins of the CUDA kernels).
// Attributes and semantics: plugins/plugin_table.json and README.md in this folder.
#pragma once

#include <cstdint>

namespace maskrt {

constexpr int kMaxNmsLevels = 8;

struct RpnNmsParams {
  int batch = 0;        // B
  int num_anchors = 0;  // N = sum(level_sizes)
  int num_levels = 0;
  int level_sizes[kMaxNmsLevels] = {};
  int pre_nms_top_n = 1000;   // per level
  int post_nms_top_n = 1000;  // per image (output rows)
  float iou_threshold = 0.7f;
  float min_size = 1e-3f;
  float score_threshold = 0.0f;
};

// boxes:  float32 [B, N, 4] decoded + clipped; logits: float32 [B, N]
// out_rois float32 [B, post, 4], out_scores float32 [B, post], out_count int32 [B]
void rpn_nms_cpu(const RpnNmsParams& p, const float* boxes, const float* logits, float* out_rois,
                 float* out_scores, int32_t* out_count, int threads);

struct DetectionNmsParams {
  int batch = 0;        // B
  int num_rois = 0;     // R
  int num_classes = 0;  // C foreground columns
  float score_threshold = 0.05f;
  float iou_threshold = 0.5f;
  int max_detections = 100;  // K
  float min_size = 1e-2f;
  int class_offset = 1;
};

// boxes: float32 [B, R, C, 4]; scores: float32 [B, R, C]; num_rois: int32 [B] (nullptr: all R)
// out_count int32 [B], out_boxes float32 [B, K, 4], out_scores float32 [B, K], out_classes int32 [B, K]
void detection_nms_cpu(const DetectionNmsParams& p, const float* boxes, const float* scores, const int32_t* num_rois,
                       int32_t* out_count, float* out_boxes, float* out_scores, int32_t* out_classes, int threads);

}  // namespace maskrt
