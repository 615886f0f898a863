// Shared pieces of the maskrt TensorRT plugins: attribute parsing/serialisation driven by the
// generated plugin table, logging through TensorRT's logger, the IPluginV3 base class and the
// creator template. Every op's wrapper (plugins/<op>/*_plugin.{h,cpp}) builds on these.
#pragma once

#include <NvInfer.h>
#include <NvInferRuntime.h>

#include <cstdint>
#include <string>
#include <vector>

#include "maskrt_plugin_table.h"  // generated from plugins/plugin_table.json

namespace maskrt {
namespace trt {

// ---------------------------------------------------------------------------------------------
// Logging. The logger comes from TensorRT through setLoggerFinder() (register.cpp); before that
// (or when TensorRT has none) errors go to stderr so that a rejected attribute is never silent.
// NOTE: ILoggerFinder::findLogger must be called on the thread of the plugin call, so the logger
// is looked up per message, never cached.
void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;
void log(nvinfer1::ILogger::Severity severity, std::string const& msg) noexcept;

// ---------------------------------------------------------------------------------------------
// Attribute values of one plugin instance, typed by the table's AttrSpec list. Starts from the
// table defaults; parse() overlays the fields TensorRT passes (ONNX node attributes at build time,
// our own getFieldsToSerialize() output at runtime); toFields() is the serialisation.
class AttrValues {
 public:
  AttrValues(plugin_table::AttrSpec const* specs, int32_t count);

  // Reads `fc` (may be null = all defaults). Returns "" or a message naming the bad field:
  // unknown name, duplicate, wrong PluginFieldType, wrong element count, NaN/inf.
  // Accepted encodings: int/ints <- kINT32 or kINT64; float/floats <- kFLOAT32 or kFLOAT64;
  // string <- kCHAR (trailing NULs dropped). Scalars need exactly one element.
  std::string parse(nvinfer1::PluginFieldCollection const* fc);

  int32_t getInt(int32_t index) const { return mValues[index].ints.at(0); }
  std::vector<int32_t> const& getInts(int32_t index) const { return mValues[index].ints; }
  float getFloat(int32_t index) const { return mValues[index].floats.at(0); }
  std::vector<float> const& getFloats(int32_t index) const { return mValues[index].floats; }
  std::string const& getString(int32_t index) const { return mValues[index].str; }

  // All attributes in table order (kINT32 / kFLOAT32 / kCHAR), pointing into this object: valid
  // until the next call or until this object is destroyed.
  nvinfer1::PluginFieldCollection const* toFields();

  // "output_size=7 strides=[4,8,16,32] ..." for getMetadataString / log messages.
  std::string describe() const;

