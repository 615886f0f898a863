// Box IoU shared by the CPU and CUDA NMS kernels.
#pragma once

#include "common/hd.h"

namespace maskrt {

// NOTE: boxes are (x1, y1, x2, y2) in pixels with no "+1" on widths (torchvision and ONNX
// NonMaxSuppression convention). The union is computed as (area_a + area_b) - inter in this
// order everywhere (Python mirrors included) so that an IoU exactly at the threshold gives the
// same decision on every path. A degenerate union (<= 0) gives IoU 0: never suppresses, as in
// ONNX Runtime (torchvision produces NaN there, which also never suppresses).
MASKRT_HD float box_area(const float* b) { return (b[2] - b[0]) * (b[3] - b[1]); }

MASKRT_HD float box_iou_with_areas(const float* a, float area_a, const float* b, float area_b) {
  const float iw = hd_max(hd_min(a[2], b[2]) - hd_max(a[0], b[0]), 0.0f);
  const float ih = hd_max(hd_min(a[3], b[3]) - hd_max(a[1], b[1]), 0.0f);
  const float inter = iw * ih;
  const float uni = (area_a + area_b) - inter;
  return uni > 0.0f ? inter / uni : 0.0f;
}

MASKRT_HD float box_iou(const float* a, const float* b) {
  return box_iou_with_areas(a, box_area(a), b, box_area(b));
}

}  // namespace maskrt
