#include "rle.h"

#include <cstring>

#include "common.h"

namespace maskrt {
namespace core {

namespace {

// Index of the first nonzero byte of p[0, n), or n.
int64_t first_nonzero(const uint8_t* p, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, sizeof(w));
    if (w) break;
  }
  for (; i < n; ++i)
    if (p[i]) return i;
  return n;
}

// Index of the last nonzero byte of p[0, n), or -1.
int64_t last_nonzero(const uint8_t* p, int64_t n) {
  int64_t i = n;
  for (; i >= 8; i -= 8) {
    uint64_t w;
    std::memcpy(&w, p + i - 8, sizeof(w));
    if (w) break;
  }
  for (; i > 0; --i)
    if (p[i - 1]) return i - 1;
  return -1;
}

}  // namespace

namespace {

constexpr uint64_t kLow7 = 0x7F7F7F7F7F7F7F7FULL;
constexpr uint64_t kHigh = 0x8080808080808080ULL;

// Bit 7 of each byte of the result is set where that byte of w is nonzero (no carries between
// bytes: (b & 0x7F) + 0x7F <= 0xFE).
inline uint64_t nonzero_bytes(uint64_t w) { return (w | ((w & kLow7) + kLow7)) & kHigh; }

inline uint64_t load8(const uint8_t* p) {
  uint64_t w;
  std::memcpy(&w, p, sizeof(w));
  return w;
}

// Index of the lowest byte of w with bit 7 set, as a memory offset (little- or big-endian).
inline int first_marked_byte(uint64_t w) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  return __builtin_clzll(w) >> 3;
#else
  return __builtin_ctzll(w) >> 3;
#endif
}

inline uint64_t clear_byte(uint64_t w, int byte) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  return w & ~(uint64_t{0x80} << (8 * (7 - byte)));
#else
  return w & ~(uint64_t{0x80} << (8 * byte));
#endif
}

}  // namespace

void count_runs(RunCounter& rc, int64_t height, int64_t width, int64_t y0, int64_t y1, int64_t x0, int64_t x1,
                const uint8_t* base, int64_t stride, RunScratch& sc) {
  if (y1 <= y0 || x1 <= x0) {
    rc.push(0, static_cast<uint64_t>(height * width));
    return;
  }
  const int64_t n = y1 - y0, w = x1 - x0;
  sc.first.resize(static_cast<size_t>(w));
  for (int64_t j = 0; j < w; ++j) sc.first[static_cast<size_t>(j)] = base[j] != 0;
  // Transitions (row r, column j): pixel (r, j) differs from (r - 1, j), in row-major order.
  sc.col.clear();
  sc.row.clear();
  for (int64_t r = 1; r < n; ++r) {
    const uint8_t* cur = base + r * stride;
    const uint8_t* prev = cur - stride;
    int64_t j = 0;
    for (; j + 8 <= w; j += 8) {
      uint64_t d = nonzero_bytes(load8(cur + j)) ^ nonzero_bytes(load8(prev + j));
      while (d) {
        const int b = first_marked_byte(d);
        sc.col.push_back(static_cast<uint32_t>(j + b));
        sc.row.push_back(static_cast<uint32_t>(r));
        d = clear_byte(d, b);
      }
    }
    for (; j < w; ++j)
      if ((cur[j] != 0) != (prev[j] != 0)) {
        sc.col.push_back(static_cast<uint32_t>(j));
        sc.row.push_back(static_cast<uint32_t>(r));
      }
  }
  // Counting sort by column (stable: rows stay ascending within a column).
  sc.start.assign(static_cast<size_t>(w) + 1, 0);
  for (uint32_t c : sc.col) ++sc.start[c + 1];
  for (int64_t j = 0; j < w; ++j) sc.start[static_cast<size_t>(j) + 1] += sc.start[static_cast<size_t>(j)];
  sc.order.resize(sc.col.size());
  sc.fill.assign(sc.start.begin(), sc.start.end() - 1);
  for (size_t t = 0; t < sc.col.size(); ++t) sc.order[sc.fill[sc.col[t]]++] = sc.row[t];
  rc.push(0, static_cast<uint64_t>(x0 * height));
  for (int64_t j = 0; j < w; ++j) {
    rc.push(0, static_cast<uint64_t>(y0));
    uint8_t v = sc.first[static_cast<size_t>(j)];
    uint32_t pos = 0;
    for (uint32_t t = sc.start[static_cast<size_t>(j)]; t < sc.start[static_cast<size_t>(j) + 1]; ++t) {
      const uint32_t r = sc.order[t];
      rc.push(v, r - pos);
      pos = r;
      v ^= 1;
    }
    rc.push(v, static_cast<uint64_t>(n - pos));
    rc.push(0, static_cast<uint64_t>(height - y1));
  }
  rc.push(0, static_cast<uint64_t>((width - x1) * height));
}

std::string rle_counts_to_string(const std::vector<uint32_t>& counts) {
  std::string s;
  s.reserve(counts.size() * 2 + 1);
  for (size_t i = 0; i < counts.size(); ++i) {
    int64_t x = counts[i];
    // NOTE: differences to the count two back only from i = 3 on (pycocotools: `if (i > 2)`).
    if (i > 2) x -= counts[i - 2];
    bool more = true;
    while (more) {
      char c = static_cast<char>(x & 0x1f);
      x >>= 5;  // arithmetic shift: a negative difference ends with x == -1
      more = (c & 0x10) ? x != -1 : x != 0;
      if (more) c = static_cast<char>(c | 0x20);
      s.push_back(static_cast<char>(c + 48));
    }
  }
  return s;
}

std::vector<std::string> rle_encode(const uint8_t* bitmaps, int64_t k, int64_t height, int64_t width, int threads) {
  std::vector<std::string> out(static_cast<size_t>(k));
  const int64_t plane = height * width;
  // NOTE: small planes are not worth a thread each.
  const int nt = plane * k < (int64_t{1} << 18) ? 1 : threads;
  std::vector<RunScratch> scratch(static_cast<size_t>(num_workers(k, nt)));
  parallel_tasks(k, nt, [&](int64_t i, int w) {
    const uint8_t* p = bitmaps + plane * i;
    // The bounding rectangle of the foreground: rows and columns outside it are counted as runs
    // of 0 without reading them column by column (a column walk strides a whole row per pixel).
    int64_t y0 = height, y1 = 0, x0 = width, x1 = 0;
    for (int64_t y = 0; y < height; ++y) {
      const uint8_t* row = p + y * width;
      const int64_t f = first_nonzero(row, width);
      if (f == width) continue;
      const int64_t l = last_nonzero(row, width);
      if (y < y0) y0 = y;
      y1 = y + 1;
      if (f < x0) x0 = f;
      if (l + 1 > x1) x1 = l + 1;
    }
    RunCounter rc;
    RunScratch& sc = scratch[static_cast<size_t>(w)];
    count_runs(rc, height, width, y0, y1, x0, x1, p + y0 * width + x0, width, sc);
    out[static_cast<size_t>(i)] = rle_counts_to_string(rc.finish());
  });
  return out;
}

}  // namespace core
}  // namespace maskrt