 private:
  struct Value {
    std::vector<int32_t> ints;
    std::vector<float> floats;
    std::string str;
  };
  plugin_table::AttrSpec const* mSpecs;
  int32_t mCount;
  std::vector<Value> mValues;
  std::vector<nvinfer1::PluginField> mFields;
  nvinfer1::PluginFieldCollection mCollection{};
};

// The creator's field list (getFieldNames): names and types from the table; lengths are the
// default's element count (informational only: TensorRT does not enforce them).
std::vector<nvinfer1::PluginField> fieldNamesFromTable(plugin_table::AttrSpec const* specs, int32_t count);

// ---------------------------------------------------------------------------------------------
// Dims helpers (TensorRT 10: int64 extents).
// Concrete extent that fits int32 (>= 0), else -1.
int32_t dimToInt32(int64_t d) noexcept;
std::string dimsToString(nvinfer1::Dims const& dims);
// True if `e` is a build-time constant different from `value` (a wildcard is never a mismatch).
bool constantMismatch(nvinfer1::IDimensionExpr const* e, int64_t value) noexcept;

// ---------------------------------------------------------------------------------------------
// Base of the three plugins: the capability plumbing, name/version/namespace, serialisation of
// the attributes and per-context error reporting. Derived classes implement the op itself.
class PluginBase : public nvinfer1::IPluginV3,
                   public nvinfer1::IPluginV3OneCore,
                   public nvinfer1::IPluginV3OneBuild,
                   public nvinfer1::IPluginV3OneRuntime {
 public:
  PluginBase(char const* pluginName, char const* pluginVersion, std::string layerName, AttrValues attrs);
  PluginBase(PluginBase const&) = default;
  ~PluginBase() override = default;

  // IPluginV3
  nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
  nvinfer1::IPluginV3* clone() noexcept override;

  // IPluginV3OneCore
  char const* getPluginName() const noexcept override { return mPluginName; }
  char const* getPluginVersion() const noexcept override { return mPluginVersion; }
  char const* getPluginNamespace() const noexcept override { return plugin_table::kNamespace; }

  // IPluginV3OneBuild (the attribute string doubles as the timing-cache key suffix: the timed
  // kernels depend on the attributes beyond the I/O shapes TensorRT already keys on).
  char const* getTimingCacheID() noexcept override;
  char const* getMetadataString() noexcept override;

  // IPluginV3OneRuntime
  nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
  nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

 protected:
  // A heap copy of the derived plugin (clone / attachToContext).
  virtual PluginBase* cloneImpl() const = 0;
  // Reports through the execution context's error recorder (when attached) and the logger.
  void reportError(char const* where, std::string const& msg,
                   nvinfer1::ErrorCode code = nvinfer1::ErrorCode::kINVALID_ARGUMENT) const noexcept;
  // Reports a CUDA launch error and returns it as TensorRT's int32 status.
  int32_t cudaStatus(char const* where, int32_t err) const noexcept;
  // Checks nbInputs / nbOutputs against the op's arity; reports and returns false on mismatch.
  bool checkArity(char const* where, int32_t nbInputs, int32_t expectedInputs, int32_t nbOutputs,
                  int32_t expectedOutputs) const noexcept;

  char const* mPluginName;
  char const* mPluginVersion;
  std::string mLayerName;
  AttrValues mAttrs;
  std::string mDescription;  // mAttrs.describe(), kept alive for getTimingCacheID/getMetadataString
  nvinfer1::IErrorRecorder* mRecorder{nullptr};  // owned by the execution context
};

// ---------------------------------------------------------------------------------------------
// Creator of one table entry. `Plugin` provides:
//   static std::string validate(AttrValues const&)  -> "" or what is wrong with the attributes
//   Plugin(std::string layerName, AttrValues attrs)  -> constructs a validated plugin
template <typename Spec, typename Plugin>
class TableCreator : public nvinfer1::IPluginCreatorV3One {
 public:
  using TableSpec = Spec;

  TableCreator() : mFields(fieldNamesFromTable(Spec::kAttrs, Spec::kNumAttrs)) {
    mCollection.nbFields = static_cast<int32_t>(mFields.size());
    mCollection.fields = mFields.data();
  }

  char const* getPluginName() const noexcept override { return Spec::kName; }
  char const* getPluginVersion() const noexcept override { return Spec::kVersion; }
  char const* getPluginNamespace() const noexcept override { return plugin_table::kNamespace; }
  nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override { return &mCollection; }

  // Parses and validates the attributes; on any problem logs "<plugin> (<layer>): <what>" and
  // returns nullptr, which TensorRT / its ONNX parser turn into a failed build or load.
  nvinfer1::IPluginV3* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc,
                                    nvinfer1::TensorRTPhase phase) noexcept override {
    std::string const layer = name != nullptr ? name : "";
    try {
      AttrValues attrs(Spec::kAttrs, Spec::kNumAttrs);
      std::string err = attrs.parse(fc);
      if (err.empty()) err = Plugin::validate(attrs);
      if (!err.empty()) {
        log(nvinfer1::ILogger::Severity::kERROR,
            std::string(Spec::kName) + " (layer '" + layer + "', " +
                (phase == nvinfer1::TensorRTPhase::kBUILD ? "build" : "runtime") + "): " + err);
        return nullptr;
      }
      return new Plugin(layer, std::move(attrs));
    } catch (std::exception const& e) {
      log(nvinfer1::ILogger::Severity::kERROR, std::string(Spec::kName) + ": createPlugin failed: " + e.what());
    }
    return nullptr;
  }

 private:
  std::vector<nvinfer1::PluginField> mFields;
  nvinfer1::PluginFieldCollection mCollection{};
};

}  // namespace trt
}  // namespace maskrt
