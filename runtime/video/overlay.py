"""Annotated frames: masks alpha-blended in class colours, box outlines and ``name score`` labels.

Masks and boxes are drawn by the native core (``maskrt.runtime.native_core``: ``paste_label_map``
+ ``draw_overlay``, C++ that releases the GIL), or with ``native=False`` by the numpy/OpenCV
reference below, which follows the same rules exactly (no silent fallback: without the core,
``native=True`` raises ``NativeCoreUnavailableError``):

* instances are taken in descending score order (stable); a pixel covered by several masks is
  blended once, with the colour of the highest-scoring one (the label-map rule);
* a mask pixel is on when the pasted probability > ``mask_threshold`` (torchvision's paste, as
  ``Detections.bitmaps()``);
* blend, in integers: with ``a = rint(alpha * 256)``, ``p' = (p * (256 - a) + c * a + 128) >> 8``;
* a box covers columns ``floor(x1) .. max(ceil(x2) - 1, floor(x1))`` (rows likewise); its
  outline is the inner ``thickness`` pixels of that rectangle in solid colour, clipped to the
  image, drawn after the masks, lowest score first (the best one ends on top);
* labels (``name 0.87``, or ``name #7 0.87`` for a tracked instance, on a filled tab above the
  box) are drawn last with cv2.putText;
* colours: one per track id when the detections are tracked (``Detections.track_ids``; the same
  id keeps its colour in every frame, :func:`track_colour`), else one per class
  (:func:`class_colour`); a tracked frame's detections on no confirmed track (id -1) are grey.

NOTE: the native paste computes in float64 and the reference (OpenCV) in float32, so the two can
disagree on pixels whose probability lies within ~1e-6 of the threshold; everything else is
identical.
"""

from __future__ import annotations

import colorsys

import cv2
import numpy as np

from maskrt.runtime.detections import Detections
from maskrt.runtime.postprocess import paste_masks

__all__ = ["UNTRACKED_COLOUR", "class_colour", "draw_detections", "native_overlay_available", "track_colour"]

UNTRACKED_COLOUR = (160, 160, 160)


def native_overlay_available() -> bool:
    """Whether the native core (``maskrt._core``) is built (what :func:`draw_detections` needs by default)."""
    try:
        from maskrt.runtime import native_core
    except ImportError:
        return False
    return bool(getattr(native_core, "NATIVE_AVAILABLE", False))


def class_colour(class_id: int) -> tuple[int, int, int]:
    """A distinct, stable BGR colour per class id (golden-ratio hue steps)."""
    h = (int(class_id) * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.85, 1.0)
    return int(b * 255), int(g * 255), int(r * 255)


def track_colour(track_id: int) -> tuple[int, int, int]:
    """A stable BGR colour per track id (golden-ratio hue steps from another start than
    :func:`class_colour`, two saturation levels so that ids far apart on the hue circle differ
    more); :data:`UNTRACKED_COLOUR` for ids < 1."""
    if int(track_id) < 1:
        return UNTRACKED_COLOUR
    h = (0.37 + int(track_id) * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.95 if track_id % 2 else 0.6, 1.0)
    return int(b * 255), int(g * 255), int(r * 255)


def _paste_region(box: np.ndarray, m: int, h: int, w: int) -> tuple[int, int, int, int]:
    """Rows/columns (y0, y1, x0, x1), half-open, that the paste of an M x M mask into ``box``
    (float [4]: x1, y1, x2, y2 in image pixels) of an h x w image can set: the box scaled by
    (M + 2) / M about its centre (the paste's expansion) plus 2 pixels for truncation and the
    inclusive end, clipped to the image."""
    x0, y0, x1, y1 = (float(v) for v in box)
    s = (m + 2.0) / m
    cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2 * s, (y1 - y0) / 2 * s
    return (max(int(np.floor(cy - hh)) - 2, 0), min(int(np.ceil(cy + hh)) + 3, h),
            max(int(np.floor(cx - hw)) - 2, 0), min(int(np.ceil(cx + hw)) + 3, w))


def _reference_masks(out: np.ndarray, masks: np.ndarray, boxes: np.ndarray, colours: np.ndarray, alpha: float,
                     threshold: float) -> None:
    """numpy twin of paste_label_map + overlay_label_map: ``out`` uint8 [H, W, 3] in place;
    masks float32 [K, M, M], boxes float32 [K, 4], colours uint8 [K, 3], in drawing priority order
    (the first instance wins a shared pixel)."""
    h, w = out.shape[:2]
    k, m = masks.shape[0], masks.shape[-1]
    label = np.zeros((h, w), np.int32)  # 0 = none, i + 1 = instance i
    for i in range(k - 1, -1, -1):  # NOTE: last to first, so the first covering instance is written last (wins)
        y0, y1, x0, x1 = _paste_region(boxes[i], m, h, w)
        if y1 <= y0 or x1 <= x0:
            continue
        bitmap = paste_masks(masks[i:i + 1], boxes[i:i + 1], (h, w), threshold)[0]
        sub = label[y0:y1, x0:x1]
        sub[bitmap[y0:y1, x0:x1]] = i + 1
    on = label > 0
    if not on.any():
        return
    a = int(np.rint(alpha * 256.0))
    px = out[on].astype(np.int32)
    c = colours[label[on] - 1].astype(np.int32)
    out[on] = ((px * (256 - a) + c * a + 128) >> 8).astype(np.uint8)


