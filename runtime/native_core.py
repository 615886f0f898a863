"""The native runtime core: letterbox, mask paste, COCO RLE and overlay in C++ (``maskrt._core``).

Thin wrappers over the compiled module: they convert what is safe to convert (``masks`` and
``boxes`` to C-ordered float32, as the numpy references do), fill in defaults, and shape the
results; the compiled module validates every array (dtype, shape, layout, finiteness) with a
``ValueError`` naming the argument before any pointer reaches C++, and releases the GIL while its
kernels run, so other Python threads (capture, inference) keep going.

Each function is the twin of a numpy/OpenCV reference, with the same semantics:

* :func:`letterbox` = :func:`maskrt.runtime.letterbox.letterbox` (same arguments, same
  :class:`~maskrt.runtime.letterbox.Letterbox` result); its INTER_LINEAR resize reproduces
  ``cv2.resize``'s fixed-point arithmetic bit for bit (tested against the installed OpenCV).
* :func:`paste_masks` = :func:`maskrt.runtime.postprocess.paste_masks` (torchvision's paste and
  ``> threshold``); computed in float64 operation for operation like the float64 mirror of
  ``tests/references.py``, so it equals that mirror bit for bit; the OpenCV float32 reference can
  differ only at pixels whose probability is within ~1e-6 of the threshold.
* :func:`rle_encode` / :func:`paste_to_rle` = ``pycocotools.mask.encode`` (compressed COCO RLE,
  the same ``counts`` bytes).

``threads``: the number of threads a call may use; ``<= 0`` (the default) means all hardware
threads. Results never depend on it.

No silent fallback: when ``maskrt._core`` is not built, :data:`NATIVE_AVAILABLE` is False and every
function raises :class:`NativeCoreUnavailableError` (an ``ImportError``). This module imports
neither torch nor onnx.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from maskrt.runtime.letterbox import Letterbox

try:
    from maskrt import _core  # type: ignore[attr-defined]
except ImportError as _e:  # pragma: no cover - depends on the build
    _core = None
    _IMPORT_ERROR: ImportError | None = _e
else:
    _IMPORT_ERROR = None

__all__ = [
    "NATIVE_AVAILABLE",
    "NativeCoreUnavailableError",
    "draw_labels",
    "draw_overlay",
    "letterbox",
    "palette_colors",
    "paste_label_map",
    "paste_masks",
    "paste_to_rle",
    "require",
    "resize_linear",
    "rle_encode",
]

#: True when the compiled module ``maskrt._core`` could be imported.
NATIVE_AVAILABLE: bool = _core is not None


class NativeCoreUnavailableError(ImportError):
    """``maskrt._core`` (the compiled native core) is not installed or failed to load."""


def _lib() -> Any:
    if _core is None:
        raise NativeCoreUnavailableError(
            f"maskrt._core is not available ({_IMPORT_ERROR}); it is compiled by the package build: "
            "`make install` or `pip install -e .` in the repository") from _IMPORT_ERROR
    return _core


def require() -> None:
    """Raises :class:`NativeCoreUnavailableError` (saying how to build it) unless the core is built."""
    _lib()


# ---------------------------------------------------------------------------------- helpers


def _size_pair(value: Sequence[int], name: str) -> tuple[int, int]:
    try:
        a, b = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected (H, W), got {value!r}") from None
    if a <= 0 or b <= 0:
        raise ValueError(f"{name}: expected positive (H, W), got {value!r}")
    return a, b


def _float32(x: Any, name: str) -> np.ndarray:
    try:
        return np.ascontiguousarray(x, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: cannot be read as a float32 array ({e})") from None


def _require_ndarray(x: Any, name: str) -> None:
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array, got {type(x).__name__}")


# ---------------------------------------------------------------------------------- letterbox


def letterbox(image: np.ndarray, input_size: Sequence[int] | None = None, *, upscale: bool = False,
              out: np.ndarray | None = None, pad_value: int = 0, threads: int = 0) -> Letterbox:
    """Letterbox ``image`` (uint8 ``[h, w, 3]`` BGR) into ``input_size`` (H, W); the native twin of
    :func:`maskrt.runtime.letterbox.letterbox`.

    Rule: ``s = min(H / h, W / w)``; an image that already fits is copied, not enlarged, unless
    ``upscale``; the picture is ``(round(h * s), round(w * s))`` (Python's round, half to even)
    clamped to ``[1, H] x [1, W]``, resized with cv2 ``INTER_LINEAR`` semantics (bit-exact), placed
    in the top-left corner; everything else is ``pad_value`` (0, black, in the reference).

    Args:
        image: uint8 ``[h, w, 3]``; rows may be strided (a crop of a larger frame), pixels packed.
        input_size: ``(H, W)``; may be omitted when ``out`` is given (its shape is used).
        upscale: enlarge images smaller than the input size.
        out: optional uint8 ``[H, W, 3]`` to write into (e.g. ``batch[i]`` of a preallocated
            ``[B, H, W, 3]`` batch); fully overwritten, padding included. Must not overlap ``image``.
        pad_value: the padding intensity, 0..255.
        threads: threads to use (``<= 0``: all).

    Returns a :class:`~maskrt.runtime.letterbox.Letterbox`: ``image`` (``out`` when given),
    ``scale = (new_w / w, new_h / h)``, ``pad = (0.0, 0.0)``, ``resized = (new_h, new_w)``; boxes
    map back with :func:`maskrt.runtime.postprocess.scale_detections` (``scale``, ``pad``).
    """
    lib = _lib()
    _require_ndarray(image, "image")
    if out is None:
        if input_size is None:
            raise ValueError("input_size: required when out is not given")
        in_h, in_w = _size_pair(input_size, "input_size")
        out = np.empty((in_h, in_w, 3), np.uint8)
    else:
        _require_ndarray(out, "out")
        if input_size is not None and tuple(out.shape[:2]) != _size_pair(input_size, "input_size"):
            raise ValueError(f"out: expected shape [{input_size[0]}, {input_size[1]}, 3] (input_size), "
                             f"got {list(out.shape)}")
    new_h, new_w = lib.letterbox(image, out, bool(upscale), int(pad_value), int(threads))
    h, w = image.shape[:2]
    return Letterbox(out, (new_w / w, new_h / h), (0.0, 0.0), (int(new_h), int(new_w)))


def resize_linear(image: np.ndarray, size: Sequence[int] | None = None, *, out: np.ndarray | None = None,
                  threads: int = 0) -> np.ndarray:
    """``cv2.resize(image, (W, H), interpolation=cv2.INTER_LINEAR)`` for uint8 ``[h, w, 3]`` images,
    bit-exact. ``size = (H, W)`` or ``out`` (uint8 ``[H, W, 3]``, not overlapping ``image``).
    Returns uint8 ``[H, W, 3]`` (``out`` when given)."""
    lib = _lib()
    _require_ndarray(image, "image")
    if out is None:
        if size is None:
            raise ValueError("size: required when out is not given")
        h, w = _size_pair(size, "size")
        out = np.empty((h, w, 3), np.uint8)
    else:
        _require_ndarray(out, "out")
    lib.resize_linear(image, out, int(threads))
    return out


# ---------------------------------------------------------------------------------- paste


def paste_masks(masks: np.ndarray, boxes: np.ndarray, image_size: Sequence[int], threshold: float = 0.5, *,
                threads: int = 0) -> np.ndarray:
    """Paste low-resolution mask probabilities into full-size bitmaps (torchvision semantics).

    The native twin of :func:`maskrt.runtime.postprocess.paste_masks` (its module docstring lists
    the six rules: one-pixel zero pad, box scaled by (M + 2) / M in float32, truncation toward zero,
    inclusive integer box, half-pixel bilinear, crop at the borders, ``prob > threshold``).

    Args:
        masks: float32 ``[K, M, M]`` probabilities (other float dtypes are converted); finite.
        boxes: float32 ``[K, 4]`` (x1, y1, x2, y2) in target-image pixels; finite.
        image_size: ``(H, W)`` of the target image.
        threshold: foreground when the pasted probability is ``> threshold`` (strictly).
        threads: threads to use (``<= 0``: all); instances are spread over them.

    Returns bool ``[K, H, W]`` (``[0, H, W]`` for K = 0). A box wholly outside the image gives an
    empty bitmap. For many instances prefer :func:`paste_label_map` or :func:`paste_to_rle`: K
    full-size bitmaps are K * H * W bytes (92 MB for 100 masks at 1280x720).
    """
    lib = _lib()
    h, w = _size_pair(image_size, "image_size")
    return lib.paste_masks(_float32(masks, "masks"), _float32(boxes, "boxes"), h, w, float(threshold), int(threads))


def paste_label_map(masks: np.ndarray, boxes: np.ndarray, image_size: Sequence[int],
                    labels: np.ndarray | Sequence[int] | None = None, threshold: float = 0.5, *,
                    dtype: type | np.dtype = np.uint16, threads: int = 0) -> np.ndarray:
    """One label image for all instances: ``[H, W]`` of ``dtype`` (uint16 or int32).

    Rule: a pixel gets ``labels[i]`` of the FIRST instance ``i`` (in the given order) whose pasted
    mask (exactly :func:`paste_masks`'s bitmap) covers it; 0 where none does. Detections come sorted
    by descending score from the graph, so "first" is "highest-scoring"; overlapping lower-scoring
    instances lose the shared pixels.

    Args:
        masks, boxes, image_size, threshold: as :func:`paste_masks`.
        labels: ``[K]`` integers >= 1 that fit ``dtype`` (e.g. class ids, or track ids); default
            ``1..K`` (instance index + 1).
        dtype: ``np.uint16`` (default; labels up to 65535) or ``np.int32``.
        threads: threads to use (``<= 0``: all); image rows are spread over them.
    """
    lib = _lib()
    h, w = _size_pair(image_size, "image_size")
    m = _float32(masks, "masks")
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.uint16), np.dtype(np.int32)):
        raise ValueError(f"dtype: expected uint16 or int32, got {dt}")
    k = m.shape[0] if m.ndim == 3 else -1
    if labels is None:
        lab = np.arange(1, max(k, 0) + 1, dtype=np.int64)
    else:
        lab = np.asarray(labels)
        if lab.dtype.kind not in "iu":
            raise ValueError(f"labels: expected integers, got dtype {lab.dtype}")
    info = np.iinfo(dt)
    if lab.size and (lab.min() < 1 or lab.max() > info.max):
        raise ValueError(f"labels: values must be in [1, {info.max}] for dtype {dt} (0 is the background), "
                         f"got [{lab.min()}, {lab.max()}]")
    lab = np.ascontiguousarray(lab, dtype=dt)
    return lib.paste_label_map(m, _float32(boxes, "boxes"), h, w, lab, float(threshold), int(threads))


def paste_to_rle(masks: np.ndarray, boxes: np.ndarray, image_size: Sequence[int], threshold: float = 0.5, *,
                 threads: int = 0) -> list[dict[str, Any]]:
    """COCO compressed RLE of each pasted mask, without materialising the full-size bitmaps.

    Equal to ``rle_encode(paste_masks(masks, boxes, image_size, threshold))`` (and so to
    ``pycocotools.mask.encode`` of those bitmaps). Arguments as :func:`paste_masks`; H * W < 2^32.

    Returns K dicts ``{"size": [H, W], "counts": bytes}`` (what ``pycocotools.mask.encode`` returns;
    ``pycocotools.mask.decode/area/iou`` accept them; ``counts.decode("ascii")`` for JSON).
    """
    lib = _lib()
    h, w = _size_pair(image_size, "image_size")
    return lib.paste_to_rle(_float32(masks, "masks"), _float32(boxes, "boxes"), h, w, float(threshold), int(threads))


# ---------------------------------------------------------------------------------- RLE


def rle_encode(bitmaps: np.ndarray, *, threads: int = 0) -> list[dict[str, Any]]:
    """COCO compressed RLE of each bitmap, the same ``counts`` as ``pycocotools.mask.encode``.

    Args:
        bitmaps: bool or uint8 ``[K, H, W]`` (any nonzero value is foreground; other integer
            dtypes are converted with ``!= 0``); H * W < 2^32. C order is used as is (no transpose
            is needed: the encoder walks columns itself).
        threads: threads to use (``<= 0``: all); instances are spread over them.

    Returns K dicts ``{"size": [H, W], "counts": bytes}``.
    """
    lib = _lib()
    _require_ndarray(bitmaps, "bitmaps")
    b = bitmaps
    if b.dtype != np.bool_ and b.dtype != np.uint8:
        if b.dtype.kind not in "iu":
            raise ValueError(f"bitmaps: expected bool or integer 0/1 values, got dtype {b.dtype}")
        b = b != 0
    return lib.rle_encode(np.ascontiguousarray(b), int(threads))


# ---------------------------------------------------------------------------------- overlay

# 20 well-separated BGR colours (tab20-like); instance or class i gets _PALETTE[i % 20].
_PALETTE = np.array([
    [180, 119, 31], [14, 127, 255], [44, 160, 44], [40, 39, 214], [189, 103, 148],
    [75, 86, 140], [194, 119, 227], [127, 127, 127], [34, 189, 188], [207, 190, 23],
    [232, 199, 174], [120, 187, 255], [138, 223, 152], [150, 152, 255], [213, 176, 197],
    [148, 156, 196], [210, 182, 247], [199, 199, 199], [141, 219, 219], [229, 218, 158],
], dtype=np.uint8)


def palette_colors(ids: np.ndarray | Sequence[int]) -> np.ndarray:
    """uint8 ``[N, 3]`` BGR colours for integer ids (class or instance ids): a fixed 20-colour
    palette, ``id % 20``."""
    a = np.asarray(ids)
    if a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
        raise ValueError(f"ids: expected a 1-D integer array, got dtype {a.dtype} shape {list(a.shape)}")
    return np.ascontiguousarray(_PALETTE[a.astype(np.int64) % len(_PALETTE)])


def draw_overlay(image: np.ndarray, masks: np.ndarray | None = None, boxes: np.ndarray | None = None, *,
                 label_map: np.ndarray | None = None, classes: np.ndarray | Sequence[int] | None = None,
                 colors: np.ndarray | None = None, alpha: float = 0.5, draw_boxes: bool = True, thickness: int = 2,
                 threads: int = 0) -> np.ndarray:
    """Draw instance masks (alpha-blended) and box outlines on ``image`` IN PLACE; returns ``image``.

    Text is not drawn here: :func:`draw_labels` (cv2.putText) does that afterwards.

    Args:
        image: uint8 ``[H, W, 3]`` BGR, writeable; rows may be strided, pixels packed.
        masks: full-size bitmaps bool/uint8 ``[K, H, W]`` (e.g. :func:`paste_masks`), or None.
        boxes: float32 ``[K, 4]`` (x1, y1, x2, y2) image pixels, finite, or None.
        label_map: instead of ``masks``: uint16/int32 ``[H, W]`` with values in ``[0, K]`` (0 =
            background, ``l`` = instance ``l - 1``: :func:`paste_label_map` with its default labels).
            Much cheaper than K bitmaps.
        classes: ``[K]`` class ids; colours come from them (same class, same colour) unless
            ``colors`` is given; without both, from the instance index.
        colors: uint8 ``[K, 3]`` BGR colour of each instance.
        alpha: mask opacity in [0, 1].
        draw_boxes: draw the ``boxes`` outlines (needs ``boxes``).
        thickness: outline width in pixels, >= 1.
        threads: threads to use (``<= 0``: all).

    Rules (exact, integer): with ``a = round(alpha * 256)``, a covered pixel's channel ``p`` becomes
    ``(p * (256 - a) + c * a + 128) >> 8``; a pixel covered by several instances is blended once,
    with the first instance's colour (the label-map rule). A box covers pixel columns
    ``floor(x1) .. max(ceil(x2) - 1, floor(x1))`` (rows likewise); its outline is the inner
    ``thickness`` pixels of that rectangle, solid colour, clipped to the image, drawn after the
    masks and last instance first (the first instance's outline ends on top).
    """
    lib = _lib()
    _require_ndarray(image, "image")
    if masks is not None and label_map is not None:
        raise ValueError("masks and label_map: give one of them, not both")
    if boxes is not None:
        boxes = _float32(boxes, "boxes")
    counts = {}
    if masks is not None:
        _require_ndarray(masks, "masks")
        counts["masks"] = masks.shape[0] if masks.ndim == 3 else -1
    if boxes is not None:
        counts["boxes"] = boxes.shape[0] if boxes.ndim == 2 else -1
    if classes is not None:
        classes = np.asarray(classes)
        counts["classes"] = len(classes) if classes.ndim == 1 else -1
    if colors is not None:
        _require_ndarray(colors, "colors")
        counts["colors"] = colors.shape[0] if colors.ndim == 2 else -1
    if counts:
        k = next(iter(counts.values()))
        if len(set(counts.values())) != 1 or k < 0:
            raise ValueError(f"instance counts disagree or shapes are wrong: {counts} (expected masks [K, H, W], "
                             "boxes [K, 4], classes [K], colors [K, 3])")
    elif label_map is not None:
        _require_ndarray(label_map, "label_map")
        k = int(label_map.max()) if label_map.size else 0
    else:
        return image  # nothing to draw
    if colors is None:
        colors = palette_colors(classes if classes is not None else np.arange(k))
    colors = np.ascontiguousarray(colors)
    if masks is not None:
        m = masks if masks.dtype in (np.bool_, np.uint8) else (masks != 0)
        lib.overlay_bitmaps(image, np.ascontiguousarray(m), colors, float(alpha), int(threads))
    elif label_map is not None:
        _require_ndarray(label_map, "label_map")
        lib.overlay_label_map(image, np.ascontiguousarray(label_map), colors, float(alpha), int(threads))
    if draw_boxes and boxes is not None:
        lib.draw_boxes(image, boxes, colors, int(thickness))
    return image


def draw_labels(image: np.ndarray, boxes: np.ndarray, texts: Sequence[str], colors: np.ndarray | None = None, *,
                font_scale: float = 0.5, thickness: int = 1) -> np.ndarray:
    """Write ``texts[i]`` above box ``i`` (cv2.putText, Hershey simplex) on ``image`` in place.

    Args:
        image: uint8 ``[H, W, 3]`` BGR, writeable.
        boxes: ``[K, 4]`` (x1, y1, x2, y2) image pixels.
        texts: K strings (e.g. ``f"{name} {score:.2f}"``).
        colors: uint8 ``[K, 3]`` BGR (default: the palette by instance index).
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(texts) != len(b):
        raise ValueError(f"texts: expected {len(b)} strings (one per box), got {len(texts)}")
    cols = palette_colors(np.arange(len(b))) if colors is None else np.asarray(colors, dtype=np.uint8)
    for i, text in enumerate(texts):
        x = int(np.clip(np.floor(b[i, 0]), 0, image.shape[1] - 1))
        y = int(np.clip(np.floor(b[i, 1]) - 3, 10, image.shape[0] - 1))
        cv2.putText(image, str(text), (x, y), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    tuple(int(c) for c in cols[i]), thickness, cv2.LINE_AA)
    return image
