"""Inference backends behind one interface (:class:`Backend`): open/close (a context manager),
``infer(images) -> outputs`` validated against the deployment contract, no silent device fallback.

``OrtBackend`` (ONNX Runtime) and ``TrtBackend`` (a TensorRT engine; TensorRT and cuda-python are
imported only by its ``open()``) are imported on first use, so ``from maskrt.runtime.backends import
Backend, validate_images`` does not load onnxruntime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import (
    FLAVOURS,
    FORMAT_VERSION,
    INPUT_NAME,
    META_CONFIG,
    META_FLAVOUR,
    META_FORMAT,
    META_PLUGINS,
    OUTPUT_DTYPES,
    OUTPUT_NAMES,
    Backend,
    BackendError,
    ContractError,
    ModelLoadError,
    ModelMetadata,
    ModelNotFoundError,
    expected_output_shapes,
    validate_images,
    validate_outputs,
)

if TYPE_CHECKING:
    from .ort import OrtBackend
    from .trt import BackendUnavailable, TrtBackend

__all__ = [
    "FLAVOURS", "FORMAT_VERSION", "INPUT_NAME", "META_CONFIG", "META_FLAVOUR", "META_FORMAT", "META_PLUGINS",
    "OUTPUT_DTYPES", "OUTPUT_NAMES", "Backend", "BackendError", "BackendUnavailable", "ContractError",
    "ModelLoadError", "ModelMetadata", "ModelNotFoundError", "OrtBackend", "TrtBackend", "expected_output_shapes",
    "validate_images", "validate_outputs",
]


def __getattr__(name: str) -> Any:
    if name == "OrtBackend":
        from .ort import OrtBackend

        return OrtBackend
    if name in ("TrtBackend", "BackendUnavailable"):
        from . import trt

        return getattr(trt, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
