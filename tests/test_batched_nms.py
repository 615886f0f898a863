"""RPN NMS and detection NMS CPU kernels (maskrt._native.rpn_nms / detection_nms): the CPU twins
of the MaskrtRpnNMS / MaskrtDetectionNMS TensorRT plugins.

References, independent of the kernels:
  * the model's own torch code: ``RegionProposalNetwork._select`` and ``RoIHeads._inference``
    (train/model), run on the same inputs;
  * float32 pure-Python mirrors (below): plain loops transcribing the semantics, with IoU in
    numpy float32 scalars-as-arrays (every operation rounded to float32, union = (a + b) - inter),
    so that decisions at IoU == threshold are reproduced exactly; the sigmoid in float64 rounded
    once to float32, as the kernels define it;
  * ONNX Runtime's NonMaxSuppression per class (tie-tolerant).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from references import ort_nms, python_ticks_during, same_up_to_ties

from maskrt import _native
from maskrt.runtime.config import ModelConfig
from maskrt.train.model.box_ops import clip_boxes
from maskrt.train.model.roi_heads import MIN_DETECTION_SIZE, RoIHeads
from maskrt.train.model.rpn import RegionProposalNetwork

F32 = np.float32


# ============================================================================ float32 mirrors
def _iou32_many(box, others) -> np.ndarray:
    """float32 IoU of one box (float32 [4]) with each of others (float32 [M, 4]) -> float32 [M].
    Same operation order as batched_nms_math.h; a union <= 0 gives 0."""
    others = np.asarray(others, F32).reshape(-1, 4)
    area_a = (box[2] - box[0]) * (box[3] - box[1])
    area_b = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    iw = np.maximum(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), F32(0))
    ih = np.maximum(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), F32(0))
    inter = iw * ih
    union = (area_a + area_b) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, F32(1)), F32(0)).astype(F32)


def _greedy_mirror(cands, iou_threshold) -> list:
    """cands: list of (score, index, box float32 [4]) already in visiting order. Keeps a candidate
    unless a kept one has IoU > threshold with it."""
    kept, kept_boxes = [], []
    thr = F32(iou_threshold)
    for c in cands:
        if kept_boxes and bool((_iou32_many(c[2], np.array(kept_boxes)) > thr).any()):
            continue
        kept.append(c)
        kept_boxes.append(c[2])
    return kept


def _min_size_ok(box, min_size) -> bool:
    return bool(box[2] - box[0] >= F32(min_size)) and bool(box[3] - box[1] >= F32(min_size))


def sigmoid32(x) -> np.ndarray:
    """float64 sigmoid rounded once to float32 (the kernels' definition)."""
    return (1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))).astype(F32)


def rpn_mirror(boxes, logits, level_sizes, pre, post, iou, min_size, score_threshold):
    """One image. boxes float32 [N, 4], logits float32 [N] -> (rois [post, 4], scores [post], count)."""
    merged = []
    start = pos = 0
    for n in level_sizes:
        lg = [float(v) for v in logits[start:start + n]]
        ranked = sorted(range(n), key=lambda i: (-lg[i], i))[: min(pre, n)]  # stable descending
        level = []
        for q, i in enumerate(ranked):
            box = boxes[start + i]
            score = sigmoid32(logits[start + i])[()]
            if _min_size_ok(box, min_size) and score >= F32(score_threshold):
                level.append((float(score), pos + q, box))
        merged += _greedy_mirror(level, iou)  # within the level, in rank order
        start += n
        pos += len(ranked)
    merged.sort(key=lambda c: (-c[0], c[1]))  # descending score, ties by concatenated position
    merged = merged[:post]
    rois = np.zeros((post, 4), F32)
    scores = np.zeros(post, F32)
    for t, c in enumerate(merged):
        rois[t], scores[t] = c[2], c[0]
    return rois, scores, len(merged)


