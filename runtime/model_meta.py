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
