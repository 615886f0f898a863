"""Property-based tests (hypothesis) of every function of the native modules maskrt._native and
maskrt._core, fed degenerate values: NaN and inf, zero-size and inverted boxes, empty inputs (0
boxes, 0 RoIs, 0 detections, batch 0), huge coordinates, 1x1 frames, tiny and huge sizes, strided
views, wrong dtypes and shapes. The property is always the same: no crash, and either a
``ValueError`` from the binding's validation or a result equal to the Python mirror:

* ``_native.nms`` / ``box_iou`` / ``rpn_nms`` / ``detection_nms``: the float32 loop mirrors of
  tests/test_batched_nms.py (exact);
* ``_native.pyramid_roi_align``: the float64 separable mirror of tests/test_pyramid_roi_align.py,
  with float32 coordinates (to 2e-5, as that file's adversarial test);
* ``_core.letterbox`` / ``resize_linear``: runtime/letterbox.py and OpenCV (bit for bit);
* ``_core.paste_masks`` / ``paste_label_map`` / ``paste_to_rle``: the float64 paste mirror of
  tests/references.py (exact), first-instance-wins and pycocotools of tests/test_native_core.py;
* ``_core.rle_encode``: pycocotools; ``_core.overlay_*`` / ``draw_boxes``: the integer blend and
  outline mirrors of tests/test_native_core.py.

The functions are called through the raw bindings (the validation lives there). The example
counts come from the derandomized ``maskrt`` hypothesis profile (tests/conftest.py), so every run
tries the same inputs. ``make sanitize`` runs this file against an AddressSanitizer + UBSan build.
"""

from __future__ import annotations

import math
import os

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from references import paste_masks_mirror
from test_batched_nms import _greedy_mirror, _iou32_many, detection_mirror, rpn_mirror
from test_native_core import blend_ref, coco_encode, first_wins, outline_ref
from test_pyramid_roi_align import pyramid_roi_align_mirror

from maskrt import _core, _native
from maskrt.runtime import letterbox as ref_letterbox

F32 = np.float32
F32_MAX = float(np.finfo(F32).max)
INT_MAX = 2**31 - 1
THREADS = st.sampled_from([1, 2, 0])

# Coordinates: ordinary pixels, and the degenerate ones (signed zeros, denormal-small, huge, the
# largest finite float32).
SPECIAL_COORDS = [0.0, -0.0, 0.5, -0.5, 1.0, 1e-30, -1e-30, 1e6, -1e6, 1e15, -1e15, 1e30, -1e30, 3e38, -3e38,
                  F32_MAX, -F32_MAX]


def coords(lo: float = -40.0, hi: float = 160.0, limit: float = F32_MAX) -> st.SearchStrategy[float]:
    """float32-representable coordinates in [lo, hi], or a special value with |v| <= limit."""
    special = [v for v in SPECIAL_COORDS if abs(v) <= limit]
    return st.floats(lo, hi, width=32) | st.sampled_from(special)


@st.composite
def box_arrays(draw, shape: tuple[int, ...], limit: float = F32_MAX, lo: float = -40.0, hi: float = 160.0):
    """float32 [*shape, 4] boxes (x1, y1, x2, y2) of mixed kinds: free corners, zero width or height,
    a point, inverted, ordinary positive size. Every value is finite."""
    n = int(np.prod(shape))
    c = coords(lo, hi, limit)
    out = []
    for _ in range(n):
        x1, y1 = draw(c), draw(c)
        kind = draw(st.sampled_from(["free", "positive", "zero_w", "zero_h", "point", "inverted"]))
        if kind == "free":
            x2, y2 = draw(c), draw(c)
        elif kind == "positive":
            x2, y2 = x1 + draw(st.floats(0, 80)), y1 + draw(st.floats(0, 80))
        elif kind == "zero_w":
            x2, y2 = x1, y1 + draw(st.floats(0, 80))
        elif kind == "zero_h":
            x2, y2 = x1 + draw(st.floats(0, 80)), y1
        elif kind == "point":
            x2, y2 = x1, y1
        else:
            x2, y2 = x1 - draw(st.floats(0, 80)), y1 - draw(st.floats(0, 80))
        out.append((x1, y1, x2, y2))
    # float64 -> float32 after clipping: x1 + w must not round to inf.
    arr = np.clip(np.array(out, np.float64).reshape(*shape, 4), -limit, limit).astype(F32)
    return np.ascontiguousarray(arr)


def f32_values(values) -> list[float]:
    """Python floats rounded to float32 (hypothesis' numpy arrays accept only exact elements)."""
    return [float(F32(v)) for v in values]


def scores_arrays(shape, lo=-1.0, hi=2.0, ties=(0.0, -0.0, 0.5, 1.0)):
    """float32 finite scores with many exact ties."""
    lo, hi = f32_values([lo, hi])
    return hnp.arrays(F32, shape, elements=st.floats(lo, hi, width=32) | st.sampled_from(f32_values(ties)))


def nan_or_inf():
    return st.sampled_from([math.nan, math.inf, -math.inf])


def with_bad_value(draw, a: np.ndarray) -> np.ndarray:
    """A copy of a (non-empty float32 array) with one element set to NaN, +inf or -inf."""
    b = a.copy()
    b.reshape(-1)[draw(st.integers(0, a.size - 1))] = draw(nan_or_inf())
    return b


def quiet():
    """The mirrors compute in numpy float32 too: overflow to inf and inf - inf are part of the cases."""
    return np.errstate(over="ignore", invalid="ignore", divide="ignore")


# ============================================================================ _native.nms, box_iou
def nms_reference(boxes, scores, iou, classes, max_keep) -> list[int]:
    """Greedy NMS per class (float32 mirror), merged by descending score then index; first max_keep."""
    n = len(scores)
    order = sorted(range(n), key=lambda i: (-float(scores[i]), i))
    groups: dict[int, list[int]] = {}
    for i in order:
        groups.setdefault(0 if classes is None else int(classes[i]), []).append(i)
    kept: list[int] = []
    with quiet():
        for idx in groups.values():
            kept += [c[1] for c in _greedy_mirror([(float(scores[i]), i, boxes[i]) for i in idx], iou)]
    kept.sort(key=lambda i: (-float(scores[i]), i))
    return kept if max_keep < 0 else kept[:max_keep]