def detection_mirror(boxes, scores, rows, score_threshold, iou, k, min_size, class_offset):
    """One image. boxes float32 [R, C, 4], scores float32 [R, C]; rows: the valid row count.
    -> (count, boxes [K, 4], scores [K], classes [K])."""
    n_classes = scores.shape[1]
    kept = []
    for c in range(n_classes):
        cands = [
            (float(scores[r, c]), r * n_classes + c, boxes[r, c])
            for r in range(rows)
            if scores[r, c] > F32(score_threshold) and _min_size_ok(boxes[r, c], min_size)
        ]
        cands.sort(key=lambda t: (-t[0], t[1]))
        kept += _greedy_mirror(cands, iou)
    kept.sort(key=lambda t: (-t[0], t[1]))
    kept = kept[:k]
    ob, os_, oc = np.zeros((k, 4), F32), np.zeros(k, F32), np.zeros(k, np.int32)
    for t, (s, flat, box) in enumerate(kept):
        ob[t], os_[t], oc[t] = box, s, flat % n_classes + class_offset
    return len(kept), ob, os_, oc


# ============================================================================ input builders
def _random_boxes(rng, shape, lo=0.0, hi=200.0, wh=(1.0, 60.0)):
    xy = rng.uniform(lo, hi, shape + (2,))
    size = rng.uniform(wh[0], wh[1], shape + (2,))
    return np.concatenate([xy, xy + size], -1).astype(F32)


def _clustered_boxes(rng, n, objects=12, lo=0.0, hi=120.0, wh=(10.0, 70.0), jitter=4.0):
    """n boxes around a few "objects" (each a random box plus N(0, jitter) per coordinate), so that
    many pairs overlap strongly, as proposals of real detectors do."""
    base = _random_boxes(rng, (objects,), lo, hi, wh)
    boxes = base[rng.integers(0, objects, n)] + rng.normal(0, jitter, (n, 4))
    return boxes.astype(F32)


def _rpn_inputs(rng, batch, level_sizes, image_size=(160, 200), ties=False):
    """Anchors, deltas and logits; boxes = the model's decode + clip of every anchor (what the
    exported graph feeds the plugin). Returns (anchors, deltas, logits, boxes) as torch tensors."""
    n = sum(level_sizes)
    anchors = torch.from_numpy(_clustered_boxes(rng, n, 16, -20, 150, (10.0, 80.0)))
    deltas = rng.normal(0, 0.05, (batch, n, 4)).astype(F32)
    # NOTE: dw = dh = 0, so decode needs no exp(): _select decodes only its top-k subset while the
    # kernel gets all anchors decoded, and torch's vectorised exp may differ by an ulp from its
    # scalar remainder loop, which would make the two decodes disagree through no fault of the kernel.
    deltas[..., 2:] = 0.0
    deltas = torch.from_numpy(deltas)
    logits = rng.normal(0, 2, (batch, n)).astype(F32)
    if ties:
        logits = np.round(logits * 2) / 2  # many exact ties
    logits = torch.from_numpy(logits.astype(F32))
    rpn = RegionProposalNetwork(ModelConfig())
    boxes = torch.stack([clip_boxes(rpn.box_coder.decode(deltas[b], anchors)[:, 0], image_size) for b in range(batch)])
    return anchors, deltas, logits, boxes


def _rpn_torch(anchors, deltas, logits, level_sizes, image_size, pre, post, iou, min_size, score_thr):
    """RegionProposalNetwork._select per image -> list of float32 [R_i, 4]."""
    cfg = ModelConfig(rpn_nms_thresh=iou, rpn_min_size=min_size, rpn_score_thresh=score_thr)
    rpn = RegionProposalNetwork(cfg).eval()
    return [rpn._select(logits[b], deltas[b], anchors, list(level_sizes), image_size, pre, post).numpy()
            for b in range(logits.shape[0])]


_TORCH_SIGMOID = torch.sigmoid


def _correctly_rounded_sigmoid(x):
    return _TORCH_SIGMOID(x.double()).float()


