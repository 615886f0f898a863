"""``maskrt track-eval``: score tracked JSON lines against MOT ground truth (motmetrics).

    maskrt video --model m.onnx --source clip.mp4 --jsonl clip.jsonl          # tracking is on by default
    maskrt track-eval --pred clip.jsonl --gt clip.gt.json                    # mask-IoU matching
    maskrt track-eval --pred clip.jsonl --gt clip.gt.txt --baseline greedy   # boxes; + the no-motion baseline

Ground truth, beside a generated clip (``train/data/clips.py``):

* ``clip.gt.json``: COCO instances, one image per frame (``frame_index`` 0-based, or ``id`` =
  frame index + 1), annotations with ``bbox`` [x, y, w, h], ``segmentation`` (compressed RLE),
  ``category_id`` and ``track_id`` (>= 1). Matched on **mask IoU** (pycocotools RLE IoU of the
  predicted and true full-resolution masks) by default, or on box IoU (``--match box``).
* ``clip.gt.txt``: MOT-challenge lines ``frame,id,x,y,w,h,conf,class,visibility`` (1-based
  frames): box IoU matching.

Predictions: the JSON lines of ``maskrt video`` (``frame``, ``boxes``, ``classes``, ``track_ids``,
``masks``); detections with track id -1 (on no confirmed track) are not hypotheses. A frame of
the ground truth without a line (a live stream's dropped frame) has no hypotheses: its objects
are misses.

A (truth, hypothesis) pair can match when its IoU is at least ``--iou`` (0.5) and, unless
``--any-class``, the classes agree; motmetrics solves the per-frame assignment with the CLEAR-MOT
rules (matches kept from the previous frame first) and reports MOTA, MOTP, IDF1 / IDP / IDR, ID
switches, false positives, misses. ``--baseline greedy`` re-tracks the same detections with the
no-motion greedy IoU tracker (:class:`~maskrt.runtime.tracking.GreedyIoUTracker`) and scores it
alongside.

NOTE: motmetrics 1.4's own IoU helpers (``motmetrics.distances.iou_matrix``) call
``np.asfarray``, removed in numpy 2; the distance matrices here are computed by pycocotools and
numpy and handed to ``MOTAccumulator.update``, which works with numpy 2.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FrameObjects", "METRICS", "add_track_eval_arguments", "evaluate", "load_ground_truth",
           "load_predictions", "retrack", "run_track_eval"]

#: motmetrics metric names reported, and their column titles
METRICS = {"mota": "MOTA", "idf1": "IDF1", "idp": "IDP", "idr": "IDR", "num_switches": "IDsw",
           "num_false_positives": "FP", "num_misses": "FN", "motp": "MOTP", "mostly_tracked": "MT",
           "mostly_lost": "ML", "num_objects": "GT", "num_unique_objects": "GT ids", "num_frames": "frames"}


@dataclass
class FrameObjects:
    """The objects of one frame: ids int [N], classes int [N], boxes float [N, 4] (x1, y1, x2, y2),
    masks: N COCO RLEs (``counts`` bytes) or None; scores float [N] (predictions; 1 for truth)."""

    ids: np.ndarray
    classes: np.ndarray
    boxes: np.ndarray
    masks: list[dict] | None
    scores: np.ndarray

    @classmethod
    def empty(cls, with_masks: bool) -> FrameObjects:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4)), [] if with_masks else None,
                   np.zeros(0))


def _need_motmetrics():
    try:
        import motmetrics
    except ImportError as e:
        raise RuntimeError(f"`maskrt track-eval` needs motmetrics: pip install 'maskrt[track-eval]' ({e})") from None
    return motmetrics


def _need_mask_utils():
    try:
        from pycocotools import mask as mask_utils
    except ImportError as e:
        raise RuntimeError(f"mask-IoU matching needs pycocotools: pip install 'maskrt[track-eval]' ({e}); or use "
                           "--match box") from None
    return mask_utils


def _rle(m: dict, where: str) -> dict:
    if not isinstance(m, dict) or "size" not in m or "counts" not in m:
        raise ValueError(f"{where}: a mask must be a COCO RLE {{'size': [h, w], 'counts': ...}}")
    counts = m["counts"]
    if isinstance(counts, list):  # uncompressed RLE
        mask_utils = _need_mask_utils()
        return mask_utils.frPyObjects(m, *m["size"])
    return {"size": [int(v) for v in m["size"]], "counts": counts.encode("ascii") if isinstance(counts, str)
            else counts}


# ====================================================================== reading
def load_predictions(path: str | os.PathLike, *, tracked_only: bool = True) -> dict[int, FrameObjects]:
    """JSON lines of ``maskrt video`` -> {frame index: objects}. ``tracked_only``: keep the
    detections with a track id >= 1 (False: every detection, ids as given or -1)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"predictions {path}: no such file")
    frames: dict[int, FrameObjects] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not JSON ({e.msg})") from None
            if "frame" not in rec or "boxes" not in rec:
                raise ValueError(f"{where}: not a maskrt video record (no 'frame' / 'boxes')")
            k = len(rec["boxes"])
            if tracked_only and "track_ids" not in rec:
                raise ValueError(f"{where}: no 'track_ids': the predictions were made with --no-track (run maskrt "
                                 "video with tracking on)")
            ids = np.asarray(rec.get("track_ids", [-1] * k), np.int64).reshape(-1)
            boxes = np.asarray(rec["boxes"], np.float64).reshape(-1, 4)
            classes = np.asarray(rec.get("classes", [0] * k), np.int64).reshape(-1)
            scores = np.asarray(rec.get("scores", [1.0] * k), np.float64).reshape(-1)
            masks = [_rle(m, where) for m in rec["masks"]] if "masks" in rec else None
            if not (len(ids) == len(classes) == len(scores) == k) or (masks is not None and len(masks) != k):
                raise ValueError(f"{where}: boxes, classes, scores, track_ids and masks differ in length")
            keep = ids >= 1 if tracked_only else np.ones(k, bool)
            frame = int(rec["frame"])
            if frame in frames:
                raise ValueError(f"{where}: frame {frame} appears twice")
            frames[frame] = FrameObjects(ids[keep], classes[keep], boxes[keep],
                                         None if masks is None else [m for m, ok in zip(masks, keep, strict=True)
                                                                     if ok], scores[keep])
    return frames


