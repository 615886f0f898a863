// Multi-level RoIAlign, CUDA kernel: one thread per output element (b, r, c, ph, pw). All
// arithmetic comes from pyramid_roi_align_math.h (shared with the CPU twin): sample coordinates,
// taps and weights are computed with the same float32 operations in the same order (the math
// header uses __fmul_rn / __fadd_rn on the device so nvcc never contracts them into FMAs), so the
// fp32 kernel matches the CPU kernel bit for bit except where the device's log2f (1 ulp) moves a
// RoI within ~1e-6 of a level boundary (see pyramid_roi_align_math.h).
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "pyramid_roi_align/pyramid_roi_align_cuda.h"
#include "pyramid_roi_align/pyramid_roi_align_math.h"

namespace maskrt {
namespace {

// The L feature pointers, passed by value as a kernel argument.
template <typename T>
struct FeaturePointers {
  const T* level[kMaxPyramidLevels];
};

__device__ __forceinline__ float load_as_float(const float* p) { return __ldg(p); }
__device__ __forceinline__ float load_as_float(const __half* p) { return __half2float(__ldg(p)); }

__device__ __forceinline__ void store_from_float(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_from_float(__half* p, float v) { *p = __float2half_rn(v); }

// rois: float32 [B, R, 4]; features.level[l]: T [B, C, H_l, W_l]; out: T [B, R, C, P, P].
// Threads walk the output in memory order (pw fastest), so a warp reads neighbouring samples of
// one channel plane and writes contiguous outputs. Accumulation is float32 for both T.
template <typename T>
__global__ void pyramid_roi_align_kernel(const PyramidRoiAlignParams p, const float* __restrict__ rois,
                                         const FeaturePointers<T> features, T* __restrict__ out, int64_t total) {
  const int P = p.output_size;
  const int64_t bins = static_cast<int64_t>(P) * P;
  const int64_t per_roi = bins * p.channels;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += step) {
    const int pw = static_cast<int>(idx % P);
    const int ph = static_cast<int>((idx / P) % P);
    const int c = static_cast<int>((idx / bins) % p.channels);
    const int64_t roi = idx / per_roi;  // b * R + r
    const int b = static_cast<int>(roi / p.num_rois);
    const float* box = rois + 4 * roi;
    const float x1 = box[0], y1 = box[1], x2 = box[2], y2 = box[3];

    const int level = fpn_level(x1, y1, x2, y2, p);
    if (level < 0) {  // no level: the RoI pools to zeros (see fpn_level)
      store_from_float(out + idx, 0.0f);
      continue;
    }
    const int H = p.heights[level], W = p.widths[level];
    const RoiAxis ay = roi_axis(y1, y2, p.strides[level], p.aligned, P, p.sampling_ratio, H);
    const RoiAxis ax = roi_axis(x1, x2, p.strides[level], p.aligned, P, p.sampling_ratio, W);
    // Only samples inside [-1, length] contribute (the others add exactly 0): their index ranges
    // come from a binary search, so huge adaptive grids cost no more than the map.
    int iy0, iy1, ix0, ix1;
    inside_range(ay, ph, &iy0, &iy1);
    inside_range(ax, pw, &ix0, &ix1);
    // Select the level's pointer with an unrolled compare instead of a dynamic index, which
    // would copy the pointer array to local memory.
    const T* image = features.level[0];
#pragma unroll
    for (int l = 1; l < kMaxPyramidLevels; ++l)
      if (l == level) image = features.level[l];
    const T* plane = image + (static_cast<int64_t>(b) * p.channels + c) * H * W;
    float acc = 0.0f;
    for (int iy = iy0; iy < iy1; ++iy) {
      const AxisTap ty = axis_tap(sample_coord(ay, ph, iy), H);
      for (int ix = ix0; ix < ix1; ++ix) {
        const AxisTap tx = axis_tap(sample_coord(ax, pw, ix), W);
        const BilinearSample s = bilinear_sample(ty, tx, W);
        const float v = bilinear_value(s.w, load_as_float(plane + s.off[0]), load_as_float(plane + s.off[1]),
                                       load_as_float(plane + s.off[2]), load_as_float(plane + s.off[3]));
        acc = hd_fadd(acc, v);
      }
    }
    store_from_float(out + idx, hd_fdiv(acc, bin_count(ay.grid, ax.grid)));
  }
}

template <typename T>
cudaError_t launch(const PyramidRoiAlignParams& p, const float* rois, const void* const* features, void* out,
                   int64_t total, cudaStream_t stream) {
  FeaturePointers<T> f = {};
  for (int l = 0; l < p.num_levels; ++l) {
    if (features[l] == nullptr) return cudaErrorInvalidValue;
    f.level[l] = static_cast<const T*>(features[l]);
  }
  constexpr int kThreads = 256;
  // Grid-stride loop: cap the grid (any GPU is saturated long before 2^20 blocks).
  const int64_t wanted = (total + kThreads - 1) / kThreads;
  const unsigned blocks = static_cast<unsigned>(wanted < (int64_t{1} << 20) ? wanted : (int64_t{1} << 20));
  pyramid_roi_align_kernel<T><<<blocks, kThreads, 0, stream>>>(p, rois, f, static_cast<T*>(out), total);
  return cudaGetLastError();
}

}  // namespace

cudaError_t pyramid_roi_align_cuda(const PyramidRoiAlignParams& p, const float* rois, const void* const* features,
                                   TensorDType dtype, void* out, cudaStream_t stream) {
  if (p.batch < 0 || p.num_rois < 0 || p.channels < 0 || p.output_size <= 0 || p.sampling_ratio < 0 ||
      p.num_levels < 1 || p.num_levels > kMaxPyramidLevels || !(p.canonical_scale > 0.0f))
    return cudaErrorInvalidValue;
  for (int l = 0; l < p.num_levels; ++l)
    if (p.heights[l] <= 0 || p.widths[l] <= 0 || p.strides[l] <= 0) return cudaErrorInvalidValue;
  const int64_t total = static_cast<int64_t>(p.batch) * p.num_rois * p.channels * p.output_size * p.output_size;
  if (total == 0) return cudaSuccess;  // nothing to write (a 0-block launch would be an error)
  if (rois == nullptr || features == nullptr || out == nullptr) return cudaErrorInvalidValue;
  switch (dtype) {
    case TensorDType::kFloat32:
      return launch<float>(p, rois, features, out, total, stream);
    case TensorDType::kFloat16:
      return launch<__half>(p, rois, features, out, total, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace maskrt
