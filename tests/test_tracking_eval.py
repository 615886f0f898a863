"""``maskrt track-eval`` (runtime/tracking/evaluate.py) on hand-made sequences whose MOT metrics
are worked out by hand, and the whole pipeline on a generated clip with ground-truth identities
(train/data/clips.py) through the embedded model: the tracker against the greedy baseline."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from maskrt.runtime.tracking import GreedyIoUTracker, Tracker
from maskrt.runtime.tracking.evaluate import (
    add_track_eval_arguments,
    evaluate,
    load_ground_truth,
    load_predictions,
    retrack,
    summarize,
)

H, W = 60, 80


def rle(mask: np.ndarray) -> dict:
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in r["size"]], "counts": r["counts"].decode("ascii")}


def rect(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def objects_at(f: int) -> list[tuple[int, int, np.ndarray]]:
    """(track id, class, mask) of the two true objects in frame f: one moving right, one left."""
    return [(1, 1, rect(5 + f, 5, 20 + f, 20)), (2, 1, rect(60 - f, 35, 75 - f, 50))]


def write_gt(folder: Path, frames: int) -> tuple[Path, Path]:
    images, anns, mot = [], [], []
    for f in range(frames):
        images.append({"id": f + 1, "frame_index": f, "height": H, "width": W, "file_name": f"clip.mp4#{f}"})
        for tid, cls, m in objects_at(f):
            ys, xs = np.nonzero(m)
            bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
            anns.append({"id": len(anns) + 1, "image_id": f + 1, "category_id": cls, "bbox": bbox, "iscrowd": 0,
                         "area": int(m.sum()), "segmentation": rle(m), "track_id": tid})
            mot.append(f"{f + 1},{tid},{bbox[0]},{bbox[1]},{bbox[2]},{bbox[3]},1,{cls},1")
    gj, gt = folder / "clip.gt.json", folder / "clip.gt.txt"
    gj.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}]}))
    gt.write_text("\n".join(mot) + "\n")
    return gj, gt


def write_pred(path: Path, frames: int, ids_of, mask_of=None, skip=()) -> Path:
    lines = []
    for f in range(frames):
        if f in skip:
            continue
        objs = objects_at(f)
        masks = [m if mask_of is None else mask_of(f, k, m) for k, (_, _, m) in enumerate(objs)]
        boxes = []
        for _, _, m in objs:
            ys, xs = np.nonzero(m)
            boxes.append([float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)])
        lines.append(json.dumps({"frame": f, "timestamp": f / 25, "image_size": [H, W], "boxes": boxes,
                                 "scores": [0.9, 0.8], "classes": [1, 1], "names": ["a", "a"],
                                 "track_ids": [ids_of(f, 0), ids_of(f, 1)], "masks": [rle(m) for m in masks]}))
    path.write_text("\n".join(lines) + "\n")
    return path


def metrics(gt_path: Path, pred_path: Path, match: str = "mask") -> dict[str, float]:
    gt, n = load_ground_truth(gt_path)
    return summarize([evaluate(gt, load_predictions(pred_path), num_frames=n, match=match)], ["x"])["x"]


def test_perfect_tracks_score_one(tmp_path):
    gj, gt = write_gt(tmp_path, 10)
    pred = write_pred(tmp_path / "p.jsonl", 10, lambda f, k: 7 + k)
    for g, match in ((gj, "mask"), (gt, "box")):
        m = metrics(g, pred, match)
        assert (m["mota"], m["idf1"], m["num_switches"], m["num_false_positives"], m["num_misses"]) == (1, 1, 0, 0, 0)
        assert m["num_objects"] == 20 and m["num_unique_objects"] == 2


def test_swapped_ids_and_dropped_frames_are_counted_as_worked_out_by_hand(tmp_path):
    gj, _ = write_gt(tmp_path, 10)
    # ids swap from frame 5 on: IDF1 = best one-to-one id mapping covers 5 of 10 frames per object
    # -> 10 / 20; 2 switches; MOTA = 1 - 2 / 20
    m = metrics(gj, write_pred(tmp_path / "p.jsonl", 10, lambda f, k: (1 + k) if f < 5 else (2 - k)))
    assert m["num_switches"] == 2 and m["idf1"] == pytest.approx(0.5) and m["mota"] == pytest.approx(0.9)
    # two frames missing (a live stream's drops): 4 misses, MOTA 16 / 20, IDF1 = 2 * 16 / (20 + 16)
    m = metrics(gj, write_pred(tmp_path / "q.jsonl", 10, lambda f, k: 1 + k, skip=(3, 4)))
    assert m["num_misses"] == 4 and m["mota"] == pytest.approx(0.8) and m["idf1"] == pytest.approx(32 / 36)


def test_mask_matching_rejects_a_right_box_with_a_wrong_mask(tmp_path):
    gj, _ = write_gt(tmp_path, 4)

    def thin(f, k, m):  # object 1's mask shrunk to a 3-px line inside its (unchanged) box
        if k:
            return m
        out = np.zeros_like(m)
        ys, xs = np.nonzero(m)
        out[ys.min():ys.min() + 3, xs.min():xs.max() + 1] = True
        return out

    pred = write_pred(tmp_path / "p.jsonl", 4, lambda f, k: 1 + k, mask_of=thin)
    by_mask, by_box = metrics(gj, pred, "mask"), metrics(gj, pred, "box")
    assert by_mask["num_misses"] == 4 and by_mask["num_false_positives"] == 4
    assert by_box["num_misses"] == 0 and by_box["mota"] == 1


def test_track_eval_command(tmp_path, capsys):
    from maskrt.runtime.cli import run_parser

    gj, _ = write_gt(tmp_path, 10)
    pred = write_pred(tmp_path / "p.jsonl", 10, lambda f, k: 1 + k)
    parser = argparse.ArgumentParser(prog="maskrt")
    parser.add_argument("--debug", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    add_track_eval_arguments(sub.add_parser("track-eval"))
    out = tmp_path / "m.json"
    assert run_parser(parser, ["track-eval", "--pred", str(pred), "--gt", str(gj), "--baseline", "greedy",
                               "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "match: mask" in text and "tracker vs greedy: IDF1 1.000" in text
    res = json.loads(out.read_text())
    assert res["tracker"]["p.jsonl"]["idf1"] == 1.0 and "greedy:p.jsonl" in res["greedy_baseline"]

    (tmp_path / "untracked.jsonl").write_text(json.dumps({"frame": 0, "boxes": []}) + "\n")
    assert run_parser(parser, ["track-eval", "--pred", str(tmp_path / "untracked.jsonl"), "--gt", str(gj)]) == 1
    assert "no 'track_ids'" in capsys.readouterr().err


# ============================================================================ whole pipeline, generated clip
def test_pipeline_tracker_beats_the_greedy_baseline_on_a_clip_with_true_identities(predictor, tmp_path):
    from test_video import RecordingSink

    from maskrt.runtime.video import JsonlSink, VideoPipeline
    from maskrt.train.data.clips import write_clip

    files = write_clip(tmp_path / "clip.mp4", "moving", frames=48, frame_size=(240, 320), seed=0)
    jsonl, rec = tmp_path / "clip.jsonl", RecordingSink()
    stats = VideoPipeline(str(files.video), predictor, [JsonlSink(jsonl), rec], tracker=Tracker()).run()
    assert stats.frames_out == 48 and stats.tracks["ids"] >= 3
    gt, n = load_ground_truth(files.gt_json)
    ours = evaluate(gt, load_predictions(jsonl), num_frames=n, match="mask")
    # the baseline sees exactly the same detections (the records, every detection kept)
    greedy = evaluate(gt, retrack(load_predictions(jsonl, tracked_only=False), GreedyIoUTracker()), num_frames=n,
                      match="mask")
    res = summarize([ours, greedy], ["tracker", "greedy"])
    t, g = res["tracker"], res["greedy"]
    assert t["num_objects"] == g["num_objects"] > 100
    assert t["idf1"] > g["idf1"], res
    assert t["num_switches"] <= g["num_switches"], res
