// Letterbox and OpenCV-exact INTER_LINEAR resize of uint8 3-channel images.
//
// cv2.resize(INTER_LINEAR) on uint8 is separable fixed point (OpenCV imgproc/src/resize.cpp,
// resizeGeneric_ with HResizeLinear<uchar, int, short, 2048> and VResizeLinear<..., FixedPtCast<int,
// uchar, 22>, VResizeLinearVec_32s8u>). Each rule is reproduced here, with a NOTE where it is
// subtle:
//  * source coordinate of output column dx: fx = (float)((dx + 0.5) * scale_x - 0.5) with
//    scale_x = 1 / (dst_w / src_w) in double, sx = floor(fx), fx -= sx (float);
//  * columns left of the image (sx < 0) take (sx, fx) = (0, 0); columns whose right tap falls off
//    the image (sx >= src_w - 1) take (src_w - 1, 0) and weight 2048 on one pixel;
//  * weights are shorts: round_half_even((1 - fx) * 2048) and round_half_even(fx * 2048) (they
//    need not sum to 2048);
//  * the horizontal pass is exact integer arithmetic (int32, scale 2048);
//  * rows: sy = floor(fy) and the weights of fy are NOT clamped; the two source rows are
//    clip(sy, 0, h - 1) and clip(sy + 1, 0, h - 1);
//  * the vertical pass rounds twice, as OpenCV's vector code (VResizeLinearVec_32s8u) does:
//    ((mulhi16(sat16(S0 >> 4), b0) + mulhi16(sat16(S1 >> 4), b1)) + 2) >> 2, int16 saturating,
//    with mulhi16(a, b) = (a * b) >> 16. NOTE: OpenCV's scalar formula (S0 * b0 + S1 * b1 + 2^21)
//    >> 22 differs from it by 1 now and then; measured against the opencv-python wheels 4.8.1,
//    4.14.0 and 5.0.0 (x86-64), every element of every row follows the vector formula (a
//    scalar tail reproduced after 8-lane groups mismatched by 1 on 350 of 411 size pairs; the
//    vector formula everywhere matched all of them bit for bit), so it is used for all elements;
//  * an exact 2x downscale goes through OpenCV's INTER_AREA fast path ((a + b + c + d + 2) >> 2),
//    which this formula reproduces exactly (weights 1024/1024: both roundings give the same).
#include "letterbox.h"

#include <cmath>
#include <cstring>
#include <vector>

#if defined(__SSE2__) && !defined(MASKRT_CORE_NO_SIMD)
#include <emmintrin.h>
#endif

#include "common.h"

