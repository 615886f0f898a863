"""Matching anchors/proposals to ground truth and balanced sampling for the losses."""

from __future__ import annotations

import torch
from torch import Tensor

BELOW_LOW = -1
BETWEEN = -2


class Matcher:
    """Assigns each prediction (column) the best ground truth (row) of an IoU matrix.

    Returns int64 [P]: the matched gt index, BELOW_LOW (-1) for IoU < low, BETWEEN (-2) for
    low <= IoU < high. With allow_low_quality, every gt also claims the predictions with which
    it has its highest IoU (ties included), even below ``high`` (torchvision / Detectron).
    """

    def __init__(self, high: float, low: float, allow_low_quality: bool):
        if low > high:
            raise ValueError("Matcher: low threshold must be <= high threshold")
        self.high, self.low, self.allow_low_quality = high, low, allow_low_quality

    def __call__(self, iou: Tensor) -> Tensor:
        """iou: float [G, P]. Returns int64 [P]."""
        if iou.shape[0] == 0:
            return torch.full((iou.shape[1],), BELOW_LOW, dtype=torch.int64, device=iou.device)
        vals, matches = iou.max(dim=0)
        all_matches = matches.clone()
        matches[vals < self.low] = BELOW_LOW
        matches[(vals >= self.low) & (vals < self.high)] = BETWEEN
        if self.allow_low_quality:
            best_per_gt = iou.max(dim=1).values
            pred_idx = torch.nonzero(iou == best_per_gt[:, None])[:, 1]
            matches[pred_idx] = all_matches[pred_idx]
        return matches


def sample_balanced(labels: Tensor, batch_size: int, positive_fraction: float, generator=None):
    """Random positives (label >= 1) and negatives (label == 0) of one image.

    labels: int64 [P] (-1 = ignore). Returns (pos_mask, neg_mask) bool [P]: at most
    batch_size * positive_fraction positives, the rest of batch_size negatives.
    """
    pos = torch.nonzero(labels >= 1).squeeze(1)
    neg = torch.nonzero(labels == 0).squeeze(1)
    num_pos = min(int(batch_size * positive_fraction), pos.numel())
    num_neg = min(batch_size - num_pos, neg.numel())
    pos = pos[torch.randperm(pos.numel(), generator=generator, device=pos.device)[:num_pos]]
    neg = neg[torch.randperm(neg.numel(), generator=generator, device=neg.device)[:num_neg]]
    pos_mask = torch.zeros_like(labels, dtype=torch.bool)
    neg_mask = torch.zeros_like(labels, dtype=torch.bool)
    pos_mask[pos] = True
    neg_mask[neg] = True
    return pos_mask, neg_mask
