"""Post-processing of the deployment outputs: boxes back to the original image, mask paste, RLE.

This is the numpy/OpenCV reference of the native post-processing that comes later; it imports
neither torch nor onnx. Coordinates are continuous pixel coordinates throughout: pixel column
``j`` spans ``[j, j + 1)`` (the convention of ``maskrt.train.data.coco``).

``paste_masks`` reproduces torchvision's ``paste_masks_in_image``
(``torchvision/models/detection/roi_heads.py``: ``expand_masks``, ``expand_boxes``,
``paste_mask_in_image``) followed by the ``> 0.5`` threshold of torchvision's COCO evaluation
(``references/detection/coco_eval.py``: ``masks = masks > 0.5``). The subtle points, each with a
NOTE at the code that implements it:

1. the M x M mask is padded with one pixel of zeros on every side, (M + 2) x (M + 2), and the box
   is scaled by ``(M + 2) / M`` about its centre, so the mask's zero border falls just outside the
   box and the bilinear resize fades to zero at the box edge instead of clamping;
2. the box expansion runs in float32, with the scale rounded to float32 first (torch multiplies a
   float32 tensor by a Python float in float32), and the expanded box is cast to int64 by
   truncation toward zero (not floor): both decide whole-pixel positions;
3. the integer box ``(x0, y0, x1, y1)`` is *inclusive*: the resized mask is
   ``w = max(x1 - x0 + 1, 1)`` by ``h = max(y1 - y0 + 1, 1)`` pixels (TO_REMOVE = 1) and covers
   columns ``x0..x1`` and rows ``y0..y1``;
4. resize: bilinear with half-pixel centres (``align_corners=False``): source coordinate
   ``(d + 0.5) * in / out - 0.5``, clamped below at 0; the last source pixel is repeated past the
   end;
5. the part of the resized mask outside the image is cut off (``x0' = max(x0, 0)``,
   ``x1' = min(x1 + 1, W)``, the same for y);
6. threshold: a pixel is foreground when ``probability > threshold`` (strictly greater).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

__all__ = ["masks_to_rle", "paste_masks", "scale_detections"]

# NOTE: above this ratio of (resized mask area) / (visible crop area) the mask is resampled only
# where it is visible (numpy path) instead of resizing it whole with OpenCV: a box far larger than
# the image (garbage coordinates) must not allocate a huge intermediate. Both paths compute the
# same half-pixel bilinear (tests check both against a float64 reference).
_CROP_RESAMPLE_RATIO = 4
_CROP_RESAMPLE_MIN_PIXELS = 1 << 16


def _as_scale_pair(scale: float | Sequence[float]) -> tuple[float, float]:
    if np.ndim(scale) == 0:
        sx = sy = float(scale)  # type: ignore[arg-type]
    else:
        vals = [float(v) for v in scale]  # type: ignore[union-attr]
        if len(vals) != 2:
            raise ValueError(f"scale: expected a number or (sx, sy), got {scale!r}")
        sx, sy = vals
    if not (np.isfinite(sx) and np.isfinite(sy) and sx > 0 and sy > 0):
        raise ValueError(f"scale: must be positive and finite, got {scale!r}")
    return sx, sy


def _check_image_size(image_size: Sequence[int]) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise ValueError(f"image_size: expected (H, W), got {image_size!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"image_size: expected positive (H, W), got {image_size!r}")
    return h, w


def scale_detections(
    boxes: np.ndarray,
    scale: float | Sequence[float] = 1.0,
    pad: Sequence[float] = (0.0, 0.0),
    image_size: Sequence[int] | None = None,
) -> np.ndarray:
    """Map boxes from model-input pixels back to original-image pixels.

    Convention: the original image was resized by ``scale`` (a number, or ``(sx, sy)`` per axis:
    input size / original size) and then placed with its top-left corner at ``pad = (pad_x,
    pad_y)`` input pixels (``(0, 0)`` for padding at the bottom/right only). So a point maps as
    ``x_in = x_orig * sx + pad_x`` and back as ``x_orig = (x_in - pad_x) / sx``.

    NOTE: no +-0.5 terms: with half-pixel-centre resampling (cv2 INTER_LINEAR, torch
    ``align_corners=False``) pixel *edges* scale linearly, so continuous box coordinates map by
    plain multiplication. For the exact resize ratio use ``sx = new_w / w`` and ``sy = new_h / h``
    (what torchvision's ``resize_boxes`` does; it multiplies by ``w / new_w`` in float32, which
    can differ from this float64 division in the last float32 bit).

    Args:
        boxes: float [K, 4] (x1, y1, x2, y2) in input pixels.
        scale: input size / original size, a number or ``(sx, sy)``.
        pad: ``(pad_x, pad_y)``, the offset of the image's top-left corner in the input.
        image_size: optional original ``(H, W)``; when given, boxes are clipped to
            ``[0, W] x [0, H]`` (a fixed-size graph clips to its padded input, so boxes can reach
            into the padding).

    Returns float32 [K, 4] in original-image pixels.
    """
    b = np.asarray(boxes, np.float64)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes: expected [K, 4], got shape {b.shape}")
    sx, sy = _as_scale_pair(scale)
    if len(pad) != 2 or not all(np.isfinite(float(p)) for p in pad):
        raise ValueError(f"pad: expected finite (pad_x, pad_y), got {pad!r}")
    px, py = float(pad[0]), float(pad[1])
    out = np.empty_like(b)
    out[:, 0::2] = (b[:, 0::2] - px) / sx
    out[:, 1::2] = (b[:, 1::2] - py) / sy
    if image_size is not None:
        h, w = _check_image_size(image_size)
        out[:, 0::2] = np.clip(out[:, 0::2], 0.0, w)
        out[:, 1::2] = np.clip(out[:, 1::2], 0.0, h)
    return out.astype(np.float32)


def expand_boxes_int(boxes: np.ndarray, m: int) -> np.ndarray:
    """torchvision's ``expand_boxes(boxes, (M + 2) / M).to(torch.int64)``: float32 [K, 4] ->
    int64 [K, 4] inclusive pixel boxes of the padded (M + 2) x (M + 2) mask."""
    # NOTE: float32 arithmetic in torchvision's order; the scale is a Python float that torch
    # rounds to float32 before multiplying a float32 tensor. A last-bit difference here can move
    # a truncated coordinate by a whole pixel, so this is not done in float64.
    scale = np.float32((m + 2) / m)
    half = np.float32(0.5)
    w_half = (boxes[:, 2] - boxes[:, 0]) * half * scale
    h_half = (boxes[:, 3] - boxes[:, 1]) * half * scale
    x_c = (boxes[:, 2] + boxes[:, 0]) * half
    y_c = (boxes[:, 3] + boxes[:, 1]) * half
    expanded = np.stack([x_c - w_half, y_c - h_half, x_c + w_half, y_c + h_half], axis=1)
    # NOTE: Tensor.to(torch.int64) truncates toward zero (C cast), so -0.7 -> 0, not -1.
    return np.trunc(expanded).astype(np.int64)


def _linear_taps(n_in: int, n_out: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Half-pixel bilinear taps for output indices ``start..stop-1`` of an ``n_in -> n_out``
    resize: (index0, index1, weight of index1), float64 weights."""
    d = np.arange(start, stop, dtype=np.float64)
    src = np.maximum((d + 0.5) * (n_in / n_out) - 0.5, 0.0)  # NOTE: clamped below at 0
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)  # NOTE: the last pixel repeats past the end
    lam = np.where(i0 >= n_in - 1, 0.0, src - i0)
    return i0, i1, lam


