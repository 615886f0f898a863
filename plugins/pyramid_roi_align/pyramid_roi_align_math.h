// Multi-level RoIAlign math, written once and compiled by both the C++ compiler (CPU kernel,
// pyramid_roi_align_cpu.cpp) and nvcc (CUDA kernel, pyramid_roi_align.cu): FPN level assignment,
// RoI geometry per axis, sample coordinates, the range of samples inside the map, and the
// bilinear taps with torchvision's border rules.
//
// The arithmetic reproduces torchvision's roi_align (Caffe2's RoIAlign, also ONNX Runtime's
// RoiAlign) operation by operation in float32, so that the CPU kernel is bit-identical to those
// CPU implementations (see README.md). Every float operation that could be reassociated or
// contracted goes through hd_fmul / hd_fadd / hd_fdiv: on the device they are the _rn
// intrinsics, which nvcc never fuses into an FMA, so the CUDA kernel computes the same sample
// coordinates and weights as the CPU twin (the CPU file is compiled with -ffp-contract=off).
#pragma once

#include <math.h>

#include <stdint.h>

#include "common/hd.h"
#include "pyramid_roi_align/pyramid_roi_align_kernel.h"

namespace maskrt {

// Largest adaptive sampling grid per bin and axis. NOTE: torchvision has no cap, but its grid is
// an int computed from ceil(roi_size / bins), which is undefined behaviour past 2^31 and would
// take hours long before that; 2^24 is reached only by RoIs wider than 2^24 * output_size
// feature pixels (10^8 px at stride 1), so real inputs never see it.
constexpr float kMaxAdaptiveGrid = 16777216.0f;

MASKRT_HD float hd_fmul(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

MASKRT_HD float hd_fadd(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

MASKRT_HD float hd_fsub(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}

MASKRT_HD float hd_fdiv(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

// FPN level (index into the feature inputs, 0 .. num_levels - 1) of the RoI (x1, y1, x2, y2) in
// input pixels, or -1 when the RoI has no level (its pooled output is all zeros).
//
// NOTE: level = floor(canonical_level + log2(sqrt(area) / canonical_scale) + 1e-6), clamped to
// [first_level, first_level + num_levels - 1], with area = (x2 - x1) * (y2 - y1) (no +1) and every
// step in float32, as torchvision's LevelMapper (the eps is added after log2; at the boundaries
// sqrt(area) = 112, 224, 448 log2 is exact and the eps keeps the RoI on the upper level).
// NOTE: area 0 gives log2(0) = -inf -> the first level; a negative or NaN area (x2 < x1 xor
// y2 < y1) gives NaN, which torchvision's clamp keeps and no level matches, so such a RoI pools
// to zeros: -1 here.
// NOTE: sqrtf is IEEE (correctly rounded) on the host and on the device; log2f is within 1 ulp on
// both (glibc's is nearly always correctly rounded, CUDA's has up to 1 ulp). torch's vectorised
// CPU sqrt and log2 are not always correctly rounded either (1 ulp seen on AVX-512), so levels
// can differ from torch's only for sqrt(area) within ~2e-6 relative below a level boundary, where
// 1 ulp moves the value across floor's step despite the eps (tests/test_pyramid_roi_align.py
// sweeps the boundaries ulp by ulp).
MASKRT_HD int fpn_level(float x1, float y1, float x2, float y2, const PyramidRoiAlignParams& p) {
  const float area = hd_fmul(hd_fsub(x2, x1), hd_fsub(y2, y1));
  if (!(area >= 0.0f)) return -1;  // negative or NaN
  const float s = sqrtf(area);
  float v = hd_fadd(hd_fadd(static_cast<float>(p.canonical_level), log2f(hd_fdiv(s, p.canonical_scale))), 1e-6f);
  v = floorf(v);
  if (!(v == v)) return -1;  // NaN (only from a non-positive canonical_scale, rejected upstream)
  // Clamp in float before the int conversion (v may be +-inf).
  const float lo = static_cast<float>(p.first_level);
  const float hi = static_cast<float>(p.first_level + p.num_levels - 1);
  if (v < lo) v = lo;
  if (v > hi) v = hi;
  return static_cast<int>(v) - p.first_level;
}

// One axis (x or y) of one RoI on its level.
struct RoiAxis {
  float start;     // first corner in feature pixels: lo * scale - offset
  float bin_size;  // RoI size / bins (negative only for aligned=True RoIs with hi < lo)
  int grid;        // samples per bin along this axis (>= 0)
  int length;      // feature map size along this axis (W or H)
};

// lo, hi: the RoI's corners along this axis in input pixels; stride: the level's stride;
// bins: output_size; length: the map's size along the axis.
// NOTE (aligned): aligned=True shifts both scaled corners by -0.5 (pixel centres at i + 0.5,
// "half_pixel" in ONNX); aligned=False has no shift and forces the RoI size to >= 1 feature pixel
// (Caffe2 legacy, torchvision's Mask R-CNN default; ONNX "output_half_pixel").
// NOTE (sampling_ratio): > 0 is the grid per bin and axis; 0 is adaptive: ceil(roi_size / bins),
// per RoI and axis, which is 0 (no samples, output 0) for a negative aligned size.
MASKRT_HD RoiAxis roi_axis(float lo, float hi, int stride, bool aligned, int bins, int sampling_ratio, int length) {
  // NOTE: spatial_scale = 1 / stride in float32 (exact for power-of-two strides), applied as a
  // multiplication exactly as torchvision does with its float spatial_scale.
  const float scale = hd_fdiv(1.0f, static_cast<float>(stride));
  const float offset = aligned ? 0.5f : 0.0f;
  const float start = hd_fsub(hd_fmul(lo, scale), offset);
  const float end = hd_fsub(hd_fmul(hi, scale), offset);
  float size = hd_fsub(end, start);
  if (!aligned && size < 1.0f) size = 1.0f;  // std::max(size, 1.f)
  RoiAxis a;
  a.start = start;
  a.bin_size = hd_fdiv(size, static_cast<float>(bins));
  if (sampling_ratio > 0) {
    a.grid = sampling_ratio;
  } else {
    // ceil(size / bins) == ceil(bin_size): the same float division.
    float g = ceilf(a.bin_size);
    if (!(g > 0.0f)) g = 0.0f;  // negative size (or NaN): no samples
    if (g > kMaxAdaptiveGrid) g = kMaxAdaptiveGrid;
    a.grid = static_cast<int>(g);
  }
  a.length = length;
  return a;
}

// Coordinate of sample i (0 <= i < grid) of bin p along an axis, in feature pixels:
// start + p * bin_size + (i + 0.5) * bin_size / grid, evaluated left to right in float32 as
// torchvision does (the same rounding gives the same taps).
MASKRT_HD float sample_coord(const RoiAxis& a, int p, int i) {
  const float bin_origin = hd_fadd(a.start, hd_fmul(static_cast<float>(p), a.bin_size));
  const float within = hd_fdiv(hd_fmul(hd_fadd(static_cast<float>(i), 0.5f), a.bin_size), static_cast<float>(a.grid));
  return hd_fadd(bin_origin, within);
}

// NOTE (border rule): a sample strictly outside [-1, length] contributes 0 (but still counts in
// the bin's average); inside, a coordinate in [-1, 0] snaps to 0 and one in [length - 1, length]
// to length - 1. A NaN coordinate is outside (torchvision would convert it to int: UB).
MASKRT_HD bool sample_inside(float v, int length) {
  return v >= -1.0f && v <= static_cast<float>(length);
}

// Samples [*first, *last) of bin p are exactly those inside [-1, length].
// The coordinate is monotone in i (each float step is monotone: (i + 0.5) rounds monotonically,
// multiplication by bin_size and division by grid preserve or reverse order, adding a constant
// preserves it), so the inside samples are one contiguous run, found by binary search at the
// cost of O(log grid) coordinates: huge RoIs with adaptive sampling cost no more than the map.
MASKRT_HD void inside_range(const RoiAxis& a, int p, int* first, int* last) {
  const int g = a.grid;
  if (g <= 0) {
    *first = *last = 0;
    return;
  }
  // Orientation: for bin_size >= 0 the coordinate is non-decreasing in i.
  const bool up = !(a.bin_size < 0.0f);
  // First i not "before" the window: before = below -1 (up) or above length (down).
  int lo = 0, hi = g;
  while (lo < hi) {
    const int mid = lo + (hi - lo) / 2;
    const float v = sample_coord(a, p, mid);
    const bool before = up ? (v < -1.0f) : (v > static_cast<float>(a.length));
    if (before) lo = mid + 1; else hi = mid;
  }
  const int begin = lo;
  // First i "after" the window: after = above length (up) or below -1 (down), or NaN.
  hi = g;
  while (lo < hi) {
    const int mid = lo + (hi - lo) / 2;
    const float v = sample_coord(a, p, mid);
    if (!sample_inside(v, a.length)) hi = mid; else lo = mid + 1;
  }
  *first = begin;
  *last = lo;
}

// Bilinear taps of one inside coordinate along one axis: indices lo/hi and weights (1 - l) / l.
struct AxisTap {
  int lo;
  int hi;
  float w_lo;  // 1 - l ("hy"/"hx" in torchvision)
  float w_hi;  // l     ("ly"/"lx")
};

// v: a coordinate for which sample_inside(v, length) holds; length >= 1.
MASKRT_HD AxisTap axis_tap(float v, int length) {
  if (v <= 0.0f) v = 0.0f;
  AxisTap t;
  t.lo = static_cast<int>(v);
  if (t.lo >= length - 1) {
    t.lo = t.hi = length - 1;
    v = static_cast<float>(t.lo);
  } else {
    t.hi = t.lo + 1;
  }
  t.w_hi = hd_fsub(v, static_cast<float>(t.lo));
  // NOTE: torchvision writes 1. - l (a double subtraction rounded to float); for l a float in
  // [0, 1) both give the same float.
  t.w_lo = hd_fsub(1.0f, t.w_hi);
  return t;
}

// The four bilinear weights and offsets (y * width + x) of the sample at taps (ty, tx), in
// torchvision's order: (lo, lo), (lo, hi), (hi, lo), (hi, hi).
struct BilinearSample {
  int32_t off[4];
  float w[4];
};

MASKRT_HD BilinearSample bilinear_sample(const AxisTap& ty, const AxisTap& tx, int width) {
  BilinearSample s;
  s.off[0] = ty.lo * width + tx.lo;
  s.off[1] = ty.lo * width + tx.hi;
  s.off[2] = ty.hi * width + tx.lo;
  s.off[3] = ty.hi * width + tx.hi;
  s.w[0] = hd_fmul(ty.w_lo, tx.w_lo);
  s.w[1] = hd_fmul(ty.w_lo, tx.w_hi);
  s.w[2] = hd_fmul(ty.w_hi, tx.w_lo);
  s.w[3] = hd_fmul(ty.w_hi, tx.w_hi);
  return s;
}

// w0 * v0 + w1 * v1 + w2 * v2 + w3 * v3, left to right (torchvision's order), in float32.
MASKRT_HD float bilinear_value(const float w[4], float v0, float v1, float v2, float v3) {
  return hd_fadd(hd_fadd(hd_fadd(hd_fmul(w[0], v0), hd_fmul(w[1], v1)), hd_fmul(w[2], v2)), hd_fmul(w[3], v3));
}

// NOTE: each bin is the sum of its inside samples divided by count = max(grid_h * grid_w, 1) as a
// float (samples outside the map count but add 0; an empty grid gives 0 / 1 = 0). The product is
// taken in 64 bits: torchvision's int product only differs where it would overflow.
MASKRT_HD float bin_count(int grid_h, int grid_w) {
  const int64_t n = static_cast<int64_t>(grid_h) * static_cast<int64_t>(grid_w);
  return static_cast<float>(n > 1 ? n : 1);
}

}  // namespace maskrt
