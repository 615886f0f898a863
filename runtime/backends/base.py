"""The interface every inference backend shares, and the deployment contract it is checked against.

A backend runs the deployment graph (the contract of docs/architecture.md, "Contracts"):

* input ``images``: uint8 ``[B, H, W, 3]`` BGR at the graph's fixed input size ``(H, W)`` (multiples
  of 32); the runtime letterboxes frames to that size (:mod:`maskrt.runtime.letterbox`), and cast
  and normalisation happen inside the graph;
* outputs, fixed size with a count: ``num_detections`` int32 ``[B]``, ``boxes`` float32 ``[B, K, 4]``
  (x1, y1, x2, y2 in input pixels), ``scores`` float32 ``[B, K]``, ``classes`` int32 ``[B, K]``,
  ``masks`` float32 ``[B, K, M, M]`` with ``K = config.detections_per_img`` and
  ``M = config.mask_resolution``. Rows at or past ``num_detections[b]`` are padding; zero
  detections is a normal result.

Lifecycle (in the style of Polygraphy's runners): construct (cheap: arguments and model file are
checked), :meth:`Backend.open` (allocates the session / engine), :meth:`Backend.infer` any number of
times, :meth:`Backend.close`; or ``with backend: ...``. ``infer`` validates the batch before it
reaches native code and validates the outputs against the contract before returning them.
A backend never falls back silently to another device: what was asked for runs, or it raises.

This module imports neither torch nor onnx (an edge box has numpy, opencv, onnxruntime only).
"""

from __future__ import annotations

import abc
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from maskrt.runtime.config import ModelConfig
from maskrt.runtime.model_meta import (  # one definition for exporter, builder, backends
    FLAVOURS,
    FORMAT_VERSION,
    META_CONFIG,
    META_FLAVOUR,
    META_FORMAT,
    META_PLUGINS,
)

__all__ = [
    "Backend", "BackendError", "ContractError", "FLAVOURS", "FORMAT_VERSION", "INPUT_NAME", "META_CONFIG",
    "META_FLAVOUR", "META_FORMAT", "META_PLUGINS", "ModelLoadError", "ModelMetadata", "ModelNotFoundError",
    "OUTPUT_DTYPES", "OUTPUT_NAMES", "expected_output_shapes", "validate_images", "validate_outputs",
]

# ------------------------------------------------------------------------------ the contract
INPUT_NAME = "images"
INPUT_DTYPE = np.dtype(np.uint8)
# Output order is the contract's. Their one definition: the model (maskrt.train.model.mask_rcnn) and,
# through it, the exporter import them from here.
OUTPUT_NAMES = ("num_detections", "boxes", "scores", "classes", "masks")
OUTPUT_DTYPES: dict[str, np.dtype] = {
    "num_detections": np.dtype(np.int32),
    "boxes": np.dtype(np.float32),
    "scores": np.dtype(np.float32),
    "classes": np.dtype(np.int32),
    "masks": np.dtype(np.float32),
}

# ONNX metadata_props keys (the exporter, export/onnx_export.py, writes the same strings).


# ------------------------------------------------------------------------------ errors
class BackendError(RuntimeError):
    """A backend cannot do what was asked at run time: not open, the requested device/provider is
    not the one running, or the inference library failed."""


class ModelLoadError(ValueError):
    """A model file cannot be used: missing, truncated/corrupt, not a maskrt deployment graph
    (metadata), a graph that breaks the I/O contract, or one the inference library refuses."""


class ModelNotFoundError(ModelLoadError, FileNotFoundError):
    """The model file does not exist (both a :class:`ModelLoadError` and a ``FileNotFoundError``)."""

    def __str__(self) -> str:  # FileNotFoundError would format (errno, strerror); keep the message
        return str(self.args[0]) if self.args else ""


class ContractError(ValueError):
    """Backend outputs that break the deployment contract (a backend or graph bug, not bad input)."""


