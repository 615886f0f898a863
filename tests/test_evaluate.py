"""COCO evaluation: results conversion, COCOeval wrapper, the inference loop and `maskrt eval`.

The reference is pycocotools' COCOeval itself, fed with predictions whose correct score is
known: the ground truth (AP 1), the ground truth shifted by a few pixels (AP < 1) and nothing
(AP 0).
"""

from __future__ import annotations

import argparse
import copy
import json

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from maskrt.runtime.config import preset
from maskrt.runtime.postprocess import masks_to_rle, paste_masks
from maskrt.train.data.coco import CocoInstances
from maskrt.train.data.synthetic import generate
from maskrt.train.evaluate import (
    METRIC_NAMES,
    add_eval_arguments,
    coco_evaluate,
    detections_to_coco,
    evaluate_model,
    fit_to_input,
    format_metrics,
    jsonl_to_coco,
    precision_recall,
    predict_coco,
    run_eval,
    split_outputs,
    torch_infer,
)
from maskrt.train.model.checkpoint import load_checkpoint, save_checkpoint
from maskrt.train.model.mask_rcnn import MaskRCNN

M = 28  # mask resolution of the contract rows built here


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    summary = generate(root, 0, 4, seed=3, image_size=(96, 128), min_instance=8, max_instance=60,
                       progress=False)
    split = summary["splits"]["val"]
    return root, CocoInstances(split["ann_file"], split["image_dir"])


