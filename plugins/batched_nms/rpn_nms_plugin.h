// TensorRT IPluginV3 wrapper of the RPN proposal-selection CUDA kernel (MaskrtRpnNMS).
// Inputs, outputs, attributes: plugins/plugin_table.json and README.md in this folder.
//
//   input 0   boxes       float32 [B, N, 4]  decoded, clipped proposals, levels concatenated
//   input 1   logits      float32 [B, N]     objectness logits, same order; N = sum(level_sizes)
//   output 0  rois        float32 [B, post_nms_top_n, 4]  zero rows past num_rois
//   output 1  roi_scores  float32 [B, post_nms_top_n]     sigmoid(logit), zero past num_rois
//   output 2  num_rois    int32   [B]
#pragma once

#include <string>

#include "batched_nms/batched_nms_kernel.h"
#include "tensorrt/plugin_common.h"

namespace maskrt {
namespace trt {

class MaskrtRpnNMSPlugin final : public PluginBase {
 public:
  using Spec = plugin_table::MaskrtRpnNMS;

  // "" if the attributes are usable, else what is wrong (called by the creator).
  static std::string validate(AttrValues const& attrs);

  MaskrtRpnNMSPlugin(std::string layerName, AttrValues attrs);

  // IPluginV3OneBuild
  int32_t getNbOutputs() const noexcept override { return 3; }
  int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
                          nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
  int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs, nvinfer1::DataType const* inputTypes,
                             int32_t nbInputs) const noexcept override;
  int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
                          int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                          nvinfer1::IExprBuilder& exprBuilder) noexcept override;
  bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
                                 int32_t nbOutputs) noexcept override;
  // Scratch of rpn_nms_cuda for the profile's largest B and N.
  size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
                          nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;

  // IPluginV3OneRuntime
  int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
                        int32_t nbOutputs) noexcept override;
  int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
                  void const* const* inputs, void* const* outputs, void* workspace,
                  cudaStream_t stream) noexcept override;

 private:
  PluginBase* cloneImpl() const override { return new MaskrtRpnNMSPlugin(*this); }
  // Kernel parameters from the boxes / logits dims (-1 allowed with allowWildcards); "" or the
  // problem. Checks boxes [B, N, 4], logits [B, N], N = sum(level_sizes).
  std::string makeParams(nvinfer1::Dims const& boxes, nvinfer1::Dims const& logits, bool allowWildcards,
                         RpnNmsParams& p) const;

  RpnNmsParams mAttrParams;  // attribute part of the kernel parameters (B filled per call)
};

class MaskrtRpnNMSCreator final : public TableCreator<plugin_table::MaskrtRpnNMS, MaskrtRpnNMSPlugin> {};

}  // namespace trt
}  // namespace maskrt