@st.composite
def nms_cases(draw):
    n = draw(st.integers(0, 40))
    boxes = draw(box_arrays((n,)))
    scores = draw(scores_arrays((n,), -3e38, 3e38))
    iou = draw(st.floats(0, 1) | st.sampled_from([0.0, 0.5, 1.0]))
    classes = None
    if draw(st.booleans()):
        values = st.integers(-3, 3) | st.sampled_from([-(2**63), 2**63 - 1])
        classes = np.array(draw(st.lists(values, min_size=n, max_size=n)), np.int64)
    max_keep = draw(st.integers(-3, 45))
    return boxes, scores, iou, classes, max_keep


@given(nms_cases())
def test_nms_equals_mirror(case):
    boxes, scores, iou, classes, max_keep = case
    keep = _native.nms(boxes, scores, iou, classes=classes, max_keep=max_keep)
    assert keep.dtype == np.int64
    assert keep.tolist() == nms_reference(boxes, scores, F32(iou), classes, max_keep)


@given(st.data())
def test_nms_rejects_non_finite_and_bad_threshold(data):
    n = data.draw(st.integers(1, 8))
    boxes, scores = data.draw(box_arrays((n,))), data.draw(scores_arrays((n,)))
    which = data.draw(st.sampled_from(["boxes", "scores", "iou"]))
    if which == "boxes":
        boxes = with_bad_value(data.draw, boxes)
    elif which == "scores":
        scores = with_bad_value(data.draw, scores)
    iou = data.draw(st.sampled_from([math.nan, math.inf, -0.1, 1.5, -math.inf])) if which == "iou" else 0.5
    with pytest.raises(ValueError, match="NaN or inf|iou_threshold"):
        _native.nms(boxes, scores, iou)


@given(st.data())
def test_box_iou_equals_mirror(data):
    n, m = data.draw(st.integers(0, 12)), data.draw(st.integers(0, 12))
    a, b = data.draw(box_arrays((n,))), data.draw(box_arrays((m,)))
    got = _native.box_iou(a, b)
    assert got.shape == (n, m) and got.dtype == F32
    with quiet():
        for i in range(n):
            np.testing.assert_array_equal(got[i], _iou32_many(a[i], b))
    assert np.isfinite(got).all() and (got >= 0).all()
    if n and data.draw(st.booleans()):
        with pytest.raises(ValueError, match="a contains NaN or inf"):
            _native.box_iou(with_bad_value(data.draw, a), b)


# ============================================================================ _native.rpn_nms
@st.composite
def rpn_cases(draw):
    batch = draw(st.integers(0, 2))
    level_sizes = draw(st.lists(st.integers(0, 10), min_size=1, max_size=4))
    n = sum(level_sizes)
    boxes = draw(box_arrays((batch, n), lo=-20.0, hi=120.0))
    logits = draw(scores_arrays((batch, n), -30.0, 30.0, ties=(0.0, -0.0, 1.5, -1e30, 3e38, -3e38, 88.0, -88.0)))
    return dict(
        boxes=boxes, logits=logits, level_sizes=level_sizes,
        pre_nms_top_n=draw(st.integers(1, 12) | st.just(INT_MAX)),
        post_nms_top_n=draw(st.integers(1, 12)),
        iou_threshold=draw(st.floats(0, 1) | st.sampled_from([0.0, 0.7, 1.0])),
        min_size=draw(st.sampled_from([0.0, 1e-3, 1.0, 30.0, 1e30])),
        score_threshold=draw(st.floats(0, 1) | st.sampled_from([0.0, 0.5, 1.0])),
        threads=draw(THREADS),
    )


@given(rpn_cases())
def test_rpn_nms_equals_mirror(case):
    rois, scores, count = _native.rpn_nms(**case)
    batch, post = case["boxes"].shape[0], case["post_nms_top_n"]
    assert rois.shape == (batch, post, 4) and scores.shape == (batch, post) and count.shape == (batch,)
    for b in range(batch):
        with quiet():
            m_rois, m_scores, m_count = rpn_mirror(
                case["boxes"][b], case["logits"][b], case["level_sizes"], case["pre_nms_top_n"], post,
                case["iou_threshold"], case["min_size"], case["score_threshold"])
        assert int(count[b]) == m_count
        np.testing.assert_array_equal(rois[b], m_rois)
        np.testing.assert_array_equal(scores[b], m_scores)


RPN_BAD = [
    ("level_sizes", []), ("level_sizes", [1] * 9), ("level_sizes", [-1, 7]), ("level_sizes", [5, 2]),
    ("pre_nms_top_n", 0), ("pre_nms_top_n", -5), ("pre_nms_top_n", 2**31), ("post_nms_top_n", 0),
    ("post_nms_top_n", 2**31), ("iou_threshold", math.nan), ("iou_threshold", 1.5), ("iou_threshold", -0.1),
    ("min_size", -1.0), ("min_size", math.inf), ("min_size", 1e31), ("score_threshold", math.nan),
    ("score_threshold", 2.0), ("threads", 2**31), ("boxes", "nan"), ("logits", "nan"),
]


@pytest.mark.parametrize("key,value", RPN_BAD)
@settings(max_examples=5)
@given(st.data())
def test_rpn_nms_rejects_bad_input(key, value, data):
    boxes = data.draw(box_arrays((2, 6)))
    case = dict(boxes=boxes, logits=np.zeros((2, 6), F32), level_sizes=[4, 2], pre_nms_top_n=3, post_nms_top_n=3,
                iou_threshold=0.7, min_size=0.0, score_threshold=0.0, threads=1)
    case[key] = with_bad_value(data.draw, case[key]) if value == "nan" else value
    with pytest.raises(ValueError):
        _native.rpn_nms(**case)


