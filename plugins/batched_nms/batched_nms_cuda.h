// RPN and detection NMS: CUDA launchers (used by the TensorRT plugins). All pointers are device
// pointers; `workspace` must hold the bytes returned by the matching *_workspace_size().
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>

#include "batched_nms/batched_nms_kernel.h"

namespace maskrt {

size_t rpn_nms_cuda_workspace_size(const RpnNmsParams& p);
cudaError_t rpn_nms_cuda(const RpnNmsParams& p, const float* boxes, const float* logits, float* out_rois,
                         float* out_scores, int32_t* out_count, void* workspace, cudaStream_t stream);

size_t detection_nms_cuda_workspace_size(const DetectionNmsParams& p);
cudaError_t detection_nms_cuda(const DetectionNmsParams& p, const float* boxes, const float* scores,
                               const int32_t* num_rois, int32_t* out_count, float* out_boxes, float* out_scores,
                               int32_t* out_classes, void* workspace, cudaStream_t stream);

}  // namespace maskrt
