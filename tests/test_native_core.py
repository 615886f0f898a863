"""The native runtime core (maskrt._core through maskrt.runtime.native_core): letterbox, mask
paste, label map, COCO RLE, overlay.

References, independent of the kernels:
  * letterbox / resize: OpenCV itself (cv2.resize INTER_LINEAR + cv2.copyMakeBorder) and the
    numpy/OpenCV reference runtime/letterbox.py; the native resize must equal cv2 bit for bit;
  * paste: the float64 loop mirror of torchvision's paste (tests/references.py), which the kernel
    must equal bit for bit, and runtime/postprocess.paste_masks (OpenCV float32 resize), equal
    except at pixels whose probability is within NEAR of the threshold;
  * RLE: pycocotools (encode, decode, area, iou);
  * label map, overlay, box outlines: numpy loops written from the documented rules, and
    cv2.rectangle for 1-pixel outlines.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_utils
from references import paste_masks_mirror, python_ticks_during

from maskrt.runtime import letterbox as ref_letterbox
from maskrt.runtime import native_core as nc
from maskrt.runtime import postprocess

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools

NEAR = 1e-5  # reference probabilities this close to the threshold may flip in float32 (OpenCV)


def test_native_core_is_built():
    # No silent fallback: the package build must have produced maskrt._core.
    assert nc.NATIVE_AVAILABLE, "maskrt._core is missing: rebuild the package"


# ============================================================================ inputs
def random_masks(rng: np.random.Generator, k: int, m: int) -> np.ndarray:
    """Half uniform noise, half smooth blobs (so the threshold cuts through gradients), plus a
    mask of exactly 0.5 (never foreground at threshold 0.5) when k >= 3."""
    masks = rng.random((k, m, m), dtype=np.float32)
    if m > 1:
        yy, xx = np.mgrid[0:m, 0:m] / (m - 1)
        for i in range(0, k, 2):
            cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.15, 0.5)
            masks[i] = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r)).astype(np.float32)
    if k >= 3:
        masks[2] = 0.5
    return masks


def random_boxes(rng: np.random.Generator, k: int, h: int, w: int) -> np.ndarray:
    """A mix: inside, partly outside, sub-pixel, degenerate (x2 < x1), whole frame, wholly
    outside, integer corners, far larger than the frame."""
    out = []
    for i in range(k):
        kind = i % 8
        if kind == 0:  # inside
            x1, y1 = rng.uniform(0, max(w - 2, 0.5)), rng.uniform(0, max(h - 2, 0.5))
            x2, y2 = rng.uniform(x1, w), rng.uniform(y1, h)
        elif kind == 1:  # partly outside on any side
            x1, y1 = rng.uniform(-0.5 * w, 0.6 * w), rng.uniform(-0.5 * h, 0.6 * h)
            x2, y2 = x1 + rng.uniform(0.3, 1.2) * w, y1 + rng.uniform(0.3, 1.2) * h
        elif kind == 2:  # smaller than a pixel
            x1, y1 = rng.uniform(0, w), rng.uniform(0, h)
            x2, y2 = x1 + rng.uniform(0, 0.9), y1 + rng.uniform(0, 0.9)
        elif kind == 3:  # degenerate
            x1, y1 = rng.uniform(0, w), rng.uniform(0, h)
            x2, y2 = x1 - rng.uniform(0, 3), y1 - rng.uniform(0, 3)
        elif kind == 4:  # the whole frame
            x1, y1, x2, y2 = 0.0, 0.0, float(w), float(h)
        elif kind == 5:  # wholly outside
            x1, y1 = w + rng.uniform(1, 10), rng.uniform(-h, h)
            x2, y2 = x1 + rng.uniform(1, 10), y1 + rng.uniform(1, 10)
        elif kind == 6:  # integer corners
            x1, y1 = float(rng.integers(0, w)), float(rng.integers(0, h))
            x2, y2 = x1 + float(rng.integers(1, w + 1)), y1 + float(rng.integers(1, h + 1))
        else:  # far larger than the frame
            x1, y1 = rng.uniform(-5 * w, 0), rng.uniform(-5 * h, 0)
            x2, y2 = rng.uniform(w, 6 * w), rng.uniform(h, 6 * h)
        out.append((x1, y1, x2, y2))
    return np.array(out, np.float32).reshape(k, 4)


def assert_matches_opencv_paste(got: np.ndarray, prob: np.ndarray, ref: np.ndarray, threshold: float = 0.5) -> None:
    """``got`` equals runtime/postprocess.paste_masks' ``ref`` except where the float64 probability is
    within NEAR of the threshold (OpenCV resizes in float32)."""
    differ = got != ref
    ambiguous = np.abs(prob - threshold) < NEAR
    bad = differ & ~ambiguous
    assert not bad.any(), f"{int(bad.sum())} pixel(s) differ from postprocess.paste_masks"
    assert differ.sum() <= max(4, got.size // 1000)


def first_wins(bitmaps: np.ndarray, labels: np.ndarray, dtype) -> np.ndarray:
    """Label map by a Python loop: each pixel the label of the first instance covering it."""
    out = np.zeros(bitmaps.shape[1:], dtype)
    for i in range(bitmaps.shape[0]):
        out[bitmaps[i] & (out == 0)] = labels[i]
    return out


# ============================================================================ letterbox / resize
RESIZE_SIZES = [
    ((480, 640), (384, 512)), ((720, 1280), (360, 640)), ((1080, 1920), (360, 640)),  # realistic
    ((720, 1280), (384, 683)), ((100, 100), (50, 50)),  # exact 2x: OpenCV's INTER_AREA fast path
    ((50, 50), (100, 100)), ((17, 33), (34, 66)),  # exact 2x upscale
    ((3, 5), (7, 9)), ((1, 1), (5, 5)), ((1, 7), (3, 2)), ((5, 1), (1, 3)), ((9, 9), (1, 1)),
    ((2, 3), (2, 300)), ((300, 2), (3, 2)), ((5, 7), (5, 7)),  # same size: a copy
]


@pytest.mark.parametrize("src,dst", RESIZE_SIZES)
def test_resize_linear_equals_opencv_bit_for_bit(src, dst):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (*src, 3), dtype=np.uint8)
    want = cv2.resize(img, (dst[1], dst[0]), interpolation=cv2.INTER_LINEAR)
    for threads in (1, 2):
        got = nc.resize_linear(img, dst, threads=threads)
        assert got.shape == want.shape
        # NOTE: exact, not within 1: the kernel reproduces OpenCV's fixed-point rounding.
        assert np.array_equal(got, want), f"max |diff| = {np.abs(got.astype(int) - want).max()}"


def test_resize_linear_random_sizes_equal_opencv():
    rng = np.random.default_rng(1)
    for _ in range(150):
        sh, sw, dh, dw = (int(v) for v in rng.integers(1, 90, 4))
        img = rng.integers(0, 256, (sh, sw, 3), dtype=np.uint8)
        want = cv2.resize(img, (dw, dh), interpolation=cv2.INTER_LINEAR)
        got = nc.resize_linear(img, (dh, dw), threads=1)
        assert np.array_equal(got, want), ((sh, sw), (dh, dw), int(np.abs(got.astype(int) - want).max()))


def test_resize_linear_extreme_values():
    # Saturated inputs: all 255, checkerboards of 0 / 255 (the int16 intermediate must not wrap).
    img = np.full((37, 53, 3), 255, np.uint8)
    img2 = ((np.indices((37, 53)).sum(0) % 2) * 255).astype(np.uint8)[..., None].repeat(3, 2)
    for im in (img, img2):
        for dst in ((20, 31), (80, 101), (37, 106)):
            want = cv2.resize(im, (dst[1], dst[0]), interpolation=cv2.INTER_LINEAR)
            assert np.array_equal(nc.resize_linear(im, dst), want)


LETTERBOX_CASES = [
    ((720, 1280), (384, 640), False), ((1080, 1920), (384, 640), False), ((480, 640), (384, 640), False),
    ((480, 640), (800, 1344), False),  # fits: copied, not enlarged
    ((480, 640), (800, 1344), True),  # upscale
    ((384, 640), (384, 640), False),  # already the input size
    ((1, 1), (64, 96), False), ((1, 1), (64, 96), True), ((333, 77), (128, 128), False),
    ((77, 333), (128, 128), True), ((5, 3000), (64, 64), False),  # clamps new_h to >= 1
]


@pytest.mark.parametrize("size,input_size,upscale", LETTERBOX_CASES)
def test_letterbox_equals_reference_and_opencv(size, input_size, upscale):
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    want = ref_letterbox.letterbox(img, input_size, upscale=upscale)
    out = np.full((*input_size, 3), 77, np.uint8)  # garbage: every byte must be overwritten
    got = nc.letterbox(img, input_size, upscale=upscale, out=out)
    assert got.image is out
    assert np.array_equal(got.image, want.image)
    assert got.scale == want.scale and got.pad == want.pad and got.resized == want.resized
    # Independently with OpenCV: resize (when the size changes) + copyMakeBorder with zeros.
    nh, nw = got.resized
    pic = img if (nh, nw) == size else cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    padded = cv2.copyMakeBorder(pic, 0, input_size[0] - nh, 0, input_size[1] - nw, cv2.BORDER_CONSTANT, value=0)
    assert np.array_equal(got.image, padded)
    # threads do not change a byte
    assert np.array_equal(nc.letterbox(img, input_size, upscale=upscale, threads=1).image,
                          nc.letterbox(img, input_size, upscale=upscale, threads=2).image)


def test_letterbox_into_batch_rows_strided_input_and_pad_value():
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, (600, 900, 3), dtype=np.uint8)
    crop = frame[50:530, 100:740]  # a strided view: rows 2700 bytes apart
    assert not crop.flags.c_contiguous
    batch = np.zeros((3, 256, 320, 3), np.uint8)
    lb = nc.letterbox(crop, out=batch[1], pad_value=114)
    assert lb.image.base is batch or lb.image is batch[1] or np.shares_memory(lb.image, batch)
    want = ref_letterbox.letterbox(np.ascontiguousarray(crop), (256, 320))
    nh, nw = want.resized
    assert lb.resized == (nh, nw)
    assert np.array_equal(batch[1, :nh, :nw], want.image[:nh, :nw])
    assert (batch[1, nh:] == 114).all() and (batch[1, :, nw:] == 114).all()
    assert not batch[0].any() and not batch[2].any()  # neighbours untouched


def test_letterbox_rejects_bad_arguments():
    img = np.zeros((10, 12, 3), np.uint8)
    with pytest.raises(ValueError, match="image must have dtype uint8"):
        nc.letterbox(img.astype(np.float32), (8, 8))
    with pytest.raises(ValueError, match=r"image must have shape \[H, W, 3\]"):
        nc.letterbox(np.zeros((10, 12, 4), np.uint8), (8, 8))
    with pytest.raises(ValueError, match="image must have shape"):
        nc.letterbox(np.zeros((10, 12), np.uint8), (8, 8))
    with pytest.raises(ValueError, match=r"image.shape\[0\]"):
        nc.letterbox(np.zeros((0, 12, 3), np.uint8), (8, 8))
    with pytest.raises(ValueError, match="image: expected a numpy array"):
        nc.letterbox([[1, 2, 3]], (8, 8))
    with pytest.raises(ValueError, match="packed pixels"):
        nc.letterbox(img[:, ::2], (8, 8))  # pixels not packed
    with pytest.raises(ValueError, match="packed pixels"):
        nc.letterbox(img[::-1], (8, 8))  # negative row stride
    with pytest.raises(ValueError, match="input_size"):
        nc.letterbox(img, (0, 8))
    with pytest.raises(ValueError, match="input_size: required"):
        nc.letterbox(img)
    with pytest.raises(ValueError, match="out: expected shape"):
        nc.letterbox(img, (8, 8), out=np.zeros((8, 9, 3), np.uint8))
    out = np.zeros((8, 8, 3), np.uint8)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out is read-only"):
        nc.letterbox(img, out=out)
    big = np.zeros((20, 20, 3), np.uint8)
    with pytest.raises(ValueError, match="out must not overlap image"):
        nc.letterbox(big[:10, :10], out=big[5:15, 5:15])
    with pytest.raises(ValueError, match="pad_value"):
        nc.letterbox(img, (8, 8), pad_value=256)
    with pytest.raises(ValueError, match="threads"):
        nc.letterbox(img, (8, 8), threads=10**6)


# ============================================================================ paste
PASTE_CASES = [(6, 28, 48, 64), (8, 28, 31, 17), (5, 1, 20, 24), (4, 3, 1, 1), (3, 7, 1, 40), (8, 5, 25, 1)]


@pytest.mark.parametrize("k,m,h,w", PASTE_CASES)
def test_paste_masks_equals_float64_mirror_and_opencv_reference(k, m, h, w):
    rng = np.random.default_rng(k * 1000 + m * 10 + h)
    masks, boxes = random_masks(rng, k, m), random_boxes(rng, k, h, w)
    prob = paste_masks_mirror(masks, boxes, (h, w))
    ref = postprocess.paste_masks(masks, boxes, (h, w))
    for threads in (1, 2):
        got = nc.paste_masks(masks, boxes, (h, w), threads=threads)
        assert got.dtype == bool and got.shape == (k, h, w)
        # NOTE: bit for bit: the kernel computes the mirror's float64 expression in its order.
        assert np.array_equal(got, prob > 0.5)
        assert_matches_opencv_paste(got, prob, ref)


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.9])
def test_paste_masks_other_thresholds(threshold):
    rng = np.random.default_rng(5)
    masks, boxes = random_masks(rng, 6, 28), random_boxes(rng, 6, 40, 50)
    prob = paste_masks_mirror(masks, boxes, (40, 50))
    got = nc.paste_masks(masks, boxes, (40, 50), threshold)
    assert np.array_equal(got, prob > threshold)


def test_paste_masks_bit_exact_at_the_threshold():
    # The strongest form of "bit for bit": with the threshold set to the mirror's own float64
    # probability p of a pixel, that pixel must be background (p > p is false), and with the
    # threshold one ulp below p it must be foreground. Any deviation of the kernel's arithmetic
    # from the mirror's (operation order, float32 intermediates, fused multiply-add) flips one.
    rng = np.random.default_rng(20)
    h, w = 23, 29
    masks, boxes = random_masks(rng, 8, 7), random_boxes(rng, 8, h, w)
    prob = paste_masks_mirror(masks, boxes, (h, w))
    inner = np.argwhere((prob > 0.01) & (prob < 0.99))
    picks = inner[rng.choice(len(inner), size=min(40, len(inner)), replace=False)]
    for i, y, x in picks:
        p = float(prob[i, y, x])
        one = (masks[i:i + 1], boxes[i:i + 1], (h, w))
        assert not nc.paste_masks(*one, p)[0, y, x]
        assert nc.paste_masks(*one, float(np.nextafter(p, 0.0)))[0, y, x]


def test_paste_box_expansion_is_float32():
    # torchvision expands boxes in float32; where float64 arithmetic would truncate to another
    # integer pixel, the kernel must follow float32 (the mirror's np.float32 scalars).
    rng = np.random.default_rng(21)
    m = 28
    n = 20000
    # Boxes whose expanded left/top edge x1 - d * (s - 1) / 2 lands within a few ulps of an
    # integer, where the truncation is decided by the last bits of the arithmetic.
    d = rng.uniform(1, 100, (n, 2))
    lo = (rng.integers(1, 200, (n, 2)) + d * ((m + 2) / m - 1) / 2 + rng.uniform(-2e-5, 2e-5, (n, 2)))
    lo = lo.astype(np.float32)
    cand = np.concatenate([lo, (lo + d).astype(np.float32)], 1)

    def expand(b, ftype, stype):
        s, half = stype((m + 2) / m), ftype(0.5)
        b = b.astype(ftype)
        wh, hh = ((b[:, 2] - b[:, 0]) * half * s).astype(ftype), ((b[:, 3] - b[:, 1]) * half * s).astype(ftype)
        xc, yc = (b[:, 2] + b[:, 0]) * half, (b[:, 3] + b[:, 1]) * half
        return np.trunc(np.stack([xc - wh, yc - hh, xc + wh, yc + hh], 1)).astype(np.int64)

    want = expand(cand, np.float32, np.float32)
    picked = []
    for ftype, stype in ((np.float64, np.float64), (np.float32, np.float64)):  # all float64; unrounded scale
        differs = (want != expand(cand, ftype, stype)).any(1)
        assert differs.sum() >= 4, f"no disagreement with {ftype.__name__}/{stype.__name__} found to test with"
        picked.append(cand[differs][:8])
    boxes = np.concatenate(picked)
    masks = np.ones((len(boxes), m, m), np.float32)  # foreground = the whole expanded box interior
    prob = paste_masks_mirror(masks, boxes, (320, 320))
    assert np.array_equal(nc.paste_masks(masks, boxes, (320, 320)), prob > 0.5)


def test_paste_masks_zero_detections_and_dtypes():
    for masks in (np.zeros((0, 28, 28), np.float32), np.zeros((0, 0, 0), np.float32)):
        got = nc.paste_masks(masks, np.zeros((0, 4), np.float32), (7, 9))
        assert got.shape == (0, 7, 9) and got.dtype == bool
        assert nc.paste_to_rle(masks, np.zeros((0, 4)), (7, 9)) == []
        lab = nc.paste_label_map(masks, np.zeros((0, 4)), (7, 9))
        assert lab.shape == (7, 9) and lab.dtype == np.uint16 and not lab.any()
    # float64 inputs are converted to float32, as the numpy reference does
    rng = np.random.default_rng(6)
    masks, boxes = random_masks(rng, 4, 14), random_boxes(rng, 4, 30, 30)
    assert np.array_equal(nc.paste_masks(masks.astype(np.float64), boxes.astype(np.float64), (30, 30)),
                          nc.paste_masks(masks, boxes, (30, 30)))


def test_paste_masks_large_frame_threads_agree_and_match_reference():
    # Realistic sizes: 1280 x 720 with 30 instances of realistic boxes.
    rng = np.random.default_rng(7)
    h, w, k = 720, 1280, 30
    masks = random_masks(rng, k, 28)
    xy = rng.uniform([0, 0], [w - 20, h - 20], (k, 2))
    wh = np.exp(rng.uniform(np.log(8), np.log(500), (k, 2)))
    boxes = np.concatenate([xy, np.minimum(xy + wh, [w, h])], 1).astype(np.float32)
    one = nc.paste_masks(masks, boxes, (h, w), threads=1)
    two = nc.paste_masks(masks, boxes, (h, w), threads=2)
    assert np.array_equal(one, two)
    ref = postprocess.paste_masks(masks, boxes, (h, w))
    # Ambiguity can only be judged with probabilities: every differing pixel must be one the
    # float64 mirror puts within NEAR of 0.5 (mirror evaluated at those pixels only).
    diff = np.argwhere(one != ref)
    assert len(diff) <= one.size // 100000
    for i, y, x in diff:
        sub = paste_masks_mirror(masks[i:i + 1], boxes[i:i + 1], (h, w))[0, y, x]
        assert abs(sub - 0.5) < NEAR


def test_paste_masks_rejects_bad_arguments():
    masks, boxes = np.zeros((2, 5, 5), np.float32), np.zeros((2, 4), np.float32)
    with pytest.raises(ValueError, match=r"masks must have shape \[K, M, M\] \(square"):
        nc.paste_masks(np.zeros((2, 5, 4), np.float32), boxes, (8, 8))
    with pytest.raises(ValueError, match="masks must have shape"):
        nc.paste_masks(np.zeros((5, 5), np.float32), np.zeros((1, 4)), (8, 8))
    with pytest.raises(ValueError, match=r"boxes must have shape \[K, 4\] = \[2, 4\]"):
        nc.paste_masks(masks, np.zeros((3, 4), np.float32), (8, 8))
    bad = masks.copy()
    bad[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="masks contains NaN or inf"):
        nc.paste_masks(bad, boxes, (8, 8))
    bad_boxes = boxes.copy()
    bad_boxes[0, 2] = np.inf
    with pytest.raises(ValueError, match="boxes contains NaN or inf"):
        nc.paste_masks(masks, bad_boxes, (8, 8))
    with pytest.raises(ValueError, match="image_size"):
        nc.paste_masks(masks, boxes, (0, 8))
    with pytest.raises(ValueError, match="image_size"):
        nc.paste_masks(masks, boxes, (8,))
    with pytest.raises(ValueError, match="threshold must be a finite number"):
        nc.paste_masks(masks, boxes, (8, 8), float("nan"))
    with pytest.raises(ValueError, match=r"masks.shape\[1\] \(M\)"):
        nc.paste_masks(np.zeros((2, 0, 0), np.float32), boxes, (8, 8))
    with pytest.raises(ValueError, match="masks: cannot be read"):
        nc.paste_masks("abc", boxes, (8, 8))
    with pytest.raises(ValueError, match="H \\* W must be < 2\\^32"):
        nc.paste_to_rle(masks, boxes, (70000, 70000))


# ============================================================================ label map
@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_paste_label_map_first_instance_wins(dtype):
    rng = np.random.default_rng(8)
    k, h, w = 9, 37, 45
    masks, boxes = random_masks(rng, k, 10), random_boxes(rng, k, h, w)
    boxes[:, :2] = np.minimum(boxes[:, :2], 20)  # make them overlap
    bitmaps = paste_masks_mirror(masks, boxes, (h, w)) > 0.5
    labels = rng.integers(1, 60000 if dtype == np.uint16 else 2**31 - 1, k)
    for threads in (1, 2):
        got = nc.paste_label_map(masks, boxes, (h, w), labels, dtype=dtype, threads=threads)
        assert got.dtype == dtype and got.shape == (h, w)
        assert np.array_equal(got, first_wins(bitmaps, labels, dtype))
    default = nc.paste_label_map(masks, boxes, (h, w), dtype=dtype)
    assert np.array_equal(default, first_wins(bitmaps, np.arange(1, k + 1), dtype))


def test_paste_label_map_rejects_bad_labels():
    masks, boxes = np.full((2, 4, 4), 0.9, np.float32), np.array([[0, 0, 4, 4], [1, 1, 3, 3]], np.float32)
    with pytest.raises(ValueError, match=r"labels: values must be in \[1, 65535\]"):
        nc.paste_label_map(masks, boxes, (8, 8), [1, 0])
    with pytest.raises(ValueError, match="labels: values must be in"):
        nc.paste_label_map(masks, boxes, (8, 8), [1, 70000])
    with pytest.raises(ValueError, match="labels must have shape"):
        nc.paste_label_map(masks, boxes, (8, 8), [1, 2, 3])
    with pytest.raises(ValueError, match="labels: expected integers"):
        nc.paste_label_map(masks, boxes, (8, 8), [1.0, 2.0])
    with pytest.raises(ValueError, match="dtype: expected uint16 or int32"):
        nc.paste_label_map(masks, boxes, (8, 8), dtype=np.int64)


# ============================================================================ RLE
def coco_encode(bitmaps: np.ndarray) -> list[dict]:
    return mask_utils.encode(np.asfortranarray(bitmaps.transpose(1, 2, 0).astype(np.uint8)))


def test_rle_encode_equals_pycocotools_on_edge_inputs():
    rng = np.random.default_rng(9)
    cases = [
        np.zeros((1, 5, 7), bool), np.ones((1, 5, 7), bool), np.zeros((1, 1, 1), bool), np.ones((1, 1, 1), bool),
        rng.random((4, 23, 19)) > 0.5,  # noise: many runs, negative differences
        rng.random((3, 40, 300)) > 0.97,  # sparse
        np.eye(31, dtype=bool)[None],
    ]
    first = np.zeros((1, 6, 6), bool)
    first[0, 0, 0] = True  # a first count of 0
    last = np.zeros((1, 6, 6), bool)
    last[0, -1, -1] = True
    cases += [first, last]
    long_runs = np.zeros((2, 700, 900), bool)  # counts needing several 5-bit groups
    long_runs[0, 100:650, 30:870] = True
    long_runs[1, :, 450:] = True
    cases.append(long_runs)
    for b in cases:
        want = coco_encode(b)
        for threads in (1, 2):
            got = nc.rle_encode(b, threads=threads)
            assert [g["counts"] for g in got] == [x["counts"] for x in want]
            assert all(g["size"] == list(b.shape[1:]) for g in got)
        assert np.array_equal(mask_utils.decode(got).transpose(2, 0, 1), b)
        assert np.array_equal(mask_utils.area(got), b.sum((1, 2)))


def test_rle_encode_dtypes_and_layouts():
    rng = np.random.default_rng(10)
    b = rng.random((3, 17, 29)) > 0.6
    want = [x["counts"] for x in coco_encode(b)]
    as_u8 = b.astype(np.uint8) * 7  # any nonzero is foreground
    assert [g["counts"] for g in nc.rle_encode(as_u8)] == want
    # any nonzero byte value, e.g. 255 and 128 next to 0 (the 8-bytes-at-a-time scan must not carry)
    varied = np.where(b, rng.choice(np.array([1, 2, 127, 128, 129, 254, 255], np.uint8), b.shape), 0).astype(np.uint8)
    assert [g["counts"] for g in nc.rle_encode(varied)] == want
    assert [g["counts"] for g in nc.rle_encode(b.astype(np.int64))] == want
    fortran = np.asfortranarray(b)
    assert [g["counts"] for g in nc.rle_encode(fortran)] == want
    assert nc.rle_encode(np.zeros((0, 4, 4), bool)) == []
    with pytest.raises(ValueError, match="bitmaps: expected bool or integer"):
        nc.rle_encode(b.astype(np.float32))
    with pytest.raises(ValueError, match=r"bitmaps must have shape \[K, H, W\]"):
        nc.rle_encode(b[0])
    with pytest.raises(ValueError, match=r"bitmaps.shape\[1\]"):
        nc.rle_encode(np.zeros((1, 0, 4), bool))


def test_rle_iou_matches_pycocotools():
    rng = np.random.default_rng(11)
    b = np.zeros((4, 50, 60), bool)
    for i in range(4):
        y, x = rng.integers(0, 30, 2)
        b[i, y:y + 20, x:x + 25] = rng.random((20, 25)) > 0.2
    got, want = nc.rle_encode(b), coco_encode(b)
    crowd = [0] * 4
    np.testing.assert_array_equal(mask_utils.iou(got, got, crowd), mask_utils.iou(want, want, crowd))
    inter = (b[:, None] & b[None]).sum((2, 3))
    union = (b[:, None] | b[None]).sum((2, 3))
    np.testing.assert_allclose(mask_utils.iou(got, got, crowd), inter / union, rtol=1e-12)


@pytest.mark.parametrize("k,m,h,w", PASTE_CASES)
def test_paste_to_rle_equals_encoded_paste(k, m, h, w):
    rng = np.random.default_rng(12 + k + h)
    masks, boxes = random_masks(rng, k, m), random_boxes(rng, k, h, w)
    bitmaps = paste_masks_mirror(masks, boxes, (h, w)) > 0.5
    want = [x["counts"] for x in coco_encode(bitmaps)]
    for threads in (1, 2):
        got = nc.paste_to_rle(masks, boxes, (h, w), threads=threads)
        assert [g["counts"] for g in got] == want
        assert all(g["size"] == [h, w] for g in got)
    assert np.array_equal(mask_utils.decode(got).transpose(2, 0, 1), bitmaps)


@st.composite
def paste_inputs(draw):
    k = draw(st.integers(0, 4))
    m = draw(st.integers(1, 6))
    h = draw(st.integers(1, 20))
    w = draw(st.integers(1, 20))
    coord = st.floats(-15, 35, width=32, allow_nan=False)
    boxes = np.array(draw(st.lists(st.tuples(coord, coord, coord, coord), min_size=k, max_size=k)),
                     np.float32).reshape(k, 4)
    values = st.sampled_from([0.0, 0.25, 0.5, 0.5000001, 0.75, 1.0]) | st.floats(0, 1, width=32)
    masks = np.array(draw(st.lists(values, min_size=k * m * m, max_size=k * m * m)), np.float32).reshape(k, m, m)
    threshold = draw(st.sampled_from([0.5, 0.25, 0.0]))
    return masks, boxes, (h, w), threshold


@settings(max_examples=60, deadline=None, database=None)  # bounded and fast; no example database on disk
@given(paste_inputs())
def test_property_paste_and_rle_round_trip(case):
    masks, boxes, size, threshold = case
    want = paste_masks_mirror(masks, boxes, size) > threshold
    got = nc.paste_masks(masks, boxes, size, threshold, threads=2)
    assert np.array_equal(got, want)
    rles = nc.paste_to_rle(masks, boxes, size, threshold, threads=2)
    assert [r["counts"] for r in rles] == [r["counts"] for r in nc.rle_encode(got, threads=1)]
    if len(rles):
        assert np.array_equal(mask_utils.decode(rles).transpose(2, 0, 1), got)
        assert np.array_equal(mask_utils.area(rles), got.sum((1, 2)))


# ============================================================================ overlay
def blend_ref(image: np.ndarray, lab: np.ndarray, colors: np.ndarray, alpha: float) -> np.ndarray:
    a = round(alpha * 256)
    out = image.astype(np.int64)
    sel = lab > 0
    c = colors[lab[sel] - 1].astype(np.int64)
    out[sel] = (out[sel] * (256 - a) + c * a + 128) >> 8
    return out.astype(np.uint8)


def outline_ref(image: np.ndarray, boxes: np.ndarray, colors: np.ndarray, t: int) -> np.ndarray:
    out = image.copy()
    h, w = out.shape[:2]
    for i in range(len(boxes) - 1, -1, -1):
        x0, y0 = int(np.floor(boxes[i, 0])), int(np.floor(boxes[i, 1]))
        x1 = max(x0, int(np.ceil(boxes[i, 2])) - 1)
        y1 = max(y0, int(np.ceil(boxes[i, 3])) - 1)
        for y in range(max(y0, 0), min(y1, h - 1) + 1):
            for x in range(max(x0, 0), min(x1, w - 1) + 1):
                if y <= y0 + t - 1 or y >= y1 - t + 1 or x <= x0 + t - 1 or x >= x1 - t + 1:
                    out[y, x] = colors[i]
    return out


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_overlay_label_map_and_bitmaps_equal_numpy_blend(alpha):
    rng = np.random.default_rng(13)
    k, h, w = 7, 41, 57
    masks, boxes = random_masks(rng, k, 12), random_boxes(rng, k, h, w)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    colors = rng.integers(0, 256, (k, 3), dtype=np.uint8)
    bitmaps = nc.paste_masks(masks, boxes, (h, w))
    lab = first_wins(bitmaps, np.arange(1, k + 1), np.int32)
    want = blend_ref(image, lab, colors, alpha)
    for threads in (1, 2):
        a = nc.draw_overlay(image.copy(), bitmaps, colors=colors, alpha=alpha, threads=threads)
        b = nc.draw_overlay(image.copy(), label_map=lab, colors=colors, alpha=alpha, threads=threads)
        c = nc.draw_overlay(image.copy(), label_map=nc.paste_label_map(masks, boxes, (h, w)), colors=colors,
                            alpha=alpha, threads=threads)
        assert np.array_equal(a, want) and np.array_equal(b, want) and np.array_equal(c, want)
    if alpha == 0.0:
        assert np.array_equal(want, image)


@pytest.mark.parametrize("thickness", [1, 2, 5])
def test_draw_boxes_outline_rule(thickness):
    rng = np.random.default_rng(14)
    h, w = 50, 70
    boxes = random_boxes(rng, 8, h, w)
    colors = rng.integers(0, 256, (8, 3), dtype=np.uint8)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    got = nc.draw_overlay(image.copy(), boxes=boxes, colors=colors, thickness=thickness)
    assert np.array_equal(got, outline_ref(image, boxes, colors, thickness))


def test_draw_boxes_one_pixel_equals_cv2_rectangle():
    rng = np.random.default_rng(15)
    image = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    boxes = np.array([[3, 4, 20, 30], [10, 2, 59, 39], [0, 0, 60, 40]], np.float32)
    colors = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    want = image.copy()
    for i in (2, 1, 0):  # last first
        x1, y1, x2, y2 = (int(v) for v in boxes[i])
        cv2.rectangle(want, (x1, y1), (x2 - 1, y2 - 1), tuple(int(c) for c in colors[i]), 1)
    got = nc.draw_overlay(image.copy(), boxes=boxes, colors=colors, thickness=1)
    assert np.array_equal(got, want)


def test_draw_overlay_default_colours_masks_and_boxes_together():
    rng = np.random.default_rng(16)
    h, w, k = 30, 40, 4
    masks, boxes = random_masks(rng, k, 8), random_boxes(rng, k, h, w)
    classes = np.array([3, 1, 3, 22])
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    bitmaps = nc.paste_masks(masks, boxes, (h, w))
    colors = nc.palette_colors(classes)
    assert np.array_equal(colors[0], colors[2]) and colors.dtype == np.uint8 and colors.shape == (k, 3)
    got = nc.draw_overlay(image.copy(), bitmaps, boxes, classes=classes, alpha=0.4, thickness=2)
    lab = first_wins(bitmaps, np.arange(1, k + 1), np.int32)
    want = outline_ref(blend_ref(image, lab, colors, 0.4), boxes, colors, 2)
    assert np.array_equal(got, want)
    # draw_boxes=False leaves the outlines out; text goes on afterwards with cv2.putText
    no_boxes = nc.draw_overlay(image.copy(), bitmaps, boxes, classes=classes, alpha=0.4, draw_boxes=False)
    assert np.array_equal(no_boxes, blend_ref(image, lab, colors, 0.4))
    labelled = nc.draw_labels(no_boxes.copy(), boxes, [f"c{c}" for c in classes])
    assert labelled.shape == image.shape


def test_draw_overlay_rejects_bad_arguments():
    image = np.zeros((10, 12, 3), np.uint8)
    bitmaps = np.zeros((2, 10, 12), bool)
    colors = np.zeros((2, 3), np.uint8)
    with pytest.raises(ValueError, match="give one of them"):
        nc.draw_overlay(image, bitmaps, label_map=np.zeros((10, 12), np.uint16))
    with pytest.raises(ValueError, match="instance counts disagree"):
        nc.draw_overlay(image, bitmaps, colors=np.zeros((3, 3), np.uint8))
    with pytest.raises(ValueError, match=r"masks must have shape \[K, H, W\]"):
        nc.draw_overlay(image, np.zeros((2, 10, 11), bool), colors=colors)
    with pytest.raises(ValueError, match=r"label_map values must be in \[0, K = 2\]"):
        nc.draw_overlay(image, label_map=np.full((10, 12), 3, np.uint16), colors=colors)
    with pytest.raises(ValueError, match="label_map must have dtype uint16 or int32"):
        nc.draw_overlay(image, label_map=np.zeros((10, 12), np.int64), colors=colors)
    with pytest.raises(ValueError, match="alpha must be a finite number"):
        nc.draw_overlay(image, bitmaps, colors=colors, alpha=1.5)
    with pytest.raises(ValueError, match="colors must have dtype uint8"):
        nc.draw_overlay(image, bitmaps, colors=colors.astype(np.int32))
    with pytest.raises(ValueError, match="thickness"):
        nc.draw_overlay(image, boxes=np.zeros((2, 4), np.float32), colors=colors, thickness=0)
    with pytest.raises(ValueError, match="boxes contains NaN or inf"):
        nc.draw_overlay(image, boxes=np.full((2, 4), np.nan, np.float32), colors=colors)
    ro = image.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="image is read-only"):
        nc.draw_overlay(ro, bitmaps, colors=colors)


# ============================================================================ GIL, availability
def test_kernels_release_the_gil():
    # While one long native call runs in a worker thread, the main thread keeps executing Python
    # (with the GIL held through the call it could not advance until the call returned).
    rng = np.random.default_rng(17)
    k = 24
    masks = random_masks(rng, k, 28)
    boxes = np.tile(np.array([[-100, -100, 2000, 1200]], np.float32), (k, 1))
    inside = python_ticks_during(lambda: nc.paste_to_rle(masks, boxes, (1080, 1920), threads=1))
    assert inside > 100, f"main thread stalled during the native call ({inside} ticks)"


def test_missing_native_module_raises_on_use(monkeypatch):
    monkeypatch.setattr(nc, "_core", None)
    monkeypatch.setattr(nc, "_IMPORT_ERROR", ImportError("simulated"))
    with pytest.raises(nc.NativeCoreUnavailableError, match="maskrt._core is not available") as info:
        nc.paste_masks(np.zeros((0, 28, 28), np.float32), np.zeros((0, 4), np.float32), (4, 4))
    assert isinstance(info.value, ImportError)
    with pytest.raises(ImportError):
        nc.letterbox(np.zeros((4, 4, 3), np.uint8), (4, 4))