# ============================================================================ _native.detection_nms
@st.composite
def detection_cases(draw):
    batch, rows, classes = draw(st.integers(0, 2)), draw(st.integers(0, 8)), draw(st.integers(0, 4))
    boxes = draw(box_arrays((batch, rows, classes), lo=-20.0, hi=120.0))
    scores = draw(scores_arrays((batch, rows, classes), -1.0, 2.0, ties=(0.0, 0.05, 0.5, 1.0, -0.0)))
    num_rois = None
    if draw(st.booleans()):
        num_rois = np.array(draw(st.lists(st.integers(0, rows), min_size=batch, max_size=batch)), np.int32)
    return dict(
        boxes=boxes, scores=scores, num_rois=num_rois,
        score_threshold=draw(st.floats(0, 1) | st.sampled_from([0.0, 0.05, 1.0])),
        iou_threshold=draw(st.floats(0, 1) | st.sampled_from([0.0, 0.5, 1.0])),
        max_detections=draw(st.integers(1, 12)),
        min_size=draw(st.sampled_from([0.0, 1e-2, 5.0, 1e30])),
        class_offset=draw(st.integers(0, 3) | st.just(INT_MAX - 4)),
        threads=draw(THREADS),
    )


@given(detection_cases())
def test_detection_nms_equals_mirror(case):
    count, boxes, scores, classes = _native.detection_nms(**case)
    batch, rows = case["boxes"].shape[:2]
    k = case["max_detections"]
    assert count.shape == (batch,) and boxes.shape == (batch, k, 4) and classes.shape == (batch, k)
    for b in range(batch):
        valid = rows if case["num_rois"] is None else int(case["num_rois"][b])
        with quiet():
            m = detection_mirror(case["boxes"][b], case["scores"][b], valid, case["score_threshold"],
                                 case["iou_threshold"], k, case["min_size"], case["class_offset"])
        assert int(count[b]) == m[0]
        np.testing.assert_array_equal(boxes[b], m[1])
        np.testing.assert_array_equal(scores[b], m[2])
        np.testing.assert_array_equal(classes[b], m[3])


DETECTION_BAD = [
    ("num_rois", np.array([3, 4], np.int32)), ("num_rois", np.array([-1, 0], np.int32)),
    ("num_rois", np.array([1], np.int32)), ("num_rois", np.array([1, 1], np.int64)),
    ("score_threshold", math.nan), ("score_threshold", -0.5), ("iou_threshold", math.inf),
    ("max_detections", 0), ("max_detections", -1), ("max_detections", 2**31), ("min_size", -1e-9),
    ("min_size", math.nan), ("class_offset", -1), ("class_offset", INT_MAX), ("threads", -(2**31) - 1),
    ("boxes", "nan"), ("scores", "nan"),
]


@pytest.mark.parametrize("key,value", DETECTION_BAD)
@settings(max_examples=5)
@given(st.data())
def test_detection_nms_rejects_bad_input(key, value, data):
    case = dict(boxes=data.draw(box_arrays((2, 3, 2))), scores=np.full((2, 3, 2), 0.5, F32), num_rois=None,
                score_threshold=0.05, iou_threshold=0.5, max_detections=4, min_size=0.0, class_offset=1, threads=1)
    case[key] = with_bad_value(data.draw, case[key]) if isinstance(value, str) else value
    with pytest.raises(ValueError):
        _native.detection_nms(**case)


# ============================================================================ _native.pyramid_roi_align
@st.composite
def roi_align_cases(draw, adaptive_huge: bool = False):
    """Small pyramids (1-3 levels, maps 1x1 .. 9x9, 0-3 channels), 0-5 RoIs per image, batch 0-2."""
    num_levels = draw(st.integers(1, 3))
    strides = draw(st.lists(st.sampled_from([1, 2, 4, 8, 16, 32]), min_size=num_levels, max_size=num_levels))
    batch, num_rois, channels = draw(st.integers(0, 2)), draw(st.integers(0, 5)), draw(st.integers(0, 3))
    feats = []
    for _ in range(num_levels):
        h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
        feats.append(draw(hnp.arrays(F32, (batch, channels, h, w), elements=st.floats(-100, 100, width=32))))
    sampling_ratio = draw(st.integers(0, 3))
    # The mirror tabulates every sample of a bin: with adaptive sampling (0) the RoI size is bounded
    # unless only the kernel runs (adaptive_huge).
    limit = F32_MAX if (sampling_ratio > 0 or adaptive_huge) else 1e4
    rois = draw(box_arrays((batch, num_rois), limit=limit, lo=-20.0, hi=90.0))
    return dict(
        rois=rois, features=feats, output_size=draw(st.integers(1, 5)), sampling_ratio=sampling_ratio,
        aligned=draw(st.booleans()), strides=strides, first_level=draw(st.integers(-3, 5)),
        canonical_scale=draw(st.sampled_from([224.0, 1.0, 56.0, 1e-3, 1e30])),
        canonical_level=draw(st.integers(-2, 6)), threads=draw(THREADS),
    )


@given(roi_align_cases())
def test_pyramid_roi_align_equals_mirror(case):
    out = _native.pyramid_roi_align(**case)
    rois, feats, p = case["rois"], case["features"], case["output_size"]
    assert out.shape == (*rois.shape[:2], feats[0].shape[1], p, p) and out.dtype == F32
    if out.size == 0:
        return
    with quiet():
        mirror = pyramid_roi_align_mirror(rois, feats, p, case["sampling_ratio"], case["aligned"], case["strides"],
                                          case["first_level"], case["canonical_scale"], case["canonical_level"],
                                          dtype=np.float32)
    np.testing.assert_allclose(out, mirror, atol=2e-5, rtol=1e-5)


@given(roi_align_cases(adaptive_huge=True), st.booleans())
def test_pyramid_roi_align_huge_rois_and_non_finite_features(case, poison):
    """Any finite RoI (up to the largest float32, adaptive sampling too) and NaN/inf in the features
    (not validated: they flow into the bins that sample them): no crash, right shape; finite
    features give finite bins."""
    feats = case["features"]
    if poison and feats[0].size:
        feats[0].reshape(-1)[0] = math.nan
        feats[-1].reshape(-1)[-1] = math.inf
    out = _native.pyramid_roi_align(**case)
    assert out.shape == (*case["rois"].shape[:2], feats[0].shape[1], case["output_size"], case["output_size"])
    if not poison:
        assert np.isfinite(out).all()


