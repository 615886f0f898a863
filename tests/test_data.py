"""Data: the synthetic shapes generator, the COCO loader and the joint transforms.

References are independent of the code under test where it matters: masks in the hand-written
COCO file are built as plain arrays (run lengths counted by a Python loop), box/mask agreement
is checked with numpy, and FPN levels are recomputed from the formula.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from maskrt.train.data import synthetic
from maskrt.train.data.coco import CocoInstances, collate
from maskrt.train.data.transforms import (
    Compose,
    RandomHorizontalFlip,
    ResizeShortestSide,
    hflip,
    resize,
    resized_shape,
)

# pycocotools' decode (used here only as a reference) warns under NumPy 2 on every call.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


# ----------------------------------------------------------------------------- helpers
def tight_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x1, y1, x2, y2) pixel-edge box of a 2-D mask, or None when empty."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def runs_column_major(mask: np.ndarray) -> list[int]:
    """COCO uncompressed RLE counts of a 2-D 0/1 mask, by a plain loop (independent reference)."""
    counts, value, run = [], 0, 0
    for px in mask.flatten(order="F"):
        if px != value:
            counts.append(run)
            value, run = px, 0
        run += 1
    counts.append(run)
    return counts


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def fpn_level_reference(area: float) -> int:
    return min(max(math.floor(4 + math.log2(math.sqrt(area) / 224 + 1e-6)), 2), 5)


# ----------------------------------------------------------------------------- synthetic
@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """A few dozen images; 448 px so that instances of 300+ px fit (levels P2..P4 occur)."""
    root = tmp_path_factory.mktemp("synth")
    summary = synthetic.generate(
        root, 36, 4, seed=0, image_size=(448, 448), max_instance=400, progress=False
    )
    return root, summary


def test_synthetic_is_deterministic(tmp_path):
    kw = dict(n_train=3, n_val=2, image_size=(96, 128), max_instance=80, progress=False)
    synthetic.generate(tmp_path / "a", seed=7, **kw)
    synthetic.generate(tmp_path / "b", seed=7, **kw)
    synthetic.generate(tmp_path / "c", seed=8, **kw)
    a, b, c = files_of(tmp_path / "a"), files_of(tmp_path / "b"), files_of(tmp_path / "c")
    assert sorted(a) == [
        "annotations/instances_train.json", "annotations/instances_val.json",
        "train/000000.png", "train/000001.png", "train/000002.png", "val/000000.png", "val/000001.png",
    ]
    assert a == b
    assert sorted(c) == sorted(a)
    assert all(a[k] != c[k] for k in a)


def test_synthetic_image_does_not_depend_on_split_length(tmp_path):
    kw = dict(n_val=0, seed=1, image_size=(64, 64), max_instance=50, progress=False)
    synthetic.generate(tmp_path / "short", n_train=1, **kw)
    synthetic.generate(tmp_path / "long", n_train=3, **kw)
    assert (tmp_path / "short/train/000000.png").read_bytes() == (tmp_path / "long/train/000000.png").read_bytes()


def test_synthetic_is_valid_coco_with_consistent_masks(synth):
    root, summary = synth
    levels, classes, n_total = set(), set(), 0
    for split in ("train", "val"):
        coco = COCO(str(root / "annotations" / f"instances_{split}.json"))
        cat_ids = sorted(coco.getCatIds())
        assert cat_ids != list(range(1, len(cat_ids) + 1)), "category ids should not be contiguous"
        assert len(coco.getImgIds()) == summary["splits"][split]["images"]
        for img in coco.loadImgs(coco.getImgIds()):
            image = cv2.imread(str(root / split / img["file_name"]), cv2.IMREAD_UNCHANGED)
            assert image.shape == (img["height"], img["width"], 3) and image.dtype == np.uint8
            owner = np.zeros(image.shape[:2], np.int32)
            for ann in coco.loadAnns(coco.getAnnIds(imgIds=img["id"])):
                assert isinstance(ann["segmentation"]["counts"], str)
                assert ann["iscrowd"] == 0
                m = coco.annToMask(ann)
                assert m.shape == image.shape[:2]
                x1, y1, x2, y2 = tight_box(m)
                assert ann["bbox"] == [x1, y1, x2 - x1, y2 - y1]
                assert ann["area"] == int(m.sum()) == int(mask_utils.area(ann["segmentation"]))
                # Occlusion: visible masks of one image never overlap.
                assert not (owner[m > 0]).any()
                owner[m > 0] = ann["id"]
                levels.add(fpn_level_reference(ann["area"]))
                classes.add(ann["category_id"])
                n_total += 1
    assert n_total == summary["instances"]
    assert len(classes) >= 5
    assert len(levels) >= 3, levels
    assert sorted(k for k, v in summary["fpn_levels"].items() if v) == sorted(levels)
    assert sum(summary["per_class"].values()) == n_total


def test_fpn_level_rule():
    for area, level in [(1, 2), (111.9**2, 2), (112**2, 3), (224**2, 4), (447**2, 4), (448**2, 5), (1e7, 5)]:
        assert synthetic.fpn_level(area) == level == fpn_level_reference(area)


def test_synthetic_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="min_instance"):
        synthetic.generate(tmp_path, 1, 0, min_instance=50, max_instance=10, progress=False)
    with pytest.raises(ValueError, match="counts"):
        synthetic.generate(tmp_path, -1, 0, progress=False)


def test_synth_cli_hooks(tmp_path, capsys):
    parser = synthetic.add_synth_arguments(argparse.ArgumentParser())
    args = parser.parse_args(
        ["--out-dir", str(tmp_path / "d"), "--train", "2", "--val", "1", "--seed", "3",
         "--image-size", "64", "80", "--max-instance", "40", "--no-progress"]
    )
    assert synthetic.run_synth(args) == 0
    assert "train: 2 images" in capsys.readouterr().out
    assert cv2.imread(str(tmp_path / "d/val/000000.png")).shape == (64, 80, 3)
    bad = parser.parse_args(["--out-dir", str(tmp_path / "e"), "--train", "-1"])
    assert synthetic.run_synth(bad) == 2
    assert "error" in capsys.readouterr().err


def test_loader_on_synthetic(synth):
    root, _ = synth
    ds = CocoInstances(root / "annotations/instances_train.json", root / "train")
    assert len(ds) == 36 and ds.skipped == {} and ds.num_crowd == 0
    assert ds.class_names == ("__background__", "circle", "rectangle", "triangle", "ellipse", "star", "cross")
    assert ds.label_to_cat_id == {1: 1, 2: 2, 3: 3, 4: 5, 5: 7, 6: 11}
    assert ds.cat_id_to_label == {v: k for k, v in ds.label_to_cat_id.items()}
    for i in range(3):
        image, t = ds[i]
        assert image.dtype == torch.uint8 and image.shape == (448, 448, 3)
        n = len(t["labels"])
        assert t["boxes"].shape == (n, 4) and t["masks"].shape == (n, 448, 448)
        for box, m in zip(t["boxes"].tolist(), t["masks"].numpy(), strict=True):
            assert tuple(box) == tight_box(m)
    images, targets = collate([ds[0], ds[1]])
    assert len(images) == 2 and targets[1]["image_id"] == ds.ids[1]


# ----------------------------------------------------------------------------- hand-written COCO
H, W = 12, 16


def _poly_mask(polys: list[list[float]]) -> np.ndarray:
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polys, H, W)))


@pytest.fixture
def coco_dir(tmp_path):
    """Two tiny images; image 1 has polygon, uncompressed-RLE, compressed-RLE and crowd instances,
    image 2 has none. Category ids 4 and 9 (labels 2 and 1 after remapping by sorted id)."""
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(tmp_path / name), rng.integers(0, 256, (H, W, 3), dtype=np.uint8))

    uncompressed = np.zeros((H, W), np.uint8)
    uncompressed[0:4, 10:16] = 1  # touches the right border
    uncompressed[2, 9] = 1
    compressed = np.zeros((H, W), np.uint8)
    compressed[7:12, 0:3] = 1
    compressed[9, 3:6] = 1
    crowd = np.zeros((H, W), np.uint8)
    crowd[5:8, 8:14] = 1
    polys = [[1.0, 1.0, 6.0, 1.0, 6.0, 5.0, 1.0, 5.0], [7.5, 6.0, 9.5, 9.5, 5.5, 9.5]]

    rle_c = mask_utils.encode(np.asfortranarray(compressed))
    anns = [
        {"id": 10, "image_id": 1, "category_id": 9, "segmentation": polys, "bbox": [1, 1, 8.5, 8.5],
         "area": 30.0, "iscrowd": 0},
        {"id": 11, "image_id": 1, "category_id": 4,
         "segmentation": {"size": [H, W], "counts": runs_column_major(uncompressed)},
         "bbox": [9, 0, 7, 4], "area": float(uncompressed.sum()), "iscrowd": 0},
        {"id": 12, "image_id": 1, "category_id": 9,
         "segmentation": {"size": [H, W], "counts": rle_c["counts"].decode("ascii")},
         "bbox": [0, 7, 6, 5], "iscrowd": 0},
        {"id": 13, "image_id": 1, "category_id": 4,
         "segmentation": {"size": [H, W], "counts": runs_column_major(crowd)},
         "bbox": [8, 5, 6, 3], "area": 18.0, "iscrowd": 1},
    ]
    data = {
        "images": [
            {"id": 1, "file_name": "a.png", "height": H, "width": W},
            {"id": 2, "file_name": "b.png", "height": H, "width": W},
        ],
        "annotations": anns,
        "categories": [{"id": 9, "name": "nine"}, {"id": 4, "name": "four"}],
    }
    expected = {
        "polygon": _poly_mask(polys),
        "uncompressed": uncompressed,
        "compressed": compressed,
        "crowd": crowd,
    }
    return tmp_path, data, expected


def _write(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_loader_hand_written_coco(coco_dir, caplog):
    root, data, expected = coco_dir
    ann_file = _write(root / "ann.json", data)
    with caplog.at_level(logging.WARNING):
        ds = CocoInstances(ann_file, root)
    assert not caplog.records  # nothing skipped, crowd is only reported at INFO
    assert ds.skipped == {} and ds.num_crowd == 1
    assert ds.class_names == ("__background__", "four", "nine")
    assert ds.cat_id_to_label == {4: 1, 9: 2} and ds.label_to_cat_id == {1: 4, 2: 9}
    assert len(ds) == 2 and ds.ids == [1, 2]

    image, t = ds[0]
    ref = cv2.imread(str(root / "a.png"))
    assert image.dtype == torch.uint8 and np.array_equal(image.numpy(), ref)
    assert t["image_id"] == 1 and t["orig_size"] == (H, W)
    assert t["labels"].dtype == torch.int64 and t["labels"].tolist() == [2, 1, 2]
    assert t["masks"].dtype == torch.uint8 and t["masks"].shape == (3, H, W)
    masks = t["masks"].numpy()
    np.testing.assert_array_equal(masks[0], expected["polygon"])
    np.testing.assert_array_equal(masks[1], expected["uncompressed"])
    np.testing.assert_array_equal(masks[2], expected["compressed"])
    # The polygon reference is sane: the rectangle part covers its interior pixels.
    assert expected["polygon"][2:4, 2:5].all() and expected["polygon"][0].sum() == 0
    assert t["boxes"].dtype == torch.float32
    assert t["boxes"].tolist() == [[1, 1, 9.5, 9.5], [9, 0, 16, 4], [0, 7, 6, 12]]
    assert t["iscrowd"].tolist() == [0, 0, 0]

    image2, t2 = ds[1]
    assert image2.shape == (H, W, 3)
    assert t2["boxes"].shape == (0, 4) and t2["labels"].shape == (0,) and t2["masks"].shape == (0, H, W)

    # The cleaned COCO keeps the crowd region for evaluation.
    assert sorted(ds.coco.getAnnIds()) == [10, 11, 12, 13]


def test_loader_keep_crowd(coco_dir, caplog):
    root, data, expected = coco_dir
    with caplog.at_level(logging.INFO):
        ds = CocoInstances(_write(root / "ann.json", data), root, keep_crowd=True)
    assert "crowd" in caplog.text
    _, t = ds[0]
    assert t["iscrowd"].tolist() == [0, 0, 0, 1]
    assert t["labels"].tolist() == [2, 1, 2, 1]
    np.testing.assert_array_equal(t["masks"][3].numpy(), expected["crowd"])


def test_loader_malformed_json(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [}')
    with pytest.raises(ValueError, match=r"bad\.json.*malformed JSON"):
        CocoInstances(bad, tmp_path)
    with pytest.raises(ValueError, match="not found"):
        CocoInstances(tmp_path / "absent.json", tmp_path)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("categories"), "missing required key 'categories'"),
        (lambda d: d["images"][0].pop("height"), r"images\[0\] is missing required key 'height'"),
        (lambda d: d["annotations"][1].pop("category_id"), r"annotations\[1\] is missing required key"),
        (lambda d: d["images"].append(dict(d["images"][0])), "duplicate images id"),
        (lambda d: d.__setitem__("annotations", {}), "'annotations' must be a list"),
    ],
)
def test_loader_missing_keys(coco_dir, mutate, message):
    root, data, _ = coco_dir
    mutate(data)
    with pytest.raises(ValueError, match=r"ann\.json: " + message):
        CocoInstances(_write(root / "ann.json", data), root)


def test_loader_missing_images(coco_dir):
    root, data, _ = coco_dir
    data["images"] += [
        {"id": 100 + i, "file_name": f"gone{i}.png", "height": H, "width": W} for i in range(7)
    ]
    with pytest.raises(ValueError, match=r"7 of 9 image file\(s\) missing.*gone0\.png, gone1\.png.*2 more"):
        CocoInstances(_write(root / "ann.json", data), root)


def test_loader_skips_invalid_annotations(coco_dir, caplog):
    root, data, expected = coco_dir
    base = data["annotations"][0]
    bad = [
        {**base, "id": 20, "segmentation": [[1, 1, 5, 5]]},  # 2 points
        {**base, "id": 21, "segmentation": [[1, 1, 5, 5, 3]]},  # odd coordinate count
        {**base, "id": 22, "bbox": [1, 1, 0, 4]},  # zero width
        {**base, "id": 23, "bbox": [1, 1, 4, -2]},  # negative height
        {**base, "id": 24, "category_id": 5},  # unknown category
        {**base, "id": 25, "segmentation": []},  # empty
        {**base, "id": 26, "segmentation": {"size": [H, W], "counts": [H * W]}},  # all background
        {**base, "id": 27, "segmentation": {"size": [H, W], "counts": [3, 4]}},  # runs don't cover the image
        {**base, "id": 28, "segmentation": {"size": [H, W], "counts": "%%%"}},  # corrupt string
        {**base, "id": 29, "segmentation": {"size": [H + 1, W], "counts": [(H + 1) * W]}},
        {**base, "id": 30, "image_id": 77},
        {**base, "id": 10},  # duplicate id
        # Kept: the 2-point polygon is dropped, the triangle stays.
        {**base, "id": 31, "segmentation": [[0, 0, 3, 3], [2.0, 2.0, 8.0, 2.0, 2.0, 8.0]]},
    ]
    data["annotations"] += bad
    with caplog.at_level(logging.WARNING):
        ds = CocoInstances(_write(root / "ann.json", data), root)
    assert ds.skipped == {
        "polygon with < 3 points": 2,
        "zero-area or negative-size box": 2,
        "unknown category id": 1,
        "empty segmentation": 2,
        "malformed segmentation": 2,
        "RLE size differs from image size": 1,
        "unknown image id": 1,
        "duplicate annotation id": 1,
    }
    assert ds.dropped_polygons == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "skipped 12 annotation(s)" in warnings[0].getMessage()
    _, t = ds[0]
    assert t["labels"].tolist() == [2, 1, 2, 2]
    np.testing.assert_array_equal(t["masks"][3].numpy(), _poly_mask([[2.0, 2.0, 8.0, 2.0, 2.0, 8.0]]))
    # Every sample loads; the cleaned COCO has no invalid annotation left for COCOeval to trip on.
    for i in range(len(ds)):
        ds[i]
    for ann in ds.coco.loadAnns(ds.coco.getAnnIds()):
        ds.coco.annToMask(ann)


def test_loader_image_size_mismatch_is_clear(coco_dir):
    root, data, _ = coco_dir
    cv2.imwrite(str(root / "b.png"), np.zeros((H + 2, W, 3), np.uint8))
    ds = CocoInstances(_write(root / "ann.json", data), root)
    with pytest.raises(ValueError, match=r"b\.png: image is 14x16"):
        ds[1]


# ----------------------------------------------------------------------------- transforms
def _random_target(rng: np.random.Generator, h: int, w: int, n: int) -> dict:
    masks = np.zeros((n, h, w), np.uint8)
    for i in range(n):
        bw, bh = int(rng.integers(1, w // 2)), int(rng.integers(1, h // 2))
        x, y = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
        cv2.ellipse(masks[i], ((x + bw / 2, y + bh / 2), (float(bw), float(bh)), float(rng.uniform(0, 180))), 1, -1)
        masks[i, y + bh // 2, x + bw // 2] = 1  # never empty
    boxes = np.array([tight_box(m) for m in masks], np.float32).reshape(-1, 4)
    return {"boxes": torch.from_numpy(boxes), "masks": torch.from_numpy(masks),
            "labels": torch.arange(n), "image_id": 5, "orig_size": (h, w)}


@pytest.mark.parametrize("size", [(9, 13), (37, 50), (80, 120), (200, 300)])
def test_resize_keeps_boxes_on_masks(size):
    rng = np.random.default_rng(size[0])
    image = torch.from_numpy(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))
    target = _random_target(rng, 40, 60, 12)
    out_img, out = resize(image, target, size)
    assert out_img.shape == (*size, 3) and out_img.dtype == torch.uint8
    assert out["masks"].shape == (12, *size) and out["masks"].dtype == torch.uint8
    assert out["boxes"].dtype == torch.float32
    assert out["orig_size"] == (40, 60) and out["image_id"] == 5 and out["labels"] is target["labels"]
    for box, m in zip(out["boxes"].numpy(), out["masks"].numpy(), strict=True):
        tb = tight_box(m)
        if tb is None:  # a mask thinner than a pixel can vanish when shrinking
            assert min(size) < 40
            continue
        np.testing.assert_allclose(box, tb, atol=1.0)


def test_resize_masks_follow_the_image():
    """Mask and image use the same pixel grid: a band and its mask stay in register.

    (Scale 2.4 puts no output pixel centre exactly on an input pixel edge, so the image's
    bilinear values are never a tie at the 50% threshold.)
    """
    image = np.zeros((10, 10, 3), np.uint8)
    image[:, 2:7] = 255
    mask = (image[..., 0] > 0).astype(np.uint8)
    for img, m, box in [(image, mask, [2.0, 0.0, 7.0, 10.0]),
                        (image.transpose(1, 0, 2), mask.T, [0.0, 2.0, 10.0, 7.0])]:
        target = {"boxes": torch.tensor([box]), "masks": torch.from_numpy(np.ascontiguousarray(m[None]))}
        out_img, out = resize(torch.from_numpy(np.ascontiguousarray(img)), target, (24, 24))
        expected = (out_img[..., 0].numpy() >= 128).astype(np.uint8)
        np.testing.assert_array_equal(out["masks"][0].numpy(), expected)
        np.testing.assert_allclose(out["boxes"][0].numpy(), np.array(box) * 2.4, rtol=1e-6)
        np.testing.assert_allclose(out["boxes"][0].numpy(), tight_box(expected), rtol=1e-6, atol=0.5)


def test_resized_shape_rule():
    assert resized_shape(480, 640, 800, 1333) == (800, 1067)
    assert resized_shape(600, 2000, 800, 1333) == (400, 1333)  # long side caps the scale
    assert resized_shape(320, 320, 320, 320) == (320, 320)
    assert resized_shape(3, 1000, 800, 1333) == (4, 1333)


def test_resize_shortest_side_random_choice_is_seeded():
    image = torch.zeros((30, 40, 3), dtype=torch.uint8)
    target = _random_target(np.random.default_rng(1), 30, 40, 2)
    t = ResizeShortestSide((10, 20, 30, 40), max_size=1000)

    def sizes(rng):
        return [t(image, target, rng)[0].shape[0] for _ in range(12)]

    assert sizes(np.random.default_rng(3)) == sizes(np.random.default_rng(3))
    assert sizes(torch.Generator().manual_seed(3)) == sizes(torch.Generator().manual_seed(3))
    assert set(sizes(np.random.default_rng(4))) == {10, 20, 30, 40}
    with pytest.raises(ValueError):
        ResizeShortestSide(0, 10)


def test_hflip_is_exact():
    rng = np.random.default_rng(2)
    image = torch.from_numpy(rng.integers(0, 256, (21, 34, 3), dtype=np.uint8))
    target = _random_target(rng, 21, 34, 6)
    out_img, out = hflip(image, target)
    np.testing.assert_array_equal(out_img.numpy(), image.numpy()[:, ::-1])
    np.testing.assert_array_equal(out["masks"].numpy(), target["masks"].numpy()[:, :, ::-1])
    for box, m in zip(out["boxes"].numpy(), out["masks"].numpy(), strict=True):
        assert tuple(box) == tight_box(m)
    b = target["boxes"]
    assert torch.equal(out["boxes"][:, 0], 34 - b[:, 2]) and torch.equal(out["boxes"][:, 2], 34 - b[:, 0])
    back_img, back = hflip(out_img, out)
    assert torch.equal(back_img, image) and torch.equal(back["boxes"], target["boxes"])


def test_random_flip_probability_and_seed():
    image = torch.arange(2 * 3 * 3, dtype=torch.uint8).reshape(2, 3, 3)
    target = {"boxes": torch.tensor([[0.0, 0.0, 1.0, 2.0]]), "masks": torch.zeros((1, 2, 3), dtype=torch.uint8)}
    assert torch.equal(RandomHorizontalFlip(p=1.0)(image, target, np.random.default_rng(0))[0], image.flip(1))
    assert RandomHorizontalFlip(p=0.0)(image, target, np.random.default_rng(0))[0] is image
    flip = RandomHorizontalFlip(0.5)

    def flips(rng):
        return [flip(image, target, rng)[1]["boxes"][0, 0].item() for _ in range(64)]

    a = flips(np.random.default_rng(5))
    assert a == flips(np.random.default_rng(5)) and 0 < a.count(2.0) < 64
    assert flips(torch.Generator().manual_seed(5)) == flips(torch.Generator().manual_seed(5))


def test_transforms_in_dataset(coco_dir):
    root, data, _ = coco_dir
    tf = Compose([ResizeShortestSide((16, 24, 32), max_size=64), RandomHorizontalFlip()])
    ds = CocoInstances(_write(root / "ann.json", data), root, transforms=tf, seed=3)
    image, t = ds[1]  # no annotations
    assert t["masks"].shape == (0, *image.shape[:2]) and t["boxes"].shape == (0, 4)

    # The same (seed, epoch, index) gives the same sample; epochs differ.
    a, b = ds[0], ds[0]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["boxes"], b[1]["boxes"])
    seen = set()
    for epoch in range(8):
        ds.set_epoch(epoch)
        img, t = ds[0]
        seen.add((img.shape, t["boxes"][1, 0].item()))
        assert t["orig_size"] == (H, W) and t["masks"].shape == (3, *img.shape[:2])
        # The RLE instances' boxes are their masks' tight boxes; they must stay so.
        for i in (1, 2):
            np.testing.assert_allclose(t["boxes"][i].numpy(), tight_box(t["masks"][i].numpy()), atol=1.0)
    assert len({shape for shape, _ in seen}) > 1 and len(seen) > 3