def gt_results(ds: CocoInstances, shift: int = 0) -> list[dict]:
    """The ground truth as COCO results (score 1), optionally moved ``shift`` pixels right and
    down (masks shifted with zero fill, boxes moved and clipped like the masks)."""
    results = []
    for idx in range(len(ds)):
        target = ds.load_target(idx)
        h, w = target["orig_size"]
        masks = target["masks"].numpy().astype(bool)
        if shift:
            moved = np.zeros_like(masks)
            moved[:, shift:, shift:] = masks[:, : h - shift, : w - shift]
            masks = moved
        for box, label, rle in zip(target["boxes"].numpy(), target["labels"].tolist(), masks_to_rle(masks),
                                   strict=True):
            x1, y1 = min(box[0] + shift, w - 1), min(box[1] + shift, h - 1)
            x2, y2 = min(box[2] + shift, w), min(box[3] + shift, h)
            results.append({"image_id": target["image_id"], "category_id": ds.label_to_cat_id[label],
                            "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                            "segmentation": rle, "score": 1.0})
    return results


def check_metrics(metrics: dict, iou_types=("bbox", "segm")) -> None:
    assert set(metrics) == set(iou_types)
    for m in metrics.values():
        assert tuple(m) == METRIC_NAMES
        for v in m.values():
            assert isinstance(v, float) and np.isfinite(v) and (0.0 <= v <= 1.0 or v == -1.0)


# ----------------------------------------------------------------------------- coco_evaluate
def test_ground_truth_scores_one_shifted_less_empty_zero(synth):
    _, ds = synth
    before = copy.deepcopy(ds.coco.dataset)
    perfect = coco_evaluate(ds.coco, gt_results(ds))
    check_metrics(perfect)
    for iou_type in ("bbox", "segm"):
        assert perfect[iou_type]["AP"] == pytest.approx(1.0)
        assert perfect[iou_type]["AP50"] == pytest.approx(1.0)
        assert perfect[iou_type]["AP75"] == pytest.approx(1.0)

    shifted = coco_evaluate(ds.coco, gt_results(ds, shift=4))
    check_metrics(shifted)
    for iou_type in ("bbox", "segm"):
        assert 0.0 <= shifted[iou_type]["AP"] < 1.0
        assert shifted[iou_type]["AP75"] < 1.0

    empty = coco_evaluate(ds.coco, [])
    check_metrics(empty)
    for iou_type in ("bbox", "segm"):
        assert empty[iou_type]["AP"] == 0.0 and empty[iou_type]["AP50"] == 0.0

    only_bbox = coco_evaluate(ds.coco, [{k: v for k, v in r.items() if k != "segmentation"}
                                        for r in gt_results(ds)], iou_types=("bbox",))
    assert set(only_bbox) == {"bbox"} and only_bbox["bbox"]["AP"] == pytest.approx(1.0)
    assert ds.coco.dataset == before  # COCOeval wrote into copies only


def _greedy_pr(ds: CocoInstances, results: list[dict], iou: float) -> tuple[int, int, int]:
    """An independent reference: per image and category, detections by descending score each
    take the unmatched ground truth of highest mask IoU (pycocotools.mask.iou) if >= iou."""
    tp = 0
    gts = ds.coco.dataset["annotations"]
    for img in ds.coco.dataset["images"]:
        for cat in {a["category_id"] for a in gts} | {r["category_id"] for r in results}:
            g = [a["segmentation"] for a in gts if a["image_id"] == img["id"] and a["category_id"] == cat]
            d = sorted((r for r in results if r["image_id"] == img["id"] and r["category_id"] == cat),
                       key=lambda r: -r["score"])
            if not g or not d:
                continue
            ious = mask_utils.iou([r["segmentation"] for r in d], g, [0] * len(g))
            free = set(range(len(g)))
            for row in ious:
                best = max(free, key=lambda j: row[j], default=None)
                if best is not None and row[best] >= iou:
                    free.discard(best)
                    tp += 1
    return tp, len(results), len(gts)


def test_precision_recall_at_one_iou(synth):
    _, ds = synth
    n_gt = len(ds.coco.dataset["annotations"])
    perfect = precision_recall(ds.coco, gt_results(ds))
    assert perfect == {"precision": 1.0, "recall": 1.0, "tp": n_gt, "detections": n_gt, "ground_truth": n_gt}
    half = gt_results(ds)[::2]
    wrong = [dict(r, category_id=next(c for c in ds.label_to_cat_id.values() if c != r["category_id"]), score=0.2)
             for r in gt_results(ds)[1::2]]
    pr = precision_recall(ds.coco, half + wrong)
    assert (pr["tp"], pr["detections"]) == (len(half), len(half) + len(wrong))
    assert pr["recall"] == pytest.approx(len(half) / n_gt)
    assert precision_recall(ds.coco, half + wrong, min_score=0.5)["precision"] == 1.0  # the wrong ones dropped
    shifted = gt_results(ds, shift=3)
    for r in shifted:
        r["score"] = 1.0 / (1.0 + r["image_id"] + r["bbox"][0])  # distinct scores: a defined order
    pr = precision_recall(ds.coco, shifted, iou=0.5)
    tp, n_dt, n = _greedy_pr(ds, shifted, 0.5)
    assert 0 < tp < n and (pr["tp"], pr["detections"], pr["ground_truth"]) == (tp, n_dt, n)
    assert precision_recall(ds.coco, []) == {"precision": 1.0, "recall": 0.0, "tp": 0, "detections": 0,
                                             "ground_truth": n_gt}
    with pytest.raises(ValueError, match="iou"):
        precision_recall(ds.coco, [], iou=0.0)


def test_jsonl_to_coco_maps_classes_by_name(synth):
    _, ds = synth
    names = ["__background__"] + [c["name"] for c in sorted(ds.coco.dataset["categories"], key=lambda c: c["id"])]
    by_name = {c["name"]: c["id"] for c in ds.coco.dataset["categories"]}
    rle = {"size": [96, 128], "counts": mask_utils.encode(np.asfortranarray(np.ones((96, 128), np.uint8)))["counts"]
           .decode()}
    rec = {"frame": 0, "boxes": [[1, 2, 11, 22]], "scores": [0.9], "classes": [2], "masks": [rle]}
    (r,) = jsonl_to_coco([rec], ds.coco, names, {0: 1})
    assert r == {"image_id": 1, "category_id": by_name[names[2]], "bbox": [1.0, 2.0, 10.0, 20.0], "score": 0.9,
                 "segmentation": rle}
    with pytest.raises(ValueError, match="no category"):
        jsonl_to_coco([rec], ds.coco, ["__background__", "dog"], {0: 1})
    with pytest.raises(ValueError, match="frame 0"):
        jsonl_to_coco([rec], ds.coco, names, {})


def test_coco_evaluate_errors_and_verbose(synth, capsys):
    _, ds = synth
    good = gt_results(ds)[:1]
    with pytest.raises(ValueError, match="not in the ground truth"):
        coco_evaluate(ds.coco, [{**good[0], "image_id": 12345}])
    with pytest.raises(ValueError, match="iou_types"):
        coco_evaluate(ds.coco, good, iou_types=("keypoints",))
    with pytest.raises(ValueError, match="segmentation"):
        coco_evaluate(ds.coco, [{k: v for k, v in good[0].items() if k != "segmentation"}])
    with pytest.raises(ValueError, match="size"):
        coco_evaluate(ds.coco, [{**good[0], "segmentation": masks_to_rle(np.ones((1, 5, 5), bool))[0]}])
    coco_evaluate(ds.coco, good)
    assert capsys.readouterr().out == ""  # quiet by default
    coco_evaluate(ds.coco, good, iou_types=("segm",), verbose=True)
    out = capsys.readouterr().out
    assert "IoU metric: segm" in out and "Average Precision" in out


# ----------------------------------------------------------------------------- detections_to_coco
def test_detections_to_coco_maps_back_and_ignores_padding():
    rng = np.random.default_rng(0)
    k, n = 5, 3
    boxes = np.array([[2, 3, 20, 30], [0, 0, 40, 25], [10.5, 4.25, 12, 9], [1, 1, 2, 2], [0, 0, 1, 1]], np.float32)
    out = {
        "num_detections": np.array([n], np.int32),
        "boxes": boxes,
        "scores": np.array([0.9, 0.8, 0.7, 0.0, 0.0], np.float32),
        "classes": np.array([1, 2, 1, 99, 99], np.int32),  # padding rows carry an unknown class
        "masks": rng.random((k, M, M), dtype=np.float32),
    }
    results = detections_to_coco(7, out, (50, 60), {1: 5, 2: 11}, scale=0.5)
    assert len(results) == n
    assert [r["category_id"] for r in results] == [5, 11, 5]
    assert results[0]["bbox"] == pytest.approx([4, 6, 36, 44])  # y2 = 60 clipped to 50
    assert results[1]["bbox"] == pytest.approx([0, 0, 60, 50])  # clipped to the image
    assert results[2]["score"] == pytest.approx(0.7) and results[2]["image_id"] == 7
    orig = np.array([[4, 6, 40, 50], [0, 0, 60, 50], [21, 8.5, 24, 18]], np.float32)
    want = masks_to_rle(paste_masks(out["masks"][:n], orig, (50, 60)))
    assert [r["segmentation"] for r in results] == want
    json.dumps(results)  # serialisable as is

    without_masks = detections_to_coco(7, {k: v for k, v in out.items() if k != "masks"}, (50, 60),
                                       {1: 5, 2: 11}, scale=0.5)
    assert "segmentation" not in without_masks[0]
    assert detections_to_coco(7, {**out, "num_detections": 0}, (50, 60), {1: 5, 2: 11}) == []
    with pytest.raises(ValueError, match="class id 99"):
        detections_to_coco(7, {**out, "num_detections": 4}, (50, 60), {1: 5, 2: 11})
    with pytest.raises(ValueError, match="num_detections"):
        detections_to_coco(7, {**out, "num_detections": 6}, (50, 60), {1: 5, 2: 11})


def test_split_outputs_and_fit_to_input():
    batch = {"num_detections": np.array([2, 0], np.int32), "boxes": np.zeros((2, 4, 4), np.float32),
             "scores": np.zeros((2, 4), np.float32), "classes": np.zeros((2, 4), np.int32),
             "masks": np.zeros((2, 4, M, M), np.float32)}
    per_image = split_outputs(batch)
    assert [p["num_detections"] for p in per_image] == [2, 0]
    assert per_image[1]["masks"].shape == (4, M, M)
    with pytest.raises(ValueError, match="missing"):
        split_outputs({"boxes": batch["boxes"]})

    image = np.zeros((96, 128, 3), np.uint8)
    same, scale = fit_to_input(image, (320, 320))
    assert same is image and scale == (1.0, 1.0)
    small, (sx, sy) = fit_to_input(image, (64, 96))
    assert small.shape == (64, 85, 3) and (sx, sy) == (85 / 128, 64 / 96)


# ----------------------------------------------------------------------------- inference loop
def oracle_infer(ds: CocoInstances, input_size):
    """An ``infer`` that answers with the ground truth in model-input coordinates (boxes scaled,
    masks cropped to their boxes and resampled to M x M), plus padding rows."""
    order = iter(range(len(ds)))

    def infer(images):
        rows = []
        for _ in range(len(images)):
            idx = next(order)
            target = ds.load_target(idx)
            _, (sx, sy) = fit_to_input(ds.load_image(idx), input_size)
            boxes = target["boxes"].numpy()
            masks = []
            for box, mask in zip(boxes, target["masks"].numpy(), strict=True):
                x1, y1, x2, y2 = (int(round(v)) for v in box)
                crop = mask[y1:y2, x1:x2].astype(np.float32)
                masks.append(cv2.resize(crop, (M, M), interpolation=cv2.INTER_AREA))
            rows.append((boxes * np.array([sx, sy, sx, sy], np.float32), target["labels"].numpy(), masks))
        k = max(len(r[0]) for r in rows) + 2
        out = {"num_detections": np.zeros(len(rows), np.int32), "boxes": np.full((len(rows), k, 4), 3.0, np.float32),
               "scores": np.zeros((len(rows), k), np.float32), "classes": np.full((len(rows), k), 99, np.int32),
               "masks": np.ones((len(rows), k, M, M), np.float32)}
        for i, (boxes, labels, masks) in enumerate(rows):
            n = len(boxes)
            out["num_detections"][i] = n
            out["boxes"][i, :n] = boxes
            out["scores"][i, :n] = 1.0
            out["classes"][i, :n] = labels
            if n:
                out["masks"][i, :n] = np.stack(masks)
        return out

    return infer


@pytest.mark.parametrize("pad_to_input,batch_size", [(False, 1), (True, 3)])
def test_predict_coco_maps_detections_back_to_the_original_image(synth, pad_to_input, batch_size):
    _, ds = synth
    input_size = (64, 96)  # smaller than the 96 x 128 images: they are resized by 2/3
    seen = []

    def infer(images):
        seen.append(images.shape if pad_to_input else [im.shape for im in images])
        return oracle(images)

    oracle = oracle_infer(ds, input_size)
    results = predict_coco(ds, infer, input_size, batch_size=batch_size, pad_to_input=pad_to_input, progress=False)
    if pad_to_input:
        assert seen == [(3, 64, 96, 3), (1, 64, 96, 3)]
    else:
        assert seen == [[(64, 85, 3)]] * 4
    assert len(results) == len(ds.coco.getAnnIds())
    metrics = coco_evaluate(ds.coco, results)
    check_metrics(metrics)
    assert metrics["bbox"]["AP"] == pytest.approx(1.0)
    assert metrics["segm"]["AP50"] > 0.9  # masks went through a 28 x 28 resampling


def test_evaluate_model_end_to_end(synth):
    _, ds = synth
    torch.manual_seed(0)
    cfg = preset("r18-small").replace(num_classes=ds.num_classes, class_names=ds.class_names)
    model = MaskRCNN(cfg).train()
    metrics = evaluate_model(model, ds, batch_size=2, progress=False)
    check_metrics(metrics)
    assert model.training  # mode restored

    # a fixed-size input smaller than the images: resize + uint8 padding, as the deployment graph
    small = MaskRCNN(cfg.replace(input_size=(64, 96))).eval()
    results = predict_coco(ds, torch_infer(small), (64, 96), pad_to_input=True, progress=False)
    assert results, "random weights give low-score detections above the 0.05 threshold"
    for r in results:
        img = ds.coco.imgs[r["image_id"]]
        assert r["segmentation"]["size"] == [img["height"], img["width"]]
        x, y, w, h = r["bbox"]
        assert 0 <= x and 0 <= y and x + w <= img["width"] + 1e-3 and y + h <= img["height"] + 1e-3
    check_metrics(coco_evaluate(ds.coco, results))

    with pytest.raises(ValueError, match="classes"):
        evaluate_model(MaskRCNN(preset("r18-small").replace(num_classes=3)), ds, progress=False)


# ----------------------------------------------------------------------------- maskrt eval
def test_run_eval(synth, tmp_path, capsys):
    root, ds = synth
    torch.manual_seed(1)
    cfg = preset("r18-small").replace(num_classes=ds.num_classes, class_names=ds.class_names,
                                      input_size=(64, 96))
    ckpt = tmp_path / "model.pt"
    save_checkpoint(ckpt, MaskRCNN(cfg))
    parser = add_eval_arguments(argparse.ArgumentParser())

    out = tmp_path / "reports" / "metrics.json"
    args = parser.parse_args(["--checkpoint", str(ckpt), "--data", str(root), "--out", str(out), "--limit", "2",
                              "--no-progress"])
    assert run_eval(args) == 0
    printed = capsys.readouterr().out
    assert "bbox" in printed and "segm" in printed and "AP50" in printed and "2 of 4 images" in printed
    report = json.loads(out.read_text())
    assert report["images"] == 2
    check_metrics(report["metrics"])

    # --min-scores: precision/recall at IoU 0.5 per operating point, the same as precision_recall's
    # on the evaluated images' own results (here: a random model's low-score detections)
    args = parser.parse_args(["--checkpoint", str(ckpt), "--data", str(root), "--out", str(out), "--no-progress",
                              "--min-scores", "0", "0.5"])
    assert run_eval(args) == 0
    assert "min score" in capsys.readouterr().out
    points = json.loads(out.read_text())["operating_points"]
    model, _ = load_checkpoint(ckpt)
    results = predict_coco(ds, torch_infer(model), cfg.input_size, progress=False)
    assert results and min(r["score"] for r in results) < 0.5
    for point, s in zip(points, (0.0, 0.5), strict=True):
        assert point["min_score"] == s
        for iou_type in ("segm", "bbox"):
            assert point[iou_type] == precision_recall(ds.coco, results, iou_type, iou=0.5, min_score=s)
    assert points[0]["segm"]["detections"] == len(results) > points[1]["segm"]["detections"]
    with pytest.raises(ValueError, match="--min-scores"):
        run_eval(parser.parse_args(["--checkpoint", str(ckpt), "--data", str(root), "--min-scores", "1.5"]))

    bad = tmp_path / "bad.pt"
    save_checkpoint(bad, MaskRCNN(cfg.replace(num_classes=3, class_names=())))
    with pytest.raises(ValueError, match="3 classes"):
        run_eval(parser.parse_args(["--checkpoint", str(bad), "--data", str(root)]))
    with pytest.raises(ValueError, match="annotation file not found"):
        run_eval(parser.parse_args(["--checkpoint", str(ckpt), "--data", str(root), "--split", "test"]))
    with pytest.raises(ValueError, match="--ann"):
        run_eval(parser.parse_args(["--checkpoint", str(ckpt)]))
    with pytest.raises(ValueError, match="no such checkpoint"):
        run_eval(parser.parse_args(["--checkpoint", str(tmp_path / "none.pt"), "--data", str(root)]))


def test_format_metrics_marks_missing_sizes():
    table = format_metrics({"bbox": dict.fromkeys(METRIC_NAMES, 0.5) | {"APl": -1.0}})
    assert table.splitlines()[1].split() == ["bbox", "0.5000", "0.5000", "0.5000", "0.5000", "0.5000", "-"]
