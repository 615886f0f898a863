// Multi-level RoIAlign, CPU kernel: the CPU twin of the CUDA kernel (pyramid_roi_align.cu). All
// arithmetic comes from pyramid_roi_align_math.h; this file only organises the work.
//
// Per RoI the inside samples (four offsets and four weights each, per bin) are built once from
// the separable per-axis taps and reused by every channel. Samples outside the map are left out:
// they add exactly +0 in torchvision, so the result is bit-identical. Three paths, chosen per RoI,
// give the same bits (each channel sees the same operations in the same order):
//   patch:  the RoI's patch of 16 channels is copied channels-last and pooled SIMD across
//           channels (the usual case: a few hundred pixels per RoI and level by FPN's design);
//   direct: the sample table reads the NCHW planes, 4 channels at a time (patches much larger
//           than the samples need, e.g. huge RoIs mostly outside the map);
//   stream: samples computed bin by bin, for tables too large to hold (huge sampling ratios).
// NOTE: this file is compiled with -ffp-contract=off (CMakeLists.txt) so that no compiler turns
// w * v + acc into an FMA: the order and rounding of every float operation is torchvision's.
#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdint>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "pyramid_roi_align/pyramid_roi_align_kernel.h"
#include "pyramid_roi_align/pyramid_roi_align_math.h"