namespace maskrt {
namespace core {

namespace {

constexpr int kCoefBits = 11;
constexpr int kCoefScale = 1 << kCoefBits;  // INTER_RESIZE_COEF_SCALE

inline int16_t saturate_short_round(float v) {
  // saturate_cast<short>(float): cvRound (round half to even in the default FP mode), then clamp.
  const long r = std::lrint(v);
  return static_cast<int16_t>(r < -32768 ? -32768 : (r > 32767 ? 32767 : r));
}

inline int clip_row(int y, int h) { return y < 0 ? 0 : (y >= h ? h - 1 : y); }

inline int sat16(int v) { return v < -32768 ? -32768 : (v > 32767 ? 32767 : v); }

struct LinearTables {
  std::vector<int> xofs;        // [dst_w] source column of the left tap
  std::vector<int16_t> alpha;   // [dst_w * 2]
  int xmax = 0;                 // columns >= xmax take one source pixel, weight 2048
  int xfast = 0;                // columns < xfast: both taps in the row with 7 bytes to read
  std::vector<int16_t> w0, w1;  // [dst_w * 3] weights of the left / right tap per output element
  std::vector<int16_t> wpair;   // [dst_w * 3 * 2] (w0, w1) interleaved
  std::vector<int> yofs;        // [dst_h] floor of the source row coordinate (may be -1)
  std::vector<int16_t> beta;    // [dst_h * 2]
};

LinearTables make_tables(int sh, int sw, int dh, int dw) {
  LinearTables t;
  // NOTE: inv_scale = dst / src in double, and scale = 1 / inv_scale (not src / dst): the
  // coordinates are rounded to float from this exact double expression.
  const double inv_scale_x = static_cast<double>(dw) / sw, inv_scale_y = static_cast<double>(dh) / sh;
  const double scale_x = 1. / inv_scale_x, scale_y = 1. / inv_scale_y;
  t.xofs.resize(static_cast<size_t>(dw));
  t.alpha.resize(static_cast<size_t>(dw) * 2);
  t.xmax = dw;
  for (int dx = 0; dx < dw; ++dx) {
    float fx = static_cast<float>((dx + 0.5) * scale_x - 0.5);
    int sx = static_cast<int>(std::floor(fx));
    fx -= static_cast<float>(sx);
    if (sx < 0) fx = 0.f, sx = 0;
    if (sx + 1 >= sw) {
      if (dx < t.xmax) t.xmax = dx;
      if (sx >= sw - 1) fx = 0.f, sx = sw - 1;
    }
    t.xofs[dx] = sx;
    t.alpha[2 * dx] = saturate_short_round((1.f - fx) * kCoefScale);
    t.alpha[2 * dx + 1] = saturate_short_round(fx * kCoefScale);
  }
  // Per-element weights for hresize_row: columns >= xmax take one pixel with weight 2048 (their
  // second tap gets weight 0 and a copy of the first pixel, so nothing past the row is read).
  t.w0.resize(static_cast<size_t>(dw) * 3);
  t.w1.resize(static_cast<size_t>(dw) * 3);
  t.xfast = 0;
  for (int dx = 0; dx < dw; ++dx) {
    const bool two = dx < t.xmax;
    for (int c = 0; c < 3; ++c) {
      t.w0[3 * dx + c] = two ? t.alpha[2 * dx] : static_cast<int16_t>(kCoefScale);
      t.w1[3 * dx + c] = two ? t.alpha[2 * dx + 1] : int16_t{0};
    }
    if (two && 3 * t.xofs[dx] + 7 <= 3 * sw) t.xfast = dx + 1;
  }
  t.wpair.resize(static_cast<size_t>(dw) * 6);
  for (size_t i = 0; i < t.w0.size(); ++i) {
    t.wpair[2 * i] = t.w0[i];
    t.wpair[2 * i + 1] = t.w1[i];
  }
  t.yofs.resize(static_cast<size_t>(dh));
  t.beta.resize(static_cast<size_t>(dh) * 2);
  for (int dy = 0; dy < dh; ++dy) {
    float fy = static_cast<float>((dy + 0.5) * scale_y - 0.5);
    const int sy = static_cast<int>(std::floor(fy));
    fy -= static_cast<float>(sy);
    // NOTE: no clamping of (sy, fy) here (OpenCV clamps the row indices only).
    t.yofs[dy] = sy;
    t.beta[2 * dy] = saturate_short_round((1.f - fy) * kCoefScale);
    t.beta[2 * dy + 1] = saturate_short_round(fy * kCoefScale);
  }
  return t;
}

// One source row -> int32 [dst_w * 3], scale 2048 (exact integer arithmetic, so any
// evaluation order gives OpenCV's values). Two steps: gather each output pixel's left and right
// source pixels into `left` / `right` (uint8 [dst_w * 3 + 4]), then one multiply-add per element
// that the compiler vectorises.
void hresize_row(const uint8_t* s, int32_t* d, const LinearTables& t, int dw, uint8_t* left, uint8_t* right) {
  const int xfast = std::min(t.xfast, t.xmax);
  int dx = 0;
  // 4-byte copies (one byte too many, overwritten by the next pixel; the buffers have slack).
  for (; dx < xfast; ++dx) {
    const uint8_t* p = s + 3 * t.xofs[dx];
    std::memcpy(left + 3 * dx, p, 4);
    std::memcpy(right + 3 * dx, p + 3, 4);
  }
  for (; dx < t.xmax; ++dx) {
    const uint8_t* p = s + 3 * t.xofs[dx];
    std::memcpy(left + 3 * dx, p, 3);
    std::memcpy(right + 3 * dx, p + 3, 3);
  }
  for (; dx < dw; ++dx) {
    const uint8_t* p = s + 3 * t.xofs[dx];
    std::memcpy(left + 3 * dx, p, 3);
    std::memcpy(right + 3 * dx, p, 3);  // weight 0
  }
  const int16_t* w0 = t.w0.data();
  const int16_t* w1 = t.w1.data();
  const int n = 3 * dw;
  int i = 0;
#if defined(__SSE2__) && !defined(MASKRT_CORE_NO_SIMD)
  // (left, right) byte pairs widened to int16 and multiplied-added with the (w0, w1) pairs:
  // pmaddwd gives the exact int32 sums (255 * 2048 * 2 < 2^31).
  const __m128i zero = _mm_setzero_si128();
  const int16_t* wp = t.wpair.data();
  for (; i + 16 <= n; i += 16) {
    const __m128i l = _mm_loadu_si128(reinterpret_cast<const __m128i*>(left + i));
    const __m128i r = _mm_loadu_si128(reinterpret_cast<const __m128i*>(right + i));
    const __m128i lo = _mm_unpacklo_epi8(l, r), hi = _mm_unpackhi_epi8(l, r);
    const __m128i* w = reinterpret_cast<const __m128i*>(wp + 2 * i);
    __m128i* o = reinterpret_cast<__m128i*>(d + i);
    _mm_storeu_si128(o + 0, _mm_madd_epi16(_mm_unpacklo_epi8(lo, zero), _mm_loadu_si128(w + 0)));
    _mm_storeu_si128(o + 1, _mm_madd_epi16(_mm_unpackhi_epi8(lo, zero), _mm_loadu_si128(w + 1)));
    _mm_storeu_si128(o + 2, _mm_madd_epi16(_mm_unpacklo_epi8(hi, zero), _mm_loadu_si128(w + 2)));
    _mm_storeu_si128(o + 3, _mm_madd_epi16(_mm_unpackhi_epi8(hi, zero), _mm_loadu_si128(w + 3)));
  }
#endif
  for (; i < n; ++i) d[i] = static_cast<int32_t>(left[i]) * w0[i] + static_cast<int32_t>(right[i]) * w1[i];
}

void vresize_row(const int32_t* s0, const int32_t* s1, uint8_t* d, int b0, int b1, int width) {
  int x = 0;
#if defined(__SSE2__) && !defined(MASKRT_CORE_NO_SIMD)
  {
    const __m128i vb0 = _mm_set1_epi16(static_cast<int16_t>(b0)), vb1 = _mm_set1_epi16(static_cast<int16_t>(b1));
    const __m128i delta = _mm_set1_epi16(2);
    for (; x + 8 <= width; x += 8) {
      const __m128i a = _mm_packs_epi32(_mm_srai_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s0 + x)), 4),
                                        _mm_srai_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s0 + x + 4)), 4));
      const __m128i b = _mm_packs_epi32(_mm_srai_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s1 + x)), 4),
                                        _mm_srai_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s1 + x + 4)), 4));
      __m128i v = _mm_adds_epi16(_mm_mulhi_epi16(a, vb0), _mm_mulhi_epi16(b, vb1));
      v = _mm_srai_epi16(_mm_adds_epi16(v, delta), 2);
      _mm_storel_epi64(reinterpret_cast<__m128i*>(d + x), _mm_packus_epi16(v, v));
    }
  }
