#include "batched_nms/detection_nms_plugin.h"

#include <cuda_runtime_api.h>

#include <exception>

#include "batched_nms/batched_nms_cuda.h"

namespace maskrt {
namespace trt {

using nvinfer1::DataType;
using nvinfer1::Dims;
using nvinfer1::TensorFormat;
using Spec = plugin_table::MaskrtDetectionNMS;

namespace {

constexpr int32_t kNbInputs = 3;
constexpr int32_t kNbOutputs = 4;

bool agree(int64_t a, int64_t b) { return a < 0 || b < 0 || a == b; }

}  // namespace

std::string MaskrtDetectionNMSPlugin::validate(AttrValues const& a) {
  float const score = a.getFloat(Spec::score_threshold);
  if (!(score >= 0.0f && score <= 1.0f)) return "score_threshold must be in [0, 1]";
  float const iou = a.getFloat(Spec::iou_threshold);
  if (!(iou >= 0.0f && iou <= 1.0f)) return "iou_threshold must be in [0, 1]";
  if (a.getInt(Spec::max_detections) < 1) return "max_detections must be >= 1";
  if (!(a.getFloat(Spec::min_size) >= 0.0f)) return "min_size must be >= 0";
  if (a.getInt(Spec::class_offset) < 0) return "class_offset must be >= 0";
  return "";
}

MaskrtDetectionNMSPlugin::MaskrtDetectionNMSPlugin(std::string layerName, AttrValues attrs)
    : PluginBase(Spec::kName, Spec::kVersion, std::move(layerName), std::move(attrs)) {
  DetectionNmsParams& p = mAttrParams;
  p.score_threshold = mAttrs.getFloat(Spec::score_threshold);
  p.iou_threshold = mAttrs.getFloat(Spec::iou_threshold);
  p.max_detections = mAttrs.getInt(Spec::max_detections);
  p.min_size = mAttrs.getFloat(Spec::min_size);
  p.class_offset = mAttrs.getInt(Spec::class_offset);
}

std::string MaskrtDetectionNMSPlugin::makeParams(Dims const* in, bool allowWildcards, DetectionNmsParams& p) const {
  p = mAttrParams;
  Dims const& boxes = in[0];
  Dims const& scores = in[1];
  Dims const& count = in[2];
  if (boxes.nbDims != 4 || !agree(boxes.d[3], 4)) return "boxes must be [B, R, C, 4], got " + dimsToString(boxes);
  if (scores.nbDims != 3 || !agree(scores.d[0], boxes.d[0]) || !agree(scores.d[1], boxes.d[1]) ||
      !agree(scores.d[2], boxes.d[2])) {
    return "scores must be [B, R, C] matching boxes " + dimsToString(boxes) + ", got " + dimsToString(scores);
  }
  if (count.nbDims != 1 || !agree(count.d[0], boxes.d[0])) {
    return "num_rois must be [B] matching boxes " + dimsToString(boxes) + ", got " + dimsToString(count);
  }
  if (allowWildcards) return "";
  p.batch = dimToInt32(boxes.d[0]);
  p.num_rois = dimToInt32(boxes.d[1]);
  p.num_classes = dimToInt32(boxes.d[2]);
  if (p.batch < 0 || p.num_rois < 0 || p.num_classes < 0) return "boxes extents must fit int32";
  return "";
}

int32_t MaskrtDetectionNMSPlugin::configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
                                                  nvinfer1::DynamicPluginTensorDesc const* /*out*/,
                                                  int32_t nbOutputs) noexcept {
  try {
    if (!checkArity("configurePlugin", nbInputs, kNbInputs, nbOutputs, kNbOutputs)) return -1;
    Dims const dims[kNbInputs] = {in[0].desc.dims, in[1].desc.dims, in[2].desc.dims};
    DetectionNmsParams p;
    std::string const err = makeParams(dims, /*allowWildcards=*/true, p);
    if (!err.empty()) {
      reportError("configurePlugin", err);
      return -1;
    }
    return 0;
  } catch (std::exception const& e) {
    reportError("configurePlugin", e.what());
  }
  return -1;
}

int32_t MaskrtDetectionNMSPlugin::getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs,
                                                     DataType const* /*inputTypes*/, int32_t nbInputs) const noexcept {
  if (!checkArity("getOutputDataTypes", nbInputs, kNbInputs, nbOutputs, kNbOutputs)) return -1;
  outputTypes[0] = DataType::kINT32;  // num_detections
  outputTypes[1] = DataType::kFLOAT;  // boxes
  outputTypes[2] = DataType::kFLOAT;  // scores
  outputTypes[3] = DataType::kINT32;  // classes
  return 0;
}

