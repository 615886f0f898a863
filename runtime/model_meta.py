"""Keys of the metadata every exported ONNX model carries (``metadata_props``).

Torch- and onnx-free, so that the exporter, the engine builder and the runtime backends share
one definition.
"""

from __future__ import annotations

FORMAT_VERSION = "1"
FLAVOURS = ("ort", "trt")

META_CONFIG = "maskrt.model_config"  # ModelConfig JSON (runtime/config.py)
META_FLAVOUR = "maskrt.flavour"  # "ort" | "trt"
META_PLUGINS = "maskrt.plugins"  # trt flavour: JSON {plugin name: version} of the plugin table
META_FORMAT = "maskrt.format_version"  # FORMAT_VERSION
# "fp32" | "fp16" | "int8": the precision decided in the graph (maskrt export --precision); absent = fp32
META_PRECISION = "maskrt.precision"
# int8: JSON {"sha256": hash of the calibration images, "images": N, "method": ...} (export/quantize.py)
META_CALIBRATION = "maskrt.calibration"
PRECISIONS = ("fp32", "fp16", "int8")
