// Arithmetic shared by the CPU and CUDA NMS kernels (written once, compiled by both compilers),
// so that the CPU twin and the GPU kernel take the same decision on every candidate.
#pragma once

#include <math.h>  // ::exp(double), usable in host and device code

#include <cstdint>
#include <cstring>

#include "common/hd.h"

namespace maskrt {

// ----------------------------------------------------------------------------- exact rounding
// NOTE: every multiply below goes through hd_mul so that no compiler fuses it with the following
// add/subtract into an FMA (nvcc contracts by default; GCC does on targets with FMA, e.g. the
// aarch64 of Jetson, unless -ffp-contract=off, which the CMake of this folder sets for the CPU
// sources). A fused multiply-add rounds once instead of twice and can flip an IoU that is exactly
// at the threshold, so the GPU and the CPU twin (and the float32 Python mirrors) would disagree.
#if defined(__CUDA_ARCH__)
MASKRT_HD float hd_mul(float a, float b) { return __fmul_rn(a, b); }
MASKRT_HD float hd_add(float a, float b) { return __fadd_rn(a, b); }
MASKRT_HD float hd_sub(float a, float b) { return __fsub_rn(a, b); }
MASKRT_HD float hd_div(float a, float b) { return __fdiv_rn(a, b); }  // IEEE even under --use_fast_math
#else
MASKRT_HD float hd_mul(float a, float b) { return a * b; }
MASKRT_HD float hd_add(float a, float b) { return a + b; }
MASKRT_HD float hd_sub(float a, float b) { return a - b; }
MASKRT_HD float hd_div(float a, float b) { return a / b; }
#endif

// ----------------------------------------------------------------------------- IoU
// NOTE: boxes are (x1, y1, x2, y2) in pixels with no "+1" on widths (torchvision and ONNX
// NonMaxSuppression convention). The union is computed as (area_a + area_b) - inter in this
// order everywhere (Python mirrors included) so that an IoU exactly at the threshold gives the
// same decision on every path. A degenerate union (<= 0) gives IoU 0: never suppresses, as in
// ONNX Runtime (torchvision produces NaN there, which also never suppresses).
MASKRT_HD float box_area(float x1, float y1, float x2, float y2) { return hd_mul(hd_sub(x2, x1), hd_sub(y2, y1)); }

MASKRT_HD float box_area(const float* b) { return box_area(b[0], b[1], b[2], b[3]); }

// IoU of a = (ax1, ay1, ax2, ay2) with precomputed area_a and b likewise. Written without
// branches (the division is always evaluated, on a safe denominator) so that the CPU loop over
// candidates auto-vectorises; the value is bit-identical to `uni > 0 ? inter / uni : 0`.
MASKRT_HD float box_iou_soa(float ax1, float ay1, float ax2, float ay2, float area_a, float bx1, float by1,
                            float bx2, float by2, float area_b) {
  const float iw = hd_max(hd_sub(hd_min(ax2, bx2), hd_max(ax1, bx1)), 0.0f);
  const float ih = hd_max(hd_sub(hd_min(ay2, by2), hd_max(ay1, by1)), 0.0f);
  const float inter = hd_mul(iw, ih);
  const float uni = hd_sub(hd_add(area_a, area_b), inter);
  const float q = hd_div(inter, uni > 0.0f ? uni : 1.0f);
  return uni > 0.0f ? q : 0.0f;
}

MASKRT_HD float box_iou_with_areas(const float* a, float area_a, const float* b, float area_b) {
  return box_iou_soa(a[0], a[1], a[2], a[3], area_a, b[0], b[1], b[2], b[3], area_b);
}

MASKRT_HD float box_iou(const float* a, const float* b) {
  return box_iou_with_areas(a, box_area(a), b, box_area(b));
}

// NOTE: the suppression rule of every NMS in this project: strictly greater than the threshold,
// so an IoU exactly equal to it keeps the box (torchvision, ONNX NonMaxSuppression).
MASKRT_HD bool iou_suppresses(float iou, float iou_threshold) { return iou > iou_threshold; }

// ----------------------------------------------------------------------------- filters
// NOTE: torchvision's remove_small_boxes: width >= min_size AND height >= min_size, widths without
// "+1". A NaN coordinate fails the test (comparisons with NaN are false), so it is dropped.
MASKRT_HD bool box_min_size_ok(const float* b, float min_size) {
  return hd_sub(b[2], b[0]) >= min_size && hd_sub(b[3], b[1]) >= min_size;
}

// NOTE: sigmoid is evaluated in double and rounded once to float32, i.e. correctly rounded except
// in astronomically rare cases, so that the CPU (glibc exp) and the GPU (CUDA exp) give the same
// float32 score; scores order the cross-level merge of the RPN, where a 1-ulp difference would
// reorder near-ties. torch.sigmoid / ONNX Sigmoid in float32 differ from it by ~1 ulp on about a
// third of inputs (tests compare with that in mind). NaN stays NaN.
MASKRT_HD float sigmoid_f32(float x) { return static_cast<float>(1.0 / (1.0 + ::exp(-static_cast<double>(x)))); }

// ----------------------------------------------------------------------------- ordering keys
// Monotone map float -> uint32: a < b  =>  key(a) < key(b); -0.0 and +0.0 map to the same key (so
// they tie, as they compare equal); NaN maps to 0, below -inf (ranked last in descending order).
// Sorting on ~key ascending with a stable sort (or with the index as the low word of a 64-bit
// key) gives "descending value, ties by index": the ranking rule of every sort in these kernels.
MASKRT_HD uint32_t float_order_key(float x) {
  if (x != x) return 0u;
  if (x == 0.0f) x = 0.0f;  // canonical +0
#if defined(__CUDA_ARCH__)
  const uint32_t bits = __float_as_uint(x);
#else
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
#endif
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

// 64-bit ascending sort key for "descending value, then ascending index": unique per index.
MASKRT_HD uint64_t desc_key_with_index(float value, uint32_t index) {
  return (static_cast<uint64_t>(~float_order_key(value)) << 32) | static_cast<uint64_t>(index);
}

MASKRT_HD uint32_t key_index(uint64_t key) { return static_cast<uint32_t>(key & 0xFFFFFFFFull); }

constexpr uint64_t kInvalidSortKey = ~0ull;  // sorts after every real key

}  // namespace maskrt
