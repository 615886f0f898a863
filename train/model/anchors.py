"""Anchor generation (torchvision's AnchorGenerator, one size per FPN level)."""

from __future__ import annotations

import torch
from torch import Tensor


def base_anchors(size: float, aspect_ratios: tuple[float, ...], dtype=torch.float32) -> Tensor:
    """Zero-centred anchors of one size. Returns float [A, 4], one per aspect ratio (h/w).

    NOTE: as torchvision, w = size / sqrt(ratio), h = size * sqrt(ratio), and the half-extents
    are rounded to integers (round half to even).
    """
    ratios = torch.as_tensor(aspect_ratios, dtype=dtype)
    h_ratios = torch.sqrt(ratios)
    w_ratios = 1 / h_ratios
    ws = w_ratios * size
    hs = h_ratios * size
    return (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round()


def grid_anchors(
    feature_sizes: list[tuple[int, int]],
    image_size: tuple[int, int],
    sizes: tuple[float, ...],
    aspect_ratios: tuple[float, ...],
    dtype=torch.float32,
    device=None,
) -> list[Tensor]:
    """Anchors of every level for one (padded) image size.

    feature_sizes: (H_l, W_l) per level; image_size: (H, W) of the padded batch.
    Returns per level float [H_l * W_l * A, 4], ordered (y, x, anchor) like the RPN head's
    permuted outputs. NOTE: the stride is image_size // feature_size (integer division), and
    anchors sit at multiples of the stride (no half-stride offset), as in torchvision.
    """
    out = []
    for (fh, fw), size in zip(feature_sizes, sizes, strict=True):
        sh, sw = image_size[0] // fh, image_size[1] // fw
        shifts_x = torch.arange(0, fw, dtype=torch.int32, device=device) * sw
        shifts_y = torch.arange(0, fh, dtype=torch.int32, device=device) * sh
        yy, xx = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
        xx, yy = xx.reshape(-1), yy.reshape(-1)
        shifts = torch.stack((xx, yy, xx, yy), dim=1).to(dtype)
        base = base_anchors(size, aspect_ratios, dtype).to(device)
        out.append((shifts[:, None, :] + base[None, :, :]).reshape(-1, 4))
    return out
