#include "tensorrt/plugin_common.h"

#include <cuda_runtime_api.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <exception>
#include <iostream>
#include <limits>
#include <sstream>

namespace maskrt {
namespace trt {

using nvinfer1::PluginField;
using nvinfer1::PluginFieldType;
using plugin_table::AttrSpec;
using plugin_table::AttrType;

namespace {

std::atomic<nvinfer1::ILoggerFinder*> gLoggerFinder{nullptr};

char const* typeName(AttrType t) {
  switch (t) {
    case AttrType::kINT: return "int (kINT32 x1)";
    case AttrType::kINTS: return "ints (kINT32 xN)";
    case AttrType::kFLOAT: return "float (kFLOAT32 x1)";
    case AttrType::kFLOATS: return "floats (kFLOAT32 xN)";
    case AttrType::kSTRING: return "string (kCHAR)";
  }
  return "?";
}

bool isIntType(AttrType t) { return t == AttrType::kINT || t == AttrType::kINTS; }
bool isFloatType(AttrType t) { return t == AttrType::kFLOAT || t == AttrType::kFLOATS; }
bool isScalar(AttrType t) { return t == AttrType::kINT || t == AttrType::kFLOAT; }

}  // namespace

void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept {
  // NOTE: first finder wins (TensorRT calls this once per loadLibrary; a second library load in
  // the same process must not swap the logger under a running plugin).
  nvinfer1::ILoggerFinder* expected = nullptr;
  gLoggerFinder.compare_exchange_strong(expected, finder);
}

void log(nvinfer1::ILogger::Severity severity, std::string const& msg) noexcept {
  try {
    std::string const line = "[maskrt] " + msg;
    nvinfer1::ILoggerFinder* finder = gLoggerFinder.load();
    nvinfer1::ILogger* logger = finder != nullptr ? finder->findLogger() : nullptr;
    if (logger != nullptr) {
      logger->log(severity, line.c_str());
    } else if (severity <= nvinfer1::ILogger::Severity::kWARNING) {
      std::cerr << line << std::endl;
    }
  } catch (...) {
    // Logging must never throw out of a noexcept TensorRT callback.
  }
}

// ---------------------------------------------------------------------------------------------
AttrValues::AttrValues(AttrSpec const* specs, int32_t count) : mSpecs(specs), mCount(count), mValues(count) {
  for (int32_t i = 0; i < count; ++i) {
    AttrSpec const& s = specs[i];
    Value& v = mValues[i];
    if (s.ints != nullptr) v.ints.assign(s.ints, s.ints + s.length);
    if (s.floats != nullptr) v.floats.assign(s.floats, s.floats + s.length);
    if (s.str != nullptr) v.str = s.str;
  }
}

std::string AttrValues::parse(nvinfer1::PluginFieldCollection const* fc) {
  if (fc == nullptr || fc->nbFields == 0) return "";
  if (fc->nbFields < 0 || fc->fields == nullptr) return "malformed PluginFieldCollection";
  std::vector<bool> seen(mCount, false);
  for (int32_t f = 0; f < fc->nbFields; ++f) {
    PluginField const& field = fc->fields[f];
    std::string const name = field.name != nullptr ? field.name : "";
    int32_t index = -1;
    for (int32_t i = 0; i < mCount; ++i) {
      if (name == mSpecs[i].name) index = i;
    }
    if (index < 0) {
      std::string known;
      for (int32_t i = 0; i < mCount; ++i) known += std::string(i ? ", " : "") + mSpecs[i].name;
      return "unknown attribute '" + name + "' (known: " + known + ")";
    }
    if (seen[index]) return "attribute '" + name + "' given twice";
    seen[index] = true;

    AttrSpec const& spec = mSpecs[index];
    Value& value = mValues[index];
    int32_t const n = field.length;
    if (n < 0 || (n > 0 && field.data == nullptr)) return "attribute '" + name + "' has no data";
    if (isScalar(spec.type) && n != 1) {
      return "attribute '" + name + "' must be a single " + typeName(spec.type) + ", got " + std::to_string(n) +
             " elements";
    }
    bool typeOk = false;
    if (isIntType(spec.type)) {
      if (field.type == PluginFieldType::kINT32) {
        auto const* p = static_cast<int32_t const*>(field.data);
        value.ints.assign(p, p + n);
        typeOk = true;
      } else if (field.type == PluginFieldType::kINT64) {
        auto const* p = static_cast<int64_t const*>(field.data);
        value.ints.clear();
        for (int32_t i = 0; i < n; ++i) {
          if (p[i] < std::numeric_limits<int32_t>::min() || p[i] > std::numeric_limits<int32_t>::max()) {
            return "attribute '" + name + "' element " + std::to_string(i) + " does not fit int32";
          }
          value.ints.push_back(static_cast<int32_t>(p[i]));
        }
        typeOk = true;
      }
    } else if (isFloatType(spec.type)) {
      if (field.type == PluginFieldType::kFLOAT32) {
        auto const* p = static_cast<float const*>(field.data);
        value.floats.assign(p, p + n);
        typeOk = true;
      } else if (field.type == PluginFieldType::kFLOAT64) {
        auto const* p = static_cast<double const*>(field.data);
        value.floats.clear();
        for (int32_t i = 0; i < n; ++i) value.floats.push_back(static_cast<float>(p[i]));
        typeOk = true;
      }
      if (typeOk) {
        for (float x : value.floats) {
          if (!std::isfinite(x)) return "attribute '" + name + "' is NaN or inf";
        }
      }
    } else if (field.type == PluginFieldType::kCHAR) {
      value.str.assign(static_cast<char const*>(field.data), static_cast<size_t>(n));
      while (!value.str.empty() && value.str.back() == '\0') value.str.pop_back();
      typeOk = true;
    }
    if (!typeOk) {
      return "attribute '" + name + "' must be " + typeName(spec.type) + ", got PluginFieldType " +
             std::to_string(static_cast<int32_t>(field.type));
    }
  }
  return "";
}

nvinfer1::PluginFieldCollection const* AttrValues::toFields() {
  mFields.clear();
  for (int32_t i = 0; i < mCount; ++i) {
    AttrSpec const& s = mSpecs[i];
    Value const& v = mValues[i];
    if (isIntType(s.type)) {
      mFields.emplace_back(s.name, v.ints.data(), PluginFieldType::kINT32, static_cast<int32_t>(v.ints.size()));
    } else if (isFloatType(s.type)) {
      mFields.emplace_back(s.name, v.floats.data(), PluginFieldType::kFLOAT32, static_cast<int32_t>(v.floats.size()));
    } else {
      mFields.emplace_back(s.name, v.str.c_str(), PluginFieldType::kCHAR, static_cast<int32_t>(v.str.size()));
    }
  }
  mCollection.nbFields = static_cast<int32_t>(mFields.size());
  mCollection.fields = mFields.data();
  return &mCollection;
}

std::string AttrValues::describe() const {
  std::ostringstream os;
  os.precision(std::numeric_limits<float>::max_digits10);
  for (int32_t i = 0; i < mCount; ++i) {
    AttrSpec const& s = mSpecs[i];
    Value const& v = mValues[i];
    os << (i ? " " : "") << s.name << "=";
    if (s.type == AttrType::kINT) {
      os << v.ints.at(0);
    } else if (s.type == AttrType::kFLOAT) {
      os << v.floats.at(0);
    } else if (s.type == AttrType::kINTS || s.type == AttrType::kFLOATS) {
      os << "[";
      size_t const n = s.type == AttrType::kINTS ? v.ints.size() : v.floats.size();
      for (size_t k = 0; k < n; ++k) {
        os << (k ? "," : "");
        if (s.type == AttrType::kINTS) {
          os << v.ints[k];
        } else {
          os << v.floats[k];
        }
      }
      os << "]";
    } else {
      os << "'" << v.str << "'";
    }
  }
  return os.str();
}

std::vector<PluginField> fieldNamesFromTable(AttrSpec const* specs, int32_t count) {
  std::vector<PluginField> fields;
  for (int32_t i = 0; i < count; ++i) {
    AttrSpec const& s = specs[i];
    PluginFieldType const t = isIntType(s.type)     ? PluginFieldType::kINT32
                              : isFloatType(s.type) ? PluginFieldType::kFLOAT32
                                                    : PluginFieldType::kCHAR;
    fields.emplace_back(s.name, nullptr, t, s.length);
  }
  return fields;
}

// ---------------------------------------------------------------------------------------------
int32_t dimToInt32(int64_t d) noexcept {
  return d >= 0 && d <= std::numeric_limits<int32_t>::max() ? static_cast<int32_t>(d) : -1;
}

std::string dimsToString(nvinfer1::Dims const& dims) {
  std::string s = "[";
  for (int32_t i = 0; i < dims.nbDims; ++i) s += (i ? ", " : "") + std::to_string(dims.d[i]);
  return s + "]";
}

bool constantMismatch(nvinfer1::IDimensionExpr const* e, int64_t value) noexcept {
  return e != nullptr && e->isConstant() && e->getConstantValue() != value;
}

// ---------------------------------------------------------------------------------------------
PluginBase::PluginBase(char const* pluginName, char const* pluginVersion, std::string layerName, AttrValues attrs)
    : mPluginName(pluginName),
      mPluginVersion(pluginVersion),
      mLayerName(std::move(layerName)),
      mAttrs(std::move(attrs)),
      mDescription(mAttrs.describe()) {}

nvinfer1::IPluginCapability* PluginBase::getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept {
  switch (type) {
    case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
  }
  return nullptr;
}

nvinfer1::IPluginV3* PluginBase::clone() noexcept {
  try {
    return cloneImpl();
  } catch (std::exception const& e) {
    reportError("clone", e.what());
  }
  return nullptr;
}

char const* PluginBase::getTimingCacheID() noexcept { return mDescription.c_str(); }

char const* PluginBase::getMetadataString() noexcept { return mDescription.c_str(); }

nvinfer1::IPluginV3* PluginBase::attachToContext(nvinfer1::IPluginResourceContext* context) noexcept {
  try {
    PluginBase* copy = cloneImpl();
    // NOTE: the recorder belongs to the execution context the copy is attached to; TensorRT
    // deletes the copy before the context, so the raw pointer never dangles.
    copy->mRecorder = context != nullptr ? context->getErrorRecorder() : nullptr;
    return copy;
  } catch (std::exception const& e) {
    reportError("attachToContext", e.what());
  }
  return nullptr;
}

nvinfer1::PluginFieldCollection const* PluginBase::getFieldsToSerialize() noexcept {
  try {
    return mAttrs.toFields();
  } catch (std::exception const& e) {
    reportError("getFieldsToSerialize", e.what());
  }
  return nullptr;
}

void PluginBase::reportError(char const* where, std::string const& msg, nvinfer1::ErrorCode code) const noexcept {
  try {
    std::string const full = std::string(mPluginName) + " (layer '" + mLayerName + "') " + where + ": " + msg;
    if (mRecorder != nullptr) mRecorder->reportError(code, full.c_str());
    log(nvinfer1::ILogger::Severity::kERROR, full);
  } catch (...) {
  }
}

int32_t PluginBase::cudaStatus(char const* where, int32_t err) const noexcept {
  if (err != 0) {
    auto const e = static_cast<cudaError_t>(err);
    reportError(where, std::string("CUDA error ") + cudaGetErrorName(e) + ": " + cudaGetErrorString(e),
                nvinfer1::ErrorCode::kFAILED_EXECUTION);
  }
  return err;
}

bool PluginBase::checkArity(char const* where, int32_t nbInputs, int32_t expectedInputs, int32_t nbOutputs,
                            int32_t expectedOutputs) const noexcept {
  if (nbInputs == expectedInputs && nbOutputs == expectedOutputs) return true;
  reportError(where, "expects " + std::to_string(expectedInputs) + " inputs and " + std::to_string(expectedOutputs) +
                         " outputs, got " + std::to_string(nbInputs) + " and " + std::to_string(nbOutputs));
  return false;
}

}  // namespace trt
}  // namespace maskrt