# ------------------------------------------------------------------------------ metadata
@dataclass(frozen=True)
class ModelMetadata:
    """The maskrt entries of a deployment graph's metadata, parsed and validated.

    ``raw`` holds every metadata entry of the file (maskrt's and any others) as strings."""

    config: ModelConfig
    flavour: str
    format_version: str
    plugins: dict[str, str] = field(default_factory=dict)  # {plugin name: version}; trt flavour only
    raw: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_props(cls, props: Mapping[str, str], source: str) -> ModelMetadata:
        """Parses ``props`` (ONNX ``metadata_props`` as a dict). ``source`` (a path) starts every
        error message. Raises :class:`ModelLoadError` naming the missing or invalid entry."""

        def bad(why: str) -> ModelLoadError:
            return ModelLoadError(f"{source}: {why}")

        props = dict(props)
        if not any(k.startswith("maskrt.") for k in props):
            have = f"its metadata keys are {sorted(props)}" if props else "it has no metadata"
            raise bad(f"not a maskrt deployment graph: no '{META_CONFIG}' metadata ({have}); "
                      "export one with export/onnx_export.py (`maskrt export`)")
        version = props.get(META_FORMAT)
        if version is None:
            raise bad(f"no '{META_FORMAT}' metadata: not a maskrt deployment graph, or a damaged one")
        if version != FORMAT_VERSION:
            raise bad(f"'{META_FORMAT}' is {version!r}; this runtime reads format version {FORMAT_VERSION!r} "
                      "(re-export the model with this maskrt, or upgrade the runtime)")
        text = props.get(META_CONFIG)
        if text is None:
            raise bad(f"no '{META_CONFIG}' metadata: the graph does not say its ModelConfig "
                      "(input size, classes, ...); re-export it with export/onnx_export.py")
        try:
            config = ModelConfig.from_json(text)
        except (ValueError, TypeError) as e:
            raise bad(f"invalid '{META_CONFIG}': {e}") from None
        flavour = props.get(META_FLAVOUR)
        if flavour not in FLAVOURS:
            raise bad(f"'{META_FLAVOUR}' must be one of {FLAVOURS}, got {flavour!r}")
        plugins: dict[str, str] = {}
        if META_PLUGINS in props:
            try:
                plugins = json.loads(props[META_PLUGINS])
            except json.JSONDecodeError as e:
                raise bad(f"'{META_PLUGINS}' is not valid JSON ({e})") from None
            if not isinstance(plugins, dict) or not all(
                    isinstance(k, str) and k and isinstance(v, str) and v for k, v in plugins.items()):
                raise bad(f"'{META_PLUGINS}' must be a JSON object {{plugin name: version string}}, "
                          f"got {props[META_PLUGINS]!r}")
        if flavour == "trt" and not plugins:
            raise bad(f"flavour 'trt' but no '{META_PLUGINS}' metadata naming the plugin versions")
        if flavour == "ort" and plugins:
            raise bad(f"flavour 'ort' (standard ops only) but '{META_PLUGINS}' lists plugins {sorted(plugins)}")
        return cls(config=config, flavour=flavour, format_version=version, plugins=plugins, raw=props)


# ------------------------------------------------------------------------------ validation
def validate_images(images: Any, input_size: tuple[int, int], *, min_batch: int = 1,
                    max_batch: int | None = None) -> np.ndarray:
    """Checks a batch against the input contract and returns it C-contiguous.

    ``images``: numpy uint8 ``[B, H, W, 3]`` BGR with ``(H, W) == input_size`` and
    ``min_batch <= B <= max_batch`` (``max_batch=None``: no upper limit).
    Returns the same array when it is already C-contiguous, else a C-contiguous copy.

    NOTE: a non-contiguous batch (a slice, a transposed view, a crop of a larger buffer) is not an
    error: it is copied with ``np.ascontiguousarray`` because native code and ONNX Runtime's
    ``bind_cpu_input`` read the buffer as dense NHWC. The copy costs one memcpy of the batch;
    pass contiguous frames (e.g. the letterbox output buffer) to avoid it.

    Raises ValueError naming the problem (type, dtype, rank, channels, size, empty or oversized
    batch) and how to fix it.
    """
    in_h, in_w = (int(v) for v in input_size)
    if not isinstance(images, np.ndarray):
        hint = ""
        if isinstance(images, (list, tuple)):
            hint = "; for a list of frames use np.stack(frames) after letterboxing each to the input size"
        raise ValueError(f"images must be a numpy.ndarray uint8 [B, H, W, 3] BGR, got {type(images).__name__}{hint}")
    if images.dtype != INPUT_DTYPE:
        raise ValueError(f"images must be uint8 (BGR, 0..255), got dtype {images.dtype}: the graph casts and "
                         "normalises itself; pass the uint8 frames that the runtime letterboxes "
                         "(maskrt.runtime.letterbox), not normalised floats")
    if images.ndim != 4:
        hint = ""
        if images.ndim == 3 and images.shape[-1] == 3:
            hint = ": a single image [H, W, 3] needs a batch axis (images[None])"
        elif images.ndim in (2, 3):
            hint = " (greyscale? convert each frame with cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))"
        raise ValueError(f"images must be 4-D [B, H, W, 3], got {images.ndim}-D with shape {images.shape}{hint}")
    b, h, w, c = images.shape
    if c != 3:
        if c == 1:
            hint = " (greyscale: convert with cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))"
        elif c == 4:
            hint = " (RGBA/BGRA: drop the alpha channel, e.g. cv2.cvtColor(img, cv2.COLOR_BGRA2BGR))"
        elif h == 3:
            hint = " (this looks channels-first [B, 3, H, W]; the contract is channels-last NHWC)"
        else:
            hint = ""
        raise ValueError(f"images must have 3 BGR channels in the last axis [B, H, W, 3], got {c} "
                         f"(shape {images.shape}){hint}")
    if b == 0:
        raise ValueError(f"empty batch: images has shape {images.shape}; pass at least {max(min_batch, 1)} image(s)")
    if (h, w) != (in_h, in_w):
        raise ValueError(f"images are {h}x{w} (HxW) but the graph's input size is {in_h}x{in_w}: letterbox "
                         f"frames to the input size first (maskrt.runtime.letterbox.letterbox)")
    if b < min_batch or (max_batch is not None and b > max_batch):
        span = f"exactly {min_batch}" if max_batch == min_batch else (
            f"{min_batch}..{max_batch}" if max_batch is not None else f">= {min_batch}")
        raise ValueError(f"batch of {b} images, but this backend takes a batch size of {span}: split or pad the batch")
    if not images.flags.c_contiguous:
        images = np.ascontiguousarray(images)
    return images


