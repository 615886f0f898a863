"""The one command that regenerates every committed result in ``benchmarks/results/``.

    .venv/bin/python -m maskrt.benchmarks.reproduce             # all of them (about an hour on 2 cores)
    .venv/bin/python -m maskrt.benchmarks.reproduce r50 nms     # some of them
    .venv/bin/python -m maskrt.benchmarks.reproduce --list      # what each one is

Each run is its own process (fixed thread counts are set before the libraries load) and writes
where docs/results.md reads: ``benchmarks/results/<name>/`` (``maskrt bench``: bench.json,
bench.md, three PNG plots) or ``benchmarks/results/<name>.json``. The machine should be otherwise
idle; ``maskrt bench`` records the load average at the start and end of each run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _bench(name: str, *args: str) -> list[str]:
    return ["-m", "maskrt", "bench", *args, "--name", name, "--out-dir", str(RESULTS / name)]


WORK = "{work}"  # a scratch folder (--work-dir), for what a run needs but does not commit


# name -> (what it measures, the python argument lists it runs in order, extra environment)
RUNS: dict[str, tuple[str, list[list[str]], dict[str, str]]] = {
    "default": ("the embedded default model (320x320): FPS vs batch, ONNX Runtime vs PyTorch eager",
                [_bench("default_ort_320x320", "--batches", "1,2,4", "--iters", "30", "--warmup", "3",
                        "--threads", "2", "--compare")], {}),
    "r50": ("R50-FPN (torchvision maskrcnn_resnet50_fpn layout, random weights) at 800x1344 on 1080p frames, "
            "ONNX Runtime vs PyTorch eager",
            [_bench("r50_ort_800x1344", "--model", "r50", "--batches", "1", "--iters", "4", "--warmup", "1",
                    "--threads", "2", "--compare", "--frame-size", "1080", "1920", "--profile-runs", "2",
                    "--pipeline-frames", "2")], {}),
    "nms": ("the NMS CPU twins vs ONNX Runtime NonMaxSuppression",
            [["-m", "maskrt.benchmarks.bench_nms", "--out", str(RESULTS / "nms_cpu.json")]], {}),
    "roi_align": ("the pyramid RoIAlign CPU twin vs ONNX Runtime RoiAlign",
                  [["-m", "maskrt.benchmarks.bench_roi_align", "--out", str(RESULTS / "roi_align_cpu.json")]], {}),
    "postprocess": ("native letterbox + paste + RLE vs the numpy/OpenCV references",
                    [["-m", "maskrt.benchmarks.bench_postprocess", "--out", str(RESULTS / "postprocess_cpu.json")]],
                    {}),
    "soak": ("10,000 frames through the video pipeline: memory, threads, file descriptors, nothing lost",
             [["-m", "maskrt.benchmarks.soak", "--frames", "10000", "--out", str(RESULTS / "soak_10k.json")]], {}),
    "tracker_cost": ("the tracker's cost per frame at 10 / 50 / 100 instances (one thread)",
                     [["-m", "maskrt.benchmarks.tracker_cost", "--out", str(RESULTS / "tracker_cost.json")]],
                     {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}),
    "tracking": ("MOTA / IDF1 / ID switches against the greedy baseline, and 1/2/4 streams through one pipeline",
                 [["-m", "maskrt", "export", "--out", f"{WORK}/default.onnx", "--no-check"],
                  ["-m", "maskrt.benchmarks.bench_tracking", "--model", f"{WORK}/default.onnx",
                   "--work-dir", f"{WORK}/bench_tracking", "--out-dir", str(RESULTS)]], {}),
    "precision": ("fp32 / fp16 / int8 graphs on ONNX Runtime CPU: latency, COCO AP (default model on the synthetic "
                  "val split), agreement with fp32 (default model and R50-FPN)",
                  [["-m", "maskrt", "data", "synth", "--out-dir", f"{WORK}/synth3k", "--train", "3000", "--val", "100",
                    "--seed", "0", "--no-progress"],
                   ["-m", "maskrt.benchmarks.precision_bench", "--model", "default", "--calib", f"{WORK}/synth3k/train",
                    "--calib-images", "64", "--data", f"{WORK}/synth3k", "--work-dir", f"{WORK}/precision",
                    "--out", str(RESULTS / "precision_default_320x320.json")],
                   ["-m", "maskrt.benchmarks.precision_bench", "--model", "r50", "--calib", f"{WORK}/synth3k/train",
                    "--calib-images", "8", "--rounds", "5", "--images", "2", "--work-dir", f"{WORK}/precision",
                    "--out", str(RESULTS / "precision_r50_800x1344.json")]], {}),
    "serving": ("maskrt serve (Triton, Python backend + ONNX Runtime) vs in-process ONNX Runtime, 1/2/4 clients",
                [["-m", "maskrt.benchmarks.bench_serving", "--requests", "16",
                  "--out", str(RESULTS / "serving_cpu.json")]], {}),
}

# What each run writes into benchmarks/results/ (tests/test_bench.py: every committed result is
# written by exactly one run, and every run's result is committed).
PRODUCES: dict[str, tuple[str, ...]] = {
    "default": ("default_ort_320x320",), "r50": ("r50_ort_800x1344",), "nms": ("nms_cpu.json",),
    "roi_align": ("roi_align_cpu.json",), "postprocess": ("postprocess_cpu.json",), "soak": ("soak_10k.json",),
    "tracker_cost": ("tracker_cost.json",), "tracking": ("tracking_mot.json", "streams.json"),
    "serving": ("serving_cpu.json",),
    "precision": ("precision_default_320x320.json", "precision_r50_800x1344.json"),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m maskrt.benchmarks.reproduce", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="*", metavar="RUN", help=f"runs to repeat (default all: {', '.join(RUNS)})")
    ap.add_argument("--list", action="store_true", help="list the runs and their commands, and exit")
    ap.add_argument("--work-dir", default="out/reproduce", metavar="DIR",
                    help="scratch folder for what a run needs but does not commit (default out/reproduce)")
    args = ap.parse_args(argv)
    if args.list:
        for name, (what, cmds, env) in RUNS.items():
            pre = " ".join(f"{k}={v}" for k, v in env.items())
            print(f"{name:12s} {what}")
            for cmd in cmds:
                print(f"{'':12s} {pre + ' ' if pre else ''}python {' '.join(cmd).replace(WORK, args.work_dir)}")
        return 0
    unknown = [n for n in args.runs if n not in RUNS]
    if unknown:
        ap.error(f"unknown run {unknown[0]!r}; choose from {', '.join(RUNS)}")
    Path(args.work_dir).mkdir(parents=True, exist_ok=True)
    for name in args.runs or list(RUNS):
        what, cmds, env = RUNS[name]
        print(f"reproduce: {name}: {what}", file=sys.stderr)
        for cmd in cmds:
            cmd = [c.replace(WORK, args.work_dir) for c in cmd]
            rc = subprocess.run([sys.executable, *cmd], check=False, env={**os.environ, **env}).returncode
            if rc:
                print(f"reproduce: {name} failed (exit {rc}): python {' '.join(cmd)}", file=sys.stderr)
                return rc
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
