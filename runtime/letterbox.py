"""Letterbox: fit an image into the graph's fixed input size, keeping its aspect ratio.

The deployment graph takes uint8 BGR ``[B, H, W, 3]`` at the model's ``input_size``; cast and
normalisation are inside the graph. This is the numpy/OpenCV definition of the step that feeds
it, used by the INT8 calibrator (so calibration sees exactly the pixels inference sees) and as
the reference for the native pre-processing. It imports neither torch nor onnx.

The rule (the same as ``maskrt.train.evaluate.fit_to_input`` + ``pad_to_size``):

* ``s = min(H / h, W / w)``; an image that already fits is not enlarged unless ``upscale``;
* the resized size is ``(round(h * s), round(w * s))`` clamped to ``[1, H] x [1, W]``;
  NOTE: Python's ``round`` (ties to even), as ``fit_to_input`` does;
* resampling is cv2 ``INTER_LINEAR`` (half-pixel centres, like torch ``align_corners=False``);
* the image sits in the top-left corner; the bottom/right padding is 0 (black), so boxes map
  back with ``pad = (0, 0)`` and the per-axis ``scale = (new_w / w, new_h / h)``
  (``maskrt.runtime.postprocess.scale_detections``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import cv2
import numpy as np

__all__ = ["Letterbox", "letterbox", "letterbox_size"]


class Letterbox(NamedTuple):
    """Result of :func:`letterbox`."""

    image: np.ndarray  # uint8 [H, W, 3], the graph input for one frame
    scale: tuple[float, float]  # (sx, sy) = (new_w / w, new_h / h): input pixels per original pixel
    pad: tuple[float, float]  # (pad_x, pad_y) of the image's top-left corner: always (0, 0)
    resized: tuple[int, int]  # (new_h, new_w): the part of ``image`` that holds the picture


def _check_size(input_size: Sequence[int]) -> tuple[int, int]:
    try:
        in_h, in_w = (int(v) for v in input_size)
    except (TypeError, ValueError):
        raise ValueError(f"input_size: expected (H, W), got {input_size!r}") from None
    if in_h <= 0 or in_w <= 0:
        raise ValueError(f"input_size: expected positive (H, W), got {input_size!r}")
    return in_h, in_w


def letterbox_size(h: int, w: int, input_size: Sequence[int], *, upscale: bool = False) -> tuple[int, int]:
    """``(new_h, new_w)`` of an ``h x w`` image letterboxed into ``input_size`` (H, W)."""
    in_h, in_w = _check_size(input_size)
    if h <= 0 or w <= 0:
        raise ValueError(f"image size must be positive, got {h} x {w}")
    if not upscale and h <= in_h and w <= in_w:
        return h, w
    s = min(in_h / h, in_w / w)
    return min(in_h, max(1, round(h * s))), min(in_w, max(1, round(w * s)))


def letterbox(image: np.ndarray, input_size: Sequence[int], *, upscale: bool = False,
              out: np.ndarray | None = None) -> Letterbox:
    """Letterbox ``image`` (uint8 ``[h, w, 3]`` BGR) into ``input_size`` (H, W).

    ``out``: optional uint8 ``[H, W, 3]`` array to write into (e.g. one row of a preallocated
    batch ``[B, H, W, 3]``); it is fully overwritten, padding included. Returns a
    :class:`Letterbox` whose ``image`` is ``out`` when given.
    """
    in_h, in_w = _check_size(input_size)
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image: expected a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image: expected uint8 [h, w, 3], got {image.dtype} {list(image.shape)}")
    h, w = image.shape[:2]
    if h == 0 or w == 0:
        raise ValueError(f"image: empty ({h} x {w})")
    if out is None:
        out = np.empty((in_h, in_w, 3), np.uint8)
    elif not isinstance(out, np.ndarray) or out.dtype != np.uint8 or out.shape != (in_h, in_w, 3):
        got = f"{out.dtype} {list(out.shape)}" if isinstance(out, np.ndarray) else type(out).__name__
        raise ValueError(f"out: expected uint8 [{in_h}, {in_w}, 3], got {got}")
    elif not out.flags.writeable:
        raise ValueError("out: array is read-only")
    nh, nw = letterbox_size(h, w, (in_h, in_w), upscale=upscale)
    if (nh, nw) == (h, w):
        out[:nh, :nw] = image
    else:
        # NOTE: resize into a temporary: ``out[:nh, :nw]`` is a strided view that cv2 would not
        # write in place (it reallocates dst when it is not a continuous matrix).
        out[:nh, :nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    out[nh:, :] = 0
    out[:nh, nw:] = 0
    return Letterbox(out, (nw / w, nh / h), (0.0, 0.0), (nh, nw))
