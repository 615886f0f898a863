"""Tracking on generated clips with true identities, and many streams through one pipeline.

    python -m maskrt.benchmarks.bench_tracking --out-dir benchmarks/results      # --model m.onnx: another model

1. **MOT** (``tracking_mot.json``): ``--clips`` generated clips of each ``--kinds``
   (train/data/clips.py; "moving": occlusion, crossing, exit and re-entry, wanderers; "pan": a
   camera sweeping over static objects, which leave and re-enter) run once through ``maskrt video``'s
   pipeline with the tracker (the embedded model, ONNX Runtime); the same detections are
   re-tracked by the no-motion greedy IoU baseline; both scored by ``maskrt track-eval``'s
   evaluator (motmetrics, mask IoU >= 0.5, same class). Per clip and overall.
2. **Streams** (``streams.json``): 1, 2 and 4 file streams (the clips) through one
   ``MultiStreamPipeline`` (``--batch`` = the number of streams) against the same streams as
   separate single-stream ``VideoPipeline`` s running at the same time (one Predictor each), on
   the same machine, in one run. Throughput = frames out of all streams / wall time. Every
   Predictor gets ``--threads`` intra-op threads; one warm-up inference each before timing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import threading
import time
from pathlib import Path


def mot(model: str, clips: list, threads: int, out_dir: Path) -> dict:
    from maskrt.runtime.predictor import Predictor
    from maskrt.runtime.tracking import GreedyIoUTracker, Tracker
    from maskrt.runtime.tracking.evaluate import evaluate, load_ground_truth, load_predictions, retrack, summarize
    from maskrt.runtime.video import JsonlSink, MultiStreamPipeline

    jsonls = [out_dir / f"{Path(c.video).stem}.jsonl" for c in clips]
    with Predictor.open(model, intra_op_threads=threads) as p:
        MultiStreamPipeline([str(c.video) for c in clips], p, [[JsonlSink(j)] for j in jsonls], batch=len(clips),
                            trackers=[Tracker() for _ in clips]).run()
    ours, base, names = [], [], []
    for c, j in zip(clips, jsonls, strict=True):
        gt, n = load_ground_truth(c.gt_json)
        ours.append(evaluate(gt, load_predictions(j), num_frames=n, match="mask"))
        base.append(evaluate(gt, retrack(load_predictions(j, tracked_only=False), GreedyIoUTracker()), num_frames=n,
                             match="mask"))
        names.append(Path(c.video).stem)
    t, b = summarize(ours, names), summarize(base, names)
    key = "OVERALL" if len(clips) > 1 else names[0]
    fewer = 1 - t[key]["num_switches"] / b[key]["num_switches"] if b[key]["num_switches"] else None
    print(f"MOT overall: tracker MOTA {t[key]['mota']:.3f} IDF1 {t[key]['idf1']:.3f} IDsw {int(t[key]['num_switches'])}"
          f" | greedy MOTA {b[key]['mota']:.3f} IDF1 {b[key]['idf1']:.3f} IDsw {int(b[key]['num_switches'])}")
    return {"tracker": t, "greedy": b, "id_switches_fewer_than_greedy": fewer}


def streams(model: str, clips: list, threads: int, counts: list[int]) -> list[dict]:
    import numpy as np

    from maskrt.runtime.predictor import Predictor
    from maskrt.runtime.tracking import Tracker
    from maskrt.runtime.video import MultiStreamPipeline, VideoPipeline

    def warm(p: Predictor) -> None:
        h, w = p.input_size
        p.predict(np.zeros((h, w, 3), np.uint8))

    rows = []
    for k in counts:
        paths = [str(clips[i % len(clips)].video) for i in range(k)]
        with Predictor.open(model, intra_op_threads=threads) as p:
            warm(p)
            t0 = time.perf_counter()
            st = MultiStreamPipeline(paths, p, batch=k, trackers=[Tracker() for _ in paths]).run()
            batched_s = time.perf_counter() - t0
        frames = st.frames_out
        preds = [Predictor.open(model, intra_op_threads=threads) for _ in paths]
        try:
            for p in preds:
                warm(p)
            pipes = [VideoPipeline(path, p, tracker=Tracker()) for path, p in zip(paths, preds, strict=True)]
            out: list = [None] * k

            def run_one(i: int, out=out, pipes=pipes) -> None:
                out[i] = pipes[i].run()

            runners = [threading.Thread(target=run_one, args=(i,)) for i in range(k)]
            t0 = time.perf_counter()
            for r in runners:
                r.start()
            for r in runners:
                r.join()
            separate_s = time.perf_counter() - t0
        finally:
            for p in preds:
                p.close()
        sep_frames = sum(s.frames_out for s in out)
        row = {"streams": k, "frames": frames, "batched_s": batched_s, "batched_fps": frames / batched_s,
               "mean_batch": st.mean_batch, "separate_s": separate_s, "separate_fps": sep_frames / separate_s,
               "batched_over_separate": (frames / batched_s) / (sep_frames / separate_s)}
        rows.append(row)
        print(f"{k} stream(s): batched {row['batched_fps']:.2f} FPS (mean batch {st.mean_batch:.2f}), separate "
              f"{row['separate_fps']:.2f} FPS, ratio {row['batched_over_separate']:.2f}")
    return rows


def main() -> None:
    from maskrt.train.data.clips import write_clip

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default",
                    help="an ONNX model, or 'default': the embedded checkpoint exported to <work-dir>/default.onnx")
    ap.add_argument("--clips", type=int, default=3, help="clips per kind")
    ap.add_argument("--kinds", nargs="+", choices=("moving", "pan"), default=["moving", "pan"],
                    help="clip kinds (moving: scripted occlusion/crossing/re-entry + wanderers; pan: a panning "
                         "camera over static objects, which leave and re-enter by the edges)")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--frame-size", type=int, nargs=2, default=(240, 320))
    ap.add_argument("--stream-frames", type=int, default=12, help="frames per stream in the streams benchmark")
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work-dir", default="out/bench_tracking")
    ap.add_argument("--out-dir", default=None)
    ap.add_argument("--skip", choices=("mot", "streams"), default=None)
    args = ap.parse_args()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    if args.model == "default":
        args.model = str(work / "default.onnx")
        if not Path(args.model).is_file():
            from maskrt import DEFAULT_CHECKPOINT
            from maskrt.export.onnx_export import export_model
            from maskrt.train.model.checkpoint import load_checkpoint

            export_model(load_checkpoint(DEFAULT_CHECKPOINT)[0], args.model, "ort")
    machine = {"cpu_count": os.cpu_count(), "python": platform.python_version(), "threads": args.threads,
               "note": "shared 2-core CPU machine (other jobs running): compare ratios within one run"}
    if args.skip != "mot":
        clips = [write_clip(work / f"{kind}_{s}.mp4", kind, frames=args.frames, frame_size=tuple(args.frame_size),
                            seed=s) for kind in args.kinds for s in range(args.clips)]
        res = {"benchmark": "tracking_mot", "kinds": args.kinds, "clips_per_kind": args.clips, "frames": args.frames,
               "frame_size": list(args.frame_size), "match": "mask IoU >= 0.5, same class", "machine": machine,
               **mot(args.model, clips, args.threads, work)}
        if args.out_dir:
            Path(args.out_dir, "tracking_mot.json").write_text(json.dumps(res, indent=2) + "\n")
    if args.skip != "streams":
        short = [write_clip(work / f"stream_{s}.mp4", "moving", frames=args.stream_frames,
                            frame_size=tuple(args.frame_size), seed=10 + s) for s in range(max(args.streams))]
        res = {"benchmark": "streams", "frames_per_stream": args.stream_frames, "frame_size": list(args.frame_size),
               "machine": machine, "results": streams(args.model, short, args.threads, args.streams)}
        if args.out_dir:
            Path(args.out_dir, "streams.json").write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
