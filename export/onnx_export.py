"""ONNX export of Mask R-CNN in two flavours, both honouring the deployment contract (DESIGN.md).

- ``ort``: standard ONNX ops only (RoiAlign-16 per FPN level, NonMaxSuppression, TopK, ...);
  runs in ONNX Runtime with any execution provider.
- ``trt``: the same graph with multi-level RoIAlign and both NMS stages as plugin nodes of the
  one plugin table (plugins/plugin_table.json), which TensorRT's ONNX parser maps to our plugins
  by name; everything else is checked against the ops that parser supports.

How the graph is made: the dense parts (uint8 NHWC BGR -> normalised NCHW -> backbone + FPN ->
RPN head; the box head; the mask head) are traced by ``torch.onnx`` as three sub-models; the
data-dependent parts between them are written node by node (export/graph.py), so every
semantic of the PyTorch model (train/model/) is reproduced explicitly:

- anchors are constants (the input size is fixed at export; the batch is dynamic);
- per-level top-k on logits (ONNX TopK keeps the lower index first on ties, like the model's
  stable sort), NMS within each level, post-NMS top-k per image;
- box-head: softmax, class-specific decode, clip, score > threshold, min size, per-class NMS,
  top-K across classes, with candidates laid out proposal-major/class-minor so that score
  ties resolve like the model;
- NMS per group uses NonMaxSuppression's batch dimension as the group (image x level, or
  image x class): exact per-group IoU, no coordinate-offset trick.

Outputs are fixed-size with a count; rows at or past ``num_detections`` are zero.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from maskrt.runtime.model_meta import (
    FLAVOURS,
    FORMAT_VERSION,
    META_CONFIG,
    META_FLAVOUR,
    META_FORMAT,
    META_PLUGINS,
    META_PRECISION,
    PRECISIONS,
)
from maskrt.runtime.plugin_table import load_plugin_table
from maskrt.train.model.anchors import grid_anchors
from maskrt.train.model.box_ops import BBOX_XFORM_CLIP
from maskrt.train.model.mask_rcnn import OUTPUT_NAMES, MaskRCNN
from maskrt.train.model.roi_align import CANONICAL_LEVEL, CANONICAL_SCALE, K_MAX, K_MIN, LEVEL_EPS
from maskrt.train.model.roi_heads import FPN_STRIDES, MIN_DETECTION_SIZE
from maskrt.train.model.rpn import _flatten_level

from .graph import FLOAT, FLOAT16, INT32, INT64, OPSET, UINT8, GraphBuilder, value_info

# Below every real score (probabilities are >= 0): marks filtered / padding candidates.
SENTINEL = -1.0



# ----------------------------------------------------------------------------- dense parts
class _Front(nn.Module):
    """uint8 [B, H, W, 3] BGR -> P2..P5 [B, C, H_l, W_l] in the dense dtype, RPN logits float
    [B, N] and deltas float [B, N, 4] (levels P2..P6 concatenated, (y, x, anchor) order within a
    level).

    NOTE: ``dtype`` float16: the uint8 -> float cast and the normalisation stay float32 (the
    mean/std are kept in float32 here), the backbone, FPN and RPN head compute in float16, and the
    RPN outputs go back to float32 (anchors, decoding and clipping are float32: in float16 the
    spacing of values in [1024, 2048) is 1 px).
    """

    def __init__(self, model: MaskRCNN, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.model = model
        self.dtype = dtype
        cfg = model.cfg
        # The model flips BGR -> RGB with flip(0) per image; an index gather is the same thing.
        order = [2, 1, 0] if cfg.channel_order == "RGB" else [0, 1, 2]
        self.register_buffer("order", torch.tensor(order), persistent=False)
        self.register_buffer("mean", model.pixel_mean.detach().to(torch.float32).clone(), persistent=False)
        self.register_buffer("std", model.pixel_std.detach().to(torch.float32).clone(), persistent=False)

    def forward(self, images: Tensor):
        m = self.model
        x = images.to(torch.float32).permute(0, 3, 1, 2)
        x = torch.index_select(x, 1, self.order)
        x = ((x - self.mean) / self.std).to(self.dtype)
        feats = m.backbone(x)
        levels = [feats[k] for k in ("0", "1", "2", "3", "pool")]
        logits, deltas = m.rpn.head(levels)
        flat = [_flatten_level(lg, dl) for lg, dl in zip(logits, deltas, strict=True)]
        obj = torch.cat([f[0] for f in flat], dim=1).to(torch.float32)
        dlt = torch.cat([f[1] for f in flat], dim=1).to(torch.float32)
        return (*levels[:4], obj, dlt)


class _BoxHead(nn.Module):
    """pooled [R, C, 7, 7] (dense dtype) -> class logits float [R, K], deltas float [R, 4K]
    (float32 out: softmax, decoding and NMS are float32 islands)."""

    def __init__(self, model: MaskRCNN):
        super().__init__()
        self.heads = model.roi_heads

    def forward(self, pooled: Tensor):
        logits, deltas = self.heads.box_predictor(self.heads.box_head(pooled))
        return logits.to(torch.float32), deltas.to(torch.float32)


class _MaskHead(nn.Module):
    """pooled [R, C, 14, 14] (dense dtype) -> mask logits float [R, K, M, M]."""

    def __init__(self, model: MaskRCNN):
        super().__init__()
        self.heads = model.roi_heads

    def forward(self, pooled: Tensor):
        return self.heads.mask_predictor(self.heads.mask_head(pooled)).to(torch.float32)


def _trace(module: nn.Module, args: tuple, inputs: list[str], outputs: list[str],
           dynamic: dict[str, dict[int, str]]) -> onnx.ModelProto:
    """torch.onnx (TorchScript tracer) of a dense, control-flow-free module."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of torch.export (which needs
        # onnxscript); the dense parts have no data-dependent shapes, which it handles exactly.
        warnings.simplefilter("ignore")
        with torch.no_grad():
            torch.onnx.export(module, args, buf, dynamo=False, opset_version=OPSET, input_names=inputs,
                              output_names=outputs, dynamic_axes=dynamic, do_constant_folding=True)
    return onnx.load_from_string(buf.getvalue())


