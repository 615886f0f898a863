"""The native multi-level RoIAlign (maskrt._native.pyramid_roi_align, the CPU twin of the TensorRT
plugin MaskrtPyramidRoIAlign) against independent references:

* a float64 mirror of the multi-level op written here (FPN level assignment + a separable
  per-axis RoIAlign), itself checked against the loop mirror ``references.roi_align_mirror``;
* the PyTorch reference ``multiscale_roi_align`` (train/model/roi_align.py), near-exact;
* ONNX Runtime's RoiAlign-16, one call per level: bit-identical on x86-64 (same float32
  operations in the same order, torchvision/Caffe2's).
"""

from __future__ import annotations

import math
import platform
import time

import numpy as np
import pytest
import torch
from references import ort_roi_align, python_ticks_during, roi_align_mirror

from maskrt import _native
from maskrt.train.model.roi_align import assign_fpn_levels, multiscale_roi_align

STRIDES = (4, 8, 16, 32)
# ORT's RoiAlign is the same Caffe2 code compiled without FMA contraction on x86-64; elsewhere
# (e.g. aarch64, where GCC contracts by default) allow rounding differences.
EXACT_ORT = platform.machine().lower() in ("x86_64", "amd64")


# ----------------------------------------------------------------------------- mirrors
def fpn_levels_mirror(boxes, num_levels, first_level=2, canonical_scale=224.0, canonical_level=4):
    """Level index (0 = features[0]) of each box, or -1 for no level. boxes: float32 [N, 4].

    Transcribes torchvision's LevelMapper in float32: floor(k0 + log2(sqrt(area) / s0) + 1e-6)
    clamped to [first_level, first_level + num_levels - 1]; a NaN (negative area) matches no level.
    """
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    with np.errstate(invalid="ignore", divide="ignore"):
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        v = np.float32(canonical_level) + np.log2(np.sqrt(area) / np.float32(canonical_scale)) + np.float32(1e-6)
        v = np.clip(np.floor(v), first_level, first_level + num_levels - 1)
    return np.where(np.isnan(v), -1, np.nan_to_num(v) - first_level).astype(np.int64)


def _axis_weights(lo, hi, stride, aligned, bins, sampling_ratio, length, dtype):
    """One axis of one RoI: float64 [bins, length], row p = the sum over bin p's samples inside
    [-1, length] of their bilinear tap weights, and the grid (samples per bin).

    Coordinates are computed in ``dtype``: float64 for the semantic mirror, float32 to follow
    torchvision's rounding step by step (needed where float32 coordinates are coarse: huge RoIs).
    """
    f = dtype
    scale = f(1.0) / f(stride)
    offset = f(0.5) if aligned else f(0.0)
    start = f(lo) * scale - offset
    size = (f(hi) * scale - offset) - start
    if not aligned:
        size = max(size, f(1.0))
    bin_size = size / f(bins)
    grid = sampling_ratio if sampling_ratio > 0 else max(math.ceil(bin_size), 0)
    weights = np.zeros((bins, length))
    if grid == 0:
        return weights, 0
    i = np.arange(grid).astype(f)
    for p in range(bins):
        coords = (start + f(p) * bin_size) + ((i + f(0.5)) * bin_size) / f(grid)
        c = coords[(coords >= -1.0) & (coords <= length)].astype(np.float64)
        c = np.maximum(c, 0.0)
        low = np.floor(c).astype(np.int64)
        top = low >= length - 1
        low[top] = length - 1
        c[top] = length - 1
        high = np.where(top, low, low + 1)
        frac = c - low
        np.add.at(weights[p], low, 1.0 - frac)
        np.add.at(weights[p], high, frac)
    return weights, grid


