"""`maskrt demo`: the whole chain on the embedded default checkpoint.

    checkpoint (.pt) -> ONNX ("ort" flavour) -> ONNX Runtime -> VideoPipeline over a generated clip
                     -> annotated video + JSON lines + a per-stage latency summary

Everything is written under ``--out`` (default ``out/demo``): ``model.onnx``, ``clip.mp4`` (the
input: a camera panning across a synthetic scene), ``annotated.mp4``, ``detections.jsonl`` and
``summary.json``; the clip's ground truth lies beside it (``clip.gt.json``, ``clip.gt.txt``: see
``train/data/clips.py``), and the demo scores itself against it (mask AP50 with COCOeval,
precision and recall at mask IoU 0.5 at ``--min-score``; printed and in ``summary.json``) and
writes ``gallery.png``, six annotated frames each beside its ground truth (export/gallery.py).
Before the video runs, the first frame goes through PyTorch eager and ONNX
Runtime and the two are compared (same detections; worst box and score differences printed),
so the demo shows the exported graph agrees with the model it came from.

It lives in ``export/`` because it needs what export needs (torch + onnx to make the graph) and
what the runtime has (ONNX Runtime backend, video pipeline); ``export`` may import both.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from maskrt.train.demo import DEFAULT_CHECKPOINT


def _load(checkpoint: str | None, config: str | None, seed: int):
    import torch

    from maskrt.runtime.config import preset
    from maskrt.train.model.checkpoint import load_checkpoint
    from maskrt.train.model.mask_rcnn import MaskRCNN

    if checkpoint is None and config is None:
        if not DEFAULT_CHECKPOINT.is_file():
            raise FileNotFoundError(f"the embedded default checkpoint {DEFAULT_CHECKPOINT} is missing; "
                                    "pass --checkpoint or --config")
        checkpoint = str(DEFAULT_CHECKPOINT)
    if checkpoint:
        model, payload = load_checkpoint(checkpoint)
        return model.eval(), payload["config"], checkpoint
    torch.manual_seed(seed)
    cfg = preset(config)
    return MaskRCNN(cfg).eval(), cfg, f"preset '{config}', random weights (seed {seed})"


def _first_frame_check(model, onnx_path: Path, frame: np.ndarray, threads: int) -> dict[str, Any]:
    """PyTorch eager vs ONNX Runtime on one letterboxed frame (uint8 [H, W, 3]): the deployment
    contract of both, compared with export/parity.py's matching (class, box, score, mask IoU)."""
    from .parity import compare_image, onnx_runner, torch_runner

    batch = frame[None]
    ref = torch_runner(model)(batch)
    out = onnx_runner(onnx_path, threads=threads)(batch)
    parity = compare_image(ref, out, 0, model.cfg.input_size)
    return {"ok": parity.ok, "detail": parity, "outputs": out}


def _self_score(gt_json: Path, records: list[dict[str, Any]], names, min_score: float) -> dict[str, Any]:
    """Mask AP50 (COCOeval) and precision/recall at mask IoU 0.5 of the pipeline's JSON lines
    against the clip's ground truth.

    NOTE: the JSON lines hold only detections scoring >= ``min_score`` (the pipeline drops the
    rest), so AP50 is that of the kept detections: a truncated precision-recall curve, at most
    the AP of all detections.
    """
    import contextlib
    import io

    from pycocotools.coco import COCO

    from maskrt.train.evaluate import coco_evaluate, jsonl_to_coco, precision_recall

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_json))
    frame_to_id = {img["frame_index"]: img["id"] for img in gt.dataset["images"]}
    results = jsonl_to_coco(records, gt, names, frame_to_id)
    ap50 = coco_evaluate(gt, results, ("segm",))["segm"]["AP50"]
    pr = precision_recall(gt, results, "segm", iou=0.5, min_score=min_score)
    return {"frames": len(records), "mask_AP50": ap50, "iou": 0.5, "min_score": min_score, **pr}