def expected_output_shapes(batch: int, max_detections: int, mask_resolution: int) -> dict[str, tuple[int, ...]]:
    """The contract's output shapes for a batch of ``batch`` images (K = ``max_detections``,
    M = ``mask_resolution``)."""
    b, k, m = batch, max_detections, mask_resolution
    return {"num_detections": (b,), "boxes": (b, k, 4), "scores": (b, k), "classes": (b, k), "masks": (b, k, m, m)}


def validate_outputs(outputs: Mapping[str, Any], *, batch: int, max_detections: int,
                     mask_resolution: int) -> dict[str, np.ndarray]:
    """Checks backend outputs against the contract and returns them as a dict in contract order.

    ``outputs`` must hold exactly :data:`OUTPUT_NAMES` as numpy arrays with the exact dtypes of
    :data:`OUTPUT_DTYPES` and the shapes of :func:`expected_output_shapes`, and
    ``0 <= num_detections[b] <= max_detections``, and the detections (rows before the count) of
    ``boxes``, ``scores`` and ``masks`` finite. Raises :class:`ContractError` naming the output.
    """
    missing = [n for n in OUTPUT_NAMES if n not in outputs]
    extra = sorted(set(outputs) - set(OUTPUT_NAMES))
    if missing or extra:
        raise ContractError(f"outputs must be exactly {list(OUTPUT_NAMES)}; missing {missing}, unexpected {extra}")
    shapes = expected_output_shapes(batch, max_detections, mask_resolution)
    out: dict[str, np.ndarray] = {}
    for name in OUTPUT_NAMES:
        a = outputs[name]
        if not isinstance(a, np.ndarray):
            raise ContractError(f"output '{name}' must be a numpy.ndarray, got {type(a).__name__}")
        if a.dtype != OUTPUT_DTYPES[name]:
            raise ContractError(f"output '{name}' must be {OUTPUT_DTYPES[name]}, got {a.dtype}")
        if a.shape != shapes[name]:
            raise ContractError(f"output '{name}' must have shape {shapes[name]} (B={batch}, K={max_detections}, "
                                f"M={mask_resolution}), got {a.shape}")
        out[name] = a
    n = out["num_detections"]
    if n.size and (n.min() < 0 or n.max() > max_detections):
        raise ContractError(f"num_detections must be in [0, {max_detections}], got {n.tolist()}")
    # NOTE: NaN/inf in a detection (broken weights, an fp16 overflow in an engine) would travel
    # into box scaling, mask paste, overlays and JSON ("NaN" is not JSON); refused here, where the
    # backend is named. Padding rows (at or past the count) are not looked at.
    valid = np.arange(max_detections)[None, :] < n[:, None]
    for name in ("boxes", "scores", "masks"):
        rows = out[name][valid]
        if rows.size and not np.isfinite(rows).all():
            bad = sorted({int(i) for i in np.nonzero(~np.isfinite(out[name]).reshape(batch, max_detections, -1)
                                                     .any(-1) & valid)[0]})
            raise ContractError(f"output '{name}' has NaN or inf in the detections of image(s) {bad} of the batch: "
                                "the model or engine produces non-finite values (diverged weights, or an fp16 "
                                "overflow: rebuild the engine in fp32 to check)")
    return out


