"""Precision benchmark: ONNX Runtime CPU latency, COCO AP and agreement of the fp32, fp16 and int8 graphs.

    python -m maskrt.benchmarks.precision_bench --model default --data data/synth --calib DIR --out R.json
    python -m maskrt.benchmarks.precision_bench --model r50 --calib DIR --out R.json

Exports the ort-flavour graph at each precision (int8 calibrated on ``--calib``), then
* latency: one ONNX Runtime CPU session per precision (``--threads`` intra-op threads, 1
  inter-op), batch 1, warm-up, then ``--rounds`` rounds that run the precisions alternately
  (fp32, fp16, int8, fp32, ...), so drifts of a shared machine hit all alike; median and p90
  per precision, and each median as a ratio to fp32's;
* agreement with fp32 on generated images: detections matched one to one (same class, IoU >=
  0.5), the largest box difference of matched detections, counts;
* with ``--data``: COCO bbox/segm AP of each precision on its val split (pycocotools).

Timings are recorded, never asserted (docs/results.md has the figures and the commands).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from maskrt.runtime.cli import renamed_option
from maskrt.runtime.model_meta import PRECISIONS


def _session(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], axis=1)  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def agreement(ref: dict, out: dict) -> dict:
    """Greedy one-to-one matching of ``out``'s detections to ``ref``'s (same class, IoU >= 0.5,
    by descending reference score) over a batch."""
    matched = n_ref = n_out = 0
    box_diff = 0.0
    for i in range(len(ref["num_detections"])):
        nr, no = int(ref["num_detections"][i]), int(out["num_detections"][i])
        n_ref, n_out = n_ref + nr, n_out + no
        if nr == 0 or no == 0:
            continue
        iou = _iou(ref["boxes"][i, :nr], out["boxes"][i, :no])
        iou[ref["classes"][i, :nr, None] != out["classes"][i, None, :no]] = 0
        used = set()
        for r in np.argsort(-ref["scores"][i, :nr], kind="stable"):
            cand = [(iou[r, o], o) for o in range(no) if o not in used and iou[r, o] >= 0.5]
            if cand:
                _, o = max(cand)
                used.add(o)
                matched += 1
                box_diff = max(box_diff, float(np.abs(ref["boxes"][i, r] - out["boxes"][i, o]).max()))
    return {"ref_detections": n_ref, "detections": n_out, "matched": matched,
            "matched_fraction": matched / max(n_ref, 1), "max_box_diff_px_matched": box_diff}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m maskrt.benchmarks.precision_bench", description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=("default", "r50"), default="default",
                   help="default: the embedded checkpoint (320x320); r50: R50-FPN 800x1344, random weights (seed 0)")
    p.add_argument("--calib", required=True, metavar="DIR", help="calibration images for int8")
    p.add_argument("--calib-images", type=int, default=64)
    p.add_argument("--calib-method", default="percentile", choices=("percentile", "minmax", "entropy"))
    p.add_argument("--reuse", action="store_true", help="reuse graphs already exported into --work-dir")
    p.add_argument("--data", default=None, help="COCO-format root for AP (annotations/instances_val.json + val/)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--images", type=int, default=4, help="generated images for the agreement")
    p.add_argument("--work-dir", default="out/precision_bench", metavar="DIR", help="folder for the exported graphs")
    renamed_option(p, "--work", "--work-dir DIR")
    p.add_argument("--out", required=True, help="JSON results file")
    args = p.parse_args(argv)

    import onnxruntime
    import torch

    from maskrt.export.commands import _load_model
    from maskrt.export.onnx_export import export_model
    from maskrt.train.demo import demo_image

    torch.set_num_threads(args.threads)
    model = _load_model(None, "r50" if args.model == "r50" else None, None, seed=0)
    cfg = model.cfg
    work = Path(args.work_dir) / args.model
    work.mkdir(parents=True, exist_ok=True)
    paths, export_s = {}, {}
    for prec in PRECISIONS:
        t = time.perf_counter()
        if args.reuse and (work / f"{args.model}_{prec}.onnx").is_file():
            paths[prec], export_s[prec] = work / f"{args.model}_{prec}.onnx", None
            continue
        kw = ({"calib_dir": args.calib, "calib_images": args.calib_images, "calib_method": args.calib_method}
              if prec == "int8" else {})
        paths[prec] = export_model(model, work / f"{args.model}_{prec}.onnx", "ort", precision=prec,
                                   progress=lambda m, p=prec: print(f"[{p}] {m}", flush=True), **kw).path
        export_s[prec] = time.perf_counter() - t
    del model

    images = np.stack([demo_image(i, cfg.input_size) for i in range(args.images)])
    sessions = {k: _session(v, args.threads) for k, v in paths.items()}
    names = [o.name for o in sessions["fp32"].get_outputs()]
    outs = {k: dict(zip(names, s.run(None, {"images": images}), strict=True)) for k, s in sessions.items()}
    agree = {k: agreement(outs["fp32"], outs[k]) for k in PRECISIONS}

    x = images[:1]
    for s in sessions.values():
        for _ in range(args.warmup):
            s.run(None, {"images": x})
    times: dict[str, list[float]] = {k: [] for k in PRECISIONS}
    for r in range(args.rounds):
        for k in PRECISIONS:
            t = time.perf_counter()
            sessions[k].run(None, {"images": x})
            times[k].append(time.perf_counter() - t)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {times[k][-1] * 1e3:.0f} ms" for k in PRECISIONS),
              flush=True)
    latency = {k: {"median_ms": float(np.median(v) * 1e3), "p90_ms": float(np.percentile(v, 90) * 1e3),
                   "runs_ms": [round(t * 1e3, 2) for t in v]} for k, v in times.items()}
    for k in PRECISIONS:
        latency[k]["speedup_vs_fp32"] = latency["fp32"]["median_ms"] / latency[k]["median_ms"]

    ap = None
    if args.data:
        from maskrt.export.parity import onnx_runner
        from maskrt.train.data.coco import CocoInstances
        from maskrt.train.evaluate import coco_evaluate, predict_coco

        root = Path(args.data)
        ds = CocoInstances(root / "annotations" / "instances_val.json", root / "val")
        ap = {}
        for k in PRECISIONS:
            res = predict_coco(ds, onnx_runner(paths[k], args.threads), cfg.input_size, batch_size=1,
                               pad_to_input=True, progress=False)
            m = coco_evaluate(ds.coco, res, img_ids=list(ds.ids))
            ap[k] = {"bbox_AP": m["bbox"]["AP"], "segm_AP": m["segm"]["AP"], "images": len(ds.ids)}
            print(f"AP {k}: bbox {m['bbox']['AP']:.4f} segm {m['segm']['AP']:.4f}", flush=True)

    doc = {"model": cfg.name, "input_size": list(cfg.input_size), "threads": args.threads, "rounds": args.rounds,
           "batch": 1, "onnxruntime": onnxruntime.__version__, "cpu": platform.processor() or platform.machine(),
           "note": "shared machine (other sessions and a training run on the same 2 cores)",
           "calibration": {"dir": str(args.calib), "images": args.calib_images, "library": "onnxruntime.quantization",
                           "method": args.calib_method},
           "export_seconds": export_s, "latency": latency, "agreement_with_fp32": agree, "coco": ap,
           "graph_bytes": {k: Path(v).stat().st_size for k, v in paths.items()}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps({"latency_median_ms": {k: round(v["median_ms"], 1) for k, v in latency.items()},
                      "agreement": {k: round(v["matched_fraction"], 3) for k, v in agree.items()}, "coco": ap}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