def _resize_crop(mask: np.ndarray, h: int, w: int, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    """Rows ``rows[0]:rows[1]`` and columns ``cols[0]:cols[1]`` of ``mask`` (float32 [S, S])
    resized to [h, w] with half-pixel bilinear, without computing the rest (float32 result)."""
    y0, y1, ly = _linear_taps(mask.shape[0], h, *rows)
    x0, x1, lx = _linear_taps(mask.shape[1], w, *cols)
    src = mask.astype(np.float64)
    tmp = src[:, x0] * (1.0 - lx) + src[:, x1] * lx
    out = tmp[y0] * (1.0 - ly)[:, None] + tmp[y1] * ly[:, None]
    return out.astype(np.float32)


def _bilinear_resize(mask: np.ndarray, h: int, w: int) -> np.ndarray:
    """float32 [S, S] -> float32 [h, w], half-pixel bilinear (torch ``F.interpolate(...,
    mode='bilinear', align_corners=False)``).

    NOTE: cv2.resize INTER_LINEAR on float32 uses the same half-pixel source coordinates, the same
    clamping at both ends and float weights; it matches a float64 mirror to ~2e-7 (tested), which
    is closer than torch's own float32 kernel (~4e-6 for large upscales). OpenCV's switch to
    INTER_AREA for an exact 2x downscale averages 2 x 2 blocks, which is the same bilinear there.
    """
    return cv2.resize(mask, (int(w), int(h)), interpolation=cv2.INTER_LINEAR)


def paste_masks(
    masks: np.ndarray,
    boxes: np.ndarray,
    image_size: Sequence[int],
    threshold: float = 0.5,
) -> np.ndarray:
    """Paste low-resolution mask probabilities into full-size bitmaps (torchvision semantics).

    Args:
        masks: float32 [K, M, M] probabilities (the ``masks`` output rows of one image).
        boxes: float32 [K, 4] (x1, y1, x2, y2) in the coordinates of the target image.
        image_size: ``(H, W)`` of the target image.
        threshold: a pixel is foreground when its pasted probability is ``> threshold``
            (torchvision's reference evaluation uses ``> 0.5``; detectron2 uses ``>=``). Must be
            >= 0 (as the native core's): below 0 torchvision's rule would mark every pixel
            outside the box as foreground, which no caller means.

    Returns bool [K, H, W] (``[0, H, W]`` for K = 0).

    Boxes may extend past the image (the parts outside are cut off). A box wholly outside the
    image gives an empty bitmap; torchvision's Python slicing would instead wrap negative indices
    and raise a shape error there, which cannot happen for boxes clipped to the image as the model
    outputs them. See the module docstring for the exact semantics.
    """
    h_img, w_img = _check_image_size(image_size)
    masks = np.asarray(masks, dtype=np.float32)
    boxes = np.asarray(boxes, dtype=np.float32)
    if masks.ndim != 3 or masks.shape[1] != masks.shape[2]:
        raise ValueError(f"masks: expected [K, M, M], got shape {masks.shape}")
    if boxes.shape != (masks.shape[0], 4):
        raise ValueError(f"boxes: expected [{masks.shape[0]}, 4] to match masks, got shape {boxes.shape}")
    if not np.isfinite(boxes).all():
        raise ValueError("boxes: contains NaN or inf")
    if not (np.isfinite(threshold) and float(threshold) >= 0.0):
        raise ValueError(f"threshold must be a finite number >= 0, got {threshold!r}")
    k, m = masks.shape[0], masks.shape[1]
    out = np.zeros((k, h_img, w_img), dtype=bool)
    if k == 0:
        return out
    if m == 0:
        raise ValueError("masks: empty M x M masks")

    # NOTE: one pixel of zero padding around each mask and the box scaled by (M + 2) / M
    # (torchvision's expand_masks / expand_boxes with padding=1).
    padded = np.zeros((k, m + 2, m + 2), dtype=np.float32)
    padded[:, 1:-1, 1:-1] = masks
    ibox = expand_boxes_int(boxes, m)
    thr = np.float32(threshold)

    for i in range(k):
        x0, y0, x1, y1 = (int(v) for v in ibox[i])
        # NOTE: inclusive integer box, TO_REMOVE = 1, at least one pixel.
        w = max(x1 - x0 + 1, 1)
        h = max(y1 - y0 + 1, 1)
        # NOTE: the visible part: [max(x0, 0), min(x1 + 1, W)) x [max(y0, 0), min(y1 + 1, H)).
        cx0, cx1 = max(x0, 0), min(x1 + 1, w_img)
        cy0, cy1 = max(y0, 0), min(y1 + 1, h_img)
        if cx1 <= cx0 or cy1 <= cy0:
            continue  # wholly outside the image
        rows, cols = (cy0 - y0, cy1 - y0), (cx0 - x0, cx1 - x0)
        crop_area = (cy1 - cy0) * (cx1 - cx0)
        if h * w > max(_CROP_RESAMPLE_RATIO * crop_area, _CROP_RESAMPLE_MIN_PIXELS):
            crop = _resize_crop(padded[i], h, w, rows, cols)
        else:
            crop = _bilinear_resize(padded[i], h, w)[rows[0]:rows[1], cols[0]:cols[1]]
        # NOTE: strictly greater than the threshold (torchvision: masks > 0.5).
        out[i, cy0:cy1, cx0:cx1] = crop > thr
    return out


def masks_to_rle(bitmaps: np.ndarray) -> list[dict]:
    """COCO compressed RLE of each bitmap (needs pycocotools, a ``[train]`` extra; the native
    core will encode without it).

    Args:
        bitmaps: bool (or 0/1 integer) [K, H, W].

    Returns K dicts ``{"size": [H, W], "counts": str}`` (counts decoded from bytes to ASCII so
    the entries serialise to JSON; pycocotools' functions accept both).
    """
    try:
        from pycocotools import mask as mask_utils
    except ImportError as e:
        raise ImportError(f"masks_to_rle needs pycocotools: pip install 'maskrt[train]' ({e})") from None

    b = np.asarray(bitmaps)
    if b.ndim != 3:
        raise ValueError(f"bitmaps: expected [K, H, W], got shape {b.shape}")
    if b.shape[1] == 0 or b.shape[2] == 0:
        raise ValueError(f"bitmaps: empty images of shape {b.shape[1:]}")
    if b.shape[0] == 0:
        return []
    # NOTE: pycocotools wants uint8 [H, W, K] in Fortran (column-major) order: COCO RLE runs go
    # down the columns.
    fortran = np.asfortranarray((b != 0).astype(np.uint8).transpose(1, 2, 0))
    rles = mask_utils.encode(fortran)
    return [{"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("ascii")} for r in rles]