PYRAMID_BAD = [
    ("output_size", 0), ("output_size", 1025), ("sampling_ratio", -1), ("sampling_ratio", 1025),
    ("canonical_scale", 0.0), ("canonical_scale", -1.0), ("canonical_scale", math.nan), ("canonical_scale", math.inf),
    ("canonical_scale", 1e39), ("first_level", 1001), ("canonical_level", -1001), ("strides", [0]),
    ("strides", [2**20 + 1]), ("strides", [4, 8]), ("features", []), ("features", "nine"), ("features", "array"),
    ("features", "empty_map"), ("features", "channels"), ("rois", "nan"), ("rois", "ndim"), ("threads", 2**31),
]


@pytest.mark.parametrize("key,value", PYRAMID_BAD)
@settings(max_examples=5)
@given(st.data())
def test_pyramid_roi_align_rejects_bad_input(key, value, data):
    feats = [np.zeros((1, 2, 5, 5), F32)]
    case = dict(rois=data.draw(box_arrays((1, 3))), features=feats, output_size=2, sampling_ratio=0, aligned=False,
                strides=[4], first_level=2, canonical_scale=224.0, canonical_level=4, threads=1)
    special = {
        "nine": [feats[0]] * 9, "array": feats[0], "empty_map": [np.zeros((1, 2, 0, 5), F32)],
        "channels": [feats[0], np.zeros((1, 3, 5, 5), F32)], "ndim": case["rois"][0],
    }
    if value == "nan":
        case[key] = with_bad_value(data.draw, case[key])
    elif isinstance(value, str):
        case[key] = special[value]
        if value == "channels":
            case["strides"] = [4, 8]
    else:
        case[key] = value
    with pytest.raises(ValueError):
        _native.pyramid_roi_align(**case)


# ============================================================================ _core.letterbox, resize_linear
SIDES = st.integers(1, 40) | st.sampled_from([1, 2, 3, 600])


@st.composite
def images(draw, h=None, w=None, strided=True):
    """uint8 [h, w, 3]; sometimes a crop of a larger frame (rows further apart than 3 * w bytes)."""
    h = draw(SIDES) if h is None else h
    w = draw(SIDES) if w is None else w
    if h * w > 5000:  # keep the huge side huge and the other one small
        h, w = (h, 1 + w % 5) if h >= w else (1 + h % 5, w)
    dy, dx = (draw(st.integers(0, 3)), draw(st.integers(0, 3))) if strided and draw(st.booleans()) else (0, 0)
    seed = draw(st.integers(0, 2**32 - 1))
    frame = np.random.default_rng(seed).integers(0, 256, (h + dy, w + dx, 3), dtype=np.uint8)
    if draw(st.booleans()):
        frame[...] = draw(st.sampled_from([0, 255]))  # saturated
    return frame[dy:, dx:]


@given(images(), SIDES, SIDES, st.booleans(), st.integers(0, 255), THREADS)
def test_letterbox_equals_reference(image, out_h, out_w, upscale, pad_value, threads):
    if out_h * out_w > 5000:
        out_h, out_w = (out_h, 1 + out_w % 7) if out_h >= out_w else (1 + out_h % 7, out_w)
    batch = np.full((3, out_h, out_w, 3), 77, np.uint8)  # out = the middle row of a batch
    new_h, new_w = _core.letterbox(image, batch[1], upscale, pad_value, threads)
    want = ref_letterbox.letterbox(np.ascontiguousarray(image), (out_h, out_w), upscale=upscale)
    assert (new_h, new_w) == want.resized
    assert np.array_equal(batch[1, :new_h, :new_w], want.image[:new_h, :new_w])
    assert (batch[1, new_h:] == pad_value).all() and (batch[1, :, new_w:] == pad_value).all()
    assert (batch[0] == 77).all() and (batch[2] == 77).all()  # neighbours untouched


