"""COCO evaluation (bbox and segm AP with pycocotools' COCOeval) and ``maskrt eval``.

The pipeline is split so that every backend is scored by the same code:

* :func:`predict_coco` walks a data set's raw images (no training augmentation), fits each into
  the model input (:func:`fit_to_input`), calls an ``infer`` function that returns the
  deployment contract (``num_detections``, ``boxes``, ``scores``, ``classes``, ``masks`` as
  numpy), and turns each image's rows into COCO results with :func:`detections_to_coco`;
* :func:`coco_evaluate` scores a list of COCO results against a ground-truth ``COCO``;
* :func:`precision_recall` counts matches at one IoU threshold with COCOeval's matching, and
  :func:`jsonl_to_coco` turns the video pipeline's JSON lines into COCO results (the demo's
  self-score);
* :func:`evaluate_model` is the PyTorch case: ``infer`` = the model (:func:`torch_infer`).
  An ONNX Runtime or TensorRT backend only needs its own ``infer``.

Results follow the COCO results format: ``{"image_id", "category_id", "score",
"bbox": [x, y, w, h], "segmentation": {"size": [H, W], "counts": str}}`` in original-image
pixels. Metrics are COCOeval's ``stats[0:6]``: AP (IoU .50:.95), AP50, AP75, APs, APm, APl;
COCOeval reports -1 where there is no ground truth (e.g. no small objects).

torch is imported only by the functions that run the PyTorch model.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from maskrt.runtime.cli import renamed_option
from maskrt.runtime.postprocess import masks_to_rle, paste_masks, scale_detections

if TYPE_CHECKING:
    from maskrt.train.data.coco import CocoInstances

IOU_TYPES = ("bbox", "segm")
METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")  # COCOeval.stats[0:6]
CONTRACT_KEYS = ("num_detections", "boxes", "scores", "classes", "masks")

Outputs = Mapping[str, Any]
InferFn = Callable[[Any], Outputs]


# ---------------------------------------------------------------------------- outputs -> COCO
def split_outputs(outputs: Outputs) -> list[dict[str, np.ndarray]]:
    """The batched deployment contract (numpy or anything ``np.asarray`` reads) as one dict per
    image: ``num_detections`` int, ``boxes`` [K, 4], ``scores`` [K], ``classes`` [K] and, when
    present, ``masks`` [K, M, M]."""
    missing = [k for k in CONTRACT_KEYS[:4] if k not in outputs]
    if missing:
        raise ValueError(f"outputs: missing {missing} (expected the keys {list(CONTRACT_KEYS)})")
    arrays = {k: np.asarray(outputs[k]) for k in CONTRACT_KEYS if k in outputs and outputs[k] is not None}
    counts = arrays["num_detections"].reshape(-1)
    b = counts.shape[0]
    for k, v in arrays.items():
        if k != "num_detections" and (v.ndim < 2 or v.shape[0] != b):
            raise ValueError(f"outputs[{k!r}]: expected a leading batch dimension of {b}, got shape {v.shape}")
    return [
        {k: (int(counts[i]) if k == "num_detections" else v[i]) for k, v in arrays.items()}
        for i in range(b)
    ]


def _count(value: Any) -> int:
    a = np.asarray(value)
    if a.size != 1:
        raise ValueError(f"num_detections: expected one count for one image, got shape {a.shape}")
    return int(a.reshape(-1)[0])


def detections_to_coco(
    image_id: int,
    outputs: Outputs,
    image_size: Sequence[int],
    label_to_cat_id: Mapping[int, int],
    scale: float | Sequence[float] = 1.0,
    pad: Sequence[float] = (0.0, 0.0),
    *,
    mask_threshold: float = 0.5,
) -> list[dict[str, Any]]:
    """COCO results entries of one image's detections.

    Args:
        image_id: the COCO image id.
        outputs: one image's rows of the deployment contract: ``num_detections`` (int or a
            one-element array), ``boxes`` float32 [K, 4] (x1, y1, x2, y2, model-input pixels),
            ``scores`` [K], ``classes`` int [K] (labels 1..num_classes-1), optionally ``masks``
            float32 [K, M, M] (probabilities). Only rows below ``num_detections`` are read.
        image_size: the original image's ``(H, W)``.
        label_to_cat_id: model label -> COCO category id (``CocoInstances.label_to_cat_id``).
        scale, pad: how the original image was placed in the model input (see
            :func:`maskrt.runtime.postprocess.scale_detections`): ``x_in = x * sx + pad_x``.
        mask_threshold: pasted probability ``> mask_threshold`` is foreground.

    Returns one dict per detection: ``image_id``, ``category_id``, ``score``, ``bbox``
    ``[x, y, w, h]`` (boxes mapped back and clipped to the image), and ``segmentation`` (COCO
    RLE, counts as str, pasted at the original size) when masks are given.
    """
    h, w = (int(v) for v in image_size)
    n = _count(outputs["num_detections"])
    boxes = np.asarray(outputs["boxes"], np.float32)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes: expected [K, 4], got shape {boxes.shape}")
    if not 0 <= n <= boxes.shape[0]:
        raise ValueError(f"num_detections={n} is outside [0, {boxes.shape[0]}]")
    scores = np.asarray(outputs["scores"], np.float32).reshape(-1)[:n]
    classes = np.asarray(outputs["classes"]).reshape(-1)[:n]
    if scores.shape[0] != n or classes.shape[0] != n:
        raise ValueError(f"scores/classes: fewer rows than num_detections={n}")
    boxes = scale_detections(boxes[:n], scale, pad, image_size=(h, w))

    cat_ids = []
    for c in classes.tolist():
        if int(c) not in label_to_cat_id:
            raise ValueError(f"class id {int(c)} has no COCO category (known labels: {sorted(label_to_cat_id)})")
        cat_ids.append(int(label_to_cat_id[int(c)]))

    rles: list[dict[str, Any]] | None = None
    if outputs.get("masks") is not None:
        masks = np.asarray(outputs["masks"], np.float32)[:n]
        rles = masks_to_rle(paste_masks(masks, boxes, (h, w), threshold=mask_threshold))

    results = []
    for i in range(n):
        x1, y1, x2, y2 = (float(v) for v in boxes[i])
        entry: dict[str, Any] = {
            "image_id": int(image_id),
            "category_id": cat_ids[i],
            "bbox": [x1, y1, x2 - x1, y2 - y1],
            "score": float(scores[i]),
        }
        if rles is not None:
            entry["segmentation"] = rles[i]
        results.append(entry)
    return results


# ---------------------------------------------------------------------------- COCOeval
def _clone_gt(coco_gt: COCO) -> COCO:
    """A COCO sharing the ground truth's data but with its own annotation dicts: COCOeval writes
    into them (``ignore`` flags, polygons replaced by RLE), and the caller's must stay intact."""
    gt = COCO()
    gt.dataset = {k: v for k, v in coco_gt.dataset.items() if k != "annotations"}
    gt.dataset["annotations"] = [dict(a) for a in coco_gt.dataset.get("annotations", [])]
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def _subset_gt(coco_gt: COCO, img_ids: set[int]) -> COCO:
    """The ground truth of only ``img_ids`` (images and their annotations)."""
    gt = COCO()
    gt.dataset = {k: v for k, v in coco_gt.dataset.items() if k not in ("images", "annotations")}
    gt.dataset["images"] = [im for im in coco_gt.dataset.get("images", []) if im["id"] in img_ids]
    gt.dataset["annotations"] = [dict(a) for a in coco_gt.dataset.get("annotations", []) if a["image_id"] in img_ids]
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def _to_rle(seg: Any, h: int, w: int, where: str) -> dict[str, Any]:
    """A result's segmentation as compressed RLE (polygons and uncompressed RLE converted)."""
    if isinstance(seg, list):
        return mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
    if not isinstance(seg, dict) or "counts" not in seg or "size" not in seg:
        raise ValueError(f"{where}: 'segmentation' must be COCO RLE or polygons")
    if [int(v) for v in seg["size"]] != [h, w]:
        raise ValueError(f"{where}: segmentation size {list(seg['size'])} differs from the image size {[h, w]}")
    if isinstance(seg["counts"], list):
        return mask_utils.frPyObjects(seg, h, w)
    return seg