# ----------------------------------------------------------------------------- the graph
@dataclass
class _Dims:
    """Static facts of the export: level sizes etc."""

    level_sizes: list[int]  # anchors per RPN level (P2..P6)
    feat_shapes: list[tuple[int, int]]  # (H_l, W_l) of P2..P6


class _MaskRCNNGraph:
    def __init__(self, model: MaskRCNN, flavour: str, table: dict, dense: int = FLOAT):
        self.model, self.cfg, self.flavour, self.table = model, model.cfg, flavour, table
        self.dense = dense  # FLOAT or FLOAT16: the dtype of features and pooled RoIs
        self.g = GraphBuilder()
        if flavour == "trt":
            self.g.domains[table["onnx_domain"]] = 1
        self.plugins = {p["name"]: p for p in table["plugins"]}

    # ------------------------------------------------------------------ small helpers
    def _split4(self, x: str) -> list[str]:
        """[..., 4] -> four [..., 1] tensors."""
        return self.g.op("Split", [x, self.g.i64(1, 1, 1, 1)], 4, axis=-1)

    def _plugin(self, name: str, inputs: list[str], n_out: int, **attrs) -> str | list[str]:
        spec = self.plugins[name]
        known = {a["name"] for a in spec["attributes"]}
        unknown = set(attrs) - known
        if unknown:
            raise AssertionError(f"{name}: attributes {sorted(unknown)} are not in the plugin table")
        return self.g.op(name, inputs, n_out, domain=self.table["onnx_domain"], plugin_version=spec["version"],
                         plugin_namespace=self.table["namespace"], **attrs)

    def _decode(self, deltas: str, ref: list[str], weights, clip_hw: tuple[int, int]) -> str:
        """BoxCoder.decode + clip_boxes with the same float32 operation order as the model.

        deltas: float [..., 4]; ref: (w, h, cx, cy) tensors broadcastable to [..., 1].
        Returns float [..., 4] (x1, y1, x2, y2) clipped to (H, W).
        """
        g = self.g
        w, h, cx, cy = ref
        d0, d1, d2, d3 = self._split4(deltas)
        wx, wy, ww, wh = (float(v) for v in weights)
        clip = g.f32(BBOX_XFORM_CLIP)
        dx = g.op("Div", [d0, g.f32(wx)])
        dy = g.op("Div", [d1, g.f32(wy)])
        dw = g.op("Min", [g.op("Div", [d2, g.f32(ww)]), clip])
        dh = g.op("Min", [g.op("Div", [d3, g.f32(wh)]), clip])
        pcx = g.op("Add", [g.op("Mul", [dx, w]), cx])
        pcy = g.op("Add", [g.op("Mul", [dy, h]), cy])
        pw = g.op("Mul", [g.op("Exp", [dw]), w])
        ph = g.op("Mul", [g.op("Exp", [dh]), h])
        half = g.f32(0.5)
        hpw, hph = g.op("Mul", [half, pw]), g.op("Mul", [half, ph])
        H, W = clip_hw
        zero = g.f32(0.0)
        x1 = g.op("Clip", [g.op("Sub", [pcx, hpw]), zero, g.f32(W)])
        y1 = g.op("Clip", [g.op("Sub", [pcy, hph]), zero, g.f32(H)])
        x2 = g.op("Clip", [g.op("Add", [pcx, hpw]), zero, g.f32(W)])
        y2 = g.op("Clip", [g.op("Add", [pcy, hph]), zero, g.f32(H)])
        return g.op("Concat", [x1, y1, x2, y2], axis=-1)

    def _ref_geometry(self, boxes: str) -> list[str]:
        """boxes float [..., 4] -> (w, h, cx, cy), each [..., 1], as BoxCoder.decode computes."""
        g = self.g
        x1, y1, x2, y2 = self._split4(boxes)
        w = g.op("Sub", [x2, x1])
        h = g.op("Sub", [y2, y1])
        half = g.f32(0.5)
        return [w, h, g.op("Add", [x1, g.op("Mul", [half, w])]), g.op("Add", [y1, g.op("Mul", [half, h])])]

    def _size_ok(self, boxes: str, min_size: float) -> str:
        """bool [...]: width >= min_size and height >= min_size for boxes float [..., 4]."""
        g = self.g
        x1, y1, x2, y2 = self._split4(boxes)
        m = g.f32(min_size)
        ok = g.op("And", [g.op("GreaterOrEqual", [g.op("Sub", [x2, x1]), m]),
                          g.op("GreaterOrEqual", [g.op("Sub", [y2, y1]), m])])
        return g.op("Squeeze", [ok, g.i64(-1)])

    def _batch(self, images: str) -> str:
        """int64 [1]: the dynamic batch size."""
        return self.g.op("Slice", [self.g.op("Shape", [images]), self.g.i64(0), self.g.i64(1)])

    def _grouped_nms(self, boxes: str, scores: str, n: int, iou: float, max_keep: int) -> list[str]:
        """NMS where each row of the leading axis is its own group.

        boxes float [G, n, 4]; scores float [G, n] (SENTINEL = not a candidate).
        Returns (group int64 [S], index int64 [S]) of the kept candidates.
        NOTE: NonMaxSuppression suppresses at IoU > iou_threshold and its score_threshold is
        a strict '>' too: -0.5 admits every real score (>= 0) and no sentinel.
        """
        g = self.g
        sel = g.op("NonMaxSuppression", [
            boxes, g.op("Unsqueeze", [scores, g.i64(1)]), g.i64(max_keep), g.f32(iou), g.f32(-0.5)])
        grp = g.op("Squeeze", [g.op("Slice", [sel, g.i64(0), g.i64(1), g.i64(1)]), g.i64(1)])
        idx = g.op("Squeeze", [g.op("Slice", [sel, g.i64(2), g.i64(3), g.i64(1)]), g.i64(1)])
        return [grp, idx]

    def _scatter_topk(self, total: str, flat: str, values: str, k: int, row: int) -> list[str]:
        """Places values at flat positions of a SENTINEL-filled buffer of `total` entries, views
        it as [B, row] and keeps the top k per image (ties: lower index first).
        Returns (values float [B, k], indices int64 [B, k], valid bool [B, k])."""
        g = self.g
        buf = g.op("ConstantOfShape", [total], value=onnx.helper.make_tensor("v", FLOAT, [1], [SENTINEL]))
        buf = g.op("ScatterND", [buf, g.op("Unsqueeze", [flat, g.i64(1)]), values])
        buf = g.op("Reshape", [buf, g.i64(-1, row)])
        vals, idx = g.op("TopK", [buf, g.i64(k)], 2, axis=1, largest=1, sorted=1)
        valid = g.op("Greater", [vals, g.f32(SENTINEL / 2)])
        return [vals, idx, valid]

    def _gather_rows(self, data: str, idx: str, width: int) -> str:
        """data float [B, N, width], idx int64 [B, k] -> float [B, k, width]."""
        g = self.g
        shape = g.op("Concat", [g.op("Shape", [idx]), g.i64(width)], axis=0)
        full = g.op("Expand", [g.op("Unsqueeze", [idx, g.i64(2)]), shape])
        return g.op("GatherElements", [data, full], axis=1)

    # ------------------------------------------------------------------ stages
    def rpn(self, images: str, obj: str, dlt: str, dims: _Dims) -> tuple[str, str]:
        """Returns proposals float [B, P, 4] (zero rows past the count) and num_rois int32 [B]."""
        g, cfg = self.g, self.cfg
        H, W = cfg.input_size
        anchors = grid_anchors(dims.feat_shapes, (H, W), cfg.anchor_sizes, cfg.anchor_aspect_ratios)
        a = torch.cat(anchors).to(torch.float32)
        # Anchor geometry as BoxCoder.decode computes it in float32 (constants here).
        aw = a[:, 2] - a[:, 0]
        ah = a[:, 3] - a[:, 1]
        ref = [aw, ah, a[:, 0] + 0.5 * aw, a[:, 1] + 0.5 * ah]
        ref = [g.const(r.numpy().reshape(1, -1, 1), hint="anchor_geom") for r in ref]
        boxes_all = self._decode(dlt, ref, (1.0, 1.0, 1.0, 1.0), (H, W))  # [B, N, 4]

        pre_n, post_n = cfg.rpn_pre_nms_top_n_test, cfg.rpn_post_nms_top_n_test
        if self.flavour == "trt":
            rois, _, count = self._plugin(
                "MaskrtRpnNMS", [boxes_all, obj], 3, level_sizes=list(dims.level_sizes),
                pre_nms_top_n=pre_n, post_nms_top_n=post_n, iou_threshold=float(cfg.rpn_nms_thresh),
                min_size=float(cfg.rpn_min_size), score_threshold=float(cfg.rpn_score_thresh))
            return rois, count

        ks = [min(pre_n, n) for n in dims.level_sizes]
        kmax, L = max(ks), len(ks)
        lvl_boxes, lvl_scores = [], []
        start = 0
        for n, k in zip(dims.level_sizes, ks, strict=True):
            lg = g.op("Slice", [obj, g.i64(start), g.i64(start + n), g.i64(1)])
            bx = g.op("Slice", [boxes_all, g.i64(start), g.i64(start + n), g.i64(1)])
            start += n
            vals, idx = g.op("TopK", [lg, g.i64(k)], 2, axis=1, largest=1, sorted=1)
            bx = self._gather_rows(bx, idx, 4)  # [B, k, 4]
            sc = g.op("Sigmoid", [vals])
            keep = g.op("And", [self._size_ok(bx, cfg.rpn_min_size),
                                g.op("GreaterOrEqual", [sc, g.f32(cfg.rpn_score_thresh)])])
            sc = g.op("Where", [keep, sc, g.f32(SENTINEL)])
            if k < kmax:  # pad every level to kmax candidates (sentinel scores never survive)
                bx = g.op("Pad", [bx, g.i64(0, 0, 0, 0, kmax - k, 0)], mode="constant")
                sc = g.op("Pad", [sc, g.i64(0, 0, 0, kmax - k), g.f32(SENTINEL)], mode="constant")
            lvl_boxes.append(g.op("Unsqueeze", [bx, g.i64(1)]))
            lvl_scores.append(g.op("Unsqueeze", [sc, g.i64(1)]))
        boxes = g.op("Concat", lvl_boxes, axis=1)  # [B, L, kmax, 4]
        scores = g.op("Concat", lvl_scores, axis=1)  # [B, L, kmax]
        grp, idx = self._grouped_nms(g.op("Reshape", [boxes, g.i64(-1, kmax, 4)]),
                                     g.op("Reshape", [scores, g.i64(-1, kmax)]), kmax, cfg.rpn_nms_thresh, kmax)
        flat = g.op("Add", [g.op("Mul", [grp, g.i64(kmax)]), idx])
        kept = g.op("Gather", [g.op("Reshape", [scores, g.i64(-1)]), flat], axis=0)
        total = g.op("Mul", [self._batch(images), g.i64(L * kmax)])
        p = min(post_n, L * kmax)
        _, top, valid = self._scatter_topk(total, flat, kept, p, L * kmax)
        rois = self._gather_rows(g.op("Reshape", [boxes, g.i64(0, L * kmax, 4)]), top, 4)
        rois = g.op("Mul", [rois, g.op("Unsqueeze", [g.op("Cast", [valid], to=FLOAT), g.i64(2)])])
        count = g.op("ReduceSum", [g.op("Cast", [valid], to=INT32), g.i64(1)], keepdims=0)
        if p < post_n:  # keep the [B, post_n] shape the trt flavour has
            rois = g.op("Pad", [rois, g.i64(0, 0, 0, 0, post_n - p, 0)], mode="constant")
        return rois, count

    def pyramid_roi_align(self, feats: list[str], rois: str, r: int, size: int) -> str:
        """rois float [B, r, 4] -> pooled [B*r, C, size, size] (dense dtype) from the level each
        RoI's size selects (train/model/roi_align.py semantics).

        NOTE: the RoIs and the level assignment are float32 in every precision. The trt plugin
        takes float16 features and pools in their dtype (plugins/plugin_table.json); ONNX's
        RoiAlign gets float32 features (an exact cast) and its output is cast to the dense dtype.
        """
        g, cfg = self.g, self.cfg
        c = cfg.fpn_channels
        if self.flavour == "ort" and self.dense != FLOAT:
            pooled = self._pyramid_roi_align_ort([g.op("Cast", [f], to=FLOAT) for f in feats], rois, r, size)
            return g.op("Cast", [pooled], to=self.dense)
        if self.flavour == "trt":
            pooled = self._plugin(
                "MaskrtPyramidRoIAlign", [rois, *feats], 1, output_size=size,
                sampling_ratio=cfg.roi_align_sampling_ratio, aligned=int(cfg.roi_align_aligned),
                strides=list(FPN_STRIDES), first_level=K_MIN, canonical_scale=float(CANONICAL_SCALE),
                canonical_level=CANONICAL_LEVEL)
            return g.op("Reshape", [pooled, g.i64(-1, c, size, size)])
        return self._pyramid_roi_align_ort(feats, rois, r, size)

    def _pyramid_roi_align_ort(self, feats: list[str], rois: str, r: int, size: int) -> str:
        """The ort flavour of :meth:`pyramid_roi_align` on float32 features."""
        g, cfg = self.g, self.cfg
        c = cfg.fpn_channels
        flat = g.op("Reshape", [rois, g.i64(-1, 4)])  # [B*r, 4]
        n = g.op("Slice", [g.op("Shape", [flat]), g.i64(0), g.i64(1)])  # [1]
        bidx = g.op("Div", [g.op("Range", [g.const(np.int64(0)), g.op("Squeeze", [n, g.i64(0)]),
                                           g.const(np.int64(1))]), g.i64(r)])
        # NOTE: level = floor(4 + log2(sqrt(area) / 224) + 1e-6) clamped to [2, 5]: eps after
        # log2 as torchvision's LevelMapper (see assign_fpn_levels); log2 = ln / ln 2 here.
        x1, y1, x2, y2 = self._split4(flat)
        area = g.op("Mul", [g.op("Sub", [x2, x1]), g.op("Sub", [y2, y1])])
        lg = g.op("Div", [g.op("Log", [g.op("Div", [g.op("Sqrt", [area]), g.f32(CANONICAL_SCALE)])]),
                          g.f32(math.log(2.0))])
        lvl = g.op("Floor", [g.op("Add", [g.op("Add", [g.f32(float(CANONICAL_LEVEL)), lg]), g.f32(LEVEL_EPS)])])
        lvl = g.op("Clip", [lvl, g.f32(float(K_MIN)), g.f32(float(K_MAX))])
        lvl = g.op("Squeeze", [g.op("Cast", [lvl], to=INT64), g.i64(1)])  # [B*r]
        out = g.op("ConstantOfShape", [g.op("Concat", [n, g.i64(c, size, size)], axis=0)],
                   value=onnx.helper.make_tensor("v", FLOAT, [1], [0.0]))
        mode = "half_pixel" if cfg.roi_align_aligned else "output_half_pixel"
        for li, (feat, stride) in enumerate(zip(feats, FPN_STRIDES, strict=True)):
            sel = g.op("Reshape", [g.op("NonZero", [g.op("Equal", [lvl, g.i64(K_MIN + li)])]), g.i64(-1)])
            pooled = g.op("RoiAlign", [feat, g.op("Gather", [flat, sel], axis=0), g.op("Gather", [bidx, sel], axis=0)],
                          output_height=size, output_width=size, sampling_ratio=cfg.roi_align_sampling_ratio,
                          spatial_scale=1.0 / stride, mode="avg", coordinate_transformation_mode=mode)
            out = g.op("ScatterND", [out, g.op("Unsqueeze", [sel, g.i64(1)]), pooled])
        return out

    def detections(self, images: str, rois: str, num_rois: str, logits: str, deltas: str, p: int):
        """Box-head post-processing. rois float [B, P, 4]; logits float [B*P, K]; deltas
        float [B*P, 4K]. Returns count int32 [B], boxes float [B, D, 4], scores float [B, D],
        classes int32 [B, D] with zero rows past the count."""
        g, cfg = self.g, self.cfg
        H, W = cfg.input_size
        k = cfg.num_classes
        c = k - 1
        d = cfg.detections_per_img
        flat_rois = g.op("Reshape", [rois, g.i64(-1, 1, 4)])  # [B*P, 1, 4]
        ref = self._ref_geometry(flat_rois)  # each [B*P, 1, 1]
        boxes = self._decode(g.op("Reshape", [deltas, g.i64(0, k, 4)]), ref, cfg.bbox_reg_weights, (H, W))
        scores = g.op("Softmax", [logits], axis=-1)  # [B*P, K]
        boxes = g.op("Slice", [g.op("Reshape", [boxes, g.i64(-1, p, k, 4)]), g.i64(1), g.i64(k), g.i64(2)])
        scores = g.op("Slice", [g.op("Reshape", [scores, g.i64(-1, p, k)]), g.i64(1), g.i64(k), g.i64(2)])
        if self.flavour == "trt":
            count, boxes, scores, classes = self._plugin(
                "MaskrtDetectionNMS", [boxes, scores, num_rois], 4, score_threshold=float(cfg.box_score_thresh),
                iou_threshold=float(cfg.box_nms_thresh), max_detections=d, min_size=float(MIN_DETECTION_SIZE),
                class_offset=1)
            return count, boxes, scores, classes

        # Candidates: real proposals, score > threshold (strict), boxes at least MIN_DETECTION_SIZE.
        real = g.op("Less", [g.op("Unsqueeze", [g.const(np.arange(p, dtype=np.int32)), g.i64(0)]),
                             g.op("Unsqueeze", [num_rois, g.i64(1)])])  # [B, P]
        keep = g.op("And", [g.op("Greater", [scores, g.f32(cfg.box_score_thresh)]),
                            self._size_ok(boxes, MIN_DETECTION_SIZE)])
        keep = g.op("And", [keep, g.op("Unsqueeze", [real, g.i64(2)])])
        cand = g.op("Where", [keep, scores, g.f32(SENTINEL)])  # [B, P, C]
        # Group = (image, class): NonMaxSuppression's batch axis.
        nb = g.op("Reshape", [g.op("Transpose", [boxes], perm=[0, 2, 1, 3]), g.i64(-1, p, 4)])
        ns = g.op("Reshape", [g.op("Transpose", [cand], perm=[0, 2, 1]), g.i64(-1, p)])
        grp, idx = self._grouped_nms(nb, ns, p, cfg.box_nms_thresh, d)
        # Flat position in the proposal-major / class-minor layout [B, P, C] (the model's order).
        b = g.op("Div", [grp, g.i64(c)])
        cls = g.op("Mod", [grp, g.i64(c)])
        flat = g.op("Add", [g.op("Add", [g.op("Mul", [b, g.i64(p * c)]), g.op("Mul", [idx, g.i64(c)])]), cls])
        kept = g.op("Gather", [g.op("Reshape", [cand, g.i64(-1)]), flat], axis=0)
        total = g.op("Mul", [self._batch(images), g.i64(p * c)])
        dk = min(d, p * c)
        vals, top, valid = self._scatter_topk(total, flat, kept, dk, p * c)
        validf = g.op("Cast", [valid], to=FLOAT)
        out_boxes = self._gather_rows(g.op("Reshape", [boxes, g.i64(0, p * c, 4)]), top, 4)
        out_boxes = g.op("Mul", [out_boxes, g.op("Unsqueeze", [validf, g.i64(2)])])
        out_scores = g.op("Mul", [vals, validf])
        out_classes = g.op("Cast", [g.op("Add", [g.op("Mod", [top, g.i64(c)]), g.i64(1)])], to=INT32)
        out_classes = g.op("Mul", [out_classes, g.op("Cast", [valid], to=INT32)])
        count = g.op("ReduceSum", [g.op("Cast", [valid], to=INT32), g.i64(1)], keepdims=0)
        if dk < d:
            out_boxes = g.op("Pad", [out_boxes, g.i64(0, 0, 0, 0, d - dk, 0)], mode="constant")
            out_scores = g.op("Pad", [out_scores, g.i64(0, 0, 0, d - dk)], mode="constant")
            out_classes = g.op("Pad", [out_classes, g.i64(0, 0, 0, d - dk)], mode="constant")
        return count, out_boxes, out_scores, out_classes

    def masks(self, feats: list[str], det_boxes: str, classes: str, count: str, mask_head) -> str:
        """Mask probabilities of each detection's class: float [B, D, M, M], zero past the count."""
        g, cfg = self.g, self.cfg
        d, m = cfg.detections_per_img, cfg.mask_resolution
        # NOTE: named alike in both flavours (the int8 calibration of the ort graph serves the trt one)
        pooled = g.op("Identity", [self.pyramid_roi_align(feats, det_boxes, d, cfg.mask_roi_size)],
                      outputs=["masks/pooled"])
        logits = g.inline(mask_head, {"pooled": pooled}, "mask_head")["mask_logits"]  # [B*D, K, M, M]
        cls = g.op("Reshape", [g.op("Cast", [classes], to=INT64), g.i64(-1, 1, 1, 1)])
        cls = g.op("Expand", [cls, g.i64(1, 1, m, m)])
        probs = g.op("Sigmoid", [g.op("GatherElements", [logits, cls], axis=1)])  # [B*D, 1, M, M]
        probs = g.op("Reshape", [probs, g.i64(-1, d, m, m)])
        real = g.op("Less", [g.op("Unsqueeze", [g.const(np.arange(d, dtype=np.int32)), g.i64(0)]),
                             g.op("Unsqueeze", [count, g.i64(1)])])
        realf = g.op("Reshape", [g.op("Cast", [real], to=FLOAT), g.i64(-1, d, 1, 1)])
        return g.op("Mul", [probs, realf], outputs=["masks"])

    # ------------------------------------------------------------------ whole model
    def build(self, front: onnx.ModelProto, box_head: onnx.ModelProto, mask_head: onnx.ModelProto,
              dims: _Dims, metadata: dict[str, str]) -> onnx.ModelProto:
        g, cfg = self.g, self.cfg
        H, W = cfg.input_size
        images = "images"
        f = g.inline(front, {"images": images}, "front")
        feats = [f[f"p{i}"] for i in range(2, 6)]
        with g.scope("rpn"):
            rois, num_rois = self.rpn(images, f["rpn_logits"], f["rpn_deltas"], dims)
        p = cfg.rpn_post_nms_top_n_test
        with g.scope("box_roi_align"):
            pooled = g.op("Identity", [self.pyramid_roi_align(feats, rois, p, cfg.box_roi_size)],
                          outputs=["box_roi_align/pooled"])
        bh = g.inline(box_head, {"pooled": pooled}, "box_head")
        with g.scope("detections"):
            count, boxes, scores, classes = self.detections(images, rois, num_rois, bh["class_logits"],
                                                            bh["box_deltas"], p)
        with g.scope("masks"):
            g.op("Identity", [count], outputs=["num_detections"])
            g.op("Identity", [boxes], outputs=["boxes"])
            g.op("Identity", [scores], outputs=["scores"])
            g.op("Identity", [classes], outputs=["classes"])
            self.masks(feats, boxes, classes, count, mask_head)
        d, m = cfg.detections_per_img, cfg.mask_resolution
        outputs = [
            value_info("num_detections", INT32, ["batch"]),
            value_info("boxes", FLOAT, ["batch", d, 4]),
            value_info("scores", FLOAT, ["batch", d]),
            value_info("classes", INT32, ["batch", d]),
            value_info("masks", FLOAT, ["batch", d, m, m]),
        ]
        assert tuple(o.name for o in outputs) == OUTPUT_NAMES
        return g.build([value_info(images, UINT8, ["batch", H, W, 3])], outputs, f"maskrt_{self.flavour}", metadata)