def pyramid_roi_align_mirror(rois, features, output_size, sampling_ratio, aligned, strides=STRIDES,
                             first_level=2, canonical_scale=224.0, canonical_level=4, dtype=np.float64):
    """float64 multi-level RoIAlign. rois [B, R, 4]; features: L arrays [B, C, H_l, W_l].
    Returns float64 [B, R, C, P, P].

    Bilinear sampling is separable (each sample's four weights are products of a y weight and an
    x weight, and a sample counts iff its y and its x are inside), so each bin is
    A_y[ph] @ F[c] @ A_x[pw] / max(grid_h * grid_w, 1).
    """
    rois = np.asarray(rois, np.float32)
    bsz, r_count = rois.shape[:2]
    c = features[0].shape[1]
    p = output_size
    out = np.zeros((bsz, r_count, c, p, p))
    levels = fpn_levels_mirror(rois.reshape(-1, 4), len(features), first_level, canonical_scale,
                               canonical_level).reshape(bsz, r_count)
    for b in range(bsz):
        for r in range(r_count):
            lvl = levels[b, r]
            if lvl < 0:
                continue
            feat = np.asarray(features[lvl][b], np.float64)
            h, w = feat.shape[1:]
            x1, y1, x2, y2 = rois[b, r]
            ay, gy = _axis_weights(y1, y2, strides[lvl], aligned, p, sampling_ratio, h, dtype)
            ax, gx = _axis_weights(x1, x2, strides[lvl], aligned, p, sampling_ratio, w, dtype)
            out[b, r] = np.einsum("ph,chw,qw->cpq", ay, feat, ax) / max(gy * gx, 1)
    return out


def _torch_reference(rois, features, output_size, sampling_ratio, aligned):
    """train/model/roi_align.multiscale_roi_align on [B, R, 4] rois -> float32 [B, R, C, P, P]."""
    bsz, r_count = rois.shape[:2]
    idx = np.repeat(np.arange(bsz, dtype=np.float32), r_count)[:, None]
    flat = np.concatenate([idx, rois.reshape(-1, 4)], 1)
    out = multiscale_roi_align([torch.from_numpy(f) for f in features], list(STRIDES), torch.from_numpy(flat),
                               output_size, sampling_ratio, aligned).numpy()
    return out.reshape(bsz, r_count, *out.shape[1:])


def _ort_reference(rois, features, output_size, sampling_ratio, aligned):
    """ONNX Runtime RoiAlign-16, one call per level (levels from torch's assign_fpn_levels)."""
    bsz, r_count = rois.shape[:2]
    c = features[0].shape[1]
    flat = rois.reshape(-1, 4)
    levels = assign_fpn_levels(torch.from_numpy(flat)).numpy()
    out = np.zeros((bsz * r_count, c, output_size, output_size), np.float32)
    batch_idx = np.repeat(np.arange(bsz, dtype=np.float32), r_count)
    for lvl, stride in enumerate(STRIDES):
        sel = np.nonzero(levels == lvl)[0]
        if sel.size:
            r5 = np.concatenate([batch_idx[sel, None], flat[sel]], 1)
            out[sel] = ort_roi_align(features[lvl], r5, output_size, output_size, 1.0 / stride, sampling_ratio,
                                     aligned)
    return out.reshape(bsz, r_count, c, output_size, output_size)


def _assert_ort(ours, ref):
    if EXACT_ORT:
        np.testing.assert_array_equal(ours, ref)
    else:
        np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- inputs
def _features(rng, bsz, c, img_h, img_w, strides=STRIDES):
    return [rng.standard_normal((bsz, c, math.ceil(img_h / s), math.ceil(img_w / s))).astype(np.float32)
            for s in strides]


def _random_rois(rng, bsz, r_count, img_h, img_w):
    """sqrt(area) log-uniform in 2 .. 2.5 x the image (every level), aspect 1:4 .. 4:1, centres up to
    20% outside the image (RoIs partly and wholly outside). float32 [B, R, 4]."""
    cx = rng.uniform(-0.2 * img_w, 1.2 * img_w, (bsz, r_count))
    cy = rng.uniform(-0.2 * img_h, 1.2 * img_h, (bsz, r_count))
    side = np.exp(rng.uniform(np.log(2.0), np.log(2.5 * max(img_h, img_w)), (bsz, r_count)))
    aspect = np.exp(rng.uniform(-0.7, 0.7, (bsz, r_count)))
    bw, bh = side * aspect, side / aspect
    return np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1).astype(np.float32)