# ============================================================================ RPN
@pytest.mark.parametrize(
    "level_sizes,pre,post,iou,min_size,score_thr,ties",
    [
        ((300, 120, 40), 100, 150, 0.7, 1e-3, 0.0, False),   # last level smaller than pre
        ((300, 120, 40), 100, 40, 0.5, 1e-3, 0.0, True),     # score ties, post cuts the merge
        ((200, 200), 500, 1000, 0.3, 4.0, 0.6, False),       # every level < pre, min-size and score filters
        ((64,), 64, 10, 0.7, 1e-3, 0.0, True),               # one level, more kept than post
    ],
)
def test_rpn_nms_matches_torch_select_and_mirror(monkeypatch, level_sizes, pre, post, iou, min_size, score_thr, ties):
    rng = np.random.default_rng(sum(level_sizes) + pre + post)
    image_size = (160, 200)
    anchors, deltas, logits, boxes = _rpn_inputs(rng, 2, level_sizes, image_size, ties)
    # NOTE: the kernels define the score as the float64 sigmoid rounded to float32 (CPU and GPU
    # agree bit for bit); torch.sigmoid in float32 is off by ~1 ulp on a third of inputs, which
    # would only reorder near-ties across levels. The reference runs with the kernels' sigmoid
    # here; test_rpn_nms_close_to_torch_float32_sigmoid runs it unpatched.
    monkeypatch.setattr(torch, "sigmoid", _correctly_rounded_sigmoid)
    expected = _rpn_torch(anchors, deltas, logits, level_sizes, image_size, pre, post, iou, min_size, score_thr)
    b_np, l_np = boxes.numpy(), logits.numpy()
    rois, scores, count = _native.rpn_nms(b_np, l_np, list(level_sizes), pre, post, iou, min_size, score_thr)
    assert rois.shape == (2, post, 4) and scores.shape == (2, post) and count.shape == (2,)
    assert rois.dtype == np.float32 and scores.dtype == np.float32 and count.dtype == np.int32
    for b in range(2):
        n = int(count[b])
        assert n == expected[b].shape[0]
        np.testing.assert_array_equal(rois[b, :n], expected[b])
        assert not rois[b, n:].any() and not scores[b, n:].any()  # zero padding
        m_rois, m_scores, m_count = rpn_mirror(b_np[b], l_np[b], level_sizes, pre, post, iou, min_size, score_thr)
        assert m_count == n
        np.testing.assert_array_equal(rois[b], m_rois)
        np.testing.assert_array_equal(scores[b], m_scores)
        assert np.all(np.diff(scores[b, :n]) <= 0)


def test_rpn_nms_close_to_torch_float32_sigmoid():
    # Unpatched reference: same proposals as a set (post large enough to keep all of them); the
    # order may differ only among scores within a few ulp of each other.
    level_sizes, pre, post = (400, 150), 120, 1000
    rng = np.random.default_rng(11)
    anchors, deltas, logits, boxes = _rpn_inputs(rng, 1, level_sizes)
    expected = _rpn_torch(anchors, deltas, logits, level_sizes, (160, 200), pre, post, 0.7, 1e-3, 0.0)[0]
    rois, scores, count = _native.rpn_nms(boxes.numpy(), logits.numpy(), list(level_sizes), pre, post)
    n = int(count[0])
    assert n == expected.shape[0]
    ours = rois[0, :n]
    assert sorted(map(tuple, ours.tolist())) == sorted(map(tuple, expected.tolist()))
    # Where the two orders differ, the rows sit among scores within a few ulp of each other.
    for t in np.nonzero(np.any(ours != expected, axis=1))[0]:
        j = int(np.nonzero((ours == expected[t]).all(1))[0][0])
        assert abs(float(scores[0, t]) - float(scores[0, j])) <= 4 * np.spacing(scores[0, t])
    # The float32 torch sigmoid and the kernels' differ by a few ulp at most.
    np.testing.assert_allclose(torch.sigmoid(logits[0]).numpy(), sigmoid32(logits[0].numpy()), rtol=1e-6, atol=0)


def test_rpn_nms_iou_exactly_at_threshold():
    # IoU([0,0,2,1], [0,0,1,1]) = 1/2 exactly in float32: kept at threshold 0.5, suppressed below.
    boxes = np.array([[[0, 0, 2, 1], [0, 0, 1, 1], [5, 5, 6, 6]]], F32)
    logits = np.array([[3.0, 2.0, 1.0]], F32)
    for thr, n in [(0.5, 3), (0.4999, 2)]:
        rois, scores, count = _native.rpn_nms(boxes, logits, [3], 10, 10, thr)
        assert int(count[0]) == n
        m_rois, m_scores, m_count = rpn_mirror(boxes[0], logits[0], [3], 10, 10, thr, 1e-3, 0.0)
        assert m_count == n
        np.testing.assert_array_equal(rois[0], m_rois)
        np.testing.assert_array_equal(scores[0], m_scores)