def _results_coco(gt: COCO, results: Sequence[Mapping[str, Any]], iou_type: str) -> COCO:
    """The detections of one IoU type as a COCO object (what ``COCO.loadRes`` builds).

    NOTE: each IoU type gets its own entries, as torchvision's reference evaluation does: for
    segm the area (which decides small/medium/large) is the mask's area; ``loadRes`` would take
    the box area whenever an entry also has a ``bbox`` (detectron2 drops ``bbox`` for the same
    reason). For bbox the area is ``w * h``.
    """
    anns = []
    for i, r in enumerate(results):
        where = f"results[{i}]"
        img = gt.imgs[r["image_id"]]
        ann: dict[str, Any] = {
            "id": i + 1,
            "image_id": r["image_id"],
            "category_id": r["category_id"],
            "score": float(r["score"]),
            "iscrowd": 0,
        }
        if iou_type == "segm":
            if "segmentation" not in r:
                raise ValueError(f"{where}: no 'segmentation' for segm evaluation")
            rle = _to_rle(r["segmentation"], int(img["height"]), int(img["width"]), where)
            ann["segmentation"] = rle
            ann["area"] = float(mask_utils.area(rle))
            ann["bbox"] = [float(v) for v in mask_utils.toBbox(rle)]
        else:
            if "bbox" in r:
                bbox = [float(v) for v in r["bbox"]]
            elif "segmentation" in r:
                rle = _to_rle(r["segmentation"], int(img["height"]), int(img["width"]), where)
                bbox = [float(v) for v in mask_utils.toBbox(rle)]
            else:
                raise ValueError(f"{where}: no 'bbox' for bbox evaluation")
            if len(bbox) != 4 or not all(np.isfinite(bbox)):
                raise ValueError(f"{where}: bbox must be 4 finite numbers [x, y, w, h], got {r.get('bbox')}")
            ann["bbox"] = bbox
            ann["area"] = bbox[2] * bbox[3]
        anns.append(ann)
    dt = COCO()
    dt.dataset = {"images": list(gt.dataset["images"]), "categories": copy.deepcopy(gt.dataset["categories"]),
                  "annotations": anns}
    with contextlib.redirect_stdout(io.StringIO()):
        dt.createIndex()
    return dt


