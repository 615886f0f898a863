// The one registration of the maskrt TensorRT plugins: one creator per entry of
// plugins/plugin_table.json, exported through the entry points TensorRT looks up in a plugin
// library (IPluginRegistry::loadLibrary, trtexec --dynamicPlugins, the Python
// trt.get_plugin_registry().load_library). Creators register under the table's namespace.
#include <NvInferRuntime.h>

#include <cstdint>
#include <type_traits>

#include "batched_nms/detection_nms_plugin.h"
#include "batched_nms/rpn_nms_plugin.h"
#include "maskrt_plugin_table.h"
#include "pyramid_roi_align/pyramid_roi_align_plugin.h"
#include "tensorrt/plugin_common.h"

#define MASKRT_TRT_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

using namespace maskrt::trt;

// Generated from the table: entry <Name> needs a class <Name>Creator (compile error otherwise)
// built on that entry's spec, so its name, version and fields are the table's.
#define MASKRT_CREATOR_INSTANCE(Name)                                                       \
  static_assert(std::is_same_v<Name##Creator::TableSpec, maskrt::plugin_table::Name>,      \
                #Name "Creator must be a TableCreator of plugin_table::" #Name);           \
  Name##Creator g##Name##Creator;
MASKRT_PLUGIN_TABLE_FOREACH(MASKRT_CREATOR_INSTANCE)
#undef MASKRT_CREATOR_INSTANCE

#define MASKRT_CREATOR_POINTER(Name) &g##Name##Creator,
nvinfer1::IPluginCreatorInterface* const gCreators[] = {MASKRT_PLUGIN_TABLE_FOREACH(MASKRT_CREATOR_POINTER)};
#undef MASKRT_CREATOR_POINTER

static_assert(sizeof(gCreators) / sizeof(gCreators[0]) == maskrt::plugin_table::kNumPlugins,
              "one creator per plugin table entry");

}  // namespace

// TensorRT >= 10: the creators of this library (IPluginCreatorV3One, one per table entry).
MASKRT_TRT_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
  nbCreators = maskrt::plugin_table::kNumPlugins;
  return gCreators;
}

// The legacy entry point (IPluginCreator = IPluginV2 creators). NOTE: TensorRT 10 uses
// getCreators when a library has it; this library has no IPluginV2 creators, so the legacy list
// is empty (handing V3 creators to a pre-10 loader as V2 ones would be undefined behaviour).
MASKRT_TRT_EXPORT nvinfer1::IPluginCreator* const* getPluginCreators(int32_t& nbCreators) {
  nbCreators = 0;
  return nullptr;
}

// TensorRT hands its logger finder to the library on load; our messages go to that logger.
MASKRT_TRT_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder) { maskrt::trt::setLoggerFinder(finder); }