IMG_H, IMG_W = 240, 320  # P2..P5: 60x80, 30x40, 15x20, 8x10


@pytest.fixture(scope="module")
def random_case():
    rng = np.random.default_rng(0)
    feats = _features(rng, 2, 3, IMG_H, IMG_W)
    rois = _random_rois(rng, 2, 40, IMG_H, IMG_W)
    levels = fpn_levels_mirror(rois, 4)
    assert set(levels.ravel().tolist()) == {0, 1, 2, 3}  # the case exercises every level
    return rois, feats


# ----------------------------------------------------------------------------- the mirror itself
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_separable_mirror_matches_loop_mirror(aligned, sampling_ratio):
    """The separable float64 mirror equals references.roi_align_mirror (plain loops) per level."""
    rng = np.random.default_rng(1)
    feats = _features(rng, 1, 2, 96, 128)
    rois = _random_rois(rng, 1, 12, 96, 128)
    ours = pyramid_roi_align_mirror(rois, feats, 5, sampling_ratio, aligned)
    levels = fpn_levels_mirror(rois[0], 4)
    for r in range(rois.shape[1]):
        lvl = levels[r]
        r5 = np.concatenate([[0.0], rois[0, r]])[None]
        ref = roi_align_mirror(feats[lvl], r5, 5, 5, 1.0 / STRIDES[lvl], sampling_ratio, aligned)
        np.testing.assert_allclose(ours[0, r], ref[0], atol=1e-9)


