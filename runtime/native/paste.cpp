#include "paste.h"

#include <algorithm>
#include <cstring>

#if defined(__SSE2__) && !defined(MASKRT_CORE_NO_SIMD)
#include <emmintrin.h>
#endif

#include "common.h"
#include "rle.h"

namespace maskrt {
namespace core {

namespace {

// NOTE: integer box coordinates are clamped to +-2^61 so that x1 - x0 + 1 cannot overflow int64.
// Only garbage boxes reach it (the reference's numpy float->int64 cast is undefined there); any
// box within 2^61 pixels of the image gives the reference's exact result.
constexpr float kCoordLimit = 2305843009213693952.0f;  // 2^61
constexpr int64_t kCoordLimitI = int64_t{1} << 61;

inline int64_t trunc_to_int(float v) {
  // NOTE: toward zero (torch's Tensor.to(torch.int64) is a C cast), so -0.7 -> 0, not -1.
  if (!(v > -kCoordLimit)) return -kCoordLimitI;  // also NaN: inf - inf cannot occur for finite boxes
  if (v >= kCoordLimit) return kCoordLimitI;
  return static_cast<int64_t>(v);
}

// The pixel geometry of one instance.
struct Geometry {
  int64_t x0, y0;          // top-left of the inclusive integer box of the padded mask
  int64_t w, h;            // size of the resized padded mask (>= 1)
  int cx0, cx1, cy0, cy1;  // visible part, image coordinates, half-open
  bool visible() const { return cx0 < cx1 && cy0 < cy1; }
};

Geometry geometry(const float* box, int m, int height, int width) {
  // NOTE: torchvision's expand_boxes(boxes, (M + 2) / M) in float32, in its order of operations;
  // the scale is a Python float rounded to float32 (torch multiplies a float32 tensor by it in
  // float32). A last-bit difference moves a truncated coordinate by a whole pixel. Compiled with
  // -ffp-contract=off (no fused multiply-add).
  const float scale = static_cast<float>(static_cast<double>(m + 2) / m);
  const float half = 0.5f;
  const float w_half = (box[2] - box[0]) * half * scale;
  const float h_half = (box[3] - box[1]) * half * scale;
  const float x_c = (box[2] + box[0]) * half;
  const float y_c = (box[3] + box[1]) * half;
  Geometry g;
  g.x0 = trunc_to_int(x_c - w_half);
  g.y0 = trunc_to_int(y_c - h_half);
  const int64_t x1 = trunc_to_int(x_c + w_half), y1 = trunc_to_int(y_c + h_half);
  // NOTE: inclusive integer box (TO_REMOVE = 1), at least one pixel.
  g.w = std::max<int64_t>(x1 - g.x0 + 1, 1);
  g.h = std::max<int64_t>(y1 - g.y0 + 1, 1);
  // NOTE: the visible part [max(x0, 0), min(x1 + 1, W)) x [max(y0, 0), min(y1 + 1, H)).
  g.cx0 = static_cast<int>(std::clamp<int64_t>(g.x0, 0, width));
  g.cx1 = static_cast<int>(std::clamp<int64_t>(x1 + 1, 0, width));
  g.cy0 = static_cast<int>(std::clamp<int64_t>(g.y0, 0, height));
  g.cy1 = static_cast<int>(std::clamp<int64_t>(y1 + 1, 0, height));
  return g;
}

struct Tap {
  int i0, i1;  // source indices
  double l;    // weight of i1
};

// Output index d of an n_in -> n_out half-pixel bilinear resize, as tests/references.py's
// _half_pixel_taps computes it (same operations in the same order, float64).
inline Tap half_pixel_tap(int64_t d, int n_in, int64_t n_out) {
  // NOTE: half-pixel centres (align_corners=False): src = (d + 0.5) * in / out - 0.5, evaluated
  // left to right, clamped below at 0.
  double src = (static_cast<double>(d) + 0.5) * static_cast<double>(n_in) / static_cast<double>(n_out) - 0.5;
  if (src < 0.0) src = 0.0;
  const int64_t i0 = static_cast<int64_t>(src);
  // NOTE: past the last source pixel it repeats (weight 0 on the non-existent next one).
  if (i0 >= n_in - 1) return {n_in - 1, n_in - 1, 0.0};
  return {static_cast<int>(i0), static_cast<int>(i0) + 1, src - static_cast<double>(i0)};
}

struct Scratch {
  std::vector<double> padded;  // (M + 2) x (M + 2)
  std::vector<Tap> cols, rows;
  std::vector<double> hrows;   // horizontally resized source rows, [rows used] x [visible columns]
  std::vector<uint8_t> bits;   // a crop of foreground bits
  RunScratch runs;             // paste_to_rle's run counting
};

// float64 copy of the mask with its one-pixel zero border (torchvision's expand_masks, padding=1).
void pad_mask(const float* mask, int m, std::vector<double>& padded) {
  const int s = m + 2;
  padded.assign(static_cast<size_t>(s) * s, 0.0);
  for (int r = 0; r < m; ++r)
    for (int c = 0; c < m; ++c) padded[static_cast<size_t>(r + 1) * s + (c + 1)] = static_cast<double>(mask[r * m + c]);
}

#if defined(__SSE2__) && !defined(MASKRT_CORE_NO_SIMD)
// Byte k of row i is bit k of i: 8 comparison bits -> 8 bytes of 0/1.
struct BitsToBytes {
  uint8_t b[256][8];
  constexpr BitsToBytes() : b() {
    for (int i = 0; i < 256; ++i)
      for (int k = 0; k < 8; ++k) b[i][k] = static_cast<uint8_t>((i >> k) & 1);
  }
};
constexpr BitsToBytes kBitsToBytes{};
#endif

// d[j] = (a * t0[j] + b * t1[j]) > threshold: the mirror's outer expression, exactly (the SSE2
// path rounds the same two products and one sum; GCC does not vectorise double -> byte loops).
inline void vertical_threshold(const double* t0, const double* t1, uint8_t* d, int n, double a, double b,
                               double threshold) {
  int j = 0;
#if defined(__SSE2__) && !defined(MASKRT_CORE_NO_SIMD)
  const __m128d va = _mm_set1_pd(a), vb = _mm_set1_pd(b), vt = _mm_set1_pd(threshold);
  for (; j + 8 <= n; j += 8) {
    int bits = 0;
    for (int q = 0; q < 4; ++q) {
      const __m128d v = _mm_add_pd(_mm_mul_pd(va, _mm_loadu_pd(t0 + j + 2 * q)), _mm_mul_pd(vb, _mm_loadu_pd(t1 + j + 2 * q)));
      bits |= _mm_movemask_pd(_mm_cmpgt_pd(v, vt)) << (2 * q);
    }
    std::memcpy(d + j, kBitsToBytes.b[bits], 8);
  }
#endif
  // NOTE: strictly greater than the threshold (torchvision: masks > 0.5).
  for (; j < n; ++j) d[j] = static_cast<uint8_t>((a * t0[j] + b * t1[j]) > threshold);
}

// Foreground bits (0/1) of image rows [ya, yb) and the visible columns [g.cx0, g.cx1) of one
// instance, `padded` its float64 (M + 2) x (M + 2) padded mask: row y goes to dst + (y - ya) * stride.
void paste_region(const Geometry& g, int m, const double* padded, int64_t ya, int64_t yb, double threshold,
                  Scratch& sc, uint8_t* dst, int64_t stride) {
  const int s = m + 2;
  const int wc = g.cx1 - g.cx0;
  sc.cols.resize(static_cast<size_t>(wc));
  for (int j = 0; j < wc; ++j) sc.cols[static_cast<size_t>(j)] = half_pixel_tap(g.cx0 + j - g.x0, s, g.w);
  sc.rows.resize(static_cast<size_t>(yb - ya));
  for (int64_t y = ya; y < yb; ++y) sc.rows[static_cast<size_t>(y - ya)] = half_pixel_tap(y - g.y0, s, g.h);
  // Taps are monotonic: the source rows used are [first i0, last i1].
  const int r_lo = sc.rows.front().i0, r_hi = sc.rows.back().i1;
  sc.hrows.resize(static_cast<size_t>(r_hi - r_lo + 1) * static_cast<size_t>(wc));
  for (int r = r_lo; r <= r_hi; ++r) {
    const double* p = padded + static_cast<size_t>(r) * s;
    double* t = sc.hrows.data() + static_cast<size_t>(r - r_lo) * wc;
    for (int j = 0; j < wc; ++j) {
      const Tap& c = sc.cols[static_cast<size_t>(j)];
      // NOTE: (1 - lx) * p[c0] + lx * p[c1], the mirror's inner expression, exactly.
      t[j] = (1.0 - c.l) * p[c.i0] + c.l * p[c.i1];
    }
  }
  for (int64_t y = ya; y < yb; ++y) {
    const Tap& r = sc.rows[static_cast<size_t>(y - ya)];
    const double* t0 = sc.hrows.data() + static_cast<size_t>(r.i0 - r_lo) * wc;
    const double* t1 = sc.hrows.data() + static_cast<size_t>(r.i1 - r_lo) * wc;
    const double a = 1.0 - r.l, b = r.l;
    vertical_threshold(t0, t1, dst + (y - ya) * stride, wc, a, b, threshold);
  }
}

std::vector<Geometry> geometries(const PasteArgs& a) {
  std::vector<Geometry> gs(static_cast<size_t>(a.k));
  for (int64_t i = 0; i < a.k; ++i) gs[static_cast<size_t>(i)] = geometry(a.boxes + 4 * i, a.m, a.height, a.width);
  return gs;
}

const float* mask_of(const PasteArgs& a, int64_t i) { return a.masks + i * static_cast<int64_t>(a.m) * a.m; }

}  // namespace

void paste_masks(const PasteArgs& a, uint8_t* bitmaps, int threads) {
  if (a.k == 0) return;
  const std::vector<Geometry> gs = geometries(a);
  const int64_t plane = static_cast<int64_t>(a.height) * a.width;
  std::vector<Scratch> scratch(static_cast<size_t>(num_workers(a.k, threads)));
  parallel_tasks(a.k, threads, [&](int64_t i, int w) {
    const Geometry& g = gs[static_cast<size_t>(i)];
    if (!g.visible()) return;
    Scratch& sc = scratch[static_cast<size_t>(w)];
    pad_mask(mask_of(a, i), a.m, sc.padded);
    uint8_t* dst = bitmaps + plane * i + static_cast<int64_t>(g.cy0) * a.width + g.cx0;
    paste_region(g, a.m, sc.padded.data(), g.cy0, g.cy1, a.threshold, sc, dst, a.width);
  });
}

template <typename Label>
void paste_label_map(const PasteArgs& a, const Label* labels, Label* label_map, int threads) {
  if (a.k == 0) return;
  const std::vector<Geometry> gs = geometries(a);
  // NOTE: parallel over bands of image rows; within a band the instances are merged in their
  // given order and a pixel takes the first foreground label only, so the result does not depend
  // on the banding or the thread count.
  // Every padded mask once (an instance spans several bands).
  const size_t pad_size = static_cast<size_t>(a.m + 2) * static_cast<size_t>(a.m + 2);
  std::vector<double> padded(pad_size * static_cast<size_t>(a.k));
  {
    std::vector<double> one;
    for (int64_t i = 0; i < a.k; ++i) {
      pad_mask(mask_of(a, i), a.m, one);
      std::copy(one.begin(), one.end(), padded.begin() + static_cast<std::ptrdiff_t>(pad_size * static_cast<size_t>(i)));
    }
  }
  const int nt = resolve_threads(threads);
  const Bands bands(a.height, int64_t{4} * nt, 8);
  std::vector<Scratch> scratch(static_cast<size_t>(num_workers(bands.count, nt)));
  parallel_tasks(bands.count, nt, [&](int64_t b, int w) {
    const int64_t ya = bands.begin(b), yb = bands.begin(b + 1);
    Scratch& sc = scratch[static_cast<size_t>(w)];
    for (int64_t i = 0; i < a.k; ++i) {
      const Geometry& g = gs[static_cast<size_t>(i)];
      if (!g.visible()) continue;
      const int64_t ra = std::max<int64_t>(ya, g.cy0), rb = std::min<int64_t>(yb, g.cy1);
      if (ra >= rb) continue;
      const int wc = g.cx1 - g.cx0;
      sc.bits.resize(static_cast<size_t>((rb - ra) * wc));
      paste_region(g, a.m, padded.data() + static_cast<size_t>(i) * pad_size, ra, rb, a.threshold, sc, sc.bits.data(),
                   wc);
      const Label label = labels[i];
      for (int64_t y = ra; y < rb; ++y) {
        const uint8_t* bit = sc.bits.data() + (y - ra) * wc;
        Label* out = label_map + y * a.width + g.cx0;
        // NOTE: first instance wins: only pixels still 0 take this label (branch-free, so the
        // compiler vectorises it; out[j] is 0 wherever the mask m is set).
        for (int j = 0; j < wc; ++j) {
          const Label m = static_cast<Label>(-static_cast<int32_t>((bit[j] != 0) & (out[j] == 0)));
          out[j] = static_cast<Label>(out[j] | (label & m));
        }
      }
    }
  });
}

template void paste_label_map<uint16_t>(const PasteArgs&, const uint16_t*, uint16_t*, int);
template void paste_label_map<int32_t>(const PasteArgs&, const int32_t*, int32_t*, int);

std::vector<std::string> paste_to_rle(const PasteArgs& a, int threads) {
  std::vector<std::string> out(static_cast<size_t>(a.k));
  if (a.k == 0) return out;
  const std::vector<Geometry> gs = geometries(a);
  std::vector<Scratch> scratch(static_cast<size_t>(num_workers(a.k, threads)));
  parallel_tasks(a.k, threads, [&](int64_t i, int w) {
    const Geometry& g = gs[static_cast<size_t>(i)];
    RunCounter rc;
    if (g.visible()) {
      Scratch& sc = scratch[static_cast<size_t>(w)];
      pad_mask(mask_of(a, i), a.m, sc.padded);
      const int wc = g.cx1 - g.cx0;
      sc.bits.resize(static_cast<size_t>(g.cy1 - g.cy0) * static_cast<size_t>(wc));
      paste_region(g, a.m, sc.padded.data(), g.cy0, g.cy1, a.threshold, sc, sc.bits.data(), wc);
      count_runs(rc, a.height, a.width, g.cy0, g.cy1, g.cx0, g.cx1, sc.bits.data(), wc, sc.runs);
    } else {
      rc.push(0, static_cast<uint64_t>(a.height) * static_cast<uint64_t>(a.width));
    }
    out[static_cast<size_t>(i)] = rle_counts_to_string(rc.finish());
  });
  return out;
}

}  // namespace core
}  // namespace maskrt
