"""``Predictor``: frames in, ``Detections`` in original-image coordinates out, on any backend.

    with Predictor.open("model.onnx") as p:       # .onnx -> ONNX Runtime, .engine/.plan -> TensorRT,
        dets = p.predict(frame)                   # .pt -> PyTorch, triton://host:port/model -> Triton
        print(len(dets), dets.class_names, dets.bitmaps().shape)

The three steps are separate methods so the video pipeline can run them on different threads:
:meth:`prepare` (letterbox each frame into a batch buffer, recording scale), :meth:`infer` (the
backend) and :meth:`finish` (boxes back to original coordinates, one ``Detections`` per frame).

``prepare`` letterboxes with the native core (``maskrt._core``, bit-exact to the OpenCV reference
``maskrt.runtime.letterbox``; tests/test_native_core.py); ``Predictor(..., native=False)`` asks for
the reference. No silent fallback: without the native core, ``native=True`` raises
``NativeCoreUnavailableError``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from maskrt.runtime.backends.base import Backend
from maskrt.runtime.config import ModelConfig
from maskrt.runtime.detections import Detections
from maskrt.runtime.letterbox import as_bgr
from maskrt.runtime.letterbox import letterbox as reference_letterbox
from maskrt.runtime.postprocess import scale_detections

ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
CHECKPOINT_SUFFIXES = (".pt", ".pth")


@dataclass(frozen=True)
class FrameInfo:
    """How one frame was fitted into the graph input."""

    image_size: tuple[int, int]  # (h, w) of the original frame
    scale: tuple[float, float]  # (sx, sy): input pixels per original pixel


def open_backend(artifact: str | os.PathLike, **kwargs: Any) -> Backend:
    """The backend an artefact needs, chosen by its suffix (not opened):
    ``.onnx`` -> OrtBackend, ``.engine``/``.plan``/``.trt`` -> TrtBackend, ``.pt``/``.pth`` -> TorchBackend;
    a URL ``triton://HOST:PORT/MODEL`` (``triton+http://`` for HTTP) -> TritonBackend (a model on a
    Triton server). ``kwargs`` go to the backend's constructor."""
    if isinstance(artifact, str) and "://" in artifact:
        from maskrt.runtime.backends.triton import TritonBackend, is_triton_url

        if not is_triton_url(artifact):
            raise ValueError(f"{artifact}: unknown URL scheme; a model on a Triton server is "
                             "triton://HOST:PORT/MODEL (gRPC) or triton+http://HOST:PORT/MODEL")
        return TritonBackend(artifact, **kwargs)
    path = Path(artifact)
    suffix = path.suffix.lower()
    if suffix in ONNX_SUFFIXES:
        from maskrt.runtime.backends.ort import OrtBackend

        return OrtBackend(path, **kwargs)
    if suffix in ENGINE_SUFFIXES:
        from maskrt.runtime.backends.trt import TrtBackend

        return TrtBackend(path, **kwargs)
    if suffix in CHECKPOINT_SUFFIXES:
        from maskrt.runtime.backends.torch_backend import TorchBackend

        return TorchBackend(path, **kwargs)
    raise ValueError(f"{path}: unknown model type {suffix or '(no suffix)'!r}; expected one of "
                     f"{ONNX_SUFFIXES + ENGINE_SUFFIXES + CHECKPOINT_SUFFIXES}")


