"""Mask R-CNN (He et al., 2017): ResNet/MobileNet-FPN backbone, RPN, box and mask heads.

Input (every mode): uint8 BGR images, either a batch tensor [B, H, W, 3] (the deployment
contract) or a list of [H_i, W_i, 3] tensors of different sizes. Cast, channel order and
normalisation happen inside the model; images are zero-padded (after normalisation) to a
common size divisible by 32. The model does not resize: the runtime letterboxes and the data
pipeline resizes.

Output in eval mode: the deployment contract (docs/architecture.md, "Contracts"), fixed size with a count
(``num_detections`` int32 [B], ``boxes`` float32 [B, K, 4], ``scores`` float32 [B, K],
``classes`` int32 [B, K], ``masks`` float32 [B, K, M, M]); rows at or past the count are zero.
Output in training mode: a dict of the five losses.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from maskrt.runtime.backends.base import OUTPUT_NAMES  # the contract's output names: one definition
from maskrt.runtime.config import SIZE_DIVISIBLE, ModelConfig

from .backbone import build_backbone, set_frozen_bn_eps
from .roi_heads import RoIHeads
from .rpn import RegionProposalNetwork

__all__ = ["LOSS_NAMES", "OUTPUT_NAMES", "MaskRCNN", "validate_images"]

LOSS_NAMES = ("loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask")


def validate_images(images) -> list[Tensor]:
    """Check model input and return it as a list of [H, W, 3] tensors.

    images: uint8 (or float32 in 0..255) BGR, a tensor [B, H, W, 3] or a list of [H, W, 3].
    Raises ValueError naming the problem: wrong type, empty batch, wrong rank, channel count,
    dtype, empty image, or NaN/inf values.
    """
    if isinstance(images, Tensor):
        if images.dim() != 4:
            raise ValueError(f"images: expected a [B, H, W, 3] tensor, got shape {tuple(images.shape)}")
        items = list(images.unbind(0))
    elif isinstance(images, (list, tuple)):
        items = list(images)
    else:
        raise ValueError(f"images: expected a tensor [B, H, W, 3] or a list of [H, W, 3], got {type(images).__name__}")
    if not items:
        raise ValueError("images: empty batch")
    for i, im in enumerate(items):
        if not isinstance(im, Tensor):
            raise ValueError(f"images[{i}]: expected a torch.Tensor, got {type(im).__name__}")
        if im.dim() != 3:
            raise ValueError(f"images[{i}]: expected [H, W, 3], got shape {tuple(im.shape)}")
        if im.shape[2] != 3:
            raise ValueError(f"images[{i}]: expected 3 channels (BGR, channels last), got {im.shape[2]}")
        if im.shape[0] == 0 or im.shape[1] == 0:
            raise ValueError(f"images[{i}]: empty image of shape {tuple(im.shape)}")
        if im.dtype not in (torch.uint8, torch.float32):
            raise ValueError(f"images[{i}]: expected dtype uint8 (or float32 in 0..255), got {im.dtype}")
        if im.dtype == torch.float32 and not bool(torch.isfinite(im).all()):
            raise ValueError(f"images[{i}]: contains NaN or inf")
    return items


def validate_targets(targets, images: list[Tensor], num_classes: int) -> None:
    """targets: per image dict with ``boxes`` float [N, 4] (x1, y1, x2, y2, x2 > x1, y2 > y1),
    ``labels`` int64 [N] in [1, num_classes), ``masks`` uint8 [N, H, W] matching the image."""
    if not isinstance(targets, (list, tuple)) or len(targets) != len(images):
        raise ValueError("targets: expected one dict per image")
    for i, (t, im) in enumerate(zip(targets, images, strict=True)):
        for key in ("boxes", "labels", "masks"):
            if key not in t:
                raise ValueError(f"targets[{i}]: missing '{key}'")
        b, lb, m = t["boxes"], t["labels"], t["masks"]
        n = b.shape[0]
        if b.dim() != 2 or b.shape[1] != 4 or not b.is_floating_point():
            raise ValueError(f"targets[{i}]['boxes']: expected float [N, 4], got {b.dtype} {tuple(b.shape)}")
        if not bool(torch.isfinite(b).all()):
            raise ValueError(f"targets[{i}]['boxes']: contains NaN or inf")
        if n and not bool(((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all()):
            raise ValueError(f"targets[{i}]['boxes']: degenerate box (need x2 > x1 and y2 > y1)")
        if lb.shape != (n,) or lb.dtype != torch.int64:
            raise ValueError(f"targets[{i}]['labels']: expected int64 [{n}], got {lb.dtype} {tuple(lb.shape)}")
        if n and (int(lb.min()) < 1 or int(lb.max()) >= num_classes):
            raise ValueError(f"targets[{i}]['labels']: class ids must be in [1, {num_classes})")
        if m.shape != (n, im.shape[0], im.shape[1]):
            raise ValueError(f"targets[{i}]['masks']: expected [{n}, {im.shape[0]}, {im.shape[1]}], "
                             f"got {tuple(m.shape)}")


class MaskRCNN(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = build_backbone(cfg)
        if cfg.norm == "frozen_bn" and cfg.frozen_bn_eps is not None:
            set_frozen_bn_eps(self.backbone, cfg.frozen_bn_eps)
        self.rpn = RegionProposalNetwork(cfg)
        self.roi_heads = RoIHeads(cfg)
        # Non-persistent: normalisation comes from the config, not from the state dict, so
        # torchvision's state dicts load strictly.
        self.register_buffer("pixel_mean", torch.tensor(cfg.pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.pixel_std).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, images: list[Tensor]) -> tuple[Tensor, list[tuple[int, int]]]:
        """images: list of uint8/float32 [H_i, W_i, 3] BGR. Returns the normalised, zero-padded
        batch float32 [B, 3, H, W] (H, W multiples of 32) and the unpadded sizes."""
        sizes = [(int(im.shape[0]), int(im.shape[1])) for im in images]
        h = -(-max(s[0] for s in sizes) // SIZE_DIVISIBLE) * SIZE_DIVISIBLE
        w = -(-max(s[1] for s in sizes) // SIZE_DIVISIBLE) * SIZE_DIVISIBLE
        batch = self.pixel_mean.new_zeros((len(images), 3, h, w))
        for i, im in enumerate(images):
            x = im.to(batch.dtype).permute(2, 0, 1)  # BGR, [3, H, W]
            if self.cfg.channel_order == "RGB":
                x = x.flip(0)
            batch[i, :, : x.shape[1], : x.shape[2]] = (x - self.pixel_mean[0]) / self.pixel_std[0]
        return batch, sizes

    def forward(self, images, targets: list[dict[str, Tensor]] | None = None):
        items = validate_images(images)
        if self.training:
            if targets is None:
                raise ValueError("targets are required in training mode")
            validate_targets(targets, items, self.cfg.num_classes)
        batch, sizes = self.preprocess(items)
        feats = self.backbone(batch)
        levels = [feats[k] for k in ("0", "1", "2", "3", "pool")]
        proposals, rpn_losses = self.rpn(levels, (batch.shape[2], batch.shape[3]), sizes, targets)
        out = self.roi_heads(levels[:4], proposals, sizes, targets)
        if self.training:
            return {**rpn_losses, **out}
        return self.pad_outputs(out)

    def pad_outputs(self, results: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Per-image variable-length results -> the fixed-size deployment contract."""
        k, m = self.cfg.detections_per_img, self.cfg.mask_resolution
        b = len(results)
        dev = self.pixel_mean.device
        out = {
            "num_detections": torch.zeros(b, dtype=torch.int32, device=dev),
            "boxes": torch.zeros((b, k, 4), device=dev),
            "scores": torch.zeros((b, k), device=dev),
            "classes": torch.zeros((b, k), dtype=torch.int32, device=dev),
            "masks": torch.zeros((b, k, m, m), device=dev),
        }
        for i, r in enumerate(results):
            n = r["boxes"].shape[0]
            out["num_detections"][i] = n
            out["boxes"][i, :n] = r["boxes"]
            out["scores"][i, :n] = r["scores"]
            out["classes"][i, :n] = r["labels"].to(torch.int32)
            out["masks"][i, :n] = r["masks"]
        return out