namespace maskrt {
namespace {

constexpr int kBlock = 4;    // channels pooled together by the direct path
constexpr int kLanes = 16;   // channels per block of the channels-last patch path
// Patch path limits: the block buffer ([patch pixels, kLanes] floats) stays in L1/L2, and the
// transposition (one read and write per patch pixel and channel) must not cost more than the
// pooling it speeds up (four reads per sample and channel).
constexpr int64_t kMaxPatchPixels = 4096;
constexpr int64_t kPatchPixelsPerSample = 8;
// Largest sample table (32 bytes a sample) per RoI; beyond it the stream path.
constexpr int64_t kMaxTableSamples = int64_t{1} << 16;
// More threads than this only add start-up cost (and may fail to start).
constexpr int kMaxThreads = 256;

// The rectangle of feature pixels a RoI's samples read (inclusive; empty when y1 < y0).
struct Patch {
  int y0, y1, x0, x1;
  int64_t pixels() const { return y1 < y0 || x1 < x0 ? 0 : int64_t{y1 - y0 + 1} * (x1 - x0 + 1); }
};

// Scratch of one worker, reused across its RoIs.
struct RoiTable {
  std::vector<AxisTap> ty, tx;         // taps of the inside samples of each bin, bins concatenated
  std::vector<int> ty_begin, tx_begin; // [P + 1]: bin p's taps are [begin[p], begin[p + 1])
  std::vector<BilinearSample> samples; // inside samples of each output bin, row-major bins
  std::vector<int> bin_begin;          // [P * P + 1]
  std::vector<float> patch_storage;    // channels-last block buffer (patch path)
  std::vector<float> acc;              // per-channel sums of one bin (stream path)
};

// Taps of the inside samples of every bin along one axis.
void build_axis(const RoiAxis& a, int bins, std::vector<AxisTap>& taps, std::vector<int>& begin) {
  taps.clear();
  begin.resize(static_cast<size_t>(bins) + 1);
  for (int p = 0; p < bins; ++p) {
    begin[p] = static_cast<int>(taps.size());
    int first, last;
    inside_range(a, p, &first, &last);
    for (int i = first; i < last; ++i) taps.push_back(axis_tap(sample_coord(a, p, i), a.length));
  }
  begin[bins] = static_cast<int>(taps.size());
}

Patch taps_patch(const RoiTable& t) {
  Patch q{0, -1, 0, -1};
  if (t.ty.empty() || t.tx.empty()) return q;
  q.y0 = q.x0 = INT_MAX;
  q.y1 = q.x1 = INT_MIN;
  for (const AxisTap& a : t.ty) q.y0 = std::min(q.y0, a.lo), q.y1 = std::max(q.y1, a.hi);
  for (const AxisTap& a : t.tx) q.x0 = std::min(q.x0, a.lo), q.x1 = std::max(q.x1, a.hi);
  return q;
}

// The bins' sample tables from the axis taps: for bin (ph, pw) the product of its inside y and x
// taps, y outer and x inner, which is torchvision's accumulation order. Offsets are
// (y - y0) * width + (x - x0): into the feature plane (origin 0, width W) or into the patch.
void build_samples(RoiTable& t, int bins, int y0, int x0, int width) {
  t.samples.clear();
  t.bin_begin.resize(static_cast<size_t>(bins) * bins + 1);
  for (int ph = 0; ph < bins; ++ph) {
    for (int pw = 0; pw < bins; ++pw) {
      t.bin_begin[ph * bins + pw] = static_cast<int>(t.samples.size());
      for (int iy = t.ty_begin[ph]; iy < t.ty_begin[ph + 1]; ++iy) {
        AxisTap ty = t.ty[iy];
        ty.lo -= y0, ty.hi -= y0;
        for (int ix = t.tx_begin[pw]; ix < t.tx_begin[pw + 1]; ++ix) {
          AxisTap tx = t.tx[ix];
          tx.lo -= x0, tx.hi -= x0;
          t.samples.push_back(bilinear_sample(ty, tx, width));
        }
      }
    }
  }
  t.bin_begin[static_cast<size_t>(bins) * bins] = static_cast<int>(t.samples.size());
}

inline void prefetch(const void* ptr) {
#if defined(__GNUC__) || defined(__clang__)
  __builtin_prefetch(ptr, 0, 3);
#else
  (void)ptr;
#endif
}

// Prefetches the patch of channels [c0, c1) of one image (float32 [C, H, W], plane = H * W).
// The feature reads are short row segments in planes far apart, which the hardware prefetchers
// do not anticipate.
void prefetch_patch(const float* image, int64_t plane_size, int width, const Patch& q, int c0, int c1) {
  if (q.pixels() == 0) return;
  constexpr int kLine = 64 / sizeof(float);
  for (int c = c0; c < c1; ++c) {
    const float* plane = image + c * plane_size;
    for (int y = q.y0; y <= q.y1; ++y) {
      const float* row = plane + static_cast<int64_t>(y) * width;
      for (int x = q.x0; x <= q.x1; x += kLine) prefetch(row + x);
      prefetch(row + q.x1);  // the last line when the segment straddles one more
    }
  }
}

// ---- direct path: samples read the NCHW planes.
// plane: float32 [CB, plane_size] (first channel of the block); out: float32 [CB, P * P].
template <int CB>
void pool_block_direct(const float* plane, int64_t plane_size, const RoiTable& t, int num_bins, float count,
                       float* out) {
  const BilinearSample* s = t.samples.data();
  const int* bb = t.bin_begin.data();
  for (int k = 0; k < num_bins; ++k) {
    float acc[CB];
    for (int c = 0; c < CB; ++c) acc[c] = 0.0f;
    for (int j = bb[k]; j < bb[k + 1]; ++j) {
      const BilinearSample& q = s[j];
      for (int c = 0; c < CB; ++c) {
        const float* pl = plane + c * plane_size;
        acc[c] += bilinear_value(q.w, pl[q.off[0]], pl[q.off[1]], pl[q.off[2]], pl[q.off[3]]);
      }
    }
    for (int c = 0; c < CB; ++c) out[c * num_bins + k] = acc[c] / count;
  }
}

// ---- patch path: the RoI's patch of kLanes channels is first copied channels-last, so that each
// sample's four taps are four contiguous kLanes-vectors and the pooling runs SIMD across channels
// (the same operations per channel, hence the same bits as the direct path).
// image: float32 [C, H, W] of the RoI's image; fills lanes [0, nc) of buf [patch pixels, kLanes]
// with channels [c0, c0 + nc). Lanes past nc keep stale values: they are pooled and discarded.
void fill_patch(const float* image, int64_t plane_size, int width, const Patch& q, int c0, int nc, float* buf) {
  const int pw = q.x1 - q.x0 + 1;
  const int ph = q.y1 - q.y0 + 1;
  const int64_t first = static_cast<int64_t>(q.y0) * width + q.x0;
  int i = 0;
  // Four channels at a time: each pixel's four values are one 16-byte store.
  for (; i + 4 <= nc; i += 4) {
    const float* plane = image + static_cast<int64_t>(c0 + i) * plane_size + first;
    for (int y = 0; y < ph; ++y) {
      const float* r0 = plane + static_cast<int64_t>(y) * width;
      const float* r1 = r0 + plane_size;
      const float* r2 = r1 + plane_size;
      const float* r3 = r2 + plane_size;
      float* dst = buf + static_cast<int64_t>(y) * pw * kLanes + i;
      for (int x = 0; x < pw; ++x) {
        dst[x * kLanes + 0] = r0[x];
        dst[x * kLanes + 1] = r1[x];
        dst[x * kLanes + 2] = r2[x];
        dst[x * kLanes + 3] = r3[x];
      }
    }
  }
  for (; i < nc; ++i) {
    const float* plane = image + static_cast<int64_t>(c0 + i) * plane_size + first;
    for (int y = 0; y < ph; ++y) {
      const float* row = plane + static_cast<int64_t>(y) * width;
      float* dst = buf + static_cast<int64_t>(y) * pw * kLanes + i;
      for (int x = 0; x < pw; ++x) dst[x * kLanes] = row[x];
    }
  }
}

// buf: float32 [patch pixels, kLanes]; out: float32 [nc, P * P] (channel stride num_bins).
void pool_block_patch(const float* buf, const RoiTable& t, int num_bins, float count, int nc, float* out) {
  const BilinearSample* s = t.samples.data();
  const int* bb = t.bin_begin.data();
  for (int k = 0; k < num_bins; ++k) {
    float acc[kLanes];
    for (int i = 0; i < kLanes; ++i) acc[i] = 0.0f;
    for (int j = bb[k]; j < bb[k + 1]; ++j) {
      const BilinearSample& q = s[j];
      const float* b0 = buf + q.off[0] * kLanes;
      const float* b1 = buf + q.off[1] * kLanes;
      const float* b2 = buf + q.off[2] * kLanes;
      const float* b3 = buf + q.off[3] * kLanes;
      const float w0 = q.w[0], w1 = q.w[1], w2 = q.w[2], w3 = q.w[3];
      // bilinear_value(q.w, ...) per lane, spelled out so that it vectorises across lanes.
      for (int i = 0; i < kLanes; ++i) acc[i] += w0 * b0[i] + w1 * b1[i] + w2 * b2[i] + w3 * b3[i];
    }
    for (int i = 0; i < nc; ++i) out[i * num_bins + k] = acc[i] / count;
  }
}

// ---- stream path: no table; every bin walks its samples for all channels at once.
// image: float32 [C, H, W]; acc: scratch [C]; out: float32 [C, P * P].
void pool_roi_stream(const float* image, int64_t plane_size, int width, int channels, const RoiTable& t, int bins,
                     float count, std::vector<float>& acc, float* out) {
  acc.resize(static_cast<size_t>(channels));
  const int num_bins = bins * bins;
  for (int ph = 0; ph < bins; ++ph) {
    for (int pw = 0; pw < bins; ++pw) {
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int iy = t.ty_begin[ph]; iy < t.ty_begin[ph + 1]; ++iy) {
        for (int ix = t.tx_begin[pw]; ix < t.tx_begin[pw + 1]; ++ix) {
          const BilinearSample q = bilinear_sample(t.ty[iy], t.tx[ix], width);
          const float* pl = image;
          for (int c = 0; c < channels; ++c, pl += plane_size)
            acc[c] += bilinear_value(q.w, pl[q.off[0]], pl[q.off[1]], pl[q.off[2]], pl[q.off[3]]);
        }
      }
      const int k = ph * bins + pw;
      for (int c = 0; c < channels; ++c) out[static_cast<int64_t>(c) * num_bins + k] = acc[c] / count;
    }
  }
}

// One RoI of image b: box = its (x1, y1, x2, y2); out: float32 [C, P, P].
void pool_roi(const PyramidRoiAlignParams& p, const float* box, int b, const float* const* features, float* out,
              RoiTable& t) {
  const int P = p.output_size;
  const int num_bins = P * P;
  const int64_t out_size = static_cast<int64_t>(p.channels) * num_bins;
  const int level = fpn_level(box[0], box[1], box[2], box[3], p);
  if (level < 0) {
    std::memset(out, 0, static_cast<size_t>(out_size) * sizeof(float));
    return;
  }
  const int H = p.heights[level], W = p.widths[level], stride = p.strides[level];
  const RoiAxis ay = roi_axis(box[1], box[3], stride, p.aligned, P, p.sampling_ratio, H);
  const RoiAxis ax = roi_axis(box[0], box[2], stride, p.aligned, P, p.sampling_ratio, W);
  build_axis(ay, P, t.ty, t.ty_begin);
  build_axis(ax, P, t.tx, t.tx_begin);
  const float count = bin_count(ay.grid, ax.grid);
  const int64_t plane_size = static_cast<int64_t>(H) * W;
  const float* image = features[level] + static_cast<int64_t>(b) * p.channels * plane_size;
  const Patch patch = taps_patch(t);
  const int64_t num_samples = static_cast<int64_t>(t.ty.size()) * static_cast<int64_t>(t.tx.size());

  if (patch.pixels() == 0) {  // no sample inside the map: every bin is 0 / count
    std::memset(out, 0, static_cast<size_t>(out_size) * sizeof(float));
    return;
  }
  if (num_samples > kMaxTableSamples) {
    pool_roi_stream(image, plane_size, W, p.channels, t, P, count, t.acc, out);
    return;
  }
  if (patch.pixels() <= kMaxPatchPixels && patch.pixels() <= kPatchPixelsPerSample * num_samples) {
    build_samples(t, P, patch.y0, patch.x0, patch.x1 - patch.x0 + 1);
    const size_t floats = static_cast<size_t>(patch.pixels()) * kLanes;
    if (t.patch_storage.size() < floats + 16) t.patch_storage.resize(floats + 16);
    // 64-byte aligned so that each tap's kLanes floats are one cache line.
    float* buf = t.patch_storage.data();
    buf += (16 - (reinterpret_cast<uintptr_t>(buf) / sizeof(float)) % 16) % 16;
    prefetch_patch(image, plane_size, W, patch, 0, std::min(kLanes, p.channels));
    for (int c = 0; c < p.channels; c += kLanes) {
      const int nc = std::min(kLanes, p.channels - c);
      prefetch_patch(image, plane_size, W, patch, c + kLanes, std::min(c + 2 * kLanes, p.channels));
      fill_patch(image, plane_size, W, patch, c, nc, buf);
      pool_block_patch(buf, t, num_bins, count, nc, out + static_cast<int64_t>(c) * num_bins);
    }
    return;
  }

  build_samples(t, P, 0, 0, W);
  prefetch_patch(image, plane_size, W, patch, 0, std::min(kBlock, p.channels));
  int c = 0;
  for (; c + kBlock <= p.channels; c += kBlock) {
    prefetch_patch(image, plane_size, W, patch, c + kBlock, std::min(c + 2 * kBlock, p.channels));
    pool_block_direct<kBlock>(image + c * plane_size, plane_size, t, num_bins, count,
                              out + static_cast<int64_t>(c) * num_bins);
  }
  for (; c < p.channels; ++c)
    pool_block_direct<1>(image + c * plane_size, plane_size, t, num_bins, count,
                         out + static_cast<int64_t>(c) * num_bins);
}

}  // namespace

