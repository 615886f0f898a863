"""RoI heads: box branch (two FC + class-specific regression) and mask branch (FCN).

Parameter names are torchvision's checkpoint names (``box_head.fc6``, ``box_predictor.cls_score``,
``mask_head.mask_fcn1``, ``mask_predictor.conv5_mask`` …) so its state dicts load directly.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskrt.runtime.config import ModelConfig

from .box_ops import BoxCoder, clip_boxes, keep_min_size
from .matcher import BELOW_LOW, BETWEEN, Matcher, sample_balanced
from .nms import batched_nms, box_iou
from .roi_align import boxes_to_rois, multiscale_roi_align, roi_align
from .rpn import SMOOTH_L1_BETA

FPN_STRIDES = (4, 8, 16, 32)  # P2..P5 feed the RoI heads; P6 ('pool') is RPN-only
MIN_DETECTION_SIZE = 1e-2  # torchvision drops detections thinner than this (pixels)


class TwoMLPHead(nn.Module):
    def __init__(self, in_features: int, representation: int):
        super().__init__()
        self.fc6 = nn.Linear(in_features, representation)
        self.fc7 = nn.Linear(representation, representation)

    def forward(self, x: Tensor) -> Tensor:
        """x: float [R, C, P, P] -> float [R, representation]."""
        return F.relu(self.fc7(F.relu(self.fc6(x.flatten(1)))))


class FastRCNNPredictor(nn.Module):
    def __init__(self, representation: int, num_classes: int):
        super().__init__()
        self.cls_score = nn.Linear(representation, num_classes)
        self.bbox_pred = nn.Linear(representation, num_classes * 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: float [R, D] -> class logits float [R, K] and deltas float [R, 4K]."""
        return self.cls_score(x), self.bbox_pred(x)


def _kaiming_init(module: nn.Module) -> None:
    """torchvision's mask-branch init: He normal (fan_out, ReLU) weights, zero biases."""
    for name, p in module.named_parameters():
        if name.endswith("weight"):
            nn.init.kaiming_normal_(p, mode="fan_out", nonlinearity="relu")
        else:
            nn.init.zeros_(p)


class MaskRCNNHeads(nn.Sequential):
    """``mask_fcn1..n``: 3x3 conv + ReLU each (torchvision's legacy layout)."""

    def __init__(self, in_channels: int, channels: int, convs: int):
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        c = in_channels
        for i in range(1, convs + 1):
            layers[f"mask_fcn{i}"] = nn.Conv2d(c, channels, 3, padding=1)
            layers[f"relu{i}"] = nn.ReLU(inplace=True)
            c = channels
        super().__init__(layers)
        _kaiming_init(self)


class MaskRCNNPredictor(nn.Sequential):
    """2x2 stride-2 deconv + ReLU, then 1x1 conv to one mask logit map per class."""

    def __init__(self, in_channels: int, channels: int, num_classes: int):
        super().__init__(OrderedDict([
            ("conv5_mask", nn.ConvTranspose2d(in_channels, channels, 2, 2, 0)),
            ("relu", nn.ReLU(inplace=True)),
            ("mask_fcn_logits", nn.Conv2d(channels, num_classes, 1)),
        ]))
        _kaiming_init(self)