# ----------------------------------------------------------------------------- public API
@dataclass
class ExportSummary:
    path: Path
    flavour: str
    nodes: int
    op_counts: dict[str, int]
    size_bytes: int
    seconds: float
    sha256: str

    def line(self) -> str:
        return (f"{self.path}: flavour {self.flavour}, {self.nodes} nodes, {self.size_bytes / 2**20:.1f} MiB, "
                f"{self.seconds:.1f} s, sha256 {self.sha256[:12]}")


def build_graph(model: MaskRCNN, flavour: str = "ort", precision: str = "fp32", *,
                progress: Callable[[str], None] | None = None) -> onnx.ModelProto:
    """The checked ONNX graph of an eval-mode MaskRCNN (deployment contract, dynamic batch, the
    config's fixed input size) at ``precision`` "fp32" or "fp16" (int8 is made from the fp32
    graph by export/quantize.py). Raises ValueError for a bad flavour, precision or config."""
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {FLAVOURS}, got {flavour!r}")
    if precision not in ("fp32", "fp16"):
        raise ValueError(f"build_graph: precision must be fp32 or fp16 (int8: export/quantize.py), got {precision!r}")
    say = progress or (lambda s: None)
    cfg = model.cfg
    model = model.eval()
    table = load_plugin_table()
    H, W = cfg.input_size
    c = cfg.fpn_channels

    step = time.perf_counter()
    dtype = torch.float16 if precision == "fp16" else torch.float32
    if precision == "fp16":
        import copy

        model = copy.deepcopy(model).to(dtype)  # the weights become float16 initializers
    front_mod = _Front(model, dtype).eval()
    dummy = torch.zeros((2, H, W, 3), dtype=torch.uint8)
    with torch.no_grad():
        outs = front_mod(dummy)
        p6 = model.backbone(torch.zeros((1, 3, H, W), dtype=dtype))["pool"]
    feat_shapes = [tuple(o.shape[-2:]) for o in outs[:4]] + [tuple(p6.shape[-2:])]
    a = len(cfg.anchor_aspect_ratios)
    dims = _Dims(level_sizes=[h * w * a for h, w in feat_shapes], feat_shapes=feat_shapes)
    fnames = ["p2", "p3", "p4", "p5", "rpn_logits", "rpn_deltas"]
    front = _trace(front_mod, (dummy,), ["images"], fnames,
                   {"images": {0: "batch"}, **{n: {0: "batch"} for n in fnames}})
    say(f"traced backbone + FPN + RPN head ({len(front.graph.node)} nodes, {time.perf_counter() - step:.1f} s)")

    step = time.perf_counter()
    box_head = _trace(_BoxHead(model).eval(), (torch.zeros(2, c, cfg.box_roi_size, cfg.box_roi_size, dtype=dtype),),
                      ["pooled"], ["class_logits", "box_deltas"],
                      {"pooled": {0: "rois"}, "class_logits": {0: "rois"}, "box_deltas": {0: "rois"}})
    mask_head = _trace(_MaskHead(model).eval(),
                       (torch.zeros(2, c, cfg.mask_roi_size, cfg.mask_roi_size, dtype=dtype),),
                       ["pooled"], ["mask_logits"], {"pooled": {0: "rois"}, "mask_logits": {0: "rois"}})
    say(f"traced box head + mask head ({time.perf_counter() - step:.1f} s)")

    step = time.perf_counter()
    metadata = {META_CONFIG: cfg.to_json(), META_FLAVOUR: flavour, META_FORMAT: FORMAT_VERSION,
                META_PRECISION: precision}
    if flavour == "trt":
        metadata[META_PLUGINS] = json.dumps({p["name"]: p["version"] for p in table["plugins"]}, sort_keys=True)
    graph = _MaskRCNNGraph(model, flavour, table, FLOAT16 if precision == "fp16" else FLOAT)
    onnx_model = graph.build(front, box_head, mask_head, dims, metadata)
    say(f"wrote the {flavour} {precision} graph: proposals, RoIAlign, detections, masks "
        f"({time.perf_counter() - step:.1f} s)")

    step = time.perf_counter()
    check_model(onnx_model)
    say(f"onnx.checker + shape inference passed ({time.perf_counter() - step:.1f} s)")
    if flavour == "trt":
        from .graph_checks import check_trt_ops

        check_trt_ops(onnx_model, table)
        say("every non-plugin node is supported by TensorRT's ONNX parser")
    return onnx_model


