#include "batched_nms/rpn_nms_plugin.h"

#include <cuda_runtime_api.h>

#include <exception>
#include <vector>

#include "batched_nms/batched_nms_cuda.h"

namespace maskrt {
namespace trt {

using nvinfer1::DataType;
using nvinfer1::Dims;
using nvinfer1::TensorFormat;
using Spec = plugin_table::MaskrtRpnNMS;

namespace {

constexpr int32_t kNbInputs = 2;
constexpr int32_t kNbOutputs = 3;

bool agree(int64_t a, int64_t b) { return a < 0 || b < 0 || a == b; }

}  // namespace

std::string MaskrtRpnNMSPlugin::validate(AttrValues const& a) {
  std::vector<int32_t> const& sizes = a.getInts(Spec::level_sizes);
  // NOTE: the table's default [] is a placeholder: the exporter always writes the anchor counts.
  if (sizes.empty() || sizes.size() > static_cast<size_t>(kMaxNmsLevels)) {
    return "level_sizes (anchors per level) must have 1.." + std::to_string(kMaxNmsLevels) + " entries, got " +
           std::to_string(sizes.size());
  }
  int64_t total = 0;
  for (int32_t s : sizes) {
    if (s < 1) return "every level size must be >= 1";
    total += s;
  }
  if (total > INT32_MAX) return "sum(level_sizes) must fit int32";
  if (a.getInt(Spec::pre_nms_top_n) < 1) return "pre_nms_top_n must be >= 1";
  if (a.getInt(Spec::post_nms_top_n) < 1) return "post_nms_top_n must be >= 1";
  float const iou = a.getFloat(Spec::iou_threshold);
  if (!(iou >= 0.0f && iou <= 1.0f)) return "iou_threshold must be in [0, 1]";
  if (!(a.getFloat(Spec::min_size) >= 0.0f)) return "min_size must be >= 0";
  float const score = a.getFloat(Spec::score_threshold);
  if (!(score >= 0.0f && score <= 1.0f)) return "score_threshold must be in [0, 1] (it applies to sigmoid(logit))";
  return "";
}

MaskrtRpnNMSPlugin::MaskrtRpnNMSPlugin(std::string layerName, AttrValues attrs)
    : PluginBase(Spec::kName, Spec::kVersion, std::move(layerName), std::move(attrs)) {
  RpnNmsParams& p = mAttrParams;
  std::vector<int32_t> const& sizes = mAttrs.getInts(Spec::level_sizes);
  p.num_levels = static_cast<int>(sizes.size());
  p.num_anchors = 0;
  for (int l = 0; l < p.num_levels; ++l) {
    p.level_sizes[l] = sizes[l];
    p.num_anchors += sizes[l];
  }
  p.pre_nms_top_n = mAttrs.getInt(Spec::pre_nms_top_n);
  p.post_nms_top_n = mAttrs.getInt(Spec::post_nms_top_n);
  p.iou_threshold = mAttrs.getFloat(Spec::iou_threshold);
  p.min_size = mAttrs.getFloat(Spec::min_size);
  p.score_threshold = mAttrs.getFloat(Spec::score_threshold);
}

std::string MaskrtRpnNMSPlugin::makeParams(Dims const& boxes, Dims const& logits, bool allowWildcards,
                                           RpnNmsParams& p) const {
  p = mAttrParams;
  if (boxes.nbDims != 3 || !agree(boxes.d[2], 4)) return "boxes must be [B, N, 4], got " + dimsToString(boxes);
  if (logits.nbDims != 2 || !agree(logits.d[0], boxes.d[0]) || !agree(logits.d[1], boxes.d[1])) {
    return "logits must be [B, N] matching boxes " + dimsToString(boxes) + ", got " + dimsToString(logits);
  }
  if (!agree(boxes.d[1], p.num_anchors)) {
    return "boxes has N = " + std::to_string(boxes.d[1]) + " anchors but sum(level_sizes) = " +
           std::to_string(p.num_anchors);
  }
  if (allowWildcards) return "";
  p.batch = dimToInt32(boxes.d[0]);
  if (p.batch < 0) return "batch must fit int32";
  return "";
}

int32_t MaskrtRpnNMSPlugin::configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
                                            nvinfer1::DynamicPluginTensorDesc const* /*out*/,
                                            int32_t nbOutputs) noexcept {
  try {
    if (!checkArity("configurePlugin", nbInputs, kNbInputs, nbOutputs, kNbOutputs)) return -1;
    RpnNmsParams p;
    std::string const err = makeParams(in[0].desc.dims, in[1].desc.dims, /*allowWildcards=*/true, p);
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

int32_t MaskrtRpnNMSPlugin::getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs,
                                               DataType const* /*inputTypes*/, int32_t nbInputs) const noexcept {
  if (!checkArity("getOutputDataTypes", nbInputs, kNbInputs, nbOutputs, kNbOutputs)) return -1;
  outputTypes[0] = DataType::kFLOAT;  // rois
  outputTypes[1] = DataType::kFLOAT;  // roi_scores
  outputTypes[2] = DataType::kINT32;  // num_rois
  return 0;
}

int32_t MaskrtRpnNMSPlugin::getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
                                            nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/,
                                            nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                                            nvinfer1::IExprBuilder& exprBuilder) noexcept {
  try {
    if (!checkArity("getOutputShapes", nbInputs, kNbInputs, nbOutputs, kNbOutputs)) return -1;
    if (inputs[0].nbDims != 3 || constantMismatch(inputs[0].d[2], 4) || inputs[1].nbDims != 2) {
      reportError("getOutputShapes", "boxes must be [B, N, 4] and logits [B, N]");
      return -1;
    }
    if (constantMismatch(inputs[0].d[1], mAttrParams.num_anchors)) {
      reportError("getOutputShapes", "boxes has N = " + std::to_string(inputs[0].d[1]->getConstantValue()) +
                                         " anchors but sum(level_sizes) = " + std::to_string(mAttrParams.num_anchors));
      return -1;
    }
    // Fixed-size outputs with a count: [B, post, 4], [B, post], [B]; B passes through.
    nvinfer1::IDimensionExpr const* batch = inputs[0].d[0];
    nvinfer1::IDimensionExpr const* post = exprBuilder.constant(mAttrParams.post_nms_top_n);
    outputs[0].nbDims = 3;
    outputs[0].d[0] = batch;
    outputs[0].d[1] = post;
    outputs[0].d[2] = exprBuilder.constant(4);
    outputs[1].nbDims = 2;
    outputs[1].d[0] = batch;
    outputs[1].d[1] = post;
    outputs[2].nbDims = 1;
    outputs[2].d[0] = batch;
    return 0;
  } catch (std::exception const& e) {
    reportError("getOutputShapes", e.what());
  }
  return -1;
}

bool MaskrtRpnNMSPlugin::supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut,
                                                   int32_t nbInputs, int32_t nbOutputs) noexcept {
  if (nbInputs != kNbInputs || nbOutputs != kNbOutputs || pos < 0 || pos >= nbInputs + nbOutputs) return false;
  nvinfer1::PluginTensorDesc const& desc = inOut[pos].desc;
  if (desc.format != TensorFormat::kLINEAR) return false;
  // boxes, logits, rois, roi_scores: fp32; num_rois: int32.
  return desc.type == (pos == 4 ? DataType::kINT32 : DataType::kFLOAT);
}