class RoIHeads(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        c = cfg.fpn_channels
        self.box_head = TwoMLPHead(c * cfg.box_roi_size**2, cfg.box_representation_size)
        self.box_predictor = FastRCNNPredictor(cfg.box_representation_size, cfg.num_classes)
        self.mask_head = MaskRCNNHeads(c, cfg.mask_head_channels, cfg.mask_head_convs)
        self.mask_predictor = MaskRCNNPredictor(cfg.mask_head_channels, cfg.mask_head_channels, cfg.num_classes)
        self.box_coder = BoxCoder(cfg.bbox_reg_weights)
        self.matcher = Matcher(cfg.box_fg_iou_thresh, cfg.box_bg_iou_thresh, allow_low_quality=False)

    # ------------------------------------------------------------------ shared pieces
    def _pool(self, features: list[Tensor], boxes: list[Tensor], size: int) -> Tensor:
        return multiscale_roi_align(
            features, list(FPN_STRIDES), boxes_to_rois(boxes), size,
            self.cfg.roi_align_sampling_ratio, self.cfg.roi_align_aligned,
        )

    def box_branch(self, features: list[Tensor], boxes: list[Tensor]) -> tuple[Tensor, Tensor]:
        """boxes: per image float [R_i, 4]. Returns logits [R, K] and deltas [R, 4K]."""
        return self.box_predictor(self.box_head(self._pool(features, boxes, self.cfg.box_roi_size)))

    def mask_branch(self, features: list[Tensor], boxes: list[Tensor]) -> Tensor:
        """boxes: per image float [R_i, 4]. Returns mask logits [R, K, M, M]."""
        return self.mask_predictor(self.mask_head(self._pool(features, boxes, self.cfg.mask_roi_size)))

    # ------------------------------------------------------------------ forward
    def forward(self, features: list[Tensor], proposals: list[Tensor], image_sizes: list[tuple[int, int]],
                targets: list[dict[str, Tensor]] | None = None):
        """features: P2..P5 float [N, C, H_l, W_l]; proposals: per image float [R_i, 4].

        Training: returns the losses ``loss_classifier``, ``loss_box_reg``, ``loss_mask``.
        Inference: returns per image dicts with ``boxes`` [D, 4], ``scores`` [D], ``labels``
        int64 [D] and ``masks`` float [D, M, M] (probabilities of the predicted class),
        D <= detections_per_img, in descending score order.
        """
        if self.training:
            if targets is None:
                raise ValueError("targets are required in training mode")
            return self._train_forward(features, proposals, targets)
        return self._inference(features, proposals, image_sizes)

    def _train_forward(self, features, proposals, targets):
        cfg = self.cfg
        props, labels, matched_idx, reg_targets = [], [], [], []
        for p, t in zip(proposals, targets, strict=True):
            gt = t["boxes"].to(p.dtype)
            p = torch.cat([p, gt], dim=0)  # ground truth joins the proposals (as torchvision)
            matches = self.matcher(box_iou(gt, p))
            if gt.shape[0]:
                lab = t["labels"][matches.clamp(min=0)].clone()
            else:
                lab = torch.zeros(p.shape[0], dtype=torch.int64, device=p.device)
            lab[matches == BELOW_LOW] = 0
            lab[matches == BETWEEN] = -1
            pos, neg = sample_balanced(lab, cfg.box_batch_size_per_image, cfg.box_positive_fraction)
            keep = (pos | neg).nonzero().squeeze(1)
            p, lab, m = p[keep], lab[keep], matches[keep].clamp(min=0)
            matched_gt = gt[m] if gt.shape[0] else torch.zeros_like(p)
            props.append(p)
            labels.append(lab)
            matched_idx.append(m)
            reg_targets.append(self.box_coder.encode(matched_gt, p))

        logits, deltas = self.box_branch(features, props)
        lab = torch.cat(labels)
        tgt = torch.cat(reg_targets)
        loss_cls = F.cross_entropy(logits, lab)
        pos = (lab > 0).nonzero().squeeze(1)
        deltas = deltas.reshape(deltas.shape[0], -1, 4)
        loss_box = F.smooth_l1_loss(deltas[pos, lab[pos]], tgt[pos], beta=SMOOTH_L1_BETA, reduction="sum")
        loss_box = loss_box / max(lab.numel(), 1)

        # Mask branch on positive proposals only; loss on the ground-truth class channel only.
        pos_boxes = [p[lb > 0] for p, lb in zip(props, labels, strict=True)]
        if sum(b.shape[0] for b in pos_boxes) == 0:
            loss_mask = self.mask_predictor.mask_fcn_logits.weight.sum() * 0.0
        else:
            mask_logits = self.mask_branch(features, pos_boxes)
            m = self.cfg.mask_resolution
            mask_targets = []
            for b, lb, mi, t in zip(pos_boxes, labels, matched_idx, targets, strict=True):
                if b.shape[0] == 0:
                    continue
                mi = mi[lb > 0]
                gt_masks = t["masks"][:, None].to(b.dtype)  # [G, 1, H, W]
                rois = torch.cat([mi[:, None].to(b.dtype), b], dim=1)
                # NOTE: targets are the ground-truth mask resampled into each proposal's box with
                # RoIAlign (aligned=False, adaptive sampling), as torchvision's project_masks_on_boxes.
                mask_targets.append(roi_align(gt_masks, rois, m, 1.0, 0, False)[:, 0])
            mask_targets = torch.cat(mask_targets)
            pos_labels = torch.cat([lb[lb > 0] for lb in labels])
            sel = mask_logits[torch.arange(pos_labels.numel()), pos_labels]
            loss_mask = F.binary_cross_entropy_with_logits(sel, mask_targets)
        return {"loss_classifier": loss_cls, "loss_box_reg": loss_box, "loss_mask": loss_mask}

    def _inference(self, features, proposals, image_sizes):
        cfg = self.cfg
        logits, deltas = self.box_branch(features, proposals)
        boxes_all = self.box_coder.decode(deltas, torch.cat(proposals))  # [R, K, 4]
        scores_all = F.softmax(logits, dim=-1)
        results = []
        start = 0
        for p, size in zip(proposals, image_sizes, strict=True):
            r = p.shape[0]
            boxes = clip_boxes(boxes_all[start : start + r], size)
            scores = scores_all[start : start + r]
            start += r
            k = scores.shape[1]
            labels = torch.arange(k, device=scores.device).view(1, -1).expand_as(scores)
            # Drop the background column, flatten (proposal-major, class-minor).
            boxes = boxes[:, 1:].reshape(-1, 4)
            scores = scores[:, 1:].reshape(-1)
            labels = labels[:, 1:].reshape(-1)
            # NOTE: score threshold (strictly greater), then tiny boxes out, then per-class NMS,
            # then top-K by score: torchvision's postprocess_detections order.
            keep = (scores > cfg.box_score_thresh).nonzero().squeeze(1)
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep = keep_min_size(boxes, MIN_DETECTION_SIZE).nonzero().squeeze(1)
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep = batched_nms(boxes, scores, labels, cfg.box_nms_thresh)[: cfg.detections_per_img]
            results.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})

        det_boxes = [r["boxes"] for r in results]
        if sum(b.shape[0] for b in det_boxes):
            probs = self.mask_branch(features, det_boxes).sigmoid()
            labels = torch.cat([r["labels"] for r in results])
            probs = probs[torch.arange(labels.numel()), labels]
        else:
            m = cfg.mask_resolution
            probs = features[0].new_zeros((0, m, m))
        start = 0
        for r in results:
            n = r["boxes"].shape[0]
            r["masks"] = probs[start : start + n]
            start += n
        return results
