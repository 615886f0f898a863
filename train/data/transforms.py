"""Joint transforms of an image and its instance targets (boxes and masks move together).

Every transform is a callable ``t(image, target, rng=None) -> (image, target)`` where

* ``image``: uint8 torch tensor [H, W, 3] (BGR, as ``CocoInstances`` returns it);
* ``target``: dict with ``boxes`` float32 [N, 4] (x1, y1, x2, y2, pixel-edge coordinates:
  pixel column ``j`` spans ``[j, j + 1)``) and ``masks`` uint8 [N, H, W]; other keys are passed
  through (``orig_size`` is deliberately left alone: it stays the size of the file's image);
* ``rng``: a ``numpy.random.Generator`` or ``torch.Generator``. Random transforms draw only
  from it, so a seeded generator makes augmentation reproducible; with ``None`` they draw from
  a fresh, unseeded numpy generator (not reproducible).

Pixel-coordinate convention for resizing: a point ``x`` maps to ``x * new_w / w`` (pixel
edges map to pixel edges). cv2's ``INTER_LINEAR`` samples the image on that grid (half-pixel
centres, like ``torch.nn.functional.interpolate(align_corners=False)``); masks use
``INTER_NEAREST_EXACT``, the nearest-neighbour rule on the same grid. Plain ``INTER_NEAREST``
(and torch's ``mode="nearest"``) sample at ``floor(x_dst * w / new_w)`` instead, which shifts
upscaled masks by up to half a source pixel against the image.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
import torch

Target = dict[str, Any]
Rng = np.random.Generator | torch.Generator | None

_CV_MAX_CHANNELS = 512  # cv2 treats arrays with more channels as 3-D matrices


def _uniform(rng: Rng) -> float:
    """One float in [0, 1) from ``rng``."""
    if isinstance(rng, torch.Generator):
        return float(torch.rand((), generator=rng))
    return float((rng if rng is not None else np.random.default_rng()).uniform())


def _randint(rng: Rng, n: int) -> int:
    """One int in [0, n) from ``rng``."""
    if isinstance(rng, torch.Generator):
        return int(torch.randint(n, (), generator=rng))
    return int((rng if rng is not None else np.random.default_rng()).integers(n))


class Compose:
    """Apply transforms in order, all drawing from the same generator."""

    def __init__(self, transforms: Sequence[Callable[..., tuple[torch.Tensor, Target]]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor, target: Target, rng: Rng = None) -> tuple[torch.Tensor, Target]:
        """image: uint8 [H, W, 3]; target: see the module docstring."""
        for t in self.transforms:
            image, target = t(image, target, rng)
        return image, target

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


def resized_shape(h: int, w: int, min_size: int, max_size: int) -> tuple[int, int]:
    """Output (H', W') of shortest-side resizing.

    torchvision's rule: ``scale = min_size / min(h, w)``, reduced to ``max_size / max(h, w)``
    when the long side would exceed ``max_size``. Sizes are rounded to the nearest integer
    (torchvision floors ``h * scale``, which can give 799 for a target of 800 through rounding
    error in the scale) and are at least 1.
    """
    scale = min(min_size / min(h, w), max_size / max(h, w))
    return max(1, int(math.floor(h * scale + 0.5))), max(1, int(math.floor(w * scale + 0.5)))


def resize(image: torch.Tensor, target: Target, size: tuple[int, int]) -> tuple[torch.Tensor, Target]:
    """Resize image (uint8 [H, W, 3]) and target (boxes float32 [N, 4], masks uint8 [N, H, W])
    to ``size`` = (H', W'). Boxes scale by (W'/W, H'/H) per axis."""
    h, w = image.shape[:2]
    nh, nw = size
    if (nh, nw) == (h, w):
        return image, target
    img = cv2.resize(image.numpy(), (nw, nh), interpolation=cv2.INTER_LINEAR)
    out = dict(target)
    if "boxes" in target:
        ratio = torch.tensor([nw / w, nh / h, nw / w, nh / h], dtype=torch.float32)
        out["boxes"] = target["boxes"] * ratio
    if "masks" in target:
        out["masks"] = torch.from_numpy(_resize_masks(target["masks"].numpy(), nh, nw))
    return torch.from_numpy(np.ascontiguousarray(img)), out


def _resize_masks(masks: np.ndarray, nh: int, nw: int) -> np.ndarray:
    """Nearest-neighbour resize of uint8 [N, H, W] masks to uint8 [N, nh, nw]."""
    n = masks.shape[0]
    out = np.empty((n, nh, nw), np.uint8)
    # cv2 works on [H, W, C]: resize up to 512 masks per call as channels.
    for s in range(0, n, _CV_MAX_CHANNELS):
        chunk = np.ascontiguousarray(masks[s : s + _CV_MAX_CHANNELS].transpose(1, 2, 0))
        r = cv2.resize(chunk, (nw, nh), interpolation=cv2.INTER_NEAREST_EXACT)
        out[s : s + chunk.shape[2]] = r.reshape(nh, nw, -1).transpose(2, 0, 1)
    return out


class ResizeShortestSide:
    """Resize so the short side is ``min_size`` (one drawn at random when several are given)
    and the long side at most ``max_size``; see :func:`resized_shape`."""

    def __init__(self, min_size: int | Sequence[int], max_size: int) -> None:
        sizes = (min_size,) if isinstance(min_size, int) else tuple(min_size)
        if not sizes or any(int(s) != s or s <= 0 for s in sizes):
            raise ValueError(f"min_size must be positive integers (got {min_size!r})")
        if int(max_size) != max_size or max_size <= 0:
            raise ValueError(f"max_size must be a positive integer (got {max_size!r})")
        self.min_sizes = tuple(int(s) for s in sizes)
        self.max_size = int(max_size)

    def __call__(self, image: torch.Tensor, target: Target, rng: Rng = None) -> tuple[torch.Tensor, Target]:
        """image: uint8 [H, W, 3]; target: see the module docstring."""
        # Draw only when there is a choice, so a single size consumes nothing from rng.
        k = _randint(rng, len(self.min_sizes)) if len(self.min_sizes) > 1 else 0
        h, w = image.shape[:2]
        return resize(image, target, resized_shape(h, w, self.min_sizes[k], self.max_size))

    def __repr__(self) -> str:
        return f"ResizeShortestSide(min_size={self.min_sizes}, max_size={self.max_size})"


def hflip(image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
    """Mirror image (uint8 [H, W, 3]) and target left-right: ``x1' = W - x2``, ``x2' = W - x1``."""
    w = image.shape[1]
    out = dict(target)
    if "boxes" in target:
        b = target["boxes"]
        out["boxes"] = torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], 1)
    if "masks" in target:
        out["masks"] = target["masks"].flip(-1)
    return image.flip(1), out


class RandomHorizontalFlip:
    """Mirror left-right with probability ``p`` (see :func:`hflip`)."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1] (got {p})")
        self.p = float(p)

    def __call__(self, image: torch.Tensor, target: Target, rng: Rng = None) -> tuple[torch.Tensor, Target]:
        """image: uint8 [H, W, 3]; target: see the module docstring."""
        if _uniform(rng) < self.p:
            return hflip(image, target)
        return image, target

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"
