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

__all__ = ["Letterbox", "as_bgr", "letterbox", "letterbox_size"]


class Letterbox(NamedTuple):
    """Result of :func:`letterbox`."""

    image: np.ndarray  # uint8 [H, W, 3], the graph input for one frame
    scale: tuple[float, float]  # (sx, sy) = (new_w / w, new_h / h): input pixels per original pixel
    pad: tuple[float, float]  # (pad_x, pad_y) of the image's top-left corner: always (0, 0)
    resized: tuple[int, int]  # (new_h, new_w): the part of ``image`` that holds the picture


def as_bgr(image: object, what: str = "image") -> np.ndarray:
    """A frame as uint8 ``[h, w, 3]`` BGR, converting what has one obvious meaning.

    * uint8 ``[h, w, 3]``: returned as is (no copy; any strides);
    * uint8 greyscale ``[h, w]`` or ``[h, w, 1]``: replicated to three channels
      (``cv2.COLOR_GRAY2BGR``);
    * uint8 ``[h, w, 4]``: taken as BGRA (what ``cv2.imread(..., cv2.IMREAD_UNCHANGED)`` and most
      capture APIs give) and the alpha channel dropped (``cv2.COLOR_BGRA2BGR``); an RGBA frame
      from another library must be converted by the caller (``cv2.COLOR_RGBA2BGR``).

    Everything else raises ValueError naming ``what`` and saying how to convert: 16-bit or other
    integer frames and float frames are refused rather than guessed (their value range -- 12-bit
    in 16, 0..1 or 0..255 floats -- is not knowable here), as are empty frames and other shapes.
    """
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{what}: expected a numpy array uint8 [h, w, 3] BGR, got {type(image).__name__}")
    if image.dtype != np.uint8:
        kind = image.dtype.kind
        if kind in "iu" and image.dtype.itemsize > 1:
            how = ("scale it to 8 bits first, e.g. (img >> 8).astype(np.uint8) for full-range 16-bit data, "
                   "or cv2.convertScaleAbs(img, alpha=255 / max_value) for 10/12-bit data")
        elif kind == "f":
            how = ("convert it to 0..255 uint8 first, e.g. np.clip(img * 255, 0, 255).astype(np.uint8) for 0..1 "
                   "floats, or np.clip(img, 0, 255).astype(np.uint8) for 0..255 floats (NaN must be replaced "
                   "first); the graph normalises by itself")
        else:
            how = "convert it to uint8 0..255 first"
        raise ValueError(f"{what}: expected uint8 BGR pixels, got dtype {image.dtype} {list(image.shape)}; {how}")
    if image.ndim == 3 and image.shape[2] == 3:
        pass
    elif image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 4)):
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError(f"{what}: empty ({image.shape[0]} x {image.shape[1]})")
        code = cv2.COLOR_BGRA2BGR if image.ndim == 3 and image.shape[2] == 4 else cv2.COLOR_GRAY2BGR
        # NOTE: cv2 needs unit pixel strides; a strided view is made contiguous first.
        image = cv2.cvtColor(np.ascontiguousarray(image), code)
    else:
        raise ValueError(f"{what}: expected [h, w, 3] BGR (or greyscale [h, w] / [h, w, 1], or BGRA [h, w, 4]), "
                         f"got shape {list(image.shape)}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{what}: empty ({image.shape[0]} x {image.shape[1]})")
    return image


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