def test_rpn_nms_ties_keep_anchor_order_and_level_order():
    # Equal logits: within a level the lower anchor index ranks first (top-k cut included); across
    # levels an equal score ranks by level. Boxes are disjoint so nothing is suppressed.
    boxes = np.array([[[10 * i, 0, 10 * i + 5, 5] for i in range(6)]], F32)
    logits = np.zeros((1, 6), F32)
    rois, scores, count = _native.rpn_nms(boxes, logits, [4, 2], pre_nms_top_n=3, post_nms_top_n=4)
    assert int(count[0]) == 4
    np.testing.assert_array_equal(rois[0, :, 0], [0, 10, 20, 40])  # level 0 ranks 0..2, then level 1 rank 0
    np.testing.assert_array_equal(scores[0], np.full(4, 0.5, F32))


def test_rpn_nms_filters_and_degenerate_boxes():
    # zero-size, inverted and thin boxes are dropped by min_size; a score threshold above every
    # sigmoid leaves nothing (zero outputs, count 0).
    boxes = np.array([[[0, 0, 0, 5], [5, 5, 3, 8], [0, 0, 4, 0.0005], [1, 1, 9, 9]]], F32)
    logits = np.array([[5.0, 4.0, 3.0, -1.0]], F32)
    rois, scores, count = _native.rpn_nms(boxes, logits, [4], 4, 4)
    assert int(count[0]) == 1
    np.testing.assert_array_equal(rois[0, 0], [1, 1, 9, 9])
    assert scores[0, 0] == sigmoid32(-1.0)
    rois, scores, count = _native.rpn_nms(boxes, logits, [4], 4, 4, score_threshold=0.9999)
    assert int(count[0]) == 0 and not rois.any() and not scores.any()
    # score >= threshold (not strict): sigmoid(0) = 0.5 exactly survives a threshold of 0.5.
    rois, scores, count = _native.rpn_nms(boxes, np.array([[0.0, 0.0, 0.0, 0.0]], F32), [4], 4, 4,
                                          score_threshold=0.5)
    assert int(count[0]) == 1 and scores[0, 0] == F32(0.5)
    # min_size 0 keeps the zero-size box (IoU 0 with everything: it never suppresses, never is).
    rois, scores, count = _native.rpn_nms(boxes, logits, [4], 4, 4, min_size=0.0)
    m = rpn_mirror(boxes[0], logits[0], [4], 4, 4, 0.7, 0.0, 0.0)
    assert int(count[0]) == m[2] == 3
    np.testing.assert_array_equal(rois[0], m[0])


def test_rpn_nms_threads_identical_and_empty_level():
    rng = np.random.default_rng(3)
    level_sizes = [900, 0, 300, 77]
    boxes = _random_boxes(rng, (3, sum(level_sizes)))
    logits = rng.normal(0, 1, (3, sum(level_sizes))).astype(F32)
    ref = _native.rpn_nms(boxes, logits, level_sizes, 200, 300, 0.6, threads=1)
    for threads in (2, 3, 0, -1):
        out = _native.rpn_nms(boxes, logits, level_sizes, 200, 300, 0.6, threads=threads)
        for a, b in zip(ref, out, strict=True):
            np.testing.assert_array_equal(a, b)
    for b in range(3):
        m = rpn_mirror(boxes[b], logits[b], level_sizes, 200, 300, 0.6, 1e-3, 0.0)
        assert int(ref[2][b]) == m[2]
        np.testing.assert_array_equal(ref[0][b], m[0])


def test_rpn_nms_batch_zero():
    rois, scores, count = _native.rpn_nms(np.zeros((0, 5, 4), F32), np.zeros((0, 5), F32), [5], 3, 7)
    assert rois.shape == (0, 7, 4) and scores.shape == (0, 7) and count.shape == (0,)


# ============================================================================ detection
def _det_torch(logits, deltas, proposals_per_image, image_sizes, score_thr, iou, k):
    """RoIHeads._inference with its two network branches replaced by the given outputs: class
    logits float32 [R, C + 1] and deltas float32 [R, 4 (C + 1)] (decode, clip and softmax happen
    inside). Returns (the heads, the per-image result dicts)."""
    n_classes = logits.shape[1]
    cfg = ModelConfig(num_classes=n_classes, fpn_channels=4, box_representation_size=8, mask_head_channels=4,
                      box_score_thresh=score_thr, box_nms_thresh=iou, detections_per_img=k)
    heads = RoIHeads(cfg).eval()
    heads.box_branch = lambda features, boxes: (logits, deltas)
    m = cfg.mask_resolution
    heads.mask_branch = lambda features, boxes: torch.zeros(sum(b.shape[0] for b in boxes), n_classes, m, m)
    with torch.no_grad():
        return heads, heads._inference([], proposals_per_image, image_sizes)