size_t MaskrtRpnNMSPlugin::getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
                                            nvinfer1::DynamicPluginTensorDesc const* /*outputs*/,
                                            int32_t /*nbOutputs*/) const noexcept {
  try {
    if (nbInputs != kNbInputs) return 0;
    // NOTE: sized for the profile's maximum shapes; TensorRT requires the result to serve any
    // smaller problem as well.
    RpnNmsParams p;
    if (!makeParams(inputs[0].max, inputs[1].max, /*allowWildcards=*/false, p).empty()) return 0;
    return rpn_nms_cuda_workspace_size(p);
  } catch (std::exception const& e) {
    reportError("getWorkspaceSize", e.what());
  }
  return 0;
}

int32_t MaskrtRpnNMSPlugin::onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
                                          nvinfer1::PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept {
  try {
    if (!checkArity("onShapeChange", nbInputs, kNbInputs, nbOutputs, kNbOutputs)) return -1;
    RpnNmsParams p;
    std::string const err = makeParams(in[0].dims, in[1].dims, /*allowWildcards=*/false, p);
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

int32_t MaskrtRpnNMSPlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
                                    nvinfer1::PluginTensorDesc const* /*outputDesc*/, void const* const* inputs,
                                    void* const* outputs, void* workspace, cudaStream_t stream) noexcept {
  try {
    RpnNmsParams p;
    std::string const err = makeParams(inputDesc[0].dims, inputDesc[1].dims, /*allowWildcards=*/false, p);
    if (!err.empty()) {
      reportError("enqueue", err);
      return -1;
    }
    if (p.batch == 0) return 0;
    cudaError_t const status = rpn_nms_cuda(p, static_cast<float const*>(inputs[0]),
                                            static_cast<float const*>(inputs[1]), static_cast<float*>(outputs[0]),
                                            static_cast<float*>(outputs[1]), static_cast<int32_t*>(outputs[2]),
                                            workspace, stream);
    return cudaStatus("enqueue", static_cast<int32_t>(status));
  } catch (std::exception const& e) {
    reportError("enqueue", e.what());
  }
  return -1;
}

}  // namespace trt
}  // namespace maskrt