def coco_evaluate(
    coco_gt: COCO,
    results: Sequence[Mapping[str, Any]],
    iou_types: Iterable[str] = IOU_TYPES,
    *,
    verbose: bool = False,
    img_ids: Iterable[int] | None = None,
) -> dict[str, dict[str, float]]:
    """COCOeval of ``results`` (COCO results entries) against ``coco_gt``.

    Args:
        coco_gt: the ground truth (e.g. ``CocoInstances.coco``); left unmodified.
        results: entries with ``image_id``, ``category_id``, ``score`` and ``bbox``
            ``[x, y, w, h]`` and/or ``segmentation`` (RLE, counts str or bytes).
        iou_types: any of ``"bbox"``, ``"segm"``.
        verbose: print COCOeval's standard 12-line summary per IoU type.
        img_ids: evaluate only these images (default: every image of ``coco_gt``; images
            without results count as missed detections).

    Returns ``{iou_type: {"AP", "AP50", "AP75", "APs", "APm", "APl"}}`` (floats; -1 where
    COCOeval has no ground truth). An empty ``results`` list is valid: AP is 0 wherever there
    is ground truth.
    """
    iou_types = tuple(iou_types)
    bad = [t for t in iou_types if t not in IOU_TYPES]
    if bad or not iou_types:
        raise ValueError(f"iou_types: expected a non-empty subset of {IOU_TYPES}, got {iou_types}")
    results = list(results)
    known = set(coco_gt.getImgIds())
    for i, r in enumerate(results):
        for key in ("image_id", "category_id", "score"):
            if key not in r:
                raise ValueError(f"results[{i}]: missing {key!r}")
        if r["image_id"] not in known:
            raise ValueError(f"results[{i}]: image_id {r['image_id']!r} is not in the ground truth")
    if img_ids is not None:
        img_ids = sorted(set(img_ids))
        unknown = [i for i in img_ids if i not in known]
        if unknown:
            raise ValueError(f"img_ids: {unknown[:5]} not in the ground truth")

    metrics: dict[str, dict[str, float]] = {}
    for iou_type in iou_types:
        gt = _clone_gt(coco_gt)
        dt = _results_coco(gt, results, iou_type)
        evaluator = COCOeval(gt, dt, iouType=iou_type)
        if img_ids is not None:
            evaluator.params.imgIds = list(img_ids)
        sink = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
        with sink:
            if verbose:
                print(f"IoU metric: {iou_type}")
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        metrics[iou_type] = {name: float(v) for name, v in zip(METRIC_NAMES, evaluator.stats[:6], strict=True)}
    return metrics