def load_ground_truth(path: str | os.PathLike) -> tuple[dict[int, FrameObjects], int]:
    """``clip.gt.json`` (COCO + track_id, masks) or ``clip.gt.txt`` (MOT, boxes) -> ({frame
    index (0-based): objects}, number of frames)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ground truth {path}: no such file")
    if path.suffix.lower() == ".json":
        return _load_coco_tracks(path)
    return _load_mot(path)


def _load_coco_tracks(path: Path) -> tuple[dict[int, FrameObjects], int]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not JSON ({e.msg})") from None
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise ValueError(f"{path}: not COCO instances (needs 'images' and 'annotations')")
    frame_of = {}
    for img in data["images"]:
        frame_of[img["id"]] = int(img.get("frame_index", img["id"] - 1))
    per: dict[int, list[dict]] = {f: [] for f in frame_of.values()}
    for a in data["annotations"]:
        if "track_id" not in a:
            raise ValueError(f"{path}: annotation {a.get('id')} has no track_id (not tracking ground truth)")
        if a.get("iscrowd", 0):
            continue
        if a["image_id"] not in frame_of:
            raise ValueError(f"{path}: annotation {a.get('id')} refers to unknown image {a['image_id']}")
        per[frame_of[a["image_id"]]].append(a)
    out = {}
    for f, anns in per.items():
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], np.float64).reshape(-1, 4)
        masks = [_rle(a["segmentation"], f"{path}: annotation {a.get('id')}") for a in anns] \
            if all("segmentation" in a for a in anns) else None
        out[f] = FrameObjects(np.array([int(a["track_id"]) for a in anns], np.int64),
                              np.array([int(a["category_id"]) for a in anns], np.int64), boxes, masks,
                              np.ones(len(anns)))
    return out, (max(out) + 1 if out else 0)


def _load_mot(path: Path) -> tuple[dict[int, FrameObjects], int]:
    rows: dict[int, list[tuple]] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(",")
        try:
            frame, tid, x, y, w, h = (float(v) for v in parts[:6])
            cls = int(float(parts[7])) if len(parts) > 7 else 1
        except ValueError:
            raise ValueError(f"{path}:{n}: not a MOT line 'frame,id,x,y,w,h,conf,class,visibility'") from None
        if frame < 1:
            raise ValueError(f"{path}:{n}: MOT frames are 1-based, got {int(frame)}")
        rows.setdefault(int(frame) - 1, []).append((int(tid), cls, x, y, x + w, y + h))
    out = {f: FrameObjects(np.array([r[0] for r in rs], np.int64), np.array([r[1] for r in rs], np.int64),
                           np.array([r[2:] for r in rs], np.float64).reshape(-1, 4), None, np.ones(len(rs)))
           for f, rs in rows.items()}
    return out, (max(out) + 1 if out else 0)


# ====================================================================== scoring
def _iou(gt: FrameObjects, hyp: FrameObjects, match: str) -> np.ndarray:
    if len(gt.ids) == 0 or len(hyp.ids) == 0:
        return np.zeros((len(gt.ids), len(hyp.ids)))
    if match == "mask":
        mask_utils = _need_mask_utils()
        return np.asarray(mask_utils.iou(gt.masks, hyp.masks, [0] * len(hyp.masks)), np.float64).reshape(
            len(gt.ids), len(hyp.ids))
    from .association import box_iou

    return box_iou(gt.boxes, hyp.boxes)


def evaluate(gt: dict[int, FrameObjects], pred: dict[int, FrameObjects], *, num_frames: int | None = None,
             iou: float = 0.5, match: str = "mask", class_aware: bool = True):
    """A ``motmetrics.MOTAccumulator`` over frames 0 .. num_frames - 1 (default: every frame of
    the ground truth and the predictions)."""
    mm = _need_motmetrics()
    if match not in ("mask", "box"):
        raise ValueError(f"match must be 'mask' or 'box', got {match!r}")
    if not 0.0 < iou <= 1.0:
        raise ValueError(f"iou must be in (0, 1], got {iou!r}")
    if match == "mask":
        for name, frames in (("ground truth", gt), ("predictions", pred)):
            if any(f.masks is None for f in frames.values()):
                raise ValueError(f"mask matching needs masks in the {name} (use --match box)")
    n = num_frames if num_frames is not None else max([*gt, *pred], default=-1) + 1
    acc = mm.MOTAccumulator(auto_id=False)
    for f in range(n):
        g = gt.get(f) or FrameObjects.empty(match == "mask")
        h = pred.get(f) or FrameObjects.empty(match == "mask")
        m = _iou(g, h, match)
        dist = 1.0 - m
        allowed = m >= iou
        if class_aware:
            allowed &= g.classes[:, None] == h.classes[None, :]
        dist[~allowed] = np.nan
        acc.update(g.ids.tolist(), h.ids.tolist(), dist, frameid=f)
    return acc


def summarize(accs: Sequence[Any], names: Sequence[str]) -> dict[str, dict[str, float]]:
    """{name: {metric: value}} for each accumulator (+ 'OVERALL' when there are several)."""
    mm = _need_motmetrics()
    mh = mm.metrics.create()
    df = mh.compute_many(list(accs), metrics=list(METRICS), names=list(names), generate_overall=len(accs) > 1)
    return {str(name): {k: float(v) for k, v in row.items()} for name, row in df.iterrows()}


def retrack(pred: dict[int, FrameObjects], tracker: Any) -> dict[int, FrameObjects]:
    """The same detections re-tracked by ``tracker`` (``update(boxes, scores, classes, masks,
    frame_index)``), keeping those it gives an id."""
    out = {}
    for f in sorted(pred):
        p = pred[f]
        ids = np.asarray(tracker.update(p.boxes, p.scores, p.classes, None, f), np.int64)
        keep = ids >= 1
        out[f] = FrameObjects(ids[keep], p.classes[keep], p.boxes[keep],
                              None if p.masks is None else [m for m, k in zip(p.masks, keep, strict=True) if k],
                              p.scores[keep])
    return out


def format_table(results: dict[str, dict[str, float]]) -> str:
    cols = list(METRICS)
    head = f"{'':<22}" + "".join(f"{METRICS[c]:>8}" for c in cols)
    rows = [head]
    for name, r in results.items():
        cells = []
        for c in cols:
            v = r.get(c, float("nan"))
            cells.append(f"{v:>8.3f}" if c in ("mota", "idf1", "idp", "idr", "motp") else f"{int(v):>8d}")
        rows.append(f"{name[:22]:<22}" + "".join(cells))
    return "\n".join(rows)


# ====================================================================== command line
def add_track_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Score tracked JSON lines (maskrt video) against MOT ground truth with motmetrics: MOTA, "
                          "IDF1, ID switches, FP, FN, MOTP. Matching on mask IoU with clip.gt.json (COCO + track_id), "
                          "on box IoU with clip.gt.txt (MOT).")
    parser.add_argument("--pred", action="append", required=True, metavar="JSONL",
                        help="JSON lines of maskrt video (repeat with --gt for several sequences)")
    parser.add_argument("--gt", action="append", required=True, metavar="GT",
                        help="ground truth: clip.gt.json (COCO + track_id) or clip.gt.txt (MOT), one per --pred")
    parser.add_argument("--match", choices=("auto", "mask", "box"), default="auto",
                        help="IoU of masks or boxes (auto: masks when the ground truth has them)")
    parser.add_argument("--iou", type=float, default=0.5, help="minimum IoU of a match (default 0.5)")
    parser.add_argument("--any-class", action="store_true", help="match regardless of class")
    parser.add_argument("--baseline", choices=("none", "greedy"), default="none",
                        help="also score the same detections re-tracked by the no-motion greedy IoU baseline")
    parser.add_argument("--out", default=None, metavar="F", help="write the metrics as JSON to F")
    parser.set_defaults(func=run_track_eval)


def run_track_eval(args: argparse.Namespace) -> int:
    if len(args.pred) != len(args.gt):
        raise ValueError(f"give one --gt per --pred (got {len(args.pred)} --pred, {len(args.gt)} --gt)")
    _need_motmetrics()
    accs, names = [], []
    base_accs = []
    for pred_path, gt_path in zip(args.pred, args.gt, strict=True):
        gt, n = load_ground_truth(gt_path)
        match = args.match if args.match != "auto" else \
            ("mask" if all(f.masks is not None for f in gt.values()) and gt else "box")
        pred = load_predictions(pred_path)
        n = max(n, max(pred, default=-1) + 1)
        accs.append(evaluate(gt, pred, num_frames=n, iou=args.iou, match=match, class_aware=not args.any_class))
        names.append(Path(pred_path).name)
        if args.baseline == "greedy":
            from .baseline import GreedyIoUTracker

            every = load_predictions(pred_path, tracked_only=False)
            base = retrack(every, GreedyIoUTracker())
            base_accs.append(evaluate(gt, base, num_frames=n, iou=args.iou, match=match,
                                      class_aware=not args.any_class))
    results = summarize(accs, names)
    print(f"match: {match} IoU >= {args.iou}{'' if args.any_class else ', same class'}")
    print(format_table(results))
    out: dict[str, Any] = {"match": match, "iou": args.iou, "class_aware": not args.any_class, "tracker": results}
    if base_accs:
        base = summarize(base_accs, [f"greedy:{n}" for n in names])
        print(format_table(base))
        out["greedy_baseline"] = base
        key_t = "OVERALL" if len(accs) > 1 else names[0]
        key_b = "OVERALL" if len(accs) > 1 else f"greedy:{names[0]}"
        t, b = results[key_t], base[key_b]
        print(f"tracker vs greedy: IDF1 {t['idf1']:.3f} vs {b['idf1']:.3f}, ID switches {int(t['num_switches'])} vs "
              f"{int(b['num_switches'])}, MOTA {t['mota']:.3f} vs {b['mota']:.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    return 0