#endif
  // The same formula element by element (the row's tail, and non-x86 builds): int16 saturating
  // packs and adds, mulhi(a, b) = (a * b) >> 16.
  for (; x < width; ++x) {
    const int a = sat16(s0[x] >> 4), b = sat16(s1[x] >> 4);
    const int v = sat16(sat16(((a * b0) >> 16) + ((b * b1) >> 16)) + 2) >> 2;
    d[x] = static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
  }
}

// Per-thread buffers of the row kernels.
struct RowScratch {
  std::vector<int32_t> rows;   // two horizontally resized rows
  std::vector<uint8_t> taps;   // gathered left / right pixels (half_rows: one averaged row)
  std::vector<uint16_t> sums;  // half_rows: vertical pair sums
};

// Output rows [y0, y1) of the resize.
void resize_rows(const ImageU8C3& src, const ImageU8C3& dst, const LinearTables& t, int y0, int y1,
                 RowScratch& sc) {
  const int dw = dst.width, width = 3 * dw;
  sc.rows.resize(static_cast<size_t>(width) * 2);
  sc.taps.resize(static_cast<size_t>(width + 4) * 2);
  int32_t* rows[2] = {sc.rows.data(), sc.rows.data() + width};
  uint8_t* left = sc.taps.data();
  uint8_t* right = sc.taps.data() + width + 4;
  int row_id[2] = {-1, -1};
  auto slot_of = [&](int s) { return row_id[0] == s ? 0 : (row_id[1] == s ? 1 : -1); };
  for (int dy = y0; dy < y1; ++dy) {
    const int sy = t.yofs[dy];
    const int r0 = clip_row(sy, src.height), r1 = clip_row(sy + 1, src.height);
    int k0 = slot_of(r0);
    if (k0 < 0) {
      k0 = row_id[0] == r1 ? 1 : 0;
      hresize_row(src.data + src.stride * r0, rows[k0], t, dw, left, right);
      row_id[k0] = r0;
    }
    int k1 = slot_of(r1);
    if (k1 < 0) {
      k1 = 1 - k0;
      hresize_row(src.data + src.stride * r1, rows[k1], t, dw, left, right);
      row_id[k1] = r1;
    }
    vresize_row(rows[k0], rows[k1], dst.data + dst.stride * dy, t.beta[2 * dy], t.beta[2 * dy + 1], width);
  }
}

