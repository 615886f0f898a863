#include "pyramid_roi_align/pyramid_roi_align_plugin.h"

#include <cuda_runtime_api.h>

#include <cmath>
#include <exception>
#include <vector>

#include "pyramid_roi_align/pyramid_roi_align_cuda.h"

namespace maskrt {
namespace trt {

using nvinfer1::DataType;
using nvinfer1::Dims;
using nvinfer1::TensorFormat;
using Spec = plugin_table::MaskrtPyramidRoIAlign;

namespace {

// Wildcard-tolerant equality of two extents (-1 = not known yet, during configurePlugin).
bool agree(int64_t a, int64_t b) { return a < 0 || b < 0 || a == b; }

}  // namespace

std::string MaskrtPyramidRoIAlignPlugin::validate(AttrValues const& a) {
  if (a.getInt(Spec::output_size) < 1) return "output_size must be >= 1";
  if (a.getInt(Spec::sampling_ratio) < 0) return "sampling_ratio must be >= 0 (0 = adaptive)";
  int32_t const aligned = a.getInt(Spec::aligned);
  if (aligned != 0 && aligned != 1) return "aligned must be 0 or 1";
  std::vector<int32_t> const& strides = a.getInts(Spec::strides);
  if (strides.empty() || strides.size() > static_cast<size_t>(kMaxPyramidLevels)) {
    return "strides must have 1.." + std::to_string(kMaxPyramidLevels) + " entries (one per feature input), got " +
           std::to_string(strides.size());
  }
  for (int32_t s : strides) {
    if (s < 1) return "every stride must be >= 1";
  }
  if (a.getInt(Spec::first_level) < 0) return "first_level must be >= 0";
  float const s0 = a.getFloat(Spec::canonical_scale);
  if (!(s0 > 0.0f) || !std::isfinite(s0)) return "canonical_scale must be a finite number > 0";
  if (a.getInt(Spec::canonical_level) < 0) return "canonical_level must be >= 0";
  return "";
}

MaskrtPyramidRoIAlignPlugin::MaskrtPyramidRoIAlignPlugin(std::string layerName, AttrValues attrs)
    : PluginBase(Spec::kName, Spec::kVersion, std::move(layerName), std::move(attrs)) {
  PyramidRoiAlignParams& p = mAttrParams;
  std::vector<int32_t> const& strides = mAttrs.getInts(Spec::strides);
  p.num_levels = static_cast<int>(strides.size());
  for (int l = 0; l < p.num_levels; ++l) p.strides[l] = strides[l];
  p.output_size = mAttrs.getInt(Spec::output_size);
  p.sampling_ratio = mAttrs.getInt(Spec::sampling_ratio);
  p.aligned = mAttrs.getInt(Spec::aligned) != 0;
  p.first_level = mAttrs.getInt(Spec::first_level);
  p.canonical_scale = mAttrs.getFloat(Spec::canonical_scale);
  p.canonical_level = mAttrs.getInt(Spec::canonical_level);
}

std::string MaskrtPyramidRoIAlignPlugin::makeParams(Dims const* in, int32_t nbInputs, bool allowWildcards,
                                                    PyramidRoiAlignParams& p) const {
  p = mAttrParams;
  if (nbInputs != 1 + p.num_levels) {
    return "expects 1 + " + std::to_string(p.num_levels) + " inputs (rois + one feature map per stride), got " +
           std::to_string(nbInputs);
  }
  Dims const& rois = in[0];
  if (rois.nbDims != 3 || !agree(rois.d[2], 4)) return "rois must be [B, R, 4], got " + dimsToString(rois);
  for (int l = 0; l < p.num_levels; ++l) {
    Dims const& f = in[1 + l];
    if (f.nbDims != 4) return "feature " + std::to_string(l) + " must be [B, C, H, W], got " + dimsToString(f);
    if (!agree(f.d[0], rois.d[0])) {
      return "feature " + std::to_string(l) + " batch " + std::to_string(f.d[0]) + " != rois batch " +
             std::to_string(rois.d[0]);
    }
    if (!agree(f.d[1], in[1].d[1])) return "all feature maps must have the same channel count";
  }
  if (allowWildcards) return "";
  // Concrete shapes: everything must fit the kernel's int32 parameters.
  p.batch = dimToInt32(rois.d[0]);
  p.num_rois = dimToInt32(rois.d[1]);
  p.channels = dimToInt32(in[1].d[1]);
  if (p.batch < 0 || p.num_rois < 0 || p.channels < 0) return "rois/feature extents must fit int32";
  for (int l = 0; l < p.num_levels; ++l) {
    p.heights[l] = dimToInt32(in[1 + l].d[2]);
    p.widths[l] = dimToInt32(in[1 + l].d[3]);
    if (p.heights[l] < 1 || p.widths[l] < 1) {
      return "feature " + std::to_string(l) + " must have H, W >= 1, got " + dimsToString(in[1 + l]);
    }
  }
  return "";
}

int32_t MaskrtPyramidRoIAlignPlugin::configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
                                                     nvinfer1::DynamicPluginTensorDesc const* /*out*/,
                                                     int32_t nbOutputs) noexcept {
  try {
    if (!checkArity("configurePlugin", nbInputs, 1 + mAttrParams.num_levels, nbOutputs, 1)) return -1;
    std::vector<Dims> dims(nbInputs);
    for (int32_t i = 0; i < nbInputs; ++i) dims[i] = in[i].desc.dims;
    PyramidRoiAlignParams p;
    std::string const err = makeParams(dims.data(), nbInputs, /*allowWildcards=*/true, p);
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

int32_t MaskrtPyramidRoIAlignPlugin::getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs,
                                                        DataType const* inputTypes, int32_t nbInputs) const noexcept {
  if (!checkArity("getOutputDataTypes", nbInputs, 1 + mAttrParams.num_levels, nbOutputs, 1)) return -1;
  // NOTE: the pooled output has the features' dtype (fp16 in, fp16 out); rois stay fp32 and the
  // kernel accumulates in fp32 either way.
  outputTypes[0] = inputTypes[1];
  return 0;
}

int32_t MaskrtPyramidRoIAlignPlugin::getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
                                                     nvinfer1::DimsExprs const* /*shapeInputs*/,
                                                     int32_t /*nbShapeInputs*/, nvinfer1::DimsExprs* outputs,
                                                     int32_t nbOutputs, nvinfer1::IExprBuilder& exprBuilder) noexcept {
  try {
    if (!checkArity("getOutputShapes", nbInputs, 1 + mAttrParams.num_levels, nbOutputs, 1)) return -1;
    if (inputs[0].nbDims != 3 || constantMismatch(inputs[0].d[2], 4)) {
      reportError("getOutputShapes", "rois must be [B, R, 4]");
      return -1;
    }
    for (int32_t i = 1; i < nbInputs; ++i) {
      if (inputs[i].nbDims != 4) {
        reportError("getOutputShapes", "feature " + std::to_string(i - 1) + " must be [B, C, H, W]");
        return -1;
      }
    }
    // [B, R, C, P, P]: B and R follow the rois (dynamic batch / RoI count pass through as
    // expressions), C the first feature map, P is the attribute.
    nvinfer1::IDimensionExpr const* pooled = exprBuilder.constant(mAttrParams.output_size);
    outputs[0].nbDims = 5;
    outputs[0].d[0] = inputs[0].d[0];
    outputs[0].d[1] = inputs[0].d[1];
    outputs[0].d[2] = inputs[1].d[1];
    outputs[0].d[3] = pooled;
    outputs[0].d[4] = pooled;
    return 0;
  } catch (std::exception const& e) {
    reportError("getOutputShapes", e.what());
  }
  return -1;
}

bool MaskrtPyramidRoIAlignPlugin::supportsFormatCombination(int32_t pos,
                                                            nvinfer1::DynamicPluginTensorDesc const* inOut,
                                                            int32_t nbInputs, int32_t nbOutputs) noexcept {
  if (nbInputs != 1 + mAttrParams.num_levels || nbOutputs != 1 || pos < 0 || pos >= nbInputs + nbOutputs) {
    return false;
  }
  nvinfer1::PluginTensorDesc const& desc = inOut[pos].desc;
  if (desc.format != TensorFormat::kLINEAR) return false;
  if (pos == 0) return desc.type == DataType::kFLOAT;                               // rois: fp32 only
  if (pos == 1) return desc.type == DataType::kFLOAT || desc.type == DataType::kHALF;  // first feature map
  return desc.type == inOut[1].desc.type;  // the other feature maps and the output follow it
}

int32_t MaskrtPyramidRoIAlignPlugin::onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
                                                   nvinfer1::PluginTensorDesc const* /*out*/,
                                                   int32_t nbOutputs) noexcept {
  try {
    if (!checkArity("onShapeChange", nbInputs, 1 + mAttrParams.num_levels, nbOutputs, 1)) return -1;
    std::vector<Dims> dims(nbInputs);
    for (int32_t i = 0; i < nbInputs; ++i) dims[i] = in[i].dims;
    PyramidRoiAlignParams p;
    std::string const err = makeParams(dims.data(), nbInputs, /*allowWildcards=*/false, p);
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

int32_t MaskrtPyramidRoIAlignPlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
                                             nvinfer1::PluginTensorDesc const* /*outputDesc*/,
                                             void const* const* inputs, void* const* outputs, void* /*workspace*/,
                                             cudaStream_t stream) noexcept {
  try {
    // NOTE: parameters are rebuilt from this call's descriptors (cheap) rather than cached in
    // onShapeChange, so nothing stale survives a shape or profile change.
    int32_t const nbInputs = 1 + mAttrParams.num_levels;
    Dims dims[1 + kMaxPyramidLevels];
    for (int32_t i = 0; i < nbInputs; ++i) dims[i] = inputDesc[i].dims;
    PyramidRoiAlignParams p;
    std::string const err = makeParams(dims, nbInputs, /*allowWildcards=*/false, p);
    if (!err.empty()) {
      reportError("enqueue", err);
      return -1;
    }
    if (p.batch == 0 || p.num_rois == 0 || p.channels == 0) return 0;  // empty output: nothing to write
    TensorDType const dtype = inputDesc[1].type == DataType::kHALF ? TensorDType::kFloat16 : TensorDType::kFloat32;
    void const* features[kMaxPyramidLevels] = {};
    for (int l = 0; l < p.num_levels; ++l) features[l] = inputs[1 + l];
    cudaError_t const status = pyramid_roi_align_cuda(p, static_cast<float const*>(inputs[0]), features, dtype,
                                                      outputs[0], stream);
    return cudaStatus("enqueue", static_cast<int32_t>(status));
  } catch (std::exception const& e) {
    reportError("enqueue", e.what());
  }
  return -1;
}

}  // namespace trt
}  // namespace maskrt
