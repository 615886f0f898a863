"""The one command that regenerates every committed result in ``benchmarks/results/``.

    .venv/bin/python -m maskrt.benchmarks.reproduce             # all of them (about 40 min on 2 cores)
    .venv/bin/python -m maskrt.benchmarks.reproduce r50 nms     # some of them
    .venv/bin/python -m maskrt.benchmarks.reproduce --list      # what each one is

Each run is its own process (fixed thread counts are set before the libraries load) and writes
where docs/results.md reads: ``benchmarks/results/<name>/`` (``maskrt bench``: bench.json,
bench.md, three PNG plots) or ``benchmarks/results/<name>.json``. The machine should be otherwise
idle; ``maskrt bench`` records the load average at the start and end of each run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _bench(name: str, *args: str) -> list[str]:
    return ["-m", "maskrt", "bench", *args, "--name", name, "--out-dir", str(RESULTS / name)]


# name -> (what it measures, python arguments)
RUNS: dict[str, tuple[str, list[str]]] = {
    "default": ("the embedded default model (320x320): FPS vs batch, ONNX Runtime vs PyTorch eager",
                _bench("default_ort_320x320", "--batches", "1,2,4", "--iters", "30", "--warmup", "3",
                       "--threads", "2", "--compare")),
    "r50": ("R50-FPN (torchvision maskrcnn_resnet50_fpn layout, random weights) at 800x1344 on 1080p frames, "
            "ONNX Runtime vs PyTorch eager",
            _bench("r50_ort_800x1344", "--model", "r50", "--batches", "1", "--iters", "4", "--warmup", "1",
                   "--threads", "2", "--compare", "--frame-size", "1080", "1920", "--profile-runs", "2",
                   "--pipeline-frames", "2")),
    "nms": ("the NMS CPU twins vs ONNX Runtime NonMaxSuppression",
            ["-m", "maskrt.benchmarks.bench_nms", "--out", str(RESULTS / "nms_cpu.json")]),
    "roi_align": ("the pyramid RoIAlign CPU twin vs ONNX Runtime RoiAlign",
                  ["-m", "maskrt.benchmarks.bench_roi_align", "--out", str(RESULTS / "roi_align_cpu.json")]),
    "postprocess": ("native letterbox + paste + RLE vs the numpy/OpenCV references",
                    ["-m", "maskrt.benchmarks.bench_postprocess", "--out", str(RESULTS / "postprocess_cpu.json")]),
    "tracker": ("the tracker's cost per frame at 10 / 50 / 100 instances, and the greedy baseline's",
                ["-m", "maskrt.benchmarks.tracker_cost", "--out", str(RESULTS / "tracker_cost.json")]),
    "tracking": ("MOTA / IDF1 / ID switches on generated clips vs the greedy baseline; 1/2/4 streams batched vs "
                 "separate pipelines (the embedded model, exported to out/bench_tracking/default.onnx)",
                 ["-m", "maskrt.benchmarks.bench_tracking", "--model", "default", "--work-dir", "out/bench_tracking",
                  "--out-dir", str(RESULTS)]),
    "soak": ("10,000 frames through the video pipeline: memory, threads, file descriptors, nothing lost",
             ["-m", "maskrt.benchmarks.soak", "--frames", "10000", "--out", str(RESULTS / "soak_10k.json")]),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m maskrt.benchmarks.reproduce", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="*", metavar="RUN", help=f"runs to repeat (default all: {', '.join(RUNS)})")
    ap.add_argument("--list", action="store_true", help="list the runs and exit")
    args = ap.parse_args(argv)
    if args.list:
        for name, (what, cmd) in RUNS.items():
            print(f"{name:12s} {what}\n{'':12s} python {' '.join(cmd)}")
        return 0
    unknown = [n for n in args.runs if n not in RUNS]
    if unknown:
        ap.error(f"unknown run {unknown[0]!r}; choose from {', '.join(RUNS)}")
    for name in args.runs or list(RUNS):
        print(f"reproduce: {name}: {RUNS[name][0]}", file=sys.stderr)
        rc = subprocess.run([sys.executable, *RUNS[name][1]], check=False).returncode
        if rc:
            print(f"reproduce: {name} failed (exit {rc})", file=sys.stderr)
            return rc
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