void pyramid_roi_align_cpu(const PyramidRoiAlignParams& p, const float* rois, const float* const* features,
                           float* out, int threads) {
  const int64_t total = static_cast<int64_t>(p.batch) * p.num_rois;
  if (total <= 0 || p.channels <= 0 || p.output_size <= 0) return;
  const int64_t out_per_roi = static_cast<int64_t>(p.channels) * p.output_size * p.output_size;

  if (threads <= 0) threads = static_cast<int>(std::thread::hardware_concurrency());
  if (threads <= 0) threads = 1;
  if (threads > kMaxThreads) threads = kMaxThreads;
  if (threads > total) threads = static_cast<int>(total);

  // Work queue over (batch * roi) in small chunks: RoIs differ in cost (adaptive grids, samples
  // outside the map), so a shared counter balances better than static slices. Each output
  // element is computed by exactly one thread with the same arithmetic, so the result does not
  // depend on the thread count.
  constexpr int64_t kChunk = 4;
  std::atomic<int64_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto worker = [&]() {
    try {
      RoiTable table;
      for (;;) {
        const int64_t begin = next.fetch_add(kChunk);
        if (begin >= total) break;
        const int64_t end = std::min(begin + kChunk, total);
        for (int64_t i = begin; i < end; ++i) {
          const int b = static_cast<int>(i / p.num_rois);
          pool_roi(p, rois + 4 * i, b, features, out + i * out_per_roi, table);
        }
      }
    } catch (...) {  // e.g. std::bad_alloc: hand it to the caller instead of std::terminate
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      next.store(total);
    }
  };

  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(threads) - 1);
  try {
    for (int i = 1; i < threads; ++i) pool.emplace_back(worker);
  } catch (...) {
    next.store(total);
    for (auto& th : pool) th.join();
    throw;
  }
  worker();
  for (auto& th : pool) th.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace maskrt