def precision_recall(
    coco_gt: COCO,
    results: Sequence[Mapping[str, Any]],
    iou_type: str = "segm",
    *,
    iou: float = 0.5,
    min_score: float = 0.0,
) -> dict[str, float]:
    """Precision and recall of the results scoring ``>= min_score`` at one IoU threshold.

    The matching is COCOeval's own (``evaluate()`` with ``iouThrs = [iou]``, one area range
    "all", no detection limit): per image and category, detections in descending score each take
    the best still-unmatched ground truth with IoU ``>= iou``; crowd ground truth is ignored.
    Returns ``{"precision", "recall", "tp", "detections", "ground_truth"}``; precision is 1.0 when
    there is no detection and recall 1.0 when there is no ground truth (nothing was wrong).
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type: expected one of {IOU_TYPES}, got {iou_type!r}")
    if not 0.0 < float(iou) <= 1.0:
        raise ValueError(f"iou must be in (0, 1], got {iou!r}")
    gt = _clone_gt(coco_gt)
    kept = [r for r in results if float(r["score"]) >= min_score]
    dt = _results_coco(gt, kept, iou_type)
    evaluator = COCOeval(gt, dt, iouType=iou_type)
    p = evaluator.params
    p.iouThrs = np.array([float(iou)])
    p.areaRng, p.areaRngLbl = [[0.0, 1e10]], ["all"]
    p.maxDets = [max(1, len(kept))]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
    tp = n_dt = n_gt = 0
    for e in evaluator.evalImgs:
        if e is None:
            continue
        keep_dt = ~np.asarray(e["dtIgnore"], bool).reshape(1, -1)[0]
        matched = np.asarray(e["dtMatches"]).reshape(1, -1)[0] > 0
        tp += int((matched & keep_dt).sum())
        n_dt += int(keep_dt.sum())
        n_gt += int((~np.asarray(e["gtIgnore"], bool)).sum())
    return {"precision": tp / n_dt if n_dt else 1.0, "recall": tp / n_gt if n_gt else 1.0,
            "tp": tp, "detections": n_dt, "ground_truth": n_gt}


def jsonl_to_coco(records: Iterable[Mapping[str, Any]], coco_gt: COCO, names: Sequence[str],
                  frame_to_image_id: Mapping[int, int]) -> list[dict[str, Any]]:
    """COCO results entries of the video pipeline's JSON lines (``JsonlSink``: ``frame``,
    ``boxes`` [x1, y1, x2, y2], ``scores``, ``classes``, ``masks`` RLE, original pixels).

    ``names``: the model's class names (index = class id); a class maps to the ground truth's
    category of the same name. ``frame_to_image_id``: frame index -> COCO image id.
    """
    by_name = {c["name"]: int(c["id"]) for c in coco_gt.dataset["categories"]}
    missing = [n for n in names[1:] if n not in by_name]
    if missing:
        raise ValueError(f"model classes {missing} have no category of that name in the ground truth")
    results: list[dict[str, Any]] = []
    for rec in records:
        frame = int(rec["frame"])
        if frame not in frame_to_image_id:
            raise ValueError(f"frame {frame} has no image in the ground truth")
        masks = rec.get("masks") or [None] * len(rec["scores"])
        for box, score, cls, rle in zip(rec["boxes"], rec["scores"], rec["classes"], masks, strict=True):
            x1, y1, x2, y2 = (float(v) for v in box)
            entry: dict[str, Any] = {"image_id": frame_to_image_id[frame], "category_id": by_name[names[int(cls)]],
                                     "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)}
            if rle is not None:
                entry["segmentation"] = rle
            results.append(entry)
    return results


# ---------------------------------------------------------------------------- inference loop
def fit_to_input(image: np.ndarray, input_size: Sequence[int]) -> tuple[np.ndarray, tuple[float, float]]:
    """Shrink ``image`` (uint8 [h, w, 3]) to fit inside ``input_size`` (H, W), keeping its aspect.

    Images that already fit are returned as they are (no upscaling). Otherwise
    ``s = min(H / h, W / w)``, the new size is ``(round(h * s), round(w * s))`` and the image is
    resized with cv2 INTER_LINEAR. Returns the image and ``(sx, sy) = (new_w / w, new_h / h)``,
    the exact per-axis ratios to map boxes back (``scale`` of :func:`detections_to_coco`).
    """
    h, w = image.shape[:2]
    in_h, in_w = (int(v) for v in input_size)
    if h <= in_h and w <= in_w:
        return image, (1.0, 1.0)
    s = min(in_h / h, in_w / w)
    nh = min(in_h, max(1, round(h * s)))
    nw = min(in_w, max(1, round(w * s)))
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return resized, (nw / w, nh / h)


def pad_to_size(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """``image`` (uint8 [h, w, 3], h <= H, w <= W) in the top-left corner of a zero
    (black) uint8 [H, W, 3] canvas: the padding is at the bottom/right, so pad = (0, 0)."""
    out = np.zeros((int(size[0]), int(size[1]), image.shape[2]), image.dtype)
    out[: image.shape[0], : image.shape[1]] = image
    return out


def predict_coco(
    dataset: CocoInstances,
    infer: InferFn,
    input_size: Sequence[int],
    *,
    batch_size: int = 1,
    pad_to_input: bool = False,
    limit: int | None = None,
    progress: bool = True,
    mask_threshold: float = 0.5,
) -> list[dict[str, Any]]:
    """Run ``infer`` over the data set's raw images and collect COCO results.

    Args:
        dataset: the images (``load_image``: uint8 BGR at the original size; the data set's
            training transforms are not used), their ids and ``label_to_cat_id``.
        infer: called once per batch. With ``pad_to_input=False`` it gets a list of uint8
            [h_i, w_i, 3] BGR images (each fitted into ``input_size``); with
            ``pad_to_input=True`` a uint8 [B, H, W, 3] array at exactly ``input_size``, each
            image in the top-left corner and zeros elsewhere (what a fixed-size graph takes).
            It returns the batched deployment contract as numpy arrays.
        input_size: the model input ``(H, W)``.
        batch_size: images per ``infer`` call.
        limit: only the first ``limit`` images.
        progress: show a tqdm progress bar.
        mask_threshold: see :func:`detections_to_coco`.
    """
    from tqdm import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    indices = list(range(len(dataset)))
    if limit is not None:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        indices = indices[:limit]
    results: list[dict[str, Any]] = []
    bar = tqdm(total=len(indices), desc="eval", unit="img", disable=not progress)
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        images, metas = [], []
        for idx in chunk:
            image = dataset.load_image(idx)
            info = dataset.image_info(idx)
            fitted, scale = fit_to_input(image, input_size)
            images.append(pad_to_size(fitted, input_size) if pad_to_input else fitted)
            metas.append((info["id"], (int(info["height"]), int(info["width"])), scale))
        outputs = split_outputs(infer(np.stack(images) if pad_to_input else images))
        if len(outputs) != len(chunk):
            raise ValueError(f"infer returned {len(outputs)} image(s) for a batch of {len(chunk)}")
        for out, (image_id, size, scale) in zip(outputs, metas, strict=True):
            results.extend(detections_to_coco(image_id, out, size, dataset.label_to_cat_id, scale,
                                              mask_threshold=mask_threshold))
        bar.update(len(chunk))
    bar.close()
    return results


def torch_infer(model: Any) -> InferFn:
    """An ``infer`` function for :func:`predict_coco` that runs a ``MaskRCNN`` (already in eval
    mode) under ``torch.inference_mode`` on the model's device."""
    import torch

    device = next(model.parameters()).device

    def infer(images: Any) -> dict[str, np.ndarray]:
        if isinstance(images, np.ndarray):
            batch: Any = torch.from_numpy(images).to(device)
        else:
            batch = [torch.from_numpy(np.ascontiguousarray(im)).to(device) for im in images]
        with torch.inference_mode():
            out = model(batch)
        return {k: v.detach().cpu().numpy() for k, v in out.items()}

    return infer


