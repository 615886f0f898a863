// TensorRT IPluginV3 wrapper of the multi-level RoIAlign CUDA kernel (MaskrtPyramidRoIAlign).
// Inputs, outputs, attributes: plugins/plugin_table.json and README.md in this folder.
//
//   input 0        rois      float32 [B, R, 4] (x1, y1, x2, y2 in input pixels), always fp32
//   inputs 1..L    features  float32 or float16 [B, C, H_l, W_l], one per entry of `strides`,
//                            all of one dtype
//   output 0       pooled    [B, R, C, output_size, output_size], dtype of the features
#pragma once

#include <string>

#include "pyramid_roi_align/pyramid_roi_align_kernel.h"
#include "tensorrt/plugin_common.h"

namespace maskrt {
namespace trt {

class MaskrtPyramidRoIAlignPlugin final : public PluginBase {
 public:
  using Spec = plugin_table::MaskrtPyramidRoIAlign;

  // "" if the attributes are usable, else what is wrong (called by the creator).
  static std::string validate(AttrValues const& attrs);

  MaskrtPyramidRoIAlignPlugin(std::string layerName, AttrValues attrs);

  // IPluginV3OneBuild
  int32_t getNbOutputs() const noexcept override { return 1; }
  int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
                          nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
  int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs, nvinfer1::DataType const* inputTypes,
                             int32_t nbInputs) const noexcept override;
  int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
                          int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                          nvinfer1::IExprBuilder& exprBuilder) noexcept override;
  bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
                                 int32_t nbOutputs) noexcept override;

  // IPluginV3OneRuntime
  int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
                        int32_t nbOutputs) noexcept override;
  int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
                  void const* const* inputs, void* const* outputs, void* workspace,
                  cudaStream_t stream) noexcept override;

 private:
  PluginBase* cloneImpl() const override { return new MaskrtPyramidRoIAlignPlugin(*this); }
  // Kernel parameters from concrete (or, with allowWildcards, partly -1) input dims; "" or the
  // problem. Checks ranks, rois [B, R, 4], one B and one C across the inputs, H_l, W_l >= 1.
  std::string makeParams(nvinfer1::Dims const* inDims, int32_t nbInputs, bool allowWildcards,
                         PyramidRoiAlignParams& p) const;

  PyramidRoiAlignParams mAttrParams;  // attribute part of the kernel parameters (shapes filled per call)
};

class MaskrtPyramidRoIAlignCreator final
    : public TableCreator<plugin_table::MaskrtPyramidRoIAlign, MaskrtPyramidRoIAlignPlugin> {};

}  // namespace trt
}  // namespace maskrt