// Small jobs run on one thread: starting a thread costs more than they take.
constexpr int64_t kMinBytesPerThread = 1 << 16;
constexpr int64_t kMinRowsPerBand = 16;

int threads_for(int64_t bytes, int threads) {
  const int64_t by_size = std::max<int64_t>(1, bytes / kMinBytesPerThread);
  return static_cast<int>(std::min<int64_t>(resolve_threads(threads), by_size));
}

}  // namespace

LetterboxSize letterbox_size(int h, int w, int in_h, int in_w, bool upscale) {
  if (!upscale && h <= in_h && w <= in_w) return {h, w};
  const double s = std::min(static_cast<double>(in_h) / h, static_cast<double>(in_w) / w);
  // NOTE: Python's round(): half to even, as std::nearbyint in the default rounding mode.
  const double nh = std::nearbyint(h * s), nw = std::nearbyint(w * s);
  const int rh = static_cast<int>(std::min<double>(in_h, std::max(1.0, nh)));
  const int rw = static_cast<int>(std::min<double>(in_w, std::max(1.0, nw)));
  return {rh, rw};
}

namespace {

// NOTE: an exact 2x downscale in both directions: every weight is 1024 and the formula above
// reduces to (a + b + c + d + 2) >> 2 exactly (the horizontal sums are 1024 * (a + b); the vertical
// (1024 * (a + b)) >> 4 = 64 * (a + b), mulhi(64 * (a + b), 1024) = a + b) -- also what OpenCV's
// INTER_AREA fast path, which cv2.resize takes for this case, computes. A faster loop, same bytes.
void half_rows(const ImageU8C3& src, const ImageU8C3& dst, int y0, int y1, RowScratch& sc) {
  const int dw = dst.width, n = 6 * dw;  // source bytes used per row (src.width == 2 * dw)
  sc.sums.resize(static_cast<size_t>(n) + 3);
  sc.taps.resize(static_cast<size_t>(n) + 4);
  uint16_t* v = sc.sums.data();
  uint8_t* q = sc.taps.data();
  v[n] = v[n + 1] = v[n + 2] = 0;
  for (int dy = y0; dy < y1; ++dy) {
    const uint8_t* r0 = src.data + src.stride * (2 * dy);
    const uint8_t* r1 = r0 + src.stride;
    // Vertical pair sums, then horizontal: byte j + 3 is the same channel of the next pixel.
    for (int j = 0; j < n; ++j) v[j] = static_cast<uint16_t>(r0[j] + r1[j]);
    for (int j = 0; j < n; ++j) q[j] = static_cast<uint8_t>((v[j] + v[j + 3] + 2) >> 2);
    // Keep the first pixel of each pair: output pixel dx is q[6 dx .. 6 dx + 2].
    uint8_t* d = dst.data + dst.stride * dy;
    int dx = 0;
    for (; dx + 1 < dw; ++dx) std::memcpy(d + 3 * dx, q + 6 * dx, 4);  // 4th byte rewritten next
    for (; dx < dw; ++dx) std::memcpy(d + 3 * dx, q + 6 * dx, 3);
  }
}

// src resized to dst's size, rows [y0, y1) of dst.
class Resizer {
 public:
  Resizer(const ImageU8C3& src, int dh, int dw) : src_(src) {
    if (dh == src.height && dw == src.width)
      mode_ = kCopy;  // cv::resize copies when the sizes are equal
    else if (src.height == 2 * dh && src.width == 2 * dw)
      mode_ = kHalf;
    else
      tables_ = make_tables(src.height, src.width, dh, dw);
  }
  void rows(const ImageU8C3& dst, int y0, int y1, RowScratch& sc) const {
    if (mode_ == kCopy) {
      for (int y = y0; y < y1; ++y)
        std::memcpy(dst.data + dst.stride * y, src_.data + src_.stride * y, static_cast<size_t>(3 * dst.width));
    } else if (mode_ == kHalf) {
      half_rows(src_, dst, y0, y1, sc);
    } else {
      resize_rows(src_, dst, tables_, y0, y1, sc);
    }
  }

