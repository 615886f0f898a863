"""RoIAlign, FPN level assignment and NMS of the PyTorch reference path (and the native NMS)
against ONNX Runtime's own ops and float64 mirrors."""

import numpy as np
import pytest
import torch
from references import nms_mirror, ort_nms, ort_roi_align, roi_align_mirror, same_up_to_ties

from maskrt import _native
from maskrt.train.model.nms import batched_nms, box_iou, nms
from maskrt.train.model.roi_align import assign_fpn_levels, multiscale_roi_align, roi_align


def _random_rois(rng, n, h_img, w_img, batch):
    """Boxes in input pixels, including ones partly (or wholly) outside the image and tiny ones."""
    cx = rng.uniform(-0.2 * w_img, 1.2 * w_img, n)
    cy = rng.uniform(-0.2 * h_img, 1.2 * h_img, n)
    bw = np.exp(rng.uniform(np.log(0.5), np.log(1.5 * w_img), n))
    bh = np.exp(rng.uniform(np.log(0.5), np.log(1.5 * h_img), n))
    b = rng.integers(0, batch, n)
    return np.stack([b, cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1).astype(np.float32)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_roi_align_matches_onnxruntime_and_mirror(aligned, sampling_ratio):
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((2, 3, 13, 17)).astype(np.float32)
    scale = 0.25
    rois = _random_rois(rng, 24, 13 * 4, 17 * 4, 2)
    ours = roi_align(torch.from_numpy(feats), torch.from_numpy(rois), (5, 4), scale, sampling_ratio, aligned)
    ours = ours.numpy()
    mirror = roi_align_mirror(feats, rois, 5, 4, scale, sampling_ratio, aligned)
    ref = ort_roi_align(feats, rois, 5, 4, scale, sampling_ratio, aligned)
    assert ours.shape == ref.shape == (24, 3, 5, 4)
    np.testing.assert_allclose(ref, mirror, atol=2e-5)  # the two references agree
    np.testing.assert_allclose(ours, mirror, atol=5e-5, rtol=1e-5)
    np.testing.assert_allclose(ours, ref, atol=5e-5, rtol=1e-5)


def test_roi_align_outside_boxes_give_zero_and_gradient_flows():
    feats = torch.randn(1, 2, 8, 8, requires_grad=True)
    rois = torch.tensor([[0, 100.0, 100.0, 120.0, 130.0], [0, 1.0, 1.0, 20.0, 20.0]])
    out = roi_align(feats, rois, 3, 0.25, 2, True)
    assert torch.all(out[0] == 0)
    out.sum().backward()
    assert feats.grad is not None and feats.grad.abs().sum() > 0


def test_roi_align_mixed_adaptive_grids():
    # One tiny and one huge RoI in the same call: adaptive grids of 1 and 6 samples per bin.
    rng = np.random.default_rng(1)
    feats = rng.standard_normal((1, 2, 40, 40)).astype(np.float32)
    rois = np.array([[0, 3, 3, 4, 4.5], [0, 0, 0, 160, 150]], np.float32)
    ours = roi_align(torch.from_numpy(feats), torch.from_numpy(rois), 7, 0.25, 0, True).numpy()
    np.testing.assert_allclose(ours, roi_align_mirror(feats, rois, 7, 7, 0.25, 0, True), atol=5e-5)


@pytest.mark.parametrize(
    "side,level",
    [(112 - 1e-2, 2), (112.0, 3), (112 + 1e-2, 3), (224 - 1e-2, 3), (224.0, 4), (224 + 1e-2, 4),
     (448 - 1e-2, 4), (448.0, 5), (448 + 1e-2, 5), (10.0, 2), (2000.0, 5)],
)
def test_fpn_level_boundaries(side, level):
    boxes = torch.tensor([[10.0, 20.0, 10.0 + side, 20.0 + side]], dtype=torch.float64)
    assert int(assign_fpn_levels(boxes)[0]) + 2 == level


def test_multiscale_roi_align_uses_assigned_level():
    rng = np.random.default_rng(2)
    feats = [rng.standard_normal((1, 2, 64 // s, 64 // s)).astype(np.float32) for s in (4, 8, 16, 32)]
    rois = np.array([[0, 0, 0, 50, 50], [0, 0, 0, 150, 150], [0, 0, 0, 300, 300], [0, 0, 0, 500, 500]],
                    np.float32)
    out = multiscale_roi_align([torch.from_numpy(f) for f in feats], [4, 8, 16, 32], torch.from_numpy(rois),
                               7, 2, False).numpy()
    for i, (lvl, s) in enumerate(zip([0, 1, 2, 3], [4, 8, 16, 32], strict=True)):
        ref = roi_align_mirror(feats[lvl], rois[i : i + 1], 7, 7, 1.0 / s, 2, False)
        np.testing.assert_allclose(out[i : i + 1], ref, atol=5e-5)


# ----------------------------------------------------------------------------- NMS
def _random_boxes(rng, n, ties=False):
    xy = rng.uniform(0, 100, (n, 2))
    wh = rng.uniform(1, 40, (n, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    scores = rng.uniform(0, 1, n).astype(np.float32)
    if ties:
        scores = np.round(scores * 5) / 5  # many exact ties
    return boxes, scores


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("thr", [0.3, 0.5, 0.7])
def test_nms_matches_onnxruntime_and_mirror(ties, thr):
    rng = np.random.default_rng(int(thr * 10) + ties)
    boxes, scores = _random_boxes(rng, 300, ties)
    mirror = nms_mirror(boxes, scores, thr)
    torch_keep = nms(torch.from_numpy(boxes), torch.from_numpy(scores), thr).tolist()
    native_keep = _native.nms(boxes, scores, thr).tolist()
    ort_keep = ort_nms(boxes, scores, thr)
    assert torch_keep == mirror  # ties broken by index on our paths: exact
    assert native_keep == mirror
    assert same_up_to_ties(ort_keep, mirror, scores)
    if not ties:
        assert ort_keep == mirror


def test_nms_iou_exactly_at_threshold_is_kept():
    # IoU([0,0,2,1], [0,0,1,1]) = 1/2 exactly in float32.
    boxes = np.array([[0, 0, 2, 1], [0, 0, 1, 1], [5, 5, 6, 6]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    tb, ts = torch.from_numpy(boxes), torch.from_numpy(scores)
    assert float(box_iou(tb[:1], tb[1:2])) == 0.5
    for thr, expected in [(0.5, [0, 1, 2]), (0.4999, [0, 2])]:
        assert nms(tb, ts, thr).tolist() == expected
        assert _native.nms(boxes, scores, thr).tolist() == expected
        assert nms_mirror(boxes, scores, thr) == expected
        assert ort_nms(boxes, scores, thr) == expected


def test_batched_nms_only_within_class():
    rng = np.random.default_rng(5)
    boxes, scores = _random_boxes(rng, 200)
    classes = rng.integers(0, 4, 200)
    mirror = nms_mirror(boxes, scores, 0.5, classes)
    ours = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(classes), 0.5)
    assert ours.tolist() == mirror
    assert _native.nms(boxes, scores, 0.5, classes=classes.astype(np.int64)).tolist() == mirror


def test_nms_empty_and_single():
    e = torch.zeros((0, 4))
    assert nms(e, torch.zeros(0), 0.5).numel() == 0
    assert _native.nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5).size == 0
    assert nms(torch.tensor([[0.0, 0, 1, 1]]), torch.tensor([0.3]), 0.5).tolist() == [0]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(boxes=np.zeros((3, 4), np.float64), scores=np.zeros(3, np.float32)), "boxes must have dtype float32"),
        (dict(boxes=np.zeros((3, 5), np.float32), scores=np.zeros(3, np.float32)), r"shape \[N, 4\]"),
        (dict(boxes=np.zeros((3, 4), np.float32), scores=np.zeros(2, np.float32)), "scores must have shape"),
        (dict(boxes=np.zeros((4, 8), np.float32)[:, ::2], scores=np.zeros(4, np.float32)), "C-contiguous"),
        (dict(boxes=np.full((1, 4), np.nan, np.float32), scores=np.zeros(1, np.float32)), "NaN"),
        (dict(boxes=np.zeros((1, 4), np.float32), scores=np.array([np.inf], np.float32)), "NaN or inf"),
    ],
)
def test_native_nms_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _native.nms(iou_threshold=0.5, **kwargs)
