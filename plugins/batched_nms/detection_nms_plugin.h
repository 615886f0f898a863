// TensorRT IPluginV3 wrapper of the box-head detection-selection CUDA kernel (MaskrtDetectionNMS).
// Inputs, outputs, attributes: plugins/plugin_table.json and README.md in this folder.
//
//   input 0   boxes           float32 [B, R, C, 4]  class-specific boxes of the C foreground classes
//   input 1   scores          float32 [B, R, C]     softmax probabilities of those classes
//   input 2   num_rois        int32   [B]           rows r >= num_rois[b] are ignored
//   output 0  num_detections  int32   [B]
//   output 1  boxes           float32 [B, K, 4]     zero rows past num_detections (K = max_detections)
//   output 2  scores          float32 [B, K]
//   output 3  classes         int32   [B, K]        column index + class_offset
#pragma once

#include <string>

#include "batched_nms/batched_nms_kernel.h"
#include "tensorrt/plugin_common.h"

namespace maskrt {
namespace trt {

class MaskrtDetectionNMSPlugin final : public PluginBase {
 public:
  using Spec = plugin_table::MaskrtDetectionNMS;

  // "" if the attributes are usable, else what is wrong (called by the creator).
  static std::string validate(AttrValues const& attrs);

  MaskrtDetectionNMSPlugin(std::string layerName, AttrValues attrs);

  // IPluginV3OneBuild
  int32_t getNbOutputs() const noexcept override { return 4; }
  int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
                          nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
  int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs, nvinfer1::DataType const* inputTypes,
                             int32_t nbInputs) const noexcept override;
  int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
                          int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                          nvinfer1::IExprBuilder& exprBuilder) noexcept override;
  bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
                                 int32_t nbOutputs) noexcept override;
  // Scratch of detection_nms_cuda for the profile's largest B, R and C.
  size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
                          nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;

  // IPluginV3OneRuntime
  int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
                        int32_t nbOutputs) noexcept override;
  int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
                  void const* const* inputs, void* const* outputs, void* workspace,
                  cudaStream_t stream) noexcept override;

 private:
  PluginBase* cloneImpl() const override { return new MaskrtDetectionNMSPlugin(*this); }
  // Kernel parameters from the three input dims (-1 allowed with allowWildcards); "" or the
  // problem. Checks boxes [B, R, C, 4], scores [B, R, C], num_rois [B].
  std::string makeParams(nvinfer1::Dims const* in, bool allowWildcards, DetectionNmsParams& p) const;

  DetectionNmsParams mAttrParams;  // attribute part of the kernel parameters (shapes filled per call)
};

class MaskrtDetectionNMSCreator final
    : public TableCreator<plugin_table::MaskrtDetectionNMS, MaskrtDetectionNMSPlugin> {};

}  // namespace trt
}  // namespace maskrt