def write_model(onnx_model: onnx.ModelProto, out: str | Path, t0: float) -> ExportSummary:
    """Writes ``onnx_model`` to ``out`` atomically; the summary counts its ops."""
    flavour = read_metadata(onnx_model).get(META_FLAVOUR, "?")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = onnx_model.SerializeToString()
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    ops: dict[str, int] = {}
    for n in onnx_model.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return ExportSummary(out, flavour, len(onnx_model.graph.node), ops, len(data), time.perf_counter() - t0,
                         hashlib.sha256(data).hexdigest())


def export_model(model: MaskRCNN, out: str | Path, flavour: str = "ort", *, precision: str = "fp32",
                 calib_dir: str | Path | None = None, calib_images: int | None = None,
                 calib_cache_dir: str | Path | None = None, calib_method: str | None = None,
                 progress: Callable[[str], None] | None = None) -> ExportSummary:
    """Exports an eval-mode MaskRCNN to ``out`` at ``precision`` (fp32 | fp16 | int8; int8 needs
    ``calib_dir``, see export/quantize.py). Raises ValueError for a bad flavour, precision or
    config."""
    t0 = time.perf_counter()
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if (precision == "int8") != (calib_dir is not None):
        raise ValueError("--precision int8 needs --calib DIR (calibration images), and only int8 takes it")
    if precision != "int8":
        return write_model(build_graph(model, flavour, precision, progress=progress), out, t0)
    from .quantize import METHOD, quantize_int8

    onnx_model = quantize_int8(model, flavour, calib_dir, calib_images=calib_images, cache_dir=calib_cache_dir,
                               method=calib_method or METHOD, progress=progress)
    return write_model(onnx_model, out, t0)


def check_model(model: onnx.ModelProto) -> None:
    """onnx.checker (full) and strict shape inference; raises ValueError naming the failure."""
    try:
        onnx.checker.check_model(model, full_check=True)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ValueError(f"exported graph failed the ONNX checks: {str(e).splitlines()[0]}") from None


def read_metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}
