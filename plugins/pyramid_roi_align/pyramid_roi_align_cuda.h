// Multi-level RoIAlign: CUDA launcher (used by the TensorRT plugin).
#pragma once

#include <cuda_runtime_api.h>

#include "pyramid_roi_align/pyramid_roi_align_kernel.h"

namespace maskrt {

enum class TensorDType : int { kFloat32 = 0, kFloat16 = 1 };

// rois:     device float32 [B, R, 4]
// features: host array of L device pointers, each [B, C, H_l, W_l] of `dtype`
// out:      device [B, R, C, P, P] of `dtype` (accumulation is always float32)
// Enqueues on `stream`; returns the launch error (no synchronisation).
cudaError_t pyramid_roi_align_cuda(const PyramidRoiAlignParams& p, const float* rois, const void* const* features,
                                   TensorDType dtype, void* out, cudaStream_t stream);

}  // namespace maskrt
