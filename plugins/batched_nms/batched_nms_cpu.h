// CPU kernels of the batched_nms plugin.
#pragma once

#include <cstdint>

namespace maskrt {

// Greedy NMS over n boxes. Candidates are visited in descending score order; equal scores keep
// their input order (stable), so results are deterministic. A box is suppressed by a kept box
// when IoU > iou_threshold (strictly greater). If `classes` is non-null, only boxes of the same
// class suppress each other (class-aware "batched" NMS, without torchvision's coordinate-offset
// trick, which perturbs IoU in float32).
//   boxes:   float32 [n, 4]  (x1, y1, x2, y2), must be finite
//   scores:  float32 [n], must be finite (callers validate)
//   classes: int64 [n] or nullptr
//   keep:    int64 [n] output: indices of kept boxes in descending score order
// Returns the number of kept boxes. If max_keep >= 0, stops after max_keep boxes are kept.
int64_t nms_cpu(const float* boxes, const float* scores, const int64_t* classes, int64_t n,
                float iou_threshold, int64_t max_keep, int64_t* keep);

// Pairwise IoU: out[i * m + j] = IoU(a[i], b[j]).   a: [n,4], b: [m,4], out: [n,m] float32.
void box_iou_cpu(const float* a, int64_t n, const float* b, int64_t m, float* out);

}  // namespace maskrt
