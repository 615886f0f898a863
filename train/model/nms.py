"""Box IoU and greedy NMS in pure PyTorch: the reference path.

The native CPU kernel (``maskrt._native.nms``) and the CUDA plugin implement the same decision
rule; tests compare them with ONNX Runtime's NonMaxSuppression and a float64 mirror.
"""

from __future__ import annotations

import torch
from torch import Tensor


def box_area(boxes: Tensor) -> Tensor:
    """boxes: float [N, 4] (x1, y1, x2, y2). Returns float [N] = (x2 - x1) * (y2 - y1), no +1."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise IoU. a: float [N, 4], b: float [M, 4]. Returns float [N, M].

    NOTE: union = (area_a + area_b) - inter, in this order on every path (native kernel, CUDA,
    mirrors), so an IoU exactly at a threshold is decided the same way everywhere. A union <= 0
    gives IoU 0 (never suppresses), as in ONNX Runtime.
    """
    area_a = box_area(a)
    area_b = box_area(b)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = (area_a[:, None] + area_b[None, :]) - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), torch.zeros_like(inter))


def _greedy_keep(suppresses: Tensor) -> Tensor:
    """Solve greedy NMS on boxes already sorted by descending score.

    suppresses: bool [N, N], suppresses[j, i] = box j would suppress box i (only j < i set).
    Returns bool [N]: kept_i = not any_j (kept_j and suppresses[j, i]).

    The recurrence has a unique solution; Jacobi iteration reaches it because after k sweeps
    the first k entries are final, and in practice it converges in a handful of sweeps, each one
    a vectorised [N, N] reduction instead of N Python steps.
    """
    n = suppresses.shape[0]
    keep = torch.ones(n, dtype=torch.bool, device=suppresses.device)
    for _ in range(n + 1):
        new_keep = ~(suppresses & keep[:, None]).any(dim=0)
        if torch.equal(new_keep, keep):
            break
        keep = new_keep
    return keep


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression.

    boxes: float [N, 4] (x1, y1, x2, y2); scores: float [N]. Returns int64 [K], indices of the
    kept boxes in descending score order.

    NOTE: a box is suppressed by a kept, higher-ranked box when IoU > iou_threshold (strictly).
    Ranking is by descending score with ties broken by input index (stable), so results are
    deterministic.
    """
    if boxes.shape[0] == 0:
        return torch.zeros((0,), dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    b = boxes[order]
    sup = torch.triu(box_iou(b, b) > iou_threshold, diagonal=1)
    return order[_greedy_keep(sup)]


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """Class-aware NMS: boxes only suppress boxes with the same ``idxs`` (class or level).

    boxes: float [N, 4]; scores: float [N]; idxs: int64 [N]. Returns int64 [K] in descending
    score order, ties by input index.

    NOTE: each group is solved separately rather than with torchvision's coordinate-offset trick,
    which shifts boxes by large offsets and perturbs IoU in float32.
    """
    if boxes.shape[0] == 0:
        return torch.zeros((0,), dtype=torch.int64, device=boxes.device)
    kept = []
    for g in torch.unique(idxs):
        sel = (idxs == g).nonzero().squeeze(1)
        kept.append(sel[nms(boxes[sel], scores[sel], iou_threshold)])
    keep = torch.cat(kept)
    # Global order: descending score, ties by input index.
    keep = keep.sort().values
    return keep[torch.sort(scores[keep], descending=True, stable=True).indices]