def _det_inputs(rng, rows, n_classes, image_size=(120, 160), ties=False, spread=40.0):
    """Per image: proposals [R_i, 4], class logits [R_i, C + 1], deltas [R_i, 4 (C + 1)]."""
    props, logits, deltas = [], [], []
    for r in rows:
        p = _clustered_boxes(rng, r, 6, 0, 100, (8.0, spread), 3.0)
        lg = rng.normal(0, 2, (r, n_classes + 1)).astype(F32)
        if ties:
            lg = np.round(lg)  # equal softmax rows -> exact score ties
        props.append(torch.from_numpy(p))
        logits.append(torch.from_numpy(lg))
        deltas.append(torch.from_numpy(rng.normal(0, 0.5, (r, 4 * (n_classes + 1))).astype(F32)))
    return props, torch.cat(logits), torch.cat(deltas)


def _det_kernel_inputs(heads, props, logits, deltas, image_sizes, r_max):
    """What the exported graph feeds the plugin: decoded, clipped foreground boxes [B, R, C, 4] and
    softmax foreground scores [B, R, C], padded to r_max rows, plus num_rois."""
    boxes_all = heads.box_coder.decode(deltas, torch.cat(props))
    scores_all = torch.softmax(logits, dim=-1)
    n_classes = logits.shape[1] - 1
    out_b = np.zeros((len(props), r_max, n_classes, 4), F32)
    out_s = np.zeros((len(props), r_max, n_classes), F32)
    start = 0
    for i, (p, size) in enumerate(zip(props, image_sizes, strict=True)):
        r = p.shape[0]
        out_b[i, :r] = clip_boxes(boxes_all[start:start + r], size)[:, 1:].numpy()
        out_s[i, :r] = scores_all[start:start + r, 1:].numpy()
        start += r
    return out_b, out_s, np.array([p.shape[0] for p in props], np.int32)


@pytest.mark.parametrize(
    "rows,n_classes,score_thr,iou,k,ties",
    [
        ((60, 0, 25), 5, 0.05, 0.5, 100, False),   # num_rois partial and 0, B = 3
        ((80, 80), 3, 0.05, 0.5, 10, False),       # more candidates than K
        ((50,), 4, 0.0, 0.3, 300, True),           # score ties across classes and rows
        ((40, 40), 6, 0.3, 0.7, 50, False),        # high threshold: few candidates
    ],
)
def test_detection_nms_matches_torch_inference_and_mirror(rows, n_classes, score_thr, iou, k, ties):
    rng = np.random.default_rng(sum(rows) * n_classes + k)
    image_sizes = [(120, 160)] * len(rows)
    props, logits, deltas = _det_inputs(rng, rows, n_classes, image_sizes[0], ties)
    heads, expected = _det_torch(logits, deltas, props, image_sizes, score_thr, iou, k)
    r_max = max(rows) + 3  # padding rows past num_rois must be ignored: fill them with winners
    boxes, scores, num_rois = _det_kernel_inputs(heads, props, logits, deltas, image_sizes, r_max)
    for i, r in enumerate(rows):
        scores[i, r:] = 0.99
        boxes[i, r:] = [1, 1, 50, 50]
    count, ob, os_, oc = _native.detection_nms(boxes, scores, num_rois, score_thr, iou, k, MIN_DETECTION_SIZE, 1)
    assert count.dtype == np.int32 and ob.dtype == np.float32 and os_.dtype == np.float32 and oc.dtype == np.int32
    assert ob.shape == (len(rows), k, 4) and os_.shape == (len(rows), k) and oc.shape == (len(rows), k)
    for i in range(len(rows)):
        n = int(count[i])
        e = expected[i]
        assert n == e["boxes"].shape[0]
        np.testing.assert_array_equal(ob[i, :n], e["boxes"].numpy())
        np.testing.assert_array_equal(os_[i, :n], e["scores"].numpy())
        np.testing.assert_array_equal(oc[i, :n], e["labels"].numpy())
        assert not ob[i, n:].any() and not os_[i, n:].any() and not oc[i, n:].any()
        m = detection_mirror(boxes[i], scores[i], rows[i], score_thr, iou, k, MIN_DETECTION_SIZE, 1)
        assert m[0] == n
        for ours, mine in zip((ob[i], os_[i], oc[i]), m[1:], strict=True):
            np.testing.assert_array_equal(ours, mine)