class Predictor:
    """Wraps an (unopened or open) backend; :meth:`open` / ``with`` opens it.

    upscale: enlarge frames smaller than the input size. native: letterbox with the native core
    (default) or, False, with the numpy/OpenCV reference. threads: threads of the native letterbox
    per frame (1: in the video pipeline the other stages and the inference library want the rest
    of the cores)."""

    def __init__(self, backend: Backend, *, upscale: bool = False, native: bool = True, threads: int = 1) -> None:
        self.backend = backend
        self.upscale = upscale
        self.native = bool(native)
        self.threads = int(threads)
        if self.native:
            from maskrt.runtime import native_core

            self._letterbox = functools.partial(native_core.letterbox, threads=self.threads)
            native_core.require()  # NativeCoreUnavailableError now, not at the first frame
        else:
            self._letterbox = reference_letterbox

    @classmethod
    def open(cls, artifact: str | os.PathLike, *, upscale: bool = False, native: bool = True, threads: int = 1,
             **backend_kwargs: Any) -> Predictor:
        """Opens the backend for ``artifact`` (see :func:`open_backend`)."""
        p = cls(open_backend(artifact, **backend_kwargs), upscale=upscale, native=native, threads=threads)
        p.backend.open()
        return p

    # ---------------------------------------------------------------- lifecycle
    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Predictor:
        if not self.backend.is_open:
            self.backend.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def config(self) -> ModelConfig:
        return self.backend.config

    @property
    def input_size(self) -> tuple[int, int]:
        return self.backend.input_size

    # ---------------------------------------------------------------- steps
    def prepare(self, frames: Sequence[np.ndarray], out: np.ndarray | None = None
                ) -> tuple[np.ndarray, list[FrameInfo]]:
        """Letterboxes frames (each uint8 [h, w, 3] BGR, any size) into a batch uint8 [B, H, W, 3]
        (``out`` if given, e.g. a reused buffer). Returns the batch and per-frame info.

        Greyscale uint8 frames ([h, w] or [h, w, 1]) are replicated to BGR and BGRA frames
        ([h, w, 4]) lose their alpha channel (:func:`maskrt.runtime.letterbox.as_bgr`); 16-bit,
        float and empty frames raise ValueError saying how to convert them."""
        h, w = self.input_size
        b = len(frames)
        if b == 0:
            raise ValueError("prepare: no frames")
        if out is None or out.shape[0] < b:
            out = np.empty((b, h, w, 3), np.uint8)
        infos = []
        for i, f in enumerate(frames):
            f = as_bgr(f, f"frame {i}" if b > 1 else "frame")
            if self.native and (f.strides[1:] != (3, 1) or f.strides[0] < 3 * f.shape[1]):  # packed rows only
                f = np.ascontiguousarray(f)
            lb = self._letterbox(f, (h, w), upscale=self.upscale, out=out[i])
            infos.append(FrameInfo((int(f.shape[0]), int(f.shape[1])), lb.scale))
        return out[:b], infos

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """The backend on a prepared batch: the deployment contract outputs."""
        return self.backend.infer(batch)

    def finish(self, outputs: dict[str, np.ndarray], infos: Sequence[FrameInfo]) -> list[Detections]:
        """Contract outputs -> one Detections per frame in original coordinates."""
        names = self.config.names
        dets = []
        for i, info in enumerate(infos):
            n = int(outputs["num_detections"][i])
            boxes = scale_detections(outputs["boxes"][i, :n], info.scale, (0.0, 0.0), info.image_size)
            dets.append(Detections(boxes.astype(np.float32), outputs["scores"][i, :n].copy(),
                                   outputs["classes"][i, :n].astype(np.int32), outputs["masks"][i, :n].copy(),
                                   info.image_size, names))
        return dets

    def predict(self, images: np.ndarray | Sequence[np.ndarray]) -> Detections | list[Detections]:
        """One frame (uint8 [h, w, 3]; greyscale [h, w] and BGRA [h, w, 4] are converted, see
        :meth:`prepare`) -> Detections; a list of frames or a uint8 [B, h, w, 3] array -> a list of
        Detections (one backend call)."""
        if not isinstance(images, (np.ndarray, list, tuple)):
            raise ValueError(f"images: expected a numpy array (one frame or a [B, h, w, 3] batch) or a list of frames, "
                             f"got {type(images).__name__}")
        single = isinstance(images, np.ndarray) and images.ndim in (2, 3)
        frames = [images] if single else list(images)
        batch, infos = self.prepare(frames)
        dets = self.finish(self.infer(batch), infos)
        return dets[0] if single else dets