# ----------------------------------------------------------------------------- parity
@pytest.mark.parametrize("output_size", [7, 14])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_matches_mirror_torch_and_onnxruntime(random_case, output_size, aligned, sampling_ratio):
    rois, feats = random_case
    ours = _native.pyramid_roi_align(rois, feats, output_size, sampling_ratio, aligned, threads=2)
    assert ours.shape == (2, 40, 3, output_size, output_size) and ours.dtype == np.float32
    mirror = pyramid_roi_align_mirror(rois, feats, output_size, sampling_ratio, aligned)
    np.testing.assert_allclose(ours, mirror, atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(ours, _torch_reference(rois, feats, output_size, sampling_ratio, aligned),
                               atol=1e-4, rtol=1e-5)
    _assert_ort(ours, _ort_reference(rois, feats, output_size, sampling_ratio, aligned))
    assert np.count_nonzero(ours) > 0.3 * ours.size  # not vacuous (many RoIs are partly outside)


@pytest.mark.parametrize("level", [0, 1, 2, 3])
@pytest.mark.parametrize("aligned", [False, True])
def test_one_level_matches_single_onnxruntime_call(level, aligned):
    """RoIs that all fall on one level against one ORT RoiAlign on that level's map; sampling
    ratio 1 (49 samples over a larger patch) also exercises the kernel's direct-read path."""
    rng = np.random.default_rng(10 + level)
    feats = _features(rng, 1, 5, IMG_H, IMG_W)
    lo, hi = [(8, 111), (113, 223), (225, 447), (449, 900)][level]
    side = np.exp(rng.uniform(np.log(lo), np.log(hi), (1, 30, 1)))
    aspect = np.exp(rng.uniform(-0.3, 0.3, (1, 30, 1)))
    xy = rng.uniform(-40, 300, (1, 30, 2))
    wh = np.concatenate([side * aspect, side / aspect], -1)
    rois = np.concatenate([xy, xy + wh], -1).astype(np.float32)
    assert (fpn_levels_mirror(rois, 4) == level).all()
    r5 = np.concatenate([np.zeros((30, 1), np.float32), rois[0]], 1)
    for sampling_ratio in (1, 2, 0):
        ours = _native.pyramid_roi_align(rois, feats, 7, sampling_ratio, aligned)[0]
        ref = ort_roi_align(feats[level], r5, 7, 7, 1.0 / STRIDES[level], sampling_ratio, aligned)
        _assert_ort(ours, ref)


@pytest.mark.parametrize("aligned", [False, True])
def test_adversarial_boxes(aligned):
    """Zero-size, inverted, outside, straddling, huge and sub-pixel RoIs, with both sampling modes."""
    rng = np.random.default_rng(3)
    feats = _features(rng, 1, 4, IMG_H, IMG_W)
    boxes = np.array([
        [50, 60, 50, 60],            # zero size (level P2; aligned=False: forced to 1x1)
        [0, 0, 0, 0],                # zero size at the corner
        [319.5, 239.5, 319.5, 239.5],  # zero size at the far corner
        [30, 40, 30, 90],            # zero width only
        [-100, -80, -20, -10],       # wholly outside (top-left)
        [400, 300, 500, 400],        # wholly outside (bottom-right)
        [-3, -3, 5, 5],              # straddling the top-left border
        [310, 230, 330, 250],        # straddling the bottom-right border
        [-5000, -4000, 6000, 5000],  # huge: P5, most samples outside
        [-20, -20, 340, 260],        # slightly larger than the image
        [10.25, 11.75, 10.5, 12.0],  # sub-pixel
        [0, 0, 320, 240],            # the whole image
        [100, 100, 0.5, 0.5],        # inverted: positive area -> a level; aligned: negative size
        [10, 10, -50, -40],          # inverted across the top-left border (aligned: samples walk out)
        [335, 250, 300, 200],        # inverted, starting outside the bottom-right border
    ], np.float32)[None]
    for sampling_ratio in (0, 2):
        for output_size in (7, 14):
            ours = _native.pyramid_roi_align(boxes, feats, output_size, sampling_ratio, aligned)
            mirror = pyramid_roi_align_mirror(boxes, feats, output_size, sampling_ratio, aligned, dtype=np.float32)
            np.testing.assert_allclose(ours, mirror, atol=2e-5, rtol=1e-5)
            _assert_ort(ours, _ort_reference(boxes, feats, output_size, sampling_ratio, aligned))
            np.testing.assert_allclose(ours, _torch_reference(boxes, feats, output_size, sampling_ratio, aligned),
                                       atol=2e-4, rtol=1e-5)
            assert not ours[0, 4].any() and not ours[0, 5].any()  # wholly outside -> zeros


def test_gigantic_adaptive_box_costs_no_more_than_the_map():
    """A 10^7-pixel RoI with adaptive sampling has ~45000 samples per bin and axis (2 * 10^9 per bin);
    only the samples inside the map are visited, so this takes milliseconds. The mirror follows
    the float32 coordinate arithmetic (coarse at this size) with vectorised axes."""
    rng = np.random.default_rng(4)
    feats = _features(rng, 1, 2, IMG_H, IMG_W)
    boxes = np.array([[[-5e6, -4e6, 5e6, 6e6], [-1e7, 100, 1e7, 140]]], np.float32)
    for aligned in (False, True):
        t0 = time.perf_counter()
        ours = _native.pyramid_roi_align(boxes, feats, 7, 0, aligned, threads=1)
        assert time.perf_counter() - t0 < 30  # a hang guard, not a timing assertion
        mirror = pyramid_roi_align_mirror(boxes, feats, 7, 0, aligned, dtype=np.float32)
        np.testing.assert_allclose(ours, mirror, atol=1e-6, rtol=1e-4)
        assert np.count_nonzero(ours) > 0


def test_large_sampling_ratio_streams_the_samples():
    """sampling_ratio 100: 490,000 samples per RoI, past the kernel's table limit (stream path)."""
    rng = np.random.default_rng(13)
    feats = _features(rng, 1, 3, IMG_H, IMG_W)
    rois = np.array([[[20.5, 30.25, 90, 70], [-10, -10, 30, 40]]], np.float32)
    ours = _native.pyramid_roi_align(rois, feats, 7, 100, False)
    _assert_ort(ours, _ort_reference(rois, feats, 7, 100, False))
    np.testing.assert_allclose(ours, pyramid_roi_align_mirror(rois, feats, 7, 100, False), atol=2e-5, rtol=1e-5)


def test_negative_area_pools_to_zeros_like_the_torch_reference():
    """x2 < x1 with y2 > y1: area < 0, sqrt -> NaN, no level matches in torchvision's mapper."""
    rng = np.random.default_rng(5)
    feats = _features(rng, 1, 2, IMG_H, IMG_W)
    boxes = np.array([[[100, 10, 50, 60], [10, 10, 60, 60]]], np.float32)
    ours = _native.pyramid_roi_align(boxes, feats, 7, 2, False)
    assert not ours[0, 0].any() and ours[0, 1].any()
    np.testing.assert_allclose(ours, _torch_reference(boxes, feats, 7, 2, False), atol=1e-4)


# ----------------------------------------------------------------------------- level assignment
def _levels_from_output(rois, num_levels=4, **kwargs):
    """Level index of each RoI [N, 4] read back from the kernel: level l's map is the constant
    l + 1, so every bin with its one sample inside the map is (l + 1) * (weights summing to ~1);
    -1 when every bin is 0 (no level)."""
    feats = [np.full((1, 1, 1024 // s, 1024 // s), float(l + 1), np.float32)
             for l, s in enumerate(STRIDES[:num_levels])]
    out = _native.pyramid_roi_align(rois[None], feats, 8, 1, False, strides=STRIDES[:num_levels], **kwargs)
    return np.rint(out[0, :, 0].max(axis=(1, 2))).astype(np.int64) - 1


def test_level_boundaries_ulp_by_ulp():
    """sqrt(area) = 112 / 224 / 448 exactly and the float32 areas within 300 ulps of them on both
    sides. The kernel (IEEE sqrtf, libm log2f) equals the float32 numpy mirror everywhere and
    torch's assign_fpn_levels everywhere except where torch's vectorised CPU sqrt/log2 (not
    correctly rounded) is 1 ulp off within ~2e-6 below a boundary."""
    rows = []
    for edge in (112.0, 224.0, 448.0):
        h = np.float32(edge)
        for _ in range(300):
            h = np.nextafter(h, np.float32(0))
        for _ in range(601):
            rows.append([0.0, 0.0, edge, h])  # area = edge * h: the boundary is h = edge
            h = np.nextafter(h, np.float32(1e9))
    rois = np.array(rows, np.float32)
    ours = _levels_from_output(rois)
    np.testing.assert_array_equal(ours, fpn_levels_mirror(rois, 4))
    torch_levels = assign_fpn_levels(torch.from_numpy(rois)).numpy()
    assert set(torch_levels.tolist()) == {0, 1, 2, 3}
    differ = np.nonzero(ours != torch_levels)[0]
    rel_below = 1.0 - np.sqrt(rois[:, 3].astype(np.float64) / rois[:, 2])  # > 0: below the boundary
    assert differ.size <= 10 and np.all((rel_below[differ] > 0) & (rel_below[differ] < 2e-6)), differ
    exact = rois[:, 3] == rois[:, 2]
    np.testing.assert_array_equal(ours[exact], [1, 2, 3])  # on the boundary: the upper level
    np.testing.assert_array_equal(torch_levels[exact], [1, 2, 3])


@pytest.mark.parametrize(
    "side,level", [(111.99, 0), (112.0, 1), (112.01, 1), (223.99, 1), (224.0, 2), (447.99, 2), (448.0, 3),
                   (448.01, 3), (1.0, 0), (0.0, 0), (5000.0, 3), (-10.0, 0)],
)
def test_level_of_square_boxes(side, level):
    rois = np.array([[10, 20, 10 + side, 20 + side], [10, 20, 10 + side, 20 - side]], np.float32)
    # the second box has the same sides but an inverted height: area -side^2 < 0 -> no level
    # (zero area stays a real area: log2(0) = -inf -> the first level)
    assert _levels_from_output(rois).tolist() == [level, level if side == 0 else -1]


def test_custom_level_attributes():
    """first_level / canonical_scale / canonical_level / three levels: kernel vs the mirror."""
    rng = np.random.default_rng(6)
    strides = (8, 16, 32)
    feats = _features(rng, 2, 3, IMG_H, IMG_W, strides)
    rois = _random_rois(rng, 2, 25, IMG_H, IMG_W)
    kwargs = dict(strides=strides, first_level=3, canonical_scale=160.0, canonical_level=5)
    ours = _native.pyramid_roi_align(rois, feats, 7, 2, True, **kwargs)
    mirror = pyramid_roi_align_mirror(rois, feats, 7, 2, True, **kwargs)
    np.testing.assert_allclose(ours, mirror, atol=2e-5, rtol=1e-5)
    assert len(set(fpn_levels_mirror(rois, 3, 3, 160.0, 5).ravel().tolist())) == 3


def test_single_level():
    rng = np.random.default_rng(7)
    feats = _features(rng, 1, 2, IMG_H, IMG_W, (8,))
    rois = _random_rois(rng, 1, 10, IMG_H, IMG_W)
    ours = _native.pyramid_roi_align(rois, feats, 5, 0, True, strides=(8,), first_level=3)
    np.testing.assert_allclose(ours, pyramid_roi_align_mirror(rois, feats, 5, 0, True, strides=(8,), first_level=3),
                               atol=2e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- shapes, threads
def test_empty_inputs():
    rng = np.random.default_rng(8)
    feats = _features(rng, 3, 4, IMG_H, IMG_W)
    out = _native.pyramid_roi_align(np.zeros((3, 0, 4), np.float32), feats)
    assert out.shape == (3, 0, 4, 7, 7) and out.dtype == np.float32
    empty = [f[:0] for f in feats]
    assert _native.pyramid_roi_align(np.zeros((0, 5, 4), np.float32), empty, 14).shape == (0, 5, 4, 14, 14)
    no_channels = [np.ascontiguousarray(f[:, :0]) for f in feats]
    rois = _random_rois(rng, 3, 2, IMG_H, IMG_W)
    assert _native.pyramid_roi_align(rois, no_channels).shape == (3, 2, 0, 7, 7)


def test_threads_give_identical_bits():
    rng = np.random.default_rng(9)
    feats = _features(rng, 2, 19, IMG_H, IMG_W)  # 19: channel blocks of 16 and 4 plus a remainder
    rois = _random_rois(rng, 2, 60, IMG_H, IMG_W)
    for sampling_ratio in (0, 2):
        ref = _native.pyramid_roi_align(rois, feats, 7, sampling_ratio, False, threads=1)
        for threads in (2, 3, 0, -1):
            out = _native.pyramid_roi_align(rois, feats, 7, sampling_ratio, False, threads=threads)
            assert out.tobytes() == ref.tobytes()
        _assert_ort(ref, _ort_reference(rois, feats, 7, sampling_ratio, False))


def test_gil_is_released_while_the_kernel_runs():
    """A Python thread keeps running during a long native call: with the GIL held no timestamp
    could fall strictly inside the call."""
    rng = np.random.default_rng(11)
    feats = _features(rng, 1, 256, 800, 800)
    rois = _random_rois(rng, 1, 1500, 800, 800)
    inside = python_ticks_during(lambda: _native.pyramid_roi_align(rois, feats, 14, 2, False, threads=1), margin=0.2)
    assert inside > 100, f"{inside} timestamps inside the middle 60 % of the call"


# ----------------------------------------------------------------------------- validation
def _good():
    rng = np.random.default_rng(12)
    return _random_rois(rng, 2, 3, 64, 64), _features(rng, 2, 3, 64, 64)


def _noncontig_rois():
    rois, _ = _good()
    return np.asfortranarray(rois)


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda r, f: (r.astype(np.float64), f), "rois must have dtype float32"),
        (lambda r, f: (r[0], f), r"rois must have shape \[B, R, 4\]"),
        (lambda r, f: (r[..., :3].copy(), f), r"rois must have shape \[B, R, 4\]"),
        (lambda r, f: (np.asfortranarray(r), f), "rois must be C-contiguous"),
        (lambda r, f: (np.where(np.arange(4) == 2, np.nan, r).astype(np.float32), f), "rois contains NaN or inf"),
        (lambda r, f: (np.where(np.arange(4) == 0, -np.inf, r).astype(np.float32), f), "rois contains NaN or inf"),
        (lambda r, f: (r, f[0]), "features must be a list or tuple"),
        (lambda r, f: (r, [x.astype(np.float16) for x in f]), r"features\[0\] must have dtype float32"),
        (lambda r, f: (r, f[:2] + [f[2][0]] + f[3:]), r"features\[2\] must have shape \[B, C, H, W\]"),
        (lambda r, f: (r, f[:1] + [f[1][..., ::2]] + f[2:]), r"features\[1\] must be C-contiguous"),
        (lambda r, f: (r, f[:3] + [f[3][:1]]), r"features\[3\] has batch 1 but rois has batch 2"),
        (lambda r, f: (r, f[:3] + [np.ascontiguousarray(f[3][:, :2])]), r"features\[3\] has 2 channels"),
        (lambda r, f: (r, f[:3] + [np.zeros((2, 3, 0, 4), np.float32)]), r"features\[3\]\.shape\[2\] \(H\)"),
        (lambda r, f: (r, f[:3] + [[[1.0]]]), r"features\[3\] must be a numpy array"),
        (lambda r, f: (r, f[:3]), "strides must have one entry per feature level"),
        (lambda r, f: (r, []), r"len\(features\) must be in \[1, 8\]"),
        (lambda r, f: (r, f * 3), r"len\(features\) must be in \[1, 8\]"),
    ],
)
def test_rejects_bad_arrays(mutate, match):
    rois, feats = mutate(*_good())
    with pytest.raises(ValueError, match=match):
        _native.pyramid_roi_align(rois, feats)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(output_size=0), "output_size must be in"),
        (dict(output_size=-7), "output_size must be in"),
        (dict(sampling_ratio=-1), "sampling_ratio must be in"),
        (dict(sampling_ratio=1025), "sampling_ratio must be in"),
        (dict(strides=(4, 8, 0, 32)), r"strides\[2\] must be in"),
        (dict(strides=(4, 8, 16)), "strides must have one entry per feature level"),
        (dict(canonical_scale=0.0), "canonical_scale must be a finite float32 > 0"),
        (dict(canonical_scale=float("nan")), "canonical_scale must be a finite float32 > 0"),
        (dict(canonical_scale=1e300), "canonical_scale must be a finite float32 > 0"),
        (dict(first_level=10**6), "first_level must be in"),
    ],
)
def test_rejects_bad_attributes(kwargs, match):
    rois, feats = _good()
    with pytest.raises(ValueError, match=match):
        _native.pyramid_roi_align(rois, feats, **kwargs)


def test_noncontiguous_rois_view_is_rejected_not_copied():
    rois = _noncontig_rois()
    _, feats = _good()
    with pytest.raises(ValueError, match="rois must be C-contiguous"):
        _native.pyramid_roi_align(rois, feats)
    # the same values, contiguous, are accepted
    assert _native.pyramid_roi_align(np.ascontiguousarray(rois), feats).shape == (2, 3, 3, 7, 7)