# ------------------------------------------------------------------------------ the interface
class Backend(abc.ABC):
    """An inference backend for the deployment graph (see the module docstring).

    Subclasses implement :meth:`_open`, :meth:`_close`, :meth:`_infer` and :attr:`config`; the
    base class owns the lifecycle state and the validation around ``_infer``.

    Thread-safety: :meth:`infer` may be called from several threads only where the subclass says
    so; :meth:`open` and :meth:`close` must not race with anything.
    """

    #: short backend name ("ort", "trt", "torch")
    name: str = "backend"

    def __init__(self) -> None:
        self._is_open = False

    # ---------------------------------------------------------------- properties
    @property
    @abc.abstractmethod
    def config(self) -> ModelConfig:
        """The model's ModelConfig (from the artefact's metadata); available before :meth:`open`."""

    @property
    def input_size(self) -> tuple[int, int]:
        """``(H, W)`` the graph takes: multiples of 32, equal to ``config.input_size``."""
        h, w = self.config.input_size
        return int(h), int(w)

    @property
    def min_batch(self) -> int:
        """Smallest batch :meth:`infer` accepts."""
        return 1

    @property
    def max_batch(self) -> int | None:
        """Largest batch :meth:`infer` accepts; None: no limit (dynamic batch)."""
        return None

    @property
    def max_detections(self) -> int:
        """K of the outputs."""
        return int(self.config.detections_per_img)

    @property
    def mask_resolution(self) -> int:
        """M of ``masks`` [B, K, M, M]."""
        return int(self.config.mask_resolution)

    @property
    def is_open(self) -> bool:
        return self._is_open

    # ---------------------------------------------------------------- lifecycle
    def open(self) -> Backend:
        """Creates the session/engine. Raises :class:`BackendError` if already open. Returns self."""
        if self._is_open:
            raise BackendError(f"{self!r} is already open")
        self._open()
        self._is_open = True
        return self

    def close(self) -> None:
        """Releases the session/engine. Closing a closed backend does nothing; it can be reopened."""
        if not self._is_open:
            return
        try:
            self._close()
        finally:
            self._is_open = False

    def __enter__(self) -> Backend:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- inference
    def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Runs the graph on a batch.

        ``images``: numpy uint8 ``[B, H, W, 3]`` BGR at :attr:`input_size`, ``min_batch <= B <=
        max_batch``. Returns ``{num_detections int32 [B], boxes float32 [B, K, 4], scores float32
        [B, K], classes int32 [B, K], masks float32 [B, K, M, M]}`` (contract order, fresh arrays
        owned by the caller). Raises ValueError for a bad batch (before any native call),
        :class:`BackendError` when the backend is not open or the library fails, and
        :class:`ContractError` if the graph's outputs break the contract.
        """
        if not self._is_open:
            raise BackendError(f"{self!r} is not open: call open() first or use `with backend: ...`")
        images = validate_images(images, self.input_size, min_batch=self.min_batch, max_batch=self.max_batch)
        outputs = self._infer(images)
        return validate_outputs(outputs, batch=images.shape[0], max_detections=self.max_detections,
                                mask_resolution=self.mask_resolution)

    # ---------------------------------------------------------------- subclass hooks
    @abc.abstractmethod
    def _open(self) -> None:
        """Allocate the session/engine (called by :meth:`open`)."""

    @abc.abstractmethod
    def _close(self) -> None:
        """Release what :meth:`_open` allocated (called by :meth:`close`)."""

    @abc.abstractmethod
    def _infer(self, images: np.ndarray) -> Mapping[str, np.ndarray]:
        """Run on a validated, C-contiguous uint8 [B, H, W, 3] batch; return the contract outputs."""

    def __repr__(self) -> str:
        state = "open" if self._is_open else "closed"
        return f"<{type(self).__name__} {self.name} ({state})>"
