"""Post-processing: mask paste (torchvision semantics), box mapping, RLE.

References: a float64 loop mirror of torchvision's paste (``references.paste_masks_mirror``), a
transcription of torchvision's own torch code run with torch (when installed), and pycocotools.
"""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from references import _half_pixel_taps, paste_masks_mirror

from maskrt.runtime import postprocess
from maskrt.runtime.postprocess import masks_to_rle, paste_masks, scale_detections

NEAR = 1e-5  # pixels whose reference probability is this close to the threshold may differ


def assert_same_bitmaps(got: np.ndarray, prob: np.ndarray, threshold: float = 0.5) -> None:
    """``got`` (bool) equals ``prob > threshold`` except where ``prob`` is within NEAR of it."""
    assert got.dtype == bool and got.shape == prob.shape
    want = prob > threshold
    differ = got != want
    ambiguous = np.abs(prob - threshold) < NEAR
    bad = differ & ~ambiguous
    assert not bad.any(), f"{int(bad.sum())} pixel(s) differ, first at {np.argwhere(bad)[0].tolist()}"
    assert ambiguous.sum() <= max(4, prob.size // 1000)  # the tolerance stays an exception


def random_masks(rng: np.random.Generator, k: int, m: int = 28) -> np.ndarray:
    """Half noisy, half smooth blobs, so the threshold cuts through gradients."""
    masks = rng.random((k, m, m), dtype=np.float32)
    yy, xx = np.mgrid[0:m, 0:m] / (m - 1)
    for i in range(0, k, 2):
        cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.15, 0.5)
        masks[i] = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r)).astype(np.float32)
    return masks


def random_boxes(rng: np.random.Generator, k: int, h: int, w: int) -> np.ndarray:
    """A mix: inside, partly outside, sub-pixel, degenerate, whole frame, integer corners."""
    out = []
    for i in range(k):
        kind = i % 6
        if kind == 0:  # inside
            x1, y1 = rng.uniform(0, w - 2), rng.uniform(0, h - 2)
            x2, y2 = rng.uniform(x1 + 0.5, w), rng.uniform(y1 + 0.5, h)
        elif kind == 1:  # partly outside on any side
            x1, y1 = rng.uniform(-0.5 * w, 0.6 * w), rng.uniform(-0.5 * h, 0.6 * h)
            x2, y2 = x1 + rng.uniform(2, w), y1 + rng.uniform(2, h)
        elif kind == 2:  # smaller than a pixel
            x1, y1 = rng.uniform(0, w - 1), rng.uniform(0, h - 1)
            x2, y2 = x1 + rng.uniform(0, 0.9), y1 + rng.uniform(0, 0.9)
        elif kind == 3:  # the whole frame, or more
            g = rng.uniform(0, 6)
            x1, y1, x2, y2 = -g, -g, w + g, h + g
        elif kind == 4:  # integer corners (float32 rounding in the expansion decides pixels)
            x1, y1 = rng.integers(-3, w - 3), rng.integers(-3, h - 3)
            x2, y2 = x1 + rng.integers(1, w), y1 + rng.integers(1, h)
        else:  # zero width or height
            x1, y1 = rng.uniform(0, w), rng.uniform(0, h)
            x2, y2 = (x1, y1 + rng.uniform(1, 9)) if rng.random() < 0.5 else (x1 + rng.uniform(1, 9), y1)
        out.append([x1, y1, x2, y2])
    return np.asarray(out, np.float32)


