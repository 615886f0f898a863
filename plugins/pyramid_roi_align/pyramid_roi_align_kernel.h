// Multi-level RoIAlign: parameters and the CPU kernel (the CPU twin of the CUDA kernel).
// Attributes and semantics: plugins/plugin_table.json and README.md in this folder.
#pragma once

#include <cstdint>

namespace maskrt {

constexpr int kMaxPyramidLevels = 8;

struct PyramidRoiAlignParams {
  int batch = 0;      // B
  int num_rois = 0;   // R per image
  int channels = 0;   // C
  int num_levels = 0; // L feature maps (P2..P5 -> 4)
  int heights[kMaxPyramidLevels] = {};
  int widths[kMaxPyramidLevels] = {};
  int strides[kMaxPyramidLevels] = {};  // spatial_scale of level l = 1 / strides[l]
  int output_size = 7;                  // P
  int sampling_ratio = 2;               // 0 = adaptive
  bool aligned = false;
  int first_level = 2;                  // FPN level k of features[0]
  float canonical_scale = 224.0f;
  int canonical_level = 4;
};

// rois:     float32 [B, R, 4] (x1, y1, x2, y2) in input pixels
// features: L pointers, features[l] float32 [B, C, heights[l], widths[l]]
// out:      float32 [B, R, C, P, P]
// threads:  worker threads (<= 0: std::thread::hardware_concurrency())
void pyramid_roi_align_cpu(const PyramidRoiAlignParams& p, const float* rois, const float* const* features,
                           float* out, int threads);

}  // namespace maskrt
