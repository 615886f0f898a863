"""Region Proposal Network: head, proposal selection and losses (torchvision semantics)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskrt.runtime.config import ModelConfig

from .anchors import grid_anchors
from .box_ops import BoxCoder, clip_boxes, keep_min_size
from .matcher import BELOW_LOW, BETWEEN, Matcher, sample_balanced
from .nms import batched_nms, box_iou

# NOTE: torchvision's smooth-L1 beta for both RPN and box-head regression losses.
SMOOTH_L1_BETA = 1.0 / 9


class RPNHead(nn.Module):
    """3x3 conv + ReLU, then 1x1 objectness logits (A per location) and 1x1 deltas (4A).

    Parameter names are torchvision's checkpoint names: ``conv``, ``cls_logits``, ``bbox_pred``.
    """

    def __init__(self, in_channels: int, num_anchors: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.cls_logits = nn.Conv2d(in_channels, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, 1)
        for layer in (self.conv, self.cls_logits, self.bbox_pred):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.constant_(layer.bias, 0)

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """features: per level float [N, C, H_l, W_l]. Returns per level objectness logits
        float [N, A, H_l, W_l] and deltas float [N, 4A, H_l, W_l]."""
        logits, deltas = [], []
        for f in features:
            t = F.relu(self.conv(f))
            logits.append(self.cls_logits(t))
            deltas.append(self.bbox_pred(t))
        return logits, deltas


def _flatten_level(logits: Tensor, deltas: Tensor) -> tuple[Tensor, Tensor]:
    """[N, A, H, W] and [N, 4A, H, W] -> [N, H*W*A] and [N, H*W*A, 4], ordered (y, x, anchor)
    to match ``grid_anchors``."""
    n, a, h, w = logits.shape
    logits = logits.permute(0, 2, 3, 1).reshape(n, -1)
    deltas = deltas.view(n, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 4)
    return logits, deltas


class RegionProposalNetwork(nn.Module):
    """Anchors -> objectness + deltas -> per-level top-k -> NMS per level -> top-k per image."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.head = RPNHead(cfg.fpn_channels, len(cfg.anchor_aspect_ratios))
        self.box_coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.matcher = Matcher(cfg.rpn_fg_iou_thresh, cfg.rpn_bg_iou_thresh, allow_low_quality=True)

    def forward(
        self,
        features: list[Tensor],
        padded_size: tuple[int, int],
        image_sizes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        """features: P2..P6, float [N, C, H_l, W_l]; padded_size: (H, W) of the batch tensor;
        image_sizes: the unpadded (h, w) of each image (proposals are clipped to it).
        Returns proposals per image float [R_i, 4] (descending objectness) and, in training,
        the losses ``loss_objectness`` and ``loss_rpn_box_reg``."""
        cfg = self.cfg
        logits, deltas = self.head(features)
        anchors = grid_anchors(
            [tuple(f.shape[-2:]) for f in features], padded_size, cfg.anchor_sizes,
            cfg.anchor_aspect_ratios, features[0].dtype, features[0].device,
        )
        flat = [_flatten_level(lg, dl) for lg, dl in zip(logits, deltas, strict=True)]
        obj = torch.cat([f[0] for f in flat], dim=1)  # [N, total]
        dlt = torch.cat([f[1] for f in flat], dim=1)  # [N, total, 4]
        all_anchors = torch.cat(anchors, dim=0)  # [total, 4]
        level_sizes = [a.shape[0] for a in anchors]

        pre_n = cfg.rpn_pre_nms_top_n_train if self.training else cfg.rpn_pre_nms_top_n_test
        post_n = cfg.rpn_post_nms_top_n_train if self.training else cfg.rpn_post_nms_top_n_test
        proposals = [
            self._select(obj[i].detach(), dlt[i].detach(), all_anchors, level_sizes, image_sizes[i], pre_n, post_n)
            for i in range(obj.shape[0])
        ]
        losses: dict[str, Tensor] = {}
        if self.training:
            if targets is None:
                raise ValueError("targets are required in training mode")
            losses = self._losses(obj, dlt, all_anchors, targets)
        return proposals, losses

    def _select(self, obj: Tensor, dlt: Tensor, anchors: Tensor, level_sizes: list[int],
                image_size: tuple[int, int], pre_n: int, post_n: int) -> Tensor:
        """One image. obj: [total] logits; dlt: [total, 4]; anchors: [total, 4]. Returns [R, 4].

        NOTE: the per-level top-k is taken on logits (same order as probabilities) with a stable
        sort, so ties keep anchor order (ONNX TopK's rule); NMS runs within each level only;
        the post-NMS top-k is over the whole image (torchvision >= 0.3 semantics).
        """
        idx, lvl = [], []
        start = 0
        for li, n in enumerate(level_sizes):
            o = obj[start : start + n]
            top = torch.sort(o, descending=True, stable=True).indices[: min(pre_n, n)] + start
            idx.append(top)
            lvl.append(torch.full_like(top, li))
            start += n
        idx = torch.cat(idx)
        lvl = torch.cat(lvl)
        scores = torch.sigmoid(obj[idx])
        boxes = self.box_coder.decode(dlt[idx], anchors[idx])[:, 0]
        boxes = clip_boxes(boxes, image_size)
        keep = keep_min_size(boxes, self.cfg.rpn_min_size) & (scores >= self.cfg.rpn_score_thresh)
        boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
        keep = batched_nms(boxes, scores, lvl, self.cfg.rpn_nms_thresh)[:post_n]
        return boxes[keep]

    def _losses(self, obj: Tensor, dlt: Tensor, anchors: Tensor, targets: list[dict[str, Tensor]]):
        cfg = self.cfg
        labels_all, targets_all, sampled_pos, sampled_neg = [], [], [], []
        for t in targets:
            gt = t["boxes"].to(anchors.dtype)
            matches = self.matcher(box_iou(gt, anchors))
            labels = (matches >= 0).to(obj.dtype)
            labels[matches == BELOW_LOW] = 0.0
            labels[matches == BETWEEN] = -1.0
            matched = gt[matches.clamp(min=0)] if gt.shape[0] else torch.zeros_like(anchors)
            pos, neg = sample_balanced(labels, cfg.rpn_batch_size_per_image, cfg.rpn_positive_fraction)
            labels_all.append(labels)
            targets_all.append(self.box_coder.encode(matched, anchors))
            sampled_pos.append(pos)
            sampled_neg.append(neg)
        labels = torch.stack(labels_all)
        pos = torch.stack(sampled_pos)
        sampled = pos | torch.stack(sampled_neg)
        reg_targets = torch.stack(targets_all)
        num = max(int(sampled.sum()), 1)
        box_loss = F.smooth_l1_loss(dlt[pos], reg_targets[pos], beta=SMOOTH_L1_BETA, reduction="sum") / num
        obj_loss = F.binary_cross_entropy_with_logits(obj[sampled], labels[sampled])
        return {"loss_objectness": obj_loss, "loss_rpn_box_reg": box_loss}