def _reference_boxes(out: np.ndarray, boxes: np.ndarray, colours: np.ndarray, t: int) -> None:
    """numpy twin of the native draw_boxes: outlines of boxes float32 [K, 4] in colours uint8
    [K, 3] on ``out`` uint8 [H, W, 3], last instance first."""
    h, w = out.shape[:2]
    for i in range(len(boxes) - 1, -1, -1):
        x0, y0 = int(np.floor(float(boxes[i, 0]))), int(np.floor(float(boxes[i, 1])))
        x1 = max(x0, int(np.ceil(float(boxes[i, 2]))) - 1)
        y1 = max(y0, int(np.ceil(float(boxes[i, 3]))) - 1)
        for rx0, ry0, rx1, ry1 in ((x0, y0, x1, min(y1, y0 + t - 1)), (x0, max(y0, y1 - t + 1), x1, y1),
                                   (x0, y0, min(x1, x0 + t - 1), y1), (max(x0, x1 - t + 1), y0, x1, y1)):
            cx0, cy0, cx1, cy1 = max(rx0, 0), max(ry0, 0), min(rx1, w - 1), min(ry1, h - 1)
            if cx1 >= cx0 and cy1 >= cy0:
                out[cy0:cy1 + 1, cx0:cx1 + 1] = colours[i]


def _labels(out: np.ndarray, boxes: np.ndarray, texts: list[str], colours: np.ndarray, t: int) -> None:
    """``texts[i]`` on a filled tab (colour ``colours[i]``) above box i (inside it at the top
    edge of the image), drawn last instance first."""
    h, w = out.shape[:2]
    scale = 0.4 * t
    for i in range(len(texts) - 1, -1, -1):
        (tw, th), base = cv2.getTextSize(texts[i], cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        x0 = int(np.clip(np.floor(float(boxes[i, 0])), 0, w - 1))
        y0 = int(np.clip(np.floor(float(boxes[i, 1])), 0, h - 1))
        ty = y0 - 2 if y0 - th - base - 2 >= 0 else y0 + th + 2
        colour = tuple(int(v) for v in colours[i])
        cv2.rectangle(out, (x0, ty - th - 2), (x0 + tw + 2, ty + base - 1), colour, -1)
        cv2.putText(out, texts[i], (x0 + 1, ty - 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)


def draw_detections(image: np.ndarray, dets: Detections, *, alpha: float = 0.5, draw_boxes: bool = True,
                    draw_labels: bool = True, mask_threshold: float = 0.5, copy: bool = True,
                    native: bool = True, threads: int = 1) -> np.ndarray:
    """Draws ``dets`` on ``image`` and returns the annotated image (rules in the module docstring).

    image: uint8 [H, W, 3] BGR with (H, W) == ``dets.image_size``; drawn on a copy unless
    ``copy=False`` (then in place: it must be C-contiguous and writeable). alpha: mask opacity in
    [0, 1] (0: no masks). native: True = the native core (``NativeCoreUnavailableError`` when it
    is not built: no silent fallback), False = the numpy reference. threads: threads of the native
    calls (1 by default: in the video pipeline the other stages and the inference library want the
    rest of the cores).
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"image must be uint8 [H, W, 3] BGR, got {got}")
    h, w = image.shape[:2]
    if (h, w) != tuple(dets.image_size):
        raise ValueError(f"image is {h}x{w} but the detections are for {dets.image_size[0]}x{dets.image_size[1]}")
    if not (0.0 <= float(alpha) <= 1.0):
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    if not (0.0 <= float(mask_threshold) < 1.0):
        raise ValueError(f"mask_threshold must be in [0, 1), got {mask_threshold!r}")
    use_native = bool(native)
    out = image.copy() if copy else image
    if not copy and (not out.flags.c_contiguous or not out.flags.writeable):
        raise ValueError("image must be C-contiguous and writeable to draw in place (or pass copy=True)")
    if len(dets) == 0:
        return out
    order = np.argsort(-dets.scores.astype(np.float64), kind="stable")  # descending score, ties in given order
    masks = np.ascontiguousarray(dets.masks[order], np.float32)
    boxes = np.ascontiguousarray(dets.boxes[order], np.float32)
    tracked = dets.track_ids is not None
    if tracked:
        colours = np.array([track_colour(int(t)) for t in dets.track_ids[order]], np.uint8).reshape(-1, 3)
    else:
        colours = np.array([class_colour(int(c)) for c in dets.class_ids[order]], np.uint8).reshape(-1, 3)
    thick = max(1, round(min(h, w) / 320))
    if use_native:
        from maskrt.runtime import native_core

        label_map = None
        if alpha > 0:
            label_map = native_core.paste_label_map(masks, boxes, (h, w), threshold=mask_threshold,
                                                    dtype=np.int32, threads=threads)
        if label_map is not None or draw_boxes:
            native_core.draw_overlay(out, boxes=boxes, label_map=label_map, colors=colours, alpha=float(alpha),
                                     draw_boxes=draw_boxes, thickness=thick, threads=threads)
    else:
        if alpha > 0:
            _reference_masks(out, masks, boxes, colours, float(alpha), float(mask_threshold))
        if draw_boxes:
            _reference_boxes(out, boxes, colours, thick)
    if draw_labels:
        names = dets.class_names
        if tracked:
            ids = dets.track_ids
            texts = [f"{names[i]} #{int(ids[i])} {float(dets.scores[i]):.2f}" if ids[i] >= 1
                     else f"{names[i]} {float(dets.scores[i]):.2f}" for i in order]
        else:
            texts = [f"{names[i]} {float(dets.scores[i]):.2f}" for i in order]
        _labels(out, boxes, texts, colours, thick)
    return out
