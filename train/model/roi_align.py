"""RoIAlign and its multi-scale (FPN) form in pure PyTorch: the reference path.

Semantics follow torchvision's ``roi_align`` (itself Detectron's) exactly; the native CPU kernel
and the CUDA plugin implement the same math, and tests compare all of them with ONNX Runtime's
``RoiAlign`` and a float64 mirror.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# FPN level assignment constants (FPN paper, eqn. 1; torchvision's LevelMapper).
K_MIN, K_MAX = 2, 5
CANONICAL_SCALE, CANONICAL_LEVEL = 224.0, 4
LEVEL_EPS = 1e-6


def assign_fpn_levels(boxes: Tensor) -> Tensor:
    """FPN level index (0 for P2 … 3 for P5) of each box.

    boxes: float [R, 4] (x1, y1, x2, y2) in input pixels. Returns int64 [R].

    NOTE: level = floor(4 + log2(sqrt(area) / 224) + 1e-6), clamped to [2, 5], with
    area = (x2 - x1) * (y2 - y1) (no +1) and the arithmetic in the boxes' dtype. The eps is added
    after log2, as torchvision's LevelMapper does (the other reading, log2(sqrt(area) / 224 + eps),
    puts it inside; the two agree at the exact boundaries sqrt(area) = 112, 224, 448 and we follow
    torchvision so its checkpoints give the same detections).
    """
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    s = torch.sqrt(area)
    lvl = torch.floor(CANONICAL_LEVEL + torch.log2(s / CANONICAL_SCALE) + torch.tensor(LEVEL_EPS, dtype=s.dtype))
    lvl = torch.clamp(lvl, min=K_MIN, max=K_MAX)
    return lvl.to(torch.int64) - K_MIN


def _sample_axis(start: Tensor, size: Tensor, bins: int, grid: Tensor, gmax: int, length: int):
    """Sample coordinates along one axis.

    start, size: float [R]; grid: int64 [R] samples per bin (>= 0). Returns
    coords float [R, bins, gmax] (already clamped into [0, length - 1]), and
    weight float [R, bins, gmax]: 1 for a real sample inside [-1, length], else 0.
    """
    dtype = start.dtype
    bin_size = size / bins  # [R]
    p = torch.arange(bins, dtype=dtype, device=start.device)  # [P]
    i = torch.arange(gmax, dtype=dtype, device=start.device)  # [G]
    g = grid.to(dtype).clamp(min=1)  # avoid 0/0 for empty grids; those samples are masked below
    coords = (
        start[:, None, None]
        + p[None, :, None] * bin_size[:, None, None]
        + (i[None, None, :] + 0.5) * (bin_size / g)[:, None, None]
    )
    real = i[None, None, :] < grid.to(dtype)[:, None, None]
    # NOTE: a sample strictly outside [-1, length] contributes 0; inside, coordinates in
    # [-1, 0] snap to 0 and in [length - 1, length] to length - 1 (torchvision/Caffe2 rule),
    # which is exactly clamping to [0, length - 1].
    inside = (coords >= -1.0) & (coords <= float(length))
    weight = (real & inside).to(dtype)
    return coords.clamp(min=0.0, max=float(length - 1)), weight


def roi_align(
    features: Tensor,
    rois: Tensor,
    output_size: int | tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
) -> Tensor:
    """RoIAlign (average mode) of one feature map.

    features: float [N, C, H, W]. rois: float [R, 5] = (batch index, x1, y1, x2, y2) in input
    pixels. Returns float [R, C, PH, PW] in the features' dtype.

    NOTE (aligned): with aligned=True box corners are shifted by -0.5 after scaling, so that
    pixel centres sit at integer+0.5 (half_pixel); with aligned=False (torchvision's Mask R-CNN
    default) there is no shift and each RoI is at least 1x1 feature pixel.
    NOTE (sampling_ratio): samples per bin along each axis; 0 = adaptive, ceil(roi_size / bins)
    per RoI and axis. Each bin is the mean of its samples; an empty grid gives 0.

    Bilinear sampling runs through ``grid_sample`` (border padding + an explicit validity mask
    reproduces the border rule exactly); coordinates pass through a normalisation round trip in
    the features' dtype, a relative error of about 1e-7 of the map size.
    """
    if isinstance(output_size, int):
        output_size = (output_size, output_size)
    ph, pw = output_size
    n, c, h, w = features.shape
    r = rois.shape[0]
    if r == 0:
        return features.new_zeros((0, c, ph, pw))
    dtype = features.dtype
    rois = rois.to(dtype)
    offset = 0.5 if aligned else 0.0
    x1 = rois[:, 1] * spatial_scale - offset
    y1 = rois[:, 2] * spatial_scale - offset
    x2 = rois[:, 3] * spatial_scale - offset
    y2 = rois[:, 4] * spatial_scale - offset
    roi_w = x2 - x1
    roi_h = y2 - y1
    if not aligned:  # malformed RoIs are forced to 1x1 (Caffe2 backward compatibility)
        roi_w = roi_w.clamp(min=1.0)
        roi_h = roi_h.clamp(min=1.0)
    if sampling_ratio > 0:
        gy = torch.full((r,), sampling_ratio, dtype=torch.int64, device=rois.device)
        gx = gy
    else:
        gy = torch.ceil(roi_h / ph).to(torch.int64).clamp(min=0)
        gx = torch.ceil(roi_w / pw).to(torch.int64).clamp(min=0)
    gmax_y = max(int(gy.max()), 1)
    gmax_x = max(int(gx.max()), 1)

    ys, wy = _sample_axis(y1, roi_h, ph, gy, gmax_y, h)  # [R, PH, GY]
    xs, wx = _sample_axis(x1, roi_w, pw, gx, gmax_x, w)  # [R, PW, GX]

    # Normalised coordinates for grid_sample(align_corners=True): -1 -> 0, +1 -> size-1.
    ny = ys * (2.0 / (h - 1)) - 1.0 if h > 1 else torch.zeros_like(ys)
    nx = xs * (2.0 / (w - 1)) - 1.0 if w > 1 else torch.zeros_like(xs)
    sy, sx = ph * gmax_y, pw * gmax_x
    grid = torch.stack(
        (
            nx.reshape(r, 1, sx).expand(r, sy, sx),
            ny.reshape(r, sy, 1).expand(r, sy, sx),
        ),
        dim=-1,
    )  # [R, SY, SX, 2]

    batch_idx = rois[:, 0].to(torch.int64)
    out = features.new_empty((r, c, sy, sx))
    for b in range(n):  # grid_sample samples one image's map per call
        sel = (batch_idx == b).nonzero().squeeze(1)
        if sel.numel() == 0:
            continue
        g = grid[sel].reshape(1, sel.numel() * sy, sx, 2)
        samp = F.grid_sample(features[b : b + 1], g, mode="bilinear", padding_mode="border", align_corners=True)
        out[sel] = samp.reshape(c, sel.numel(), sy, sx).transpose(0, 1)

    # Mean over each bin's samples: weights carry validity; count = max(gy * gx, 1).
    count = (gy * gx).clamp(min=1).to(dtype)  # [R]
    wy = wy.reshape(r, ph, gmax_y)
    wx = wx.reshape(r, pw, gmax_x)
    out = out.reshape(r, c, ph, gmax_y, pw, gmax_x)
    out = torch.einsum("rcpiqj,rpi,rqj->rcpq", out, wy, wx)
    return out / count[:, None, None, None]


def boxes_to_rois(boxes: list[Tensor]) -> Tensor:
    """Concatenate per-image boxes [R_i, 4] into rois [sum R_i, 5] with the batch index first."""
    if not boxes:
        return torch.zeros((0, 5))
    idx = [torch.full((b.shape[0], 1), i, dtype=b.dtype, device=b.device) for i, b in enumerate(boxes)]
    return torch.cat([torch.cat(idx, 0), torch.cat(boxes, 0)], dim=1)


def multiscale_roi_align(
    features: list[Tensor],
    strides: list[int],
    rois: Tensor,
    output_size: int,
    sampling_ratio: int,
    aligned: bool,
) -> Tensor:
    """RoIAlign over FPN levels P2..P5, each RoI pooled from the level assigned to its size.

    features: 4 maps float [N, C, H_l, W_l] for P2..P5; strides: their strides (4, 8, 16, 32).
    rois: float [R, 5] = (batch index, x1, y1, x2, y2) in input pixels.
    Returns float [R, C, output_size, output_size]; RoIs keep their input order.
    """
    c = features[0].shape[1]
    r = rois.shape[0]
    out = features[0].new_zeros((r, c, output_size, output_size))
    if r == 0:
        return out
    levels = assign_fpn_levels(rois[:, 1:])
    for lvl, (feat, stride) in enumerate(zip(features, strides, strict=True)):
        sel = (levels == lvl).nonzero().squeeze(1)
        if sel.numel() == 0:
            continue
        out[sel] = roi_align(feat, rois[sel], output_size, 1.0 / stride, sampling_ratio, aligned)
    return out