int32_t MaskrtDetectionNMSPlugin::getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
                                                  nvinfer1::DimsExprs const* /*shapeInputs*/,
                                                  int32_t /*nbShapeInputs*/, nvinfer1::DimsExprs* outputs,
                                                  int32_t nbOutputs, nvinfer1::IExprBuilder& exprBuilder) noexcept {
  try {
    if (!checkArity("getOutputShapes", nbInputs, kNbInputs, nbOutputs, kNbOutputs)) return -1;
    if (inputs[0].nbDims != 4 || constantMismatch(inputs[0].d[3], 4) || inputs[1].nbDims != 3 ||
        inputs[2].nbDims != 1) {
      reportError("getOutputShapes", "boxes must be [B, R, C, 4], scores [B, R, C] and num_rois [B]");
      return -1;
    }
    // Fixed-size outputs with a count: [B], [B, K, 4], [B, K], [B, K]; B passes through.
    nvinfer1::IDimensionExpr const* batch = inputs[0].d[0];
    nvinfer1::IDimensionExpr const* k = exprBuilder.constant(mAttrParams.max_detections);
    outputs[0].nbDims = 1;
    outputs[0].d[0] = batch;
    outputs[1].nbDims = 3;
    outputs[1].d[0] = batch;
    outputs[1].d[1] = k;
    outputs[1].d[2] = exprBuilder.constant(4);
    outputs[2].nbDims = 2;
    outputs[2].d[0] = batch;
    outputs[2].d[1] = k;
    outputs[3].nbDims = 2;
    outputs[3].d[0] = batch;
    outputs[3].d[1] = k;
    return 0;
  } catch (std::exception const& e) {
    reportError("getOutputShapes", e.what());
  }
  return -1;
}

bool MaskrtDetectionNMSPlugin::supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut,
                                                         int32_t nbInputs, int32_t nbOutputs) noexcept {
  if (nbInputs != kNbInputs || nbOutputs != kNbOutputs || pos < 0 || pos >= nbInputs + nbOutputs) return false;
  nvinfer1::PluginTensorDesc const& desc = inOut[pos].desc;
  if (desc.format != TensorFormat::kLINEAR) return false;
  // inputs: boxes fp32, scores fp32, num_rois int32; outputs: num_detections int32, boxes fp32,
  // scores fp32, classes int32.
  static constexpr DataType kTypes[kNbInputs + kNbOutputs] = {DataType::kFLOAT, DataType::kFLOAT, DataType::kINT32,
                                                               DataType::kINT32, DataType::kFLOAT, DataType::kFLOAT,
                                                               DataType::kINT32};
  return desc.type == kTypes[pos];
}

size_t MaskrtDetectionNMSPlugin::getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
                                                  nvinfer1::DynamicPluginTensorDesc const* /*outputs*/,
                                                  int32_t /*nbOutputs*/) const noexcept {
  try {
    if (nbInputs != kNbInputs) return 0;
    // NOTE: sized for the profile's maximum shapes (TensorRT requires it to serve any smaller one).
    Dims const dims[kNbInputs] = {inputs[0].max, inputs[1].max, inputs[2].max};
    DetectionNmsParams p;
    if (!makeParams(dims, /*allowWildcards=*/false, p).empty()) return 0;
    return detection_nms_cuda_workspace_size(p);
  } catch (std::exception const& e) {
    reportError("getWorkspaceSize", e.what());
  }
  return 0;
}

int32_t MaskrtDetectionNMSPlugin::onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
                                                nvinfer1::PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept {
  try {
    if (!checkArity("onShapeChange", nbInputs, kNbInputs, nbOutputs, kNbOutputs)) return -1;
    Dims const dims[kNbInputs] = {in[0].dims, in[1].dims, in[2].dims};
    DetectionNmsParams p;
    std::string const err = makeParams(dims, /*allowWildcards=*/false, p);
    if (!err.empty()) {
      reportError("onShapeChange", err);
      return -1;
    }
    return 0;
  } catch (std::exception const& e) {
    reportError("onShapeChange", e.what());
  }
  return -1;
}

int32_t MaskrtDetectionNMSPlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
                                          nvinfer1::PluginTensorDesc const* /*outputDesc*/, void const* const* inputs,
                                          void* const* outputs, void* workspace, cudaStream_t stream) noexcept {
  try {
    Dims const dims[kNbInputs] = {inputDesc[0].dims, inputDesc[1].dims, inputDesc[2].dims};
    DetectionNmsParams p;
    std::string const err = makeParams(dims, /*allowWildcards=*/false, p);
    if (!err.empty()) {
      reportError("enqueue", err);
      return -1;
    }
    if (p.batch == 0) return 0;
    auto* outCount = static_cast<int32_t*>(outputs[0]);
    auto* outBoxes = static_cast<float*>(outputs[1]);
    auto* outScores = static_cast<float*>(outputs[2]);
    auto* outClasses = static_cast<int32_t*>(outputs[3]);
    if (p.num_rois == 0 || p.num_classes == 0) {
      // NOTE: no candidates is a normal result (zero detections, all rows padding); written here
      // so the kernel never sees an empty grid.
      size_t const b = static_cast<size_t>(p.batch);
      size_t const k = static_cast<size_t>(p.max_detections);
      cudaError_t status = cudaMemsetAsync(outCount, 0, b * sizeof(int32_t), stream);
      if (status == cudaSuccess) status = cudaMemsetAsync(outBoxes, 0, b * k * 4 * sizeof(float), stream);
      if (status == cudaSuccess) status = cudaMemsetAsync(outScores, 0, b * k * sizeof(float), stream);
      if (status == cudaSuccess) status = cudaMemsetAsync(outClasses, 0, b * k * sizeof(int32_t), stream);
      return cudaStatus("enqueue", static_cast<int32_t>(status));
    }
    cudaError_t const status = detection_nms_cuda(p, static_cast<float const*>(inputs[0]),
                                                  static_cast<float const*>(inputs[1]),
                                                  static_cast<int32_t const*>(inputs[2]), outCount, outBoxes,
                                                  outScores, outClasses, workspace, stream);
    return cudaStatus("enqueue", static_cast<int32_t>(status));
  } catch (std::exception const& e) {
    reportError("enqueue", e.what());
  }
  return -1;
}

}  // namespace trt
}  // namespace maskrt