@pytest.mark.parametrize("iou", [0.3, 0.5, 0.7])
def test_detection_nms_matches_onnxruntime_per_class(iou):
    rng = np.random.default_rng(int(iou * 10))
    n_rows, n_classes, k, thr = 120, 4, 1000, 0.05
    boxes = _random_boxes(rng, (1, n_rows, n_classes), 0, 100, (5.0, 40.0))
    scores = rng.uniform(0, 1, (1, n_rows, n_classes)).astype(F32)
    count, ob, os_, oc = _native.detection_nms(boxes, scores, None, thr, iou, k, 0.01, 0)
    # ORT: one NonMaxSuppression per class on the candidates passing the filters, then merge.
    kept = []
    for c in range(n_classes):
        idx = [r for r in range(n_rows) if scores[0, r, c] > F32(thr) and _min_size_ok(boxes[0, r, c], 0.01)]
        sel = ort_nms(boxes[0, idx, c], scores[0, idx, c], iou)
        kept += [(float(scores[0, idx[j], c]), idx[j] * n_classes + c) for j in sel]
    kept.sort(key=lambda t: (-t[0], t[1]))
    ours_flat = []
    for t in range(int(count[0])):
        c = int(oc[0, t])
        r = int(np.nonzero((boxes[0, :, c] == ob[0, t]).all(1) & (scores[0, :, c] == os_[0, t]))[0][0])
        ours_flat.append(r * n_classes + c)
    flat_scores = scores[0].reshape(-1)
    assert same_up_to_ties(ours_flat, [f for _, f in kept[:k]], flat_scores)


def test_detection_nms_iou_at_threshold_class_aware_and_strict_score():
    # Column 0: IoU exactly 0.5 pair (kept at 0.5, suppressed at 0.4999); column 1: the same box
    # as column 0's best never suppresses across classes; a score equal to the threshold (on a
    # box that nothing suppresses) is dropped.
    boxes = np.zeros((1, 3, 2, 4), F32)
    boxes[0, :, 0] = [[0, 0, 2, 1], [0, 0, 1, 1], [5, 5, 6, 6]]
    boxes[0, :, 1] = [[0, 0, 2, 1], [10, 10, 12, 12], [20, 20, 22, 22]]
    scores = np.array([[[0.9, 0.8], [0.7, 0.05], [0.6, 0.04]]], F32)
    for thr, n0 in [(0.5, 3), (0.4999, 2)]:
        count, ob, os_, oc = _native.detection_nms(boxes, scores, None, 0.05, thr, 10, 0.01, 1)
        m = detection_mirror(boxes[0], scores[0], 3, 0.05, thr, 10, 0.01, 1)
        assert int(count[0]) == m[0] == n0 + 1  # class 2: only its 0.8 box (0.05 is not > 0.05)
        np.testing.assert_array_equal(oc[0], m[3])
        np.testing.assert_array_equal(ob[0], m[1])
        assert list(oc[0, : n0 + 1]) == ([1, 2, 1, 1] if n0 == 3 else [1, 2, 1])


