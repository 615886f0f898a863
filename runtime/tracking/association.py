"""Similarities between detections and tracks, and the optimal assignment on them.

* :func:`box_iou`: IoU matrix of two sets of boxes (x1, y1, x2, y2).
* :func:`mask_iou`: IoU of low-resolution masks, each given in its own box frame (the M x M
  masks a Mask R-CNN head returns), computed on a common grid over the union of the two boxes
  and only for the pairs whose boxes overlap (the others are 0). No full-resolution paste.
* :func:`assign`: ``scipy.optimize.linear_sum_assignment`` on a cost matrix with a gate.

numpy and scipy only.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["assign", "box_iou", "mask_iou"]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU float64 [len(a), len(b)] of boxes (x1, y1, x2, y2); 0 where a union is empty."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    area_a = np.maximum(a[:, 2] - a[:, 0], 0) * np.maximum(a[:, 3] - a[:, 1], 0)
    area_b = np.maximum(b[:, 2] - b[:, 0], 0) * np.maximum(b[:, 3] - b[:, 1], 0)
    iw = np.maximum(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0)
    ih = np.maximum(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0)
    inter = iw * ih
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _sample(masks: np.ndarray, boxes: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Nearest-cell lookup of box-frame masks (bool [P, M, M], boxes [P, 4]) at image points
    xs [P, G], ys [P, G] -> bool [P, G, G] (False outside the box)."""
    m = masks.shape[-1]
    w = np.maximum(boxes[:, 2] - boxes[:, 0], 1e-6)
    h = np.maximum(boxes[:, 3] - boxes[:, 1], 1e-6)
    u = np.floor((xs - boxes[:, 0:1]) / w[:, None] * m).astype(np.int64)  # [P, G]
    v = np.floor((ys - boxes[:, 1:2]) / h[:, None] * m).astype(np.int64)
    inside = (u >= 0) & (u < m), (v >= 0) & (v < m)
    u, v = np.minimum(np.maximum(u, 0), m - 1), np.minimum(np.maximum(v, 0), m - 1)
    # NOTE: one gather from the flat masks (cheaper than fancy indexing with three broadcast index arrays)
    base = (np.arange(len(masks)) * (m * m))[:, None] + v * m  # [P, G] start of each sampled row
    got = np.ascontiguousarray(masks).reshape(-1).take(base[:, :, None] + u[:, None, :])  # [P, G(rows), G(cols)]
    return got & inside[1][:, :, None] & inside[0][:, None, :]


def mask_iou(masks_a: np.ndarray, boxes_a: np.ndarray, masks_b: np.ndarray, boxes_b: np.ndarray, *,
             grid: int = 16, pairs: np.ndarray | None = None) -> np.ndarray:
    """IoU float64 [A, B] of box-frame masks: ``masks_a`` bool [A, M, M] relative to ``boxes_a``
    [A, 4] (x1, y1, x2, y2), likewise b (M may differ between a and b).

    Each pair is compared on a ``grid`` x ``grid`` lattice of cell centres over the union of its
    two boxes; a mask covers a lattice point when the mask cell under it is on. ``pairs`` (bool
    [A, B]) limits the work to those pairs (default: the pairs whose boxes overlap); the others
    are 0.

    NOTE: nearest-cell sampling of masks stretched over their boxes: the paste's sub-cell
    interpolation is ignored, so the IoU is that of the masks at about ``grid`` cells across the
    pair, not of the pasted full-resolution bitmaps (within a few hundredths of it for masks
    larger than a cell, which is what association needs, at ~1/100 of the cost).
    """
    boxes_a = np.asarray(boxes_a, np.float64).reshape(-1, 4)
    boxes_b = np.asarray(boxes_b, np.float64).reshape(-1, 4)
    out = np.zeros((len(boxes_a), len(boxes_b)))
    if pairs is None:
        pairs = box_iou(boxes_a, boxes_b) > 0
    ia, ib = np.nonzero(pairs)
    if len(ia) == 0:
        return out
    ba, bb = boxes_a[ia], boxes_b[ib]
    ux0, uy0 = np.minimum(ba[:, 0], bb[:, 0]), np.minimum(ba[:, 1], bb[:, 1])
    ux1, uy1 = np.maximum(ba[:, 2], bb[:, 2]), np.maximum(ba[:, 3], bb[:, 3])
    t = (np.arange(grid) + 0.5) / grid
    xs = ux0[:, None] + (ux1 - ux0)[:, None] * t[None, :]
    ys = uy0[:, None] + (uy1 - uy0)[:, None] * t[None, :]
    sa = _sample(np.asarray(masks_a, bool)[ia], ba, xs, ys)
    sb = _sample(np.asarray(masks_b, bool)[ib], bb, xs, ys)
    inter = (sa & sb).sum((1, 2))
    union = (sa | sb).sum((1, 2))
    out[ia, ib] = np.divide(inter, union, out=np.zeros(len(ia)), where=union > 0)
    return out


def assign(cost: np.ndarray, max_cost: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimum-cost one-to-one assignment of rows to columns, keeping only pairs with
    ``cost <= max_cost``. Returns (matches int [K, 2] as (row, col), unmatched rows, unmatched
    columns), each in ascending order.

    NOTE: gated pairs are set to a cost above any allowed one before solving, so that the
    solver never trades an allowed pair for a forbidden one; they are dropped afterwards."""
    cost = np.asarray(cost, np.float64)
    r, c = cost.shape
    if r == 0 or c == 0:
        return np.zeros((0, 2), np.int64), np.arange(r), np.arange(c)
    big = max_cost + 1e6
    gated = np.where(np.isfinite(cost) & (cost <= max_cost), cost, big)
    rows, cols = linear_sum_assignment(gated)
    ok = gated[rows, cols] <= max_cost
    matches = np.stack([rows[ok], cols[ok]], 1).astype(np.int64)
    free_r, free_c = np.ones(r, bool), np.ones(c, bool)
    free_r[matches[:, 0]] = False
    free_c[matches[:, 1]] = False
    return matches, np.nonzero(free_r)[0], np.nonzero(free_c)[0]