@given(images(), SIDES, SIDES, THREADS)
def test_resize_linear_equals_opencv(image, out_h, out_w, threads):
    if out_h * out_w > 5000:
        out_h, out_w = (out_h, 1 + out_w % 7) if out_h >= out_w else (1 + out_h % 7, out_w)
    out = np.empty((out_h, out_w, 3), np.uint8)
    _core.resize_linear(image, out, threads)
    want = cv2.resize(np.ascontiguousarray(image), (out_w, out_h), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(out, want)


IMAGE_BAD = {
    "empty_h": np.zeros((0, 4, 3), np.uint8), "empty_w": np.zeros((4, 0, 3), np.uint8),
    "gray": np.zeros((4, 4), np.uint8), "rgba": np.zeros((4, 4, 4), np.uint8), "u16": np.zeros((4, 4, 3), np.uint16),
    "float": np.zeros((4, 4, 3), F32), "unpacked": np.zeros((4, 8, 3), np.uint8)[:, ::2],
    "flipped": np.zeros((4, 4, 3), np.uint8)[::-1], "bgr_view": np.zeros((4, 4, 3), np.uint8)[..., ::-1],
    "batch": np.zeros((1, 4, 4, 3), np.uint8),
}


@pytest.mark.parametrize("which", ["image", "out"])
@pytest.mark.parametrize("bad", sorted(IMAGE_BAD))
def test_letterbox_and_resize_reject_bad_images(which, bad):
    good_in, good_out = np.zeros((5, 6, 3), np.uint8), np.zeros((4, 4, 3), np.uint8)
    image, out = (IMAGE_BAD[bad], good_out) if which == "image" else (good_in, IMAGE_BAD[bad].copy())
    if which == "out" and bad in ("unpacked", "flipped", "bgr_view"):
        out = IMAGE_BAD[bad]  # the view itself (a copy would be packed)
    with pytest.raises(ValueError):
        _core.letterbox(image, out, False, 0, 1)
    with pytest.raises(ValueError):
        _core.resize_linear(image, out, 1)


def test_letterbox_rejects_read_only_overlap_and_bad_attributes():
    img, out = np.zeros((5, 6, 3), np.uint8), np.zeros((4, 4, 3), np.uint8)
    ro = out.copy()
    ro.flags.writeable = False
    big = np.zeros((20, 20, 3), np.uint8)
    cases = [
        ((img, ro, False, 0, 1), "read-only"), ((big[:10, :10], big[5:15, 5:15], False, 0, 1), "overlap"),
        ((img, out, False, -1, 1), "pad_value"), ((img, out, False, 256, 1), "pad_value"),
        ((img, out, False, 0, 4097), "threads"), ((big, big, False, 0, 1), "overlap"),
    ]
    for args, match in cases:
        with pytest.raises(ValueError, match=match):
            _core.letterbox(*args)


# ============================================================================ _core.paste_*
PASTE_LIMIT = 1e17  # the kernel clamps integer box corners at 2^61 (documented); the mirror does not


@st.composite
def paste_cases(draw, limit=PASTE_LIMIT):
    k, m = draw(st.integers(0, 4)), draw(st.integers(1, 6))
    h, w = draw(st.integers(1, 20) | st.just(1)), draw(st.integers(1, 20) | st.just(1))
    if draw(st.integers(0, 9)) == 0:  # a long thin frame
        h, w = (1, 400) if draw(st.booleans()) else (400, 1)
    boxes = draw(box_arrays((k,), limit=limit, lo=-15.0, hi=35.0))
    values = st.floats(0, 1, width=32) | st.sampled_from(f32_values([0.0, 0.5, 0.5000001, 1.0, -1.0, 2.0, 1e30, 3e38]))
    masks = draw(hnp.arrays(F32, (k, m, m), elements=values))
    threshold = draw(st.sampled_from([0.5, 0.0, 0.25, 1.0, 1e300]) | st.floats(0, 2))
    return masks, boxes, h, w, threshold


def mirror_bitmaps(masks, boxes, h, w, threshold) -> np.ndarray:
    with quiet():
        return paste_masks_mirror(masks, boxes, (h, w)) > threshold


@given(paste_cases(), THREADS)
def test_paste_masks_equals_mirror(case, threads):
    masks, boxes, h, w, threshold = case
    got = _core.paste_masks(masks, boxes, h, w, threshold, threads)
    assert got.shape == (len(masks), h, w) and got.dtype == np.bool_
    assert np.array_equal(got, mirror_bitmaps(*case))


@given(paste_cases(limit=F32_MAX), THREADS)
def test_paste_masks_any_finite_box(case, threads):
    """Boxes up to the largest float32 (past the 2^61 clamp): no crash; a box wholly outside the
    frame, or inverted beyond it, pastes nothing."""
    masks, boxes, h, w, threshold = case
    got = _core.paste_masks(masks, boxes, h, w, threshold, threads)
    assert got.shape == (len(masks), h, w)
    # The box expanded by (M + 2) / M about its centre, with a margin for float32 rounding.
    b = boxes.astype(np.float64)
    half = np.abs(b[:, 2:] - b[:, :2]) / 2 * (masks.shape[-1] + 2) / masks.shape[-1]
    centre = (b[:, 2:] + b[:, :2]) / 2
    margin = 2 + 1e-5 * np.abs(b).reshape(-1, 2, 2).sum(1)
    size = np.array([w, h], np.float64)
    outside = ((centre - half > size + margin) | (centre + half < -margin)).any(1)
    assert not got[outside].any()
    labels = np.arange(1, len(masks) + 1, dtype=np.int32)
    lab = _core.paste_label_map(masks, boxes, h, w, labels, threshold, threads)
    assert np.array_equal(lab, first_wins(got, labels, np.int32))
    rles = _core.paste_to_rle(masks, boxes, h, w, threshold, threads)
    assert [r["counts"] for r in rles] == [r["counts"] for r in _core.rle_encode(got, 1)]


@given(paste_cases(), st.sampled_from([np.uint16, np.int32]), st.data(), THREADS)
def test_paste_label_map_equals_first_instance_wins(case, dtype, data, threads):
    masks, boxes, h, w, threshold = case
    top = np.iinfo(dtype).max
    labels = np.array(data.draw(st.lists(st.integers(1, 5) | st.just(top), min_size=len(masks), max_size=len(masks))),
                      dtype)
    got = _core.paste_label_map(masks, boxes, h, w, labels, threshold, threads)
    assert got.shape == (h, w) and got.dtype == dtype
    assert np.array_equal(got, first_wins(mirror_bitmaps(*case), labels, dtype))
    if len(masks):
        bad = labels.copy()
        bad[data.draw(st.integers(0, len(bad) - 1))] = 0 if dtype == np.uint16 else data.draw(st.sampled_from([0, -7]))
        with pytest.raises(ValueError, match="must be >= 1"):
            _core.paste_label_map(masks, boxes, h, w, bad, threshold, threads)


@given(paste_cases(), THREADS)
def test_paste_to_rle_equals_pycocotools(case, threads):
    masks, boxes, h, w, threshold = case
    got = _core.paste_to_rle(masks, boxes, h, w, threshold, threads)
    assert len(got) == len(masks) and all(r["size"] == [h, w] for r in got)
    if len(masks):
        assert [r["counts"] for r in got] == [r["counts"] for r in coco_encode(mirror_bitmaps(*case))]


PASTE_FUNCS = ["paste_masks", "paste_label_map", "paste_to_rle"]


def call_paste(func, masks, boxes, h, w, threshold=0.5, threads=1, labels=None):
    if func == "paste_label_map":
        lab = np.arange(1, len(masks) + 1, dtype=np.uint16) if labels is None else labels
        return _core.paste_label_map(masks, boxes, h, w, lab, threshold, threads)
    return getattr(_core, func)(masks, boxes, h, w, threshold, threads)


@pytest.mark.parametrize("func", PASTE_FUNCS)
@settings(max_examples=20)
@given(st.data())
def test_paste_rejects_bad_input(func, data):
    k = data.draw(st.integers(1, 3))
    masks, boxes = np.full((k, 4, 4), 0.7, F32), data.draw(box_arrays((k,)))
    h, w, threshold = 8, 9, 0.5
    what = data.draw(st.sampled_from(["masks_nan", "boxes_nan", "threshold", "h", "w", "masks_shape", "boxes_shape",
                                      "masks_dtype", "boxes_dtype", "masks_order", "m_zero"]))
    if what == "masks_nan":
        masks = with_bad_value(data.draw, masks)
    elif what == "boxes_nan":
        boxes = with_bad_value(data.draw, boxes)
    elif what == "threshold":
        threshold = data.draw(nan_or_inf() | st.sampled_from([-1e-300, -0.5, -1e300]))
    elif what == "h":
        h = data.draw(st.sampled_from([0, -1, 2**28 + 1]))
    elif what == "w":
        w = data.draw(st.sampled_from([0, -3, 2**40]))
    elif what == "masks_shape":
        masks = data.draw(st.sampled_from([masks[0], masks[:, :, :3].copy(), masks[None], masks[:-1]]))
    elif what == "boxes_shape":
        boxes = data.draw(st.sampled_from([boxes[0], boxes[:, :3].copy(), boxes[None], np.zeros((k + 1, 4), F32)]))
    elif what == "masks_dtype":
        masks = masks.astype(data.draw(st.sampled_from([np.float64, np.float16, np.uint8])))
    elif what == "boxes_dtype":
        boxes = np.clip(boxes, -1e9, 1e9).astype(data.draw(st.sampled_from([np.float64, np.int32])))
    elif what == "masks_order":
        masks = np.asfortranarray(np.full((k, 4, 4), 0.7, F32)) if k > 1 else masks[:, ::-1]
    else:
        masks = np.zeros((k, 0, 0), F32)
    with pytest.raises(ValueError):
        call_paste(func, masks, boxes, h, w, threshold, 1)


@pytest.mark.parametrize("func", PASTE_FUNCS)
def test_paste_refuses_a_negative_threshold(func):
    """Regression (found by test_paste_masks_equals_mirror): with threshold < 0 torchvision's rule
    makes every pixel outside the box foreground (probability 0 > threshold), while the kernels
    write only the box; the binding now refuses a negative threshold instead of answering
    differently from the reference."""
    masks, boxes = np.zeros((2, 1, 1), F32), np.zeros((2, 4), F32)
    for threshold in (-1e-300, -0.5, -1.0):
        with pytest.raises(ValueError, match="threshold must be a finite number >= 0"):
            call_paste(func, masks, boxes, 40, 1, threshold)
    got = call_paste(func, masks, boxes, 40, 1, 0.0)  # zero is fine: 0 > 0 is false everywhere
    want = mirror_bitmaps(masks, boxes, 40, 1, 0.0)
    assert not want.any()
    if func == "paste_masks":
        assert np.array_equal(got, want)


def test_paste_rle_rejects_frames_past_2_32_pixels():
    masks, boxes = np.zeros((1, 2, 2), F32), np.zeros((1, 4), F32)
    with pytest.raises(ValueError, match="2\\^32"):
        _core.paste_to_rle(masks, boxes, 2**17, 2**16, 0.5, 1)


# ============================================================================ _core.rle_encode
@st.composite
def bitmap_cases(draw):
    k = draw(st.integers(0, 3))
    h, w = draw(st.integers(1, 30)), draw(st.integers(1, 30))
    if draw(st.integers(0, 9)) == 0:
        h, w = (1, 700) if draw(st.booleans()) else (700, 1)
    dtype = draw(st.sampled_from([np.bool_, np.uint8]))
    kind = draw(st.sampled_from(["noise", "sparse", "empty", "full", "runs"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "noise":
        b = rng.random((k, h, w)) > 0.5
    elif kind == "sparse":
        b = rng.random((k, h, w)) > 0.97
    elif kind == "empty":
        b = np.zeros((k, h, w), bool)
    elif kind == "full":
        b = np.ones((k, h, w), bool)
    else:
        b = np.zeros((k, h, w), bool)
        b[:, h // 3: h - 1, w // 4:] = True
    if dtype == np.uint8:  # any nonzero byte is foreground
        return np.where(b, rng.choice(np.array([1, 2, 127, 128, 255], np.uint8), b.shape), 0).astype(np.uint8)
    return b


@given(bitmap_cases(), THREADS)
def test_rle_encode_equals_pycocotools(bitmaps, threads):
    got = _core.rle_encode(bitmaps, threads)
    assert len(got) == len(bitmaps)
    assert all(r["size"] == list(bitmaps.shape[1:]) for r in got)
    if len(bitmaps):
        assert [r["counts"] for r in got] == [r["counts"] for r in coco_encode(bitmaps != 0)]


@pytest.mark.parametrize("bad", [
    np.zeros((1, 0, 4), bool), np.zeros((1, 4, 0), bool), np.zeros((4, 4), bool), np.zeros((1, 4, 4), np.int16),
    np.zeros((1, 4, 4), F32), np.zeros((2, 4, 4), bool)[:, ::2], np.zeros((0, 2**16, 2**16 + 1), bool),
])
def test_rle_encode_rejects_bad_bitmaps(bad):
    with pytest.raises(ValueError):
        _core.rle_encode(bad, 1)


# ============================================================================ _core.overlay_*, draw_boxes
ALPHAS = st.floats(0, 1) | st.sampled_from([0.0, 0.5, 1.0, 1 / 512, 0.5 - 1e-12])
BAD_ALPHAS = st.sampled_from([math.nan, math.inf, -math.inf, -1e-9, 1.0 + 1e-9, 2.0])


@st.composite
def overlay_cases(draw):
    image = draw(images())
    h, w = image.shape[:2]
    if h * w > 2500:
        image = image[: min(h, 50), : min(w, 50)]
        h, w = image.shape[:2]
    k = draw(st.integers(0, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    colors = rng.integers(0, 256, (k, 3), dtype=np.uint8)
    return image, k, colors, rng


@given(overlay_cases(), ALPHAS | BAD_ALPHAS, st.sampled_from([np.bool_, np.uint8]), THREADS)
def test_overlay_bitmaps_equals_first_wins_blend(case, alpha, dtype, threads):
    image, k, colors, rng = case
    h, w = image.shape[:2]
    masks = (rng.random((k, h, w)) > 0.6)
    masks = masks if dtype == np.bool_ else masks * rng.integers(1, 256, (k, h, w)).astype(np.uint8)
    before = image.copy()
    if not 0.0 <= alpha <= 1.0:
        with pytest.raises(ValueError, match="alpha"):
            _core.overlay_bitmaps(image, masks, colors, alpha, threads)
        assert np.array_equal(image, before)
        return
    _core.overlay_bitmaps(image, masks, colors, alpha, threads)
    lab = first_wins(masks != 0, np.arange(1, k + 1), np.int32)
    assert np.array_equal(image, blend_ref(before, lab, colors, alpha))


@given(overlay_cases(), ALPHAS, st.sampled_from([np.uint16, np.int32]), st.sampled_from([None, "high", "low"]), THREADS)
def test_overlay_label_map_equals_blend(case, alpha, dtype, bad, threads):
    image, k, colors, rng = case
    h, w = image.shape[:2]
    label_map = rng.integers(0, k + 1, (h, w)).astype(dtype)
    if bad == "high" or (bad == "low" and dtype == np.int32):
        label_map[rng.integers(0, h), rng.integers(0, w)] = k + 1 if bad == "high" else -1
        with pytest.raises(ValueError, match="label_map values"):
            _core.overlay_label_map(image, label_map, colors, alpha, threads)
        return
    before = image.copy()
    _core.overlay_label_map(image, label_map, colors, alpha, threads)
    assert np.array_equal(image, blend_ref(before, label_map.astype(np.int64), colors, alpha))


@given(overlay_cases(), st.integers(1, 4) | st.sampled_from([2**16, 0, -1, 2**16 + 1]), st.data())
def test_draw_boxes_equals_outline_mirror(case, thickness, data):
    image, k, colors, _ = case
    h, w = image.shape[:2]
    boxes = data.draw(box_arrays((k,), lo=-5.0, hi=float(max(h, w) + 5)))
    if not 1 <= thickness <= 2**16:
        with pytest.raises(ValueError, match="thickness"):
            _core.draw_boxes(image, boxes, colors, thickness)
        return
    before = image.copy()
    _core.draw_boxes(image, boxes, colors, thickness)
    assert np.array_equal(image, outline_ref(before, boxes, colors, thickness))
    if k:
        with pytest.raises(ValueError, match="boxes contains NaN or inf"):
            _core.draw_boxes(image, with_bad_value(data.draw, boxes), colors, thickness)


@settings(max_examples=40)
@given(st.data())
def test_overlay_functions_reject_mismatched_arrays(data):
    image = np.zeros((6, 7, 3), np.uint8)
    k = data.draw(st.integers(0, 3))
    masks, colors = np.zeros((k, 6, 7), bool), np.zeros((k, 3), np.uint8)
    label_map, boxes = np.zeros((6, 7), np.uint16), np.zeros((k, 4), F32)
    func = data.draw(st.sampled_from(["bitmaps", "label_map", "boxes"]))
    mutation = data.draw(st.sampled_from(["colors_k", "colors_dtype", "colors_4", "arg_shape", "arg_dtype",
                                          "arg_order", "image"]))
    if mutation == "colors_k":
        colors = np.zeros((k + 1, 3), np.uint8) if func != "label_map" else np.zeros((k, 3, 1), np.uint8)
    elif mutation == "colors_dtype":
        colors = colors.astype(np.int32)
    elif mutation == "colors_4":
        colors = np.zeros((k, 4), np.uint8)
    elif mutation == "arg_shape":
        masks, label_map, boxes = masks[:, :5], label_map[:, :6].copy(), np.zeros((k, 5), F32)
    elif mutation == "arg_dtype":
        masks, label_map, boxes = masks.astype(F32), label_map.astype(np.int64), boxes.astype(np.float64)
    elif mutation == "arg_order":
        masks = np.zeros((k, 7, 6), bool).transpose(0, 2, 1) if k > 0 else masks[:, ::-1]
        label_map = np.zeros((7, 6), np.uint16).T
        boxes = np.zeros((4, k), F32).T if k > 1 else np.zeros((k, 8), F32)[:, ::2]
    else:
        image = data.draw(st.sampled_from([image[..., :2], image.astype(np.uint16), image[:, ::2]]))
        if func == "bitmaps" and image.shape[1] != 7:
            masks = np.zeros((k, 6, image.shape[1]), bool)
    if mutation == "colors_k" and func == "boxes" and k == 0:
        colors = np.zeros((1, 3), np.uint8)
    if func == "bitmaps":
        ro = lambda: _core.overlay_bitmaps(image, masks, colors, 0.5, 1)  # noqa: E731
    elif func == "label_map":
        ro = lambda: _core.overlay_label_map(image, label_map, colors, 0.5, 1)  # noqa: E731
    else:
        ro = lambda: _core.draw_boxes(image, boxes, colors, 1)  # noqa: E731
    try:
        ro()
    except ValueError:
        return
    # Accepted only where the mutation left a valid argument: a "non-contiguous" empty array.
    assert k == 0 and mutation == "arg_order" and func != "label_map", (func, mutation, k)


def test_overlay_rejects_read_only_image():
    image = np.zeros((4, 5, 3), np.uint8)
    image.flags.writeable = False
    colors = np.zeros((1, 3), np.uint8)
    with pytest.raises(ValueError, match="read-only"):
        _core.overlay_bitmaps(image, np.zeros((1, 4, 5), bool), colors, 0.5, 1)
    with pytest.raises(ValueError, match="read-only"):
        _core.overlay_label_map(image, np.zeros((4, 5), np.uint16), colors, 0.5, 1)
    with pytest.raises(ValueError, match="read-only"):
        _core.draw_boxes(image, np.zeros((1, 4), F32), colors, 1)


# ============================================================================ every array argument, mangled
def _native_calls():
    rois = np.array([[[0, 0, 10, 10], [5, 5, 40, 30]]], F32)
    feats = [np.ones((1, 2, 8, 8), F32)]
    return {
        "nms": (_native.nms, [np.array([[0, 0, 4, 4], [1, 1, 5, 5]], F32), np.array([0.9, 0.8], F32)], dict(
            iou_threshold=0.5)),
        "nms_classes": (lambda b, s, c: _native.nms(b, s, 0.5, classes=c),
                        [np.array([[0, 0, 4, 4], [1, 1, 5, 5]], F32), np.array([0.9, 0.8], F32),
                         np.array([1, 2], np.int64)], {}),
        "box_iou": (_native.box_iou, [np.array([[0, 0, 4, 4]], F32), np.array([[1, 1, 5, 5]], F32)], {}),
        "rpn_nms": (_native.rpn_nms, [np.zeros((1, 3, 4), F32), np.zeros((1, 3), F32)], dict(level_sizes=[3])),
        "detection_nms": (_native.detection_nms, [np.zeros((1, 2, 3, 4), F32), np.zeros((1, 2, 3), F32),
                                                  np.array([2], np.int32)], {}),
        "pyramid_roi_align": (lambda r, f: _native.pyramid_roi_align(r, [f], strides=[4]), [rois, feats[0]], {}),
        "letterbox": (lambda i, o: _core.letterbox(i, o, False, 0, 1),
                      [np.zeros((5, 6, 3), np.uint8), np.zeros((4, 4, 3), np.uint8)], {}),
        "resize_linear": (lambda i, o: _core.resize_linear(i, o, 1),
                          [np.zeros((5, 6, 3), np.uint8), np.zeros((4, 4, 3), np.uint8)], {}),
        "paste_masks": (lambda m, b: _core.paste_masks(m, b, 8, 8, 0.5, 1),
                        [np.ones((2, 3, 3), F32), np.array([[0, 0, 4, 4], [2, 2, 7, 7]], F32)], {}),
        "paste_label_map": (lambda m, b, lab: _core.paste_label_map(m, b, 8, 8, lab, 0.5, 1),
                            [np.ones((2, 3, 3), F32), np.array([[0, 0, 4, 4], [2, 2, 7, 7]], F32),
                             np.array([1, 2], np.int32)], {}),
        "paste_to_rle": (lambda m, b: _core.paste_to_rle(m, b, 8, 8, 0.5, 1),
                         [np.ones((2, 3, 3), F32), np.array([[0, 0, 4, 4], [2, 2, 7, 7]], F32)], {}),
        "rle_encode": (lambda b: _core.rle_encode(b, 1), [np.ones((2, 3, 5), bool)], {}),
        "overlay_bitmaps": (lambda i, m, c: _core.overlay_bitmaps(i, m, c, 0.5, 1),
                            [np.zeros((4, 5, 3), np.uint8), np.ones((2, 4, 5), bool), np.ones((2, 3), np.uint8)], {}),
        "overlay_label_map": (lambda i, lab, c: _core.overlay_label_map(i, lab, c, 0.5, 1),
                              [np.zeros((4, 5, 3), np.uint8), np.ones((4, 5), np.int32), np.ones((2, 3), np.uint8)],
                              {}),
        "draw_boxes": (lambda i, b, c: _core.draw_boxes(i, b, c, 2),
                       [np.zeros((4, 5, 3), np.uint8), np.array([[0, 0, 3, 3], [1, 1, 9, 9]], F32),
                        np.ones((2, 3), np.uint8)], {}),
    }


MANGLES = ["float64", "int8", "object", "add_axis", "drop_axis", "flatten", "empty_last", "fortran_view",
           "reversed", "scalar", "huge_stride", "list", "none"]


def mangle(a: np.ndarray, how: str):
    if how == "float64":
        return a.astype(np.float64)
    if how == "int8":
        return a.astype(np.int8)
    if how == "object":
        return a.astype(object)
    if how == "add_axis":
        return a[None]
    if how == "drop_axis":
        return np.asarray(a[0])
    if how == "flatten":
        return a.reshape(-1)
    if how == "empty_last":
        return a[..., :0]
    if how == "fortran_view":
        return np.asfortranarray(np.ascontiguousarray(np.swapaxes(a, 0, -1))).swapaxes(0, -1) if a.ndim > 1 else a
    if how == "reversed":
        return a[::-1]
    if how == "scalar":
        return np.asarray(a.reshape(-1)[0])
    if how == "list":
        return a.tolist()
    if how == "none":
        return None
    return np.repeat(a, 3, axis=-1)[..., ::3]  # same shape, non-contiguous last axis


@pytest.mark.parametrize("name", sorted(_native_calls()))
def test_mangled_arrays_raise_value_error_or_work(name):
    """Each array argument of each function replaced by a wrong dtype, a wrong rank, an empty axis,
    a non-contiguous view: the call works (the mangled array was still valid) or raises ValueError;
    it never crashes, never reads out of bounds (see make sanitize), never raises anything else.
    Objects that are not numpy arrays (a list, None) are refused by pybind11's argument matching
    with a TypeError (None is accepted where the argument is optional)."""
    func, arrays, kwargs = _native_calls()[name]
    func(*arrays, **kwargs)  # the unmangled call works
    for i in range(len(arrays)):
        for how in MANGLES:
            args = list(arrays)
            if how == "drop_axis" and args[i].shape[0] == 0:
                continue
            args[i] = mangle(args[i].copy(), how)
            try:
                func(*args, **kwargs)
            except ValueError:
                pass
            except TypeError:
                assert how in ("list", "none"), (name, i, how)


def test_native_modules_come_from_the_expected_build():
    """Under make sanitize (MASKRT_NATIVE_DIR set) the modules tested are the sanitized ones."""
    folder = os.environ.get("MASKRT_NATIVE_DIR")
    if not folder:
        pytest.skip("MASKRT_NATIVE_DIR is not set: testing the installed modules")
    for module in (_native, _core):
        assert os.path.dirname(os.path.realpath(module.__file__)) == os.path.realpath(folder)