def test_detection_nms_degenerate_and_empty():
    rng = np.random.default_rng(8)
    boxes = _random_boxes(rng, (2, 30, 3))
    boxes[0, :10] = boxes[0, :10][..., [2, 3, 0, 1]]  # inverted
    boxes[0, 10:20, :, 2] = boxes[0, 10:20, :, 0]  # zero width
    scores = rng.uniform(0.1, 1, (2, 30, 3)).astype(F32)
    count, ob, os_, oc = _native.detection_nms(boxes, scores, np.array([30, 0], np.int32), 0.05, 0.5, 50)
    m = detection_mirror(boxes[0], scores[0], 30, 0.05, 0.5, 50, 1e-2, 1)
    assert int(count[0]) == m[0] and int(count[1]) == 0
    np.testing.assert_array_equal(ob[0], m[1])
    assert not ob[1].any() and not os_[1].any() and not oc[1].any()
    # every score below the threshold
    count, ob, os_, oc = _native.detection_nms(boxes, scores * F32(0.01), None, 0.05)
    assert not count.any() and not ob.any() and not os_.any() and not oc.any()
    # empty shapes
    count, ob, os_, oc = _native.detection_nms(np.zeros((2, 0, 3, 4), F32), np.zeros((2, 0, 3), F32), None)
    assert ob.shape == (2, 100, 4) and not count.any() and not ob.any()
    count, ob, os_, oc = _native.detection_nms(np.zeros((0, 4, 3, 4), F32), np.zeros((0, 4, 3), F32), None)
    assert count.shape == (0,) and ob.shape == (0, 100, 4)


def test_detection_nms_threads_identical_and_large():
    rng = np.random.default_rng(21)
    boxes = _random_boxes(rng, (2, 250, 80), 0, 600, (10.0, 150.0))
    scores = rng.uniform(0, 1, (2, 250, 80)).astype(F32)
    scores[:, ::7] = 0.5  # ties
    num_rois = np.array([250, 173], np.int32)
    ref = _native.detection_nms(boxes, scores, num_rois, 0.05, 0.5, 100, threads=1)
    for threads in (2, 5, 0):
        out = _native.detection_nms(boxes, scores, num_rois, 0.05, 0.5, 100, threads=threads)
        for a, b in zip(ref, out, strict=True):
            np.testing.assert_array_equal(a, b)
    assert list(ref[0]) == [100, 100]
    # Spot-check one image against the mirror on a class subset (mirror cost grows as N^2).
    sub_b, sub_s = np.ascontiguousarray(boxes[:1, :, :6]), np.ascontiguousarray(scores[:1, :, :6])
    out = _native.detection_nms(sub_b, sub_s, None, 0.05, 0.5, 400, threads=2)
    m = detection_mirror(sub_b[0], sub_s[0], 250, 0.05, 0.5, 400, 1e-2, 1)
    assert int(out[0][0]) == m[0]
    np.testing.assert_array_equal(out[1][0], m[1])
    np.testing.assert_array_equal(out[3][0], m[3])


# ============================================================================ plain nms (fast path)
@pytest.mark.parametrize("with_classes", [False, True])
def test_nms_fast_path_matches_mirror_and_max_keep(with_classes):
    rng = np.random.default_rng(4)
    boxes = _random_boxes(rng, (1500,), 0, 300, (5.0, 80.0))
    scores = np.round(rng.uniform(0, 1, 1500) * 50).astype(F32) / F32(50)  # ties
    classes = rng.integers(-2, 3, 1500).astype(np.int64) if with_classes else None
    keep = _native.nms(boxes, scores, 0.5, classes=classes)
    # mirror: per class greedy in visiting order, merged by (score desc, index)
    order = sorted(range(1500), key=lambda i: (-float(scores[i]), i))
    kept = []
    groups = {} if with_classes else {0: order}
    if with_classes:
        for i in order:
            groups.setdefault(int(classes[i]), []).append(i)
    for idx in groups.values():
        kept += [c[1] for c in _greedy_mirror([(float(scores[i]), i, boxes[i]) for i in idx], 0.5)]
    kept.sort(key=lambda i: (-float(scores[i]), i))
    assert keep.tolist() == kept
    assert _native.nms(boxes, scores, 0.5, classes=classes, max_keep=37).tolist() == kept[:37]


