// Test-only C shim around the batched_nms CUDA launchers, loaded by batched_nms_gpu_check.py with
// ctypes (no CuPy/PyTorch needed): device memory helpers, and each launcher run `repeats` times on
// one stream between two events (returns the mean milliseconds per call). Every function returns
// a cudaError_t as int (0 = success).
#include <cuda_runtime_api.h>

#include <cstdint>

#include "batched_nms/batched_nms_cuda.h"

namespace {

maskrt::RpnNmsParams rpn_params(int batch, int num_anchors, int num_levels, const int* level_sizes, int pre,
                                int post, float iou, float min_size, float score_threshold) {
  maskrt::RpnNmsParams p;
  p.batch = batch;
  p.num_anchors = num_anchors;
  p.num_levels = num_levels;
  for (int l = 0; l < num_levels && l < maskrt::kMaxNmsLevels; ++l) p.level_sizes[l] = level_sizes[l];
  p.pre_nms_top_n = pre;
  p.post_nms_top_n = post;
  p.iou_threshold = iou;
  p.min_size = min_size;
  p.score_threshold = score_threshold;
  return p;
}

maskrt::DetectionNmsParams det_params(int batch, int rows, int classes, float score_threshold, float iou, int k,
                                      float min_size, int class_offset) {
  maskrt::DetectionNmsParams p;
  p.batch = batch;
  p.num_rois = rows;
  p.num_classes = classes;
  p.score_threshold = score_threshold;
  p.iou_threshold = iou;
  p.max_detections = k;
  p.min_size = min_size;
  p.class_offset = class_offset;
  return p;
}

// Runs launch() once (warm-up, error check), then `repeats` times between events.
template <typename Launch>
int timed(cudaStream_t stream, int repeats, float* ms, Launch launch) {
  cudaError_t e = launch();
  if (e != cudaSuccess) return e;
  cudaEvent_t t0, t1;
  if ((e = cudaEventCreate(&t0)) != cudaSuccess) return e;
  if ((e = cudaEventCreate(&t1)) != cudaSuccess) return e;
  cudaEventRecord(t0, stream);
  for (int i = 0; i < repeats && e == cudaSuccess; ++i) e = launch();
  cudaEventRecord(t1, stream);
  cudaError_t s = cudaEventSynchronize(t1);
  float total = 0.0f;
  cudaEventElapsedTime(&total, t0, t1);
  *ms = repeats > 0 ? total / static_cast<float>(repeats) : 0.0f;
  cudaEventDestroy(t0);
  cudaEventDestroy(t1);
  return e != cudaSuccess ? e : s;
}

}  // namespace

extern "C" {

int shim_malloc(void** p, size_t n) { return cudaMalloc(p, n > 0 ? n : 1); }
int shim_free(void* p) { return cudaFree(p); }
int shim_h2d(void* dst, const void* src, size_t n) { return cudaMemcpy(dst, src, n, cudaMemcpyHostToDevice); }
int shim_d2h(void* dst, const void* src, size_t n) { return cudaMemcpy(dst, src, n, cudaMemcpyDeviceToHost); }
int shim_memset(void* p, int value, size_t n) { return cudaMemset(p, value, n); }
int shim_sync() { return cudaDeviceSynchronize(); }
const char* shim_error_string(int e) { return cudaGetErrorString(static_cast<cudaError_t>(e)); }

size_t shim_rpn_workspace(int batch, int num_anchors, int num_levels, const int* level_sizes, int pre, int post,
                          float iou, float min_size, float score_threshold) {
  return maskrt::rpn_nms_cuda_workspace_size(
      rpn_params(batch, num_anchors, num_levels, level_sizes, pre, post, iou, min_size, score_threshold));
}

int shim_rpn(int batch, int num_anchors, int num_levels, const int* level_sizes, int pre, int post, float iou,
             float min_size, float score_threshold, const float* boxes, const float* logits, float* rois,
             float* scores, int32_t* count, void* workspace, int repeats, float* ms) {
  const auto p = rpn_params(batch, num_anchors, num_levels, level_sizes, pre, post, iou, min_size, score_threshold);
  cudaStream_t stream;
  cudaError_t e = cudaStreamCreate(&stream);
  if (e != cudaSuccess) return e;
  const int r = timed(stream, repeats, ms, [&] {
    return maskrt::rpn_nms_cuda(p, boxes, logits, rois, scores, count, workspace, stream);
  });
  cudaStreamDestroy(stream);
  return r;
}

size_t shim_det_workspace(int batch, int rows, int classes, float score_threshold, float iou, int k, float min_size,
                          int class_offset) {
  return maskrt::detection_nms_cuda_workspace_size(
      det_params(batch, rows, classes, score_threshold, iou, k, min_size, class_offset));
}

int shim_det(int batch, int rows, int classes, float score_threshold, float iou, int k, float min_size,
             int class_offset, const float* boxes, const float* scores, const int32_t* num_rois, int32_t* count,
             float* out_boxes, float* out_scores, int32_t* out_classes, void* workspace, int repeats, float* ms) {
  const auto p = det_params(batch, rows, classes, score_threshold, iou, k, min_size, class_offset);
  cudaStream_t stream;
  cudaError_t e = cudaStreamCreate(&stream);
  if (e != cudaSuccess) return e;
  const int r = timed(stream, repeats, ms, [&] {
    return maskrt::detection_nms_cuda(p, boxes, scores, num_rois, count, out_boxes, out_scores, out_classes,
                                      workspace, stream);
  });
  cudaStreamDestroy(stream);
  return r;
}

}  // extern "C"