 private:
  enum Mode { kCopy, kHalf, kLinear };
  const ImageU8C3& src_;
  Mode mode_ = kLinear;
  LinearTables tables_;
};

}  // namespace

void resize_linear_u8c3(const ImageU8C3& src, const ImageU8C3& dst, int threads) {
  const Resizer resizer(src, dst.height, dst.width);
  const int nt = threads_for(int64_t{3} * dst.width * dst.height, threads);
  const Bands bands(dst.height, int64_t{4} * nt, kMinRowsPerBand);
  std::vector<RowScratch> scratch(static_cast<size_t>(num_workers(bands.count, nt)));
  parallel_tasks(bands.count, nt, [&](int64_t b, int w) {
    resizer.rows(dst, static_cast<int>(bands.begin(b)), static_cast<int>(bands.begin(b + 1)),
                 scratch[static_cast<size_t>(w)]);
  });
}

LetterboxSize letterbox_u8c3(const ImageU8C3& src, const ImageU8C3& dst, bool upscale, uint8_t pad_value,
                             int threads) {
  const LetterboxSize sz = letterbox_size(src.height, src.width, dst.height, dst.width, upscale);
  const Resizer resizer(src, sz.height, sz.width);
  const ImageU8C3 picture{dst.data, sz.height, sz.width, dst.stride};
  const size_t row_bytes = static_cast<size_t>(3 * dst.width), pic_bytes = static_cast<size_t>(3 * sz.width);

  const int nt = threads_for(int64_t{3} * dst.width * dst.height, threads);
  const Bands bands(dst.height, int64_t{4} * nt, kMinRowsPerBand);
  std::vector<RowScratch> scratch(static_cast<size_t>(num_workers(bands.count, nt)));
  parallel_tasks(bands.count, nt, [&](int64_t b, int w) {
    const int y0 = static_cast<int>(bands.begin(b)), y1 = static_cast<int>(bands.begin(b + 1));
    const int p1 = std::min(y1, sz.height);  // rows [y0, p1) hold picture
    if (y0 < p1) {
      resizer.rows(picture, y0, p1, scratch[static_cast<size_t>(w)]);
      if (pic_bytes < row_bytes)
        for (int y = y0; y < p1; ++y) std::memset(dst.data + dst.stride * y + pic_bytes, pad_value, row_bytes - pic_bytes);
    }
    for (int y = std::max(y0, sz.height); y < y1; ++y) std::memset(dst.data + dst.stride * y, pad_value, row_bytes);
  });
  return sz;
}

}  // namespace core
}  // namespace maskrt