def run_demo(config: str | None = None, checkpoint: str | None = None, *, seed: int = 0, top: int = 5,
             out_dir: str | Path = "out/demo", frames: int = 60, frame_size: tuple[int, int] = (300, 400),
             threads: int = 2, min_score: float = 0.3) -> int:
    """The chain demo (see the module docstring). Returns 0; raises on errors (the CLI prints
    one line)."""
    import torch

    from maskrt.runtime.letterbox import letterbox
    from maskrt.runtime.predictor import Predictor
    from maskrt.runtime.video import JsonlSink, VideoFileSink, VideoFileSource, VideoPipeline

    from .onnx_export import export_model

    if frames < 1:
        raise ValueError(f"--frames must be at least 1, got {frames}")
    if min(frame_size) < 32:
        raise ValueError(f"--frame-size must be at least 32 x 32, got {frame_size}")
    t_start = time.perf_counter()
    torch.set_num_threads(threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    model, cfg, source = _load(checkpoint, config, seed)
    print(f"[1/6] model     : {cfg.name} ({cfg.backbone}-FPN, {cfg.num_classes - 1} classes, input "
          f"{cfg.input_size[0]}x{cfg.input_size[1]}) from {source}")

    onnx_path = out / "model.onnx"
    summary = export_model(model, onnx_path, "ort", progress=lambda s: print(f"      export: {s}"))
    print(f"[2/6] ONNX      : {summary.line()}")

    from maskrt.train.data.clips import write_clip

    gt_files = write_clip(out / "clip.mp4", "pan", frames=frames, frame_size=frame_size, seed=seed)
    clip = gt_files.video
    print(f"[3/6] clip      : {clip} ({frames} frames, {frame_size[1]}x{frame_size[0]}, a camera panning across a "
          "generated scene)")

    cap = cv2.VideoCapture(str(clip))
    ok, first = cap.read()
    cap.release()
    if not ok:
        raise OSError(f"cannot decode {clip}")
    boxed = letterbox(first, cfg.input_size).image
    check = _first_frame_check(model, onnx_path, boxed, threads)
    p = check["detail"]
    outputs = check["outputs"]
    print(f"[4/6] parity    : frame 0, PyTorch eager vs ONNX Runtime: {p.n_ref} vs {p.n_out} detections, "
          f"max box rel diff {p.max_box_rel:.1e}, max score diff {p.max_score_abs:.1e}, "
          f"min mask IoU {p.min_mask_iou:.3f} -> {'identical detections' if p.ok else 'MISMATCH'}")
    print("      ONNX outputs: " + ", ".join(f"{k} {v.dtype} {list(v.shape)}" for k, v in outputs.items()))
    if not p.ok:
        raise RuntimeError("the exported graph disagrees with PyTorch on the first frame: " + str(p))

    video_out, jsonl_out = out / "annotated.mp4", out / "detections.jsonl"
    with Predictor.open(onnx_path, intra_op_threads=threads) as predictor:
        pipe = VideoPipeline(VideoFileSource(clip), predictor, [VideoFileSink(video_out), JsonlSink(jsonl_out)],
                             min_score=min_score)
        stats = pipe.run()
    print(f"[5/6] video     : ONNX Runtime ({threads} threads) through the threaded pipeline; detections scoring "
          f"below {min_score} left out of the outputs")
    for line in stats.table().splitlines():
        print("      " + line)

    records = [json.loads(line) for line in jsonl_out.read_text().splitlines()]
    names = cfg.names
    score = _self_score(gt_files.gt_json, records, names, min_score)
    print(f"      self-score vs the clip's ground truth ({score['frames']} frames, {score['ground_truth']} objects, "
          f"{score['detections']} detections): mask AP50 {score['mask_AP50']:.3f}, precision {score['precision']:.3f}, "
          f"recall {score['recall']:.3f} at mask IoU 0.5 (detections scoring >= {min_score})")
    first_record = records[0]
    print(f"      frame 0 detections ({len(first_record['scores'])}), best {min(top, len(first_record['scores']))}:")
    for i in range(min(top, len(first_record["scores"]))):
        x1, y1, x2, y2 = first_record["boxes"][i]
        c = first_record["classes"][i]
        print(f"        {names[c]:<10} score {first_record['scores'][i]:.2f}  box ({x1:5.0f}, {y1:5.0f}, {x2:5.0f}, "
              f"{y2:5.0f})")
    from .gallery import contact_sheet

    gallery = contact_sheet(video_out, clip, json.loads(gt_files.gt_json.read_text()), names, out / "gallery.png",
                            predicted={int(r["frame"]): len(r["scores"]) for r in records})
    print(f"[6/6] gallery   : {gallery} (6 frames of {video_out.name}, each beside its ground truth)")
    total = time.perf_counter() - t_start
    result = {
        "model": cfg.name, "source": source, "onnx": str(onnx_path), "onnx_sha256": summary.sha256,
        "clip": str(clip), "frames": frames, "frame_size": list(frame_size), "threads": threads,
        "parity_frame0": {"ok": p.ok, "n_torch": p.n_ref, "n_ort": p.n_out, "max_box_rel": p.max_box_rel,
                          "max_score_abs": p.max_score_abs, "min_mask_iou": p.min_mask_iou},
        "pipeline": stats.to_dict(), "self_score": score, "gallery": str(gallery), "total_s": total,
    }
    (out / "summary.json").write_text(json.dumps(result, indent=1, default=float))
    print(f"wrote {video_out}, {jsonl_out}, {out / 'summary.json'}  (demo took {total:.1f} s)")
    return 0
