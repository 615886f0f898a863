"""Box encoding/decoding and small box utilities (torchvision's conventions, no +1 widths)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

# NOTE: torchvision clamps dw/dh before exp() at log(1000 / 16) so huge deltas cannot overflow.
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


class BoxCoder:
    """Encodes boxes as (dx, dy, dw, dh) deltas relative to reference boxes, scaled by weights."""

    def __init__(self, weights: tuple[float, float, float, float], clip: float = BBOX_XFORM_CLIP):
        self.weights = weights
        self.clip = clip

    def encode(self, gt: Tensor, ref: Tensor) -> Tensor:
        """gt, ref: float [N, 4] (x1, y1, x2, y2). Returns deltas float [N, 4]."""
        wx, wy, ww, wh = self.weights
        ref_w = ref[:, 2] - ref[:, 0]
        ref_h = ref[:, 3] - ref[:, 1]
        ref_cx = ref[:, 0] + 0.5 * ref_w
        ref_cy = ref[:, 1] + 0.5 * ref_h
        gt_w = gt[:, 2] - gt[:, 0]
        gt_h = gt[:, 3] - gt[:, 1]
        gt_cx = gt[:, 0] + 0.5 * gt_w
        gt_cy = gt[:, 1] + 0.5 * gt_h
        return torch.stack(
            (wx * (gt_cx - ref_cx) / ref_w, wy * (gt_cy - ref_cy) / ref_h,
             ww * torch.log(gt_w / ref_w), wh * torch.log(gt_h / ref_h)),
            dim=1,
        )

    def decode(self, deltas: Tensor, ref: Tensor) -> Tensor:
        """deltas: float [N, K*4] (K boxes per reference, e.g. one per class); ref: float [N, 4].
        Returns float [N, K, 4] (x1, y1, x2, y2)."""
        ref = ref.to(deltas.dtype)
        n = deltas.shape[0]
        d = deltas.reshape(n, -1, 4)
        wx, wy, ww, wh = self.weights
        w = (ref[:, 2] - ref[:, 0])[:, None]
        h = (ref[:, 3] - ref[:, 1])[:, None]
        cx = ref[:, 0][:, None] + 0.5 * w
        cy = ref[:, 1][:, None] + 0.5 * h
        dx = d[..., 0] / wx
        dy = d[..., 1] / wy
        dw = torch.clamp(d[..., 2] / ww, max=self.clip)
        dh = torch.clamp(d[..., 3] / wh, max=self.clip)
        pcx = dx * w + cx
        pcy = dy * h + cy
        pw = torch.exp(dw) * w
        ph = torch.exp(dh) * h
        return torch.stack((pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw, pcy + 0.5 * ph), dim=-1)


def clip_boxes(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """boxes: float [..., 4]; size: (H, W). Clamps x into [0, W] and y into [0, H]."""
    h, w = size
    x = boxes[..., 0::2].clamp(min=0, max=w)
    y = boxes[..., 1::2].clamp(min=0, max=h)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


def keep_min_size(boxes: Tensor, min_size: float) -> Tensor:
    """boxes: float [N, 4]. Returns bool [N]: width >= min_size and height >= min_size."""
    return ((boxes[:, 2] - boxes[:, 0]) >= min_size) & ((boxes[:, 3] - boxes[:, 1]) >= min_size)
