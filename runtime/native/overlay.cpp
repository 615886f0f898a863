#include "overlay.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "common.h"

namespace maskrt {
namespace core {

namespace {

inline void blend(uint8_t* px, const uint8_t* c, int a, int ia) {
  // NOTE: integer blend, rounded half up: (p * (256 - a) + c * a + 128) >> 8.
  px[0] = static_cast<uint8_t>((px[0] * ia + c[0] * a + 128) >> 8);
  px[1] = static_cast<uint8_t>((px[1] * ia + c[1] * a + 128) >> 8);
  px[2] = static_cast<uint8_t>((px[2] * ia + c[2] * a + 128) >> 8);
}

constexpr int64_t kMinRowsPerBand = 8;

}  // namespace

void overlay_bitmaps(const ImageU8C3& image, const uint8_t* bitmaps, int64_t k, const uint8_t* colors, int alpha256,
                     int threads) {
  if (k == 0) return;
  const int64_t h = image.height, w = image.width, plane = h * w;
  const int a = alpha256, ia = 256 - alpha256;
  const int nt = resolve_threads(threads);
  const Bands bands(h, int64_t{4} * nt, kMinRowsPerBand);
  std::vector<std::vector<uint8_t>> claimed(static_cast<size_t>(num_workers(bands.count, nt)));
  parallel_tasks(bands.count, nt, [&](int64_t b, int wk) {
    std::vector<uint8_t>& done = claimed[static_cast<size_t>(wk)];
    for (int64_t y = bands.begin(b); y < bands.begin(b + 1); ++y) {
      done.assign(static_cast<size_t>(w), 0);
      uint8_t* row = image.data + image.stride * y;
      for (int64_t i = 0; i < k; ++i) {
        const uint8_t* m = bitmaps + plane * i + w * y;
        const uint8_t* c = colors + 3 * i;
        int64_t x = 0;
        while (x < w) {
          // Skip 8 uncovered pixels at a time: most of a bitmap is background.
          if (x + 8 <= w) {
            uint64_t word;
            std::memcpy(&word, m + x, sizeof(word));
            if (word == 0) {
              x += 8;
              continue;
            }
          }
          const int64_t end = std::min(x + 8, w);
          for (; x < end; ++x) {
            // NOTE: first covering instance wins (blended once per pixel).
            if (m[x] && !done[static_cast<size_t>(x)]) {
              done[static_cast<size_t>(x)] = 1;
              blend(row + 3 * x, c, a, ia);
            }
          }
        }
      }
    }
  });
}

template <typename Label>
void overlay_label_map(const ImageU8C3& image, const Label* label_map, int64_t k, const uint8_t* colors, int alpha256,
                       int threads) {
  const int64_t h = image.height, w = image.width;
  const int a = alpha256, ia = 256 - alpha256;
  const int nt = resolve_threads(threads);
  const Bands bands(h, int64_t{4} * nt, kMinRowsPerBand);
  parallel_tasks(bands.count, nt, [&](int64_t b, int) {
    for (int64_t y = bands.begin(b); y < bands.begin(b + 1); ++y) {
      const Label* lab = label_map + w * y;
      uint8_t* row = image.data + image.stride * y;
      for (int64_t x = 0; x < w; ++x) {
        const int64_t l = static_cast<int64_t>(lab[x]);
        if (l > 0 && l <= k) blend(row + 3 * x, colors + 3 * (l - 1), a, ia);
      }
    }
  });
}

template void overlay_label_map<uint16_t>(const ImageU8C3&, const uint16_t*, int64_t, const uint8_t*, int, int);
template void overlay_label_map<int32_t>(const ImageU8C3&, const int32_t*, int64_t, const uint8_t*, int, int);

namespace {

// floor/ceil of a finite float, clamped far outside any image (so the int64 math cannot overflow
// and an edge beyond the clamp is invisible either way).
inline int64_t clamped(double v) { return static_cast<int64_t>(std::min(std::max(v, -1e12), 1e12)); }

void fill_rect(const ImageU8C3& image, int64_t x0, int64_t y0, int64_t x1, int64_t y1, const uint8_t* c) {
  // Inclusive rectangle, clipped to the image.
  x0 = std::max<int64_t>(x0, 0);
  y0 = std::max<int64_t>(y0, 0);
  x1 = std::min<int64_t>(x1, image.width - 1);
  y1 = std::min<int64_t>(y1, image.height - 1);
  for (int64_t y = y0; y <= y1; ++y) {
    uint8_t* row = image.data + image.stride * y;
    for (int64_t x = x0; x <= x1; ++x) {
      row[3 * x + 0] = c[0];
      row[3 * x + 1] = c[1];
      row[3 * x + 2] = c[2];
    }
  }
}

}  // namespace

void draw_boxes(const ImageU8C3& image, const float* boxes, int64_t k, const uint8_t* colors, int thickness) {
  const int64_t t = thickness;
  for (int64_t i = k - 1; i >= 0; --i) {  // NOTE: last first: the first instance's outline ends on top
    const float* b = boxes + 4 * i;
    // NOTE: the pixels a box covers: floor(x1) .. ceil(x2) - 1 (at least one pixel).
    const int64_t x0 = clamped(std::floor(static_cast<double>(b[0])));
    const int64_t y0 = clamped(std::floor(static_cast<double>(b[1])));
    const int64_t x1 = std::max(x0, clamped(std::ceil(static_cast<double>(b[2]))) - 1);
    const int64_t y1 = std::max(y0, clamped(std::ceil(static_cast<double>(b[3]))) - 1);
    const uint8_t* c = colors + 3 * i;
    fill_rect(image, x0, y0, x1, std::min(y1, y0 + t - 1), c);  // top
    fill_rect(image, x0, std::max(y0, y1 - t + 1), x1, y1, c);  // bottom
    fill_rect(image, x0, y0, std::min(x1, x0 + t - 1), y1, c);  // left
    fill_rect(image, std::max(x0, x1 - t + 1), y0, x1, y1, c);  // right
  }
}

}  // namespace core
}  // namespace maskrt