# ============================================================================ binding checks
def _rpn_ok():
    return dict(boxes=np.zeros((1, 6, 4), F32), logits=np.zeros((1, 6), F32), level_sizes=[4, 2])


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(boxes=np.zeros((1, 6, 4), np.float64)), "boxes must have dtype float32"),
        (dict(boxes=np.zeros((6, 4), F32)), r"boxes must have shape \[B, N, 4\]"),
        (dict(boxes=np.zeros((1, 6, 8), F32)[..., ::2]), "boxes must be C-contiguous"),
        (dict(logits=np.zeros((1, 5), F32)), r"logits must have shape \[B, N\]"),
        (dict(logits=np.zeros((1, 6), np.float16)), "logits must have dtype float32"),
        (dict(logits=np.zeros((1, 12), F32)[:, ::2]), "logits must be C-contiguous"),
        (dict(logits=np.array([[0, 0, np.nan, 0, 0, 0]], F32)), "logits contains NaN or inf"),
        (dict(boxes=np.full((1, 6, 4), np.inf, F32)), "boxes contains NaN or inf"),
        (dict(level_sizes=[4, 3]), r"sum\(level_sizes\) = 7 must equal N = 6"),
        (dict(level_sizes=[]), r"len\(level_sizes\) must be in \[1, 8\]"),
        (dict(level_sizes=[1] * 6 + [0] * 3), r"len\(level_sizes\) must be in \[1, 8\]"),
        (dict(level_sizes=[7, -1]), r"level_sizes\[1\] must be in"),
        (dict(pre_nms_top_n=0), "pre_nms_top_n must be in"),
        (dict(post_nms_top_n=0), "post_nms_top_n must be in"),
        (dict(iou_threshold=1.5), "iou_threshold must be a finite number in"),
        (dict(iou_threshold=float("nan")), "iou_threshold must be a finite number in"),
        (dict(min_size=-1.0), "min_size must be a finite number in"),
        (dict(score_threshold=-0.1), "score_threshold must be a finite number in"),
    ],
)
def test_rpn_nms_rejects_bad_input(change, match):
    kwargs = _rpn_ok() | change
    with pytest.raises(ValueError, match=match):
        _native.rpn_nms(**kwargs)


def _det_ok():
    return dict(boxes=np.zeros((2, 5, 3, 4), F32), scores=np.zeros((2, 5, 3), F32), num_rois=np.array([5, 0], np.int32))


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(boxes=np.zeros((2, 5, 3, 4), np.float64)), "boxes must have dtype float32"),
        (dict(boxes=np.zeros((2, 5, 12), F32)), r"boxes must have shape \[B, R, C, 4\]"),
        (dict(boxes=np.zeros((2, 5, 3, 8), F32)[..., ::2]), "boxes must be C-contiguous"),
        (dict(scores=np.zeros((2, 5, 4), F32)), r"scores must have shape \[B, R, C\] = \[2, 5, 3\]"),
        (dict(scores=np.zeros((2, 5, 3), np.float64)), "scores must have dtype float32"),
        (dict(scores=np.zeros((2, 5, 6), F32)[..., ::2]), "scores must be C-contiguous"),
        (dict(scores=np.full((2, 5, 3), np.nan, F32)), "scores contains NaN or inf"),
        (dict(boxes=np.full((2, 5, 3, 4), -np.inf, F32)), "boxes contains NaN or inf"),
        (dict(num_rois=np.array([5, 0], np.int64)), "num_rois must have dtype int32"),
        (dict(num_rois=np.array([5], np.int32)), r"num_rois must have shape \[B\]"),
        (dict(num_rois=np.array([6, 0], np.int32)), r"num_rois\[0\] = 6 must be in \[0, R = 5\]"),
        (dict(num_rois=np.array([1, -1], np.int32)), r"num_rois\[1\] = -1 must be in"),
        (dict(score_threshold=2.0), "score_threshold must be a finite number in"),
        (dict(iou_threshold=-0.5), "iou_threshold must be a finite number in"),
        (dict(max_detections=0), "max_detections must be in"),
        (dict(min_size=float("inf")), "min_size must be a finite number in"),
        (dict(class_offset=-1), "class_offset must be in"),
    ],
)
def test_detection_nms_rejects_bad_input(change, match):
    kwargs = _det_ok() | change
    with pytest.raises(ValueError, match=match):
        _native.detection_nms(**kwargs)


# ============================================================================ GIL
def test_kernels_release_the_gil():
    # While one long native call runs in a worker thread, the main thread keeps executing Python
    # (with the GIL held through the call it could not advance until the call returned).
    rng = np.random.default_rng(0)
    n = 20000
    boxes = _random_boxes(rng, (4, n), 0, 1000, (10.0, 200.0))
    logits = rng.normal(0, 1, (4, n)).astype(F32)
    inside = python_ticks_during(lambda: _native.rpn_nms(boxes, logits, [n], n, n, 0.5, threads=1))
    assert inside > 100, f"main thread stalled during the native call ({inside} ticks)"
