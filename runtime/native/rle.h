// COCO run-length encoding (pycocotools' maskApi.c: rleEncode + rleToString).
//
// A mask of H x W is read in column-major (Fortran) order; the counts alternate runs of 0 and 1
// starting with 0 (a first count of 0 when the first pixel is set), and the last run is always
// written. The string form ("compressed RLE") stores count i as count i minus count i - 2 for
// i > 2 (NOTE: not i >= 2, pycocotools' quirk), in 5-bit groups little end first, each group
// plus 48 as an ASCII character, bit 0x20 marking "more groups follow" (a signed LEB128 variant).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace maskrt {
namespace core {

// Appends runs to a count list in pycocotools' order.
class RunCounter {
 public:
  // n more pixels of value v (0 or 1).
  void push(uint8_t v, uint64_t n) {
    if (n == 0) return;
    if (v != value_) {
      counts_.push_back(static_cast<uint32_t>(run_));
      run_ = 0;
      value_ = v;
    }
    run_ += n;
  }
  // The final list of counts (the last run included).
  std::vector<uint32_t>& finish() {
    counts_.push_back(static_cast<uint32_t>(run_));
    return counts_;
  }

 private:
  std::vector<uint32_t> counts_;
  uint64_t run_ = 0;
  uint8_t value_ = 0;
};

// pycocotools' rleToString.
std::string rle_counts_to_string(const std::vector<uint32_t>& counts);

// Reusable buffers of count_runs (one per thread).
struct RunScratch {
  std::vector<uint8_t> first;                       // value of each column's first pixel
  std::vector<uint32_t> col, row;                   // transitions, row-major order
  std::vector<uint32_t> start, fill, order;         // counting sort: rows of transitions by column
};

// Runs of a mask whose foreground lies inside the rectangle rows [y0, y1) x columns [x0, x1)
// (everything outside it is 0); pixel (y, x) of the rectangle is base[(y - y0) * stride + (x - x0)],
// any nonzero byte being foreground.
//
// The rectangle is read row by row (not down its columns, which would stride a whole row per
// pixel): each row is compared with the one above 8 bytes at a time, the few places where a
// column changes value are collected, sorted by column (counting sort, rows stay ascending), and
// each column's runs follow from its first value and its change rows.
void count_runs(RunCounter& rc, int64_t height, int64_t width, int64_t y0, int64_t y1, int64_t x0, int64_t x1,
                const uint8_t* base, int64_t stride, RunScratch& scratch);

// Compressed RLE strings of K bitmaps uint8 [K, H, W] (C order; any nonzero byte is foreground).
// H * W must be < 2^32.
std::vector<std::string> rle_encode(const uint8_t* bitmaps, int64_t k, int64_t height, int64_t width, int threads);

}  // namespace core
}  // namespace maskrt