def evaluate_model(
    model: Any,
    dataset: CocoInstances,
    batch_size: int = 1,
    progress: bool = True,
    *,
    pad_to_input: bool = False,
    limit: int | None = None,
    verbose: bool = False,
) -> dict[str, dict[str, float]]:
    """COCO bbox and segm AP of a ``MaskRCNN`` on ``dataset`` (see :func:`predict_coco` and
    :func:`coco_evaluate`).

    Images larger than ``model.cfg.input_size`` are shrunk to fit (aspect kept); the others go
    in as they are. With ``pad_to_input=False`` (default) the model pads each batch itself, after
    normalisation, as torchvision does; ``pad_to_input=True`` zero-pads the uint8 images to the
    input size instead, as the fixed-size deployment graph sees them. The model's train/eval mode
    is restored afterwards.
    """
    cfg = model.cfg
    if cfg.num_classes != dataset.num_classes:
        raise ValueError(f"the model has {cfg.num_classes} classes (incl. background) but the data set has "
                         f"{dataset.num_classes} ({dataset.ann_file})")
    was_training = model.training
    model.eval()
    try:
        results = predict_coco(dataset, torch_infer(model), cfg.input_size, batch_size=batch_size,
                               pad_to_input=pad_to_input, limit=limit, progress=progress)
    finally:
        model.train(was_training)
    img_ids = dataset.ids[:limit] if limit is not None else None
    return coco_evaluate(dataset.coco, results, verbose=verbose, img_ids=img_ids)