def torchvision_paste(masks: np.ndarray, boxes: np.ndarray, image_size) -> np.ndarray:
    """torchvision's paste_masks_in_image (roi_heads.py), transcribed line for line, run with
    torch: float32 probabilities [K, H, W]."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    def expand_boxes(boxes, scale):
        w_half = (boxes[:, 2] - boxes[:, 0]) * 0.5
        h_half = (boxes[:, 3] - boxes[:, 1]) * 0.5
        x_c = (boxes[:, 2] + boxes[:, 0]) * 0.5
        y_c = (boxes[:, 3] + boxes[:, 1]) * 0.5
        w_half *= scale
        h_half *= scale
        boxes_exp = torch.zeros_like(boxes)
        boxes_exp[:, 0] = x_c - w_half
        boxes_exp[:, 2] = x_c + w_half
        boxes_exp[:, 1] = y_c - h_half
        boxes_exp[:, 3] = y_c + h_half
        return boxes_exp

    def expand_masks(mask, padding):
        m = mask.shape[-1]
        scale = float(m + 2 * padding) / m
        return F.pad(mask, (padding,) * 4), scale

    def paste_mask_in_image(mask, box, im_h, im_w):
        w = max(int(box[2] - box[0] + 1), 1)
        h = max(int(box[3] - box[1] + 1), 1)
        mask = mask.expand((1, 1, -1, -1))
        mask = F.interpolate(mask, size=(h, w), mode="bilinear", align_corners=False)[0][0]
        im_mask = torch.zeros((im_h, im_w), dtype=mask.dtype)
        x_0, x_1 = max(box[0], 0), min(box[2] + 1, im_w)
        y_0, y_1 = max(box[1], 0), min(box[3] + 1, im_h)
        im_mask[y_0:y_1, x_0:x_1] = mask[(y_0 - box[1]):(y_1 - box[1]), (x_0 - box[0]):(x_1 - box[0])]
        return im_mask

    m, b = torch.from_numpy(masks)[:, None], torch.from_numpy(boxes)
    m, scale = expand_masks(m, padding=1)
    b = expand_boxes(b, scale).to(dtype=torch.int64)
    im_h, im_w = image_size
    res = [paste_mask_in_image(mm[0], bb, im_h, im_w) for mm, bb in zip(m, b, strict=True)]
    return torch.stack(res).numpy() if res else np.zeros((0, im_h, im_w), np.float32)


# ----------------------------------------------------------------------------- bilinear resize
def resize_loop(src: np.ndarray, h: int, w: int) -> np.ndarray:
    out = np.zeros((h, w))
    s = src.astype(np.float64)
    for y in range(h):
        r0, r1, ly = _half_pixel_taps(y, src.shape[0], h)
        for x in range(w):
            c0, c1, lx = _half_pixel_taps(x, src.shape[1], w)
            top = (1 - lx) * s[r0, c0] + lx * s[r0, c1]
            bottom = (1 - lx) * s[r1, c0] + lx * s[r1, c1]
            out[y, x] = (1 - ly) * top + ly * bottom
    return out


@pytest.mark.parametrize("size", [(1, 1), (1, 7), (15, 15), (30, 30), (31, 45), (100, 3), (61, 250)])
def test_cv2_resize_is_half_pixel_bilinear(size):
    """The premise of using cv2.resize: INTER_LINEAR on float32 is align_corners=False bilinear
    (15 x 15 from 30 x 30 is OpenCV's exact-2x INTER_AREA shortcut)."""
    rng = np.random.default_rng(size[0] * 1000 + size[1])
    src = rng.random((30, 30), dtype=np.float32)
    ref = resize_loop(src, *size)
    got = postprocess._bilinear_resize(src, *size)
    assert got.dtype == np.float32 and got.shape == size
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)
    # the crop-only numpy path used for boxes much larger than the image
    rows, cols = (size[0] // 3, size[0]), (0, max(1, size[1] // 2))
    crop = postprocess._resize_crop(src, *size, rows, cols)
    np.testing.assert_allclose(crop, ref[rows[0]:rows[1], cols[0]:cols[1]], rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- paste
@pytest.mark.parametrize("seed,image_size", [(0, (40, 56)), (1, (33, 47)), (2, (64, 48))])
def test_paste_matches_float64_mirror(seed, image_size):
    rng = np.random.default_rng(seed)
    h, w = image_size
    masks = random_masks(rng, 18)
    boxes = random_boxes(rng, 18, h, w)
    got = paste_masks(masks, boxes, image_size)
    assert got.shape == (18, h, w) and got.dtype == bool
    assert got.any(axis=(1, 2)).sum() >= 9  # most boxes paste something
    assert_same_bitmaps(got, paste_masks_mirror(masks, boxes, image_size))


@pytest.mark.parametrize("threshold", [0.3, 0.7])
def test_paste_threshold_argument(threshold):
    rng = np.random.default_rng(5)
    masks, boxes = random_masks(rng, 6, m=14), random_boxes(rng, 6, 30, 30)
    got = paste_masks(masks, boxes, (30, 30), threshold=threshold)
    assert_same_bitmaps(got, paste_masks_mirror(masks, boxes, (30, 30)), threshold)


def test_paste_matches_torchvision_code_run_with_torch():
    """Against torchvision's own code and torch's float32 kernels (boxes that overlap the image:
    torchvision fails on wholly outside ones)."""
    rng = np.random.default_rng(11)
    h, w = 52, 44
    masks = random_masks(rng, 30)
    boxes = random_boxes(rng, 30, h, w)
    overlap = (boxes[:, 2] > 0) & (boxes[:, 0] < w) & (boxes[:, 3] > 0) & (boxes[:, 1] < h)
    masks, boxes = masks[overlap], boxes[overlap]
    assert len(boxes) >= 25
    ref = torchvision_paste(masks, boxes, (h, w)).astype(np.float64)
    assert_same_bitmaps(paste_masks(masks, boxes, (h, w)), ref)


def test_box_expansion_is_float32_and_truncates_toward_zero():
    """Integer boxes where float64 and float32 expansion disagree by a pixel, and negative
    expanded corners (-0.x truncates to 0, not -1), checked against torch's arithmetic."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    corner = rng.integers(-20, 300, (4000, 2))
    size = rng.integers(1, 200, (4000, 2))
    integer_boxes = np.concatenate([corner, corner + size], axis=1)
    # boxes whose expanded corner is an integer in exact arithmetic but just below it in float32
    # (a whole pixel after truncation): M = 14 and M = 28 respectively
    known = np.array([[2.5, 2.5, 23.5, 23.5], [-50, -50, 426, 426]], np.float32)
    boxes = np.concatenate([known, integer_boxes, rng.uniform(-3, 3, (4000, 4))]).astype(np.float32)
    for j, m in enumerate((14, 28)):
        scale = (m + 2) / m
        t = torch.from_numpy(boxes)
        w_half, h_half = (t[:, 2] - t[:, 0]) * 0.5 * scale, (t[:, 3] - t[:, 1]) * 0.5 * scale
        x_c, y_c = (t[:, 2] + t[:, 0]) * 0.5, (t[:, 3] + t[:, 1]) * 0.5
        want = torch.stack([x_c - w_half, y_c - h_half, x_c + w_half, y_c + h_half], 1).to(torch.int64).numpy()
        got = postprocess.expand_boxes_int(boxes, m)
        np.testing.assert_array_equal(got, want)
        # float64 arithmetic would put that corner a pixel off
        b = known[j].astype(np.float64)
        x0_f64 = int((b[2] + b[0]) / 2 - (b[2] - b[0]) / 2 * scale)
        assert abs(int(got[j, 0]) - x0_f64) == 1
    assert (postprocess.expand_boxes_int(np.array([[-0.5, -0.5, 3, 3]], np.float32), 28)[0, :2] == 0).all()


def test_paste_threshold_is_strictly_greater():
    # M = 1 and a box whose expanded integer box is 3 x 3: the resize is the identity, so the
    # centre pixel carries the mask value exactly.
    box = np.array([[1.2, 1.2, 1.8, 1.8]], np.float32)
    assert postprocess.expand_boxes_int(box, 1).tolist() == [[0, 0, 2, 2]]
    at = paste_masks(np.full((1, 1, 1), 0.5, np.float32), box, (3, 3))
    above = paste_masks(np.full((1, 1, 1), np.nextafter(np.float32(0.5), np.float32(1)), np.float32), box, (3, 3))
    assert not at.any()
    assert above[0].tolist() == [[False] * 3, [False, True, False], [False] * 3]


def test_paste_zero_detections_and_outside_boxes():
    empty = paste_masks(np.zeros((0, 28, 28), np.float32), np.zeros((0, 4), np.float32), (7, 9))
    assert empty.shape == (0, 7, 9) and empty.dtype == bool
    masks = np.ones((4, 28, 28), np.float32)
    outside = np.array([[-50, 2, -10, 6], [2, 40, 6, 60], [100, 100, 120, 130], [-9, -9, -3, -3]], np.float32)
    assert not paste_masks(masks, outside, (20, 30)).any()


def test_paste_huge_box_uses_the_crop_path_consistently():
    rng = np.random.default_rng(9)
    masks = random_masks(rng, 3)
    boxes = np.array([[-4000, -3000, 5000, 2000], [-300, -200, 100, 90], [3, 4, 30, 20]], np.float32)
    got = paste_masks(masks, boxes, (24, 32))
    assert_same_bitmaps(got, paste_masks_mirror(masks, boxes, (24, 32)))


def test_paste_rejects_bad_input():
    m = np.zeros((2, 28, 28), np.float32)
    with pytest.raises(ValueError, match="boxes"):
        paste_masks(m, np.zeros((3, 4), np.float32), (10, 10))
    with pytest.raises(ValueError, match="NaN"):
        paste_masks(m, np.array([[0, 0, 5, np.nan], [0, 0, 1, 1]], np.float32), (10, 10))
    with pytest.raises(ValueError, match="masks"):
        paste_masks(np.zeros((2, 28, 14), np.float32), np.zeros((2, 4), np.float32), (10, 10))
    with pytest.raises(ValueError, match="image_size"):
        paste_masks(m, np.zeros((2, 4), np.float32), (0, 10))


# ----------------------------------------------------------------------------- box mapping
def test_scale_detections_inverts_the_letterbox():
    rng = np.random.default_rng(2)
    orig = rng.uniform(0, 100, (20, 4)).astype(np.float32)
    sx, sy, px, py = 0.64, 0.5, 7.0, 3.0
    model_in = orig * np.array([sx, sy, sx, sy], np.float32) + np.array([px, py, px, py], np.float32)
    back = scale_detections(model_in, (sx, sy), (px, py))
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, orig, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(scale_detections(orig * 2, 2.0), orig, rtol=1e-6)
    clipped = scale_detections(np.array([[-5, -5, 500, 60]], np.float32), 2.0, image_size=(20, 100))
    assert clipped.tolist() == [[0, 0, 100, 20]]
    assert scale_detections(np.zeros((0, 4), np.float32), 2.0).shape == (0, 4)
    with pytest.raises(ValueError, match="scale"):
        scale_detections(orig, 0.0)
    with pytest.raises(ValueError, match="boxes"):
        scale_detections(np.zeros((3, 5)), 1.0)


# ----------------------------------------------------------------------------- RLE
def test_masks_to_rle_round_trips_with_pycocotools():
    rng = np.random.default_rng(4)
    bitmaps = rng.random((5, 23, 31)) < np.array([0.0, 0.1, 0.5, 0.9, 1.0])[:, None, None]
    rles = masks_to_rle(bitmaps)
    assert len(rles) == 5
    for rle, bm in zip(rles, bitmaps, strict=True):
        assert rle["size"] == [23, 31] and isinstance(rle["counts"], str)
        assert int(mask_utils.area(rle)) == int(bm.sum())
        ref = mask_utils.encode(np.asfortranarray(bm.astype(np.uint8)))
        assert rle["counts"] == ref["counts"].decode("ascii")
        if bm.any():
            assert mask_utils.iou([rle], [ref], [0])[0, 0] == pytest.approx(1.0)
    # IoU between two different masks matches numpy
    a, b = bitmaps[2], bitmaps[3]
    want = (a & b).sum() / (a | b).sum()
    assert mask_utils.iou([rles[2]], [rles[3]], [0])[0, 0] == pytest.approx(want)
    assert masks_to_rle(np.zeros((0, 4, 4), bool)) == []
    with pytest.raises(ValueError, match="bitmaps"):
        masks_to_rle(np.zeros((4, 4), bool))


def test_reference_paste_refuses_a_negative_threshold_like_the_native_core():
    masks, boxes = np.zeros((1, 2, 2), np.float32), np.array([[0, 0, 4, 4]], np.float32)
    for threshold in (-0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="threshold must be a finite number >= 0"):
            postprocess.paste_masks(masks, boxes, (8, 8), threshold)
    assert not postprocess.paste_masks(masks, boxes, (8, 8), 0.0).any()