# ---------------------------------------------------------------------------- CLI
def add_eval_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``maskrt eval`` options to ``parser`` (returned for chaining)."""
    parser.add_argument("--checkpoint", required=True, help="maskrt checkpoint (.pt)")
    parser.add_argument("--data", default=None,
                        help="data folder: DATA/annotations/instances_SPLIT.json and images in DATA/SPLIT")
    parser.add_argument("--split", default="val", help="split name under --data (default: val)")
    parser.add_argument("--ann", default=None, help="COCO annotation file (overrides --data/--split)")
    parser.add_argument("--images", default=None, help="image folder (overrides --data/--split)")
    parser.add_argument("--out", default=None, help="write the metrics as JSON to this file")
    parser.add_argument("--batch", type=int, default=1, metavar="N", help="images per inference (default 1)")
    renamed_option(parser, "--batch-size", "--batch N (images per inference)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    parser.add_argument("--pad-to-input", action="store_true",
                        help="zero-pad images to the model input size, as the deployment graph sees them")
    parser.add_argument("--min-scores", type=float, nargs="+", default=None, metavar="S",
                        help="also print mask and box precision/recall at IoU 0.5 of the detections scoring >= "
                             "each S (an operating point for a deployment's --min-score)")
    parser.add_argument("--verbose", action="store_true", help="print COCOeval's full summaries")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def resolve_eval_data(data: str | None, split: str, ann: str | None, images: str | None) -> tuple[Path, Path]:
    """(annotation file, image folder) from the ``maskrt eval`` options; ValueError if missing."""
    if data is None and (ann is None or images is None):
        raise ValueError("give --data DIR (with --split), or both --ann FILE and --images DIR")
    ann_file = Path(ann) if ann is not None else Path(data) / "annotations" / f"instances_{split}.json"
    image_dir = Path(images) if images is not None else Path(data) / split
    if not ann_file.is_file():
        raise ValueError(f"{ann_file}: annotation file not found")
    if not image_dir.is_dir():
        raise ValueError(f"{image_dir}: image folder not found")
    return ann_file, image_dir


def format_metrics(metrics: Mapping[str, Mapping[str, float]]) -> str:
    """A small table: one row per IoU type, AP .. APl (``-`` where COCOeval reports -1)."""
    lines = ["      " + "".join(f"{name:>8}" for name in METRIC_NAMES)]
    for iou_type, m in metrics.items():
        cells = "".join(f"{'-':>8}" if m[name] < 0 else f"{m[name]:8.4f}" for name in METRIC_NAMES)
        lines.append(f"{iou_type:<6}{cells}")
    return "\n".join(lines)


def run_eval(args: argparse.Namespace) -> int:
    """Run ``maskrt eval`` from parsed arguments: prints the table, writes ``--out``; returns 0.
    Errors raise ValueError with a readable message."""
    from maskrt.train.data.coco import CocoInstances
    from maskrt.train.model.checkpoint import load_checkpoint

    ann_file, image_dir = resolve_eval_data(args.data, args.split, args.ann, args.images)
    if args.batch < 1:
        raise ValueError(f"--batch must be >= 1, got {args.batch}")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    dataset = CocoInstances(ann_file, image_dir)
    model, payload = load_checkpoint(args.checkpoint)
    cfg = payload["config"]
    if cfg.num_classes != dataset.num_classes:
        raise ValueError(f"{args.checkpoint}: the model has {cfg.num_classes} classes (incl. background) but "
                         f"{ann_file} has {dataset.num_classes} ({dataset.num_classes - 1} categories + background)")
    if cfg.class_names and tuple(cfg.class_names[1:]) != tuple(dataset.class_names[1:]):
        print(f"maskrt eval: warning: class names differ: model {list(cfg.class_names[1:])}, "
              f"data {list(dataset.class_names[1:])}", file=sys.stderr)

    min_scores = list(args.min_scores or [])
    if any(not 0.0 <= s <= 1.0 for s in min_scores):
        raise ValueError(f"--min-scores must be in [0, 1], got {min_scores}")

    n_images = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    model.eval()
    results = predict_coco(dataset, torch_infer(model), cfg.input_size, batch_size=args.batch,
                           pad_to_input=args.pad_to_input, limit=args.limit, progress=not args.no_progress)
    img_ids = dataset.ids[:args.limit] if args.limit is not None else None
    metrics = coco_evaluate(dataset.coco, results, verbose=args.verbose, img_ids=img_ids)
    print(f"model : {cfg.name} ({cfg.backbone}, {cfg.num_classes} classes incl. background) from {args.checkpoint}")
    print(f"data  : {ann_file} ({n_images} of {len(dataset)} images)")
    print(format_metrics(metrics))
    operating_points = []
    if min_scores:
        # NOTE: COCO results keep detections down to the model's own score threshold, so a point
        # below it equals the point at it. With --limit, images past the limit count as unseen.
        gt = dataset.coco
        if img_ids is not None:
            keep = set(img_ids)
            gt = _subset_gt(gt, keep)
        print("      at IoU 0.5   min score  mask P  mask R  box P   box R   detections / objects")
        for s in min_scores:
            m = precision_recall(gt, results, "segm", iou=0.5, min_score=s)
            b = precision_recall(gt, results, "bbox", iou=0.5, min_score=s)
            operating_points.append({"min_score": s, "segm": m, "bbox": b})
            print(f"      {'':12} {s:9.2f}  {m['precision']:6.3f}  {m['recall']:6.3f}  {b['precision']:6.3f}  "
                  f"{b['recall']:6.3f}  {m['detections']} / {m['ground_truth']}")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        report = {"checkpoint": str(args.checkpoint), "config": cfg.name, "ann_file": str(ann_file),
                  "image_dir": str(image_dir), "images": n_images, "metrics": metrics}
        if operating_points:
            report["operating_points"] = operating_points
        out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {out}")
    return 0
