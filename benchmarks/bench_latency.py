"""Reproduce the committed latency results (benchmarks/results/<name>/) with `maskrt bench`.

    .venv/bin/python benchmarks/bench_latency.py            # both runs below
    .venv/bin/python benchmarks/bench_latency.py default    # one of them

Each run writes bench.json, bench.md and three PNG plots to benchmarks/results/<name>/; see
docs/benchmarking.md for what the numbers mean. The machine should be otherwise idle: the load
average at the start and end of each run is recorded in its JSON.
"""

from __future__ import annotations

import sys

from maskrt.runtime.cli import main

RUNS = {
    # the embedded default model (mnv3-small, 320x320): FPS vs batch, ORT vs PyTorch eager
    "default": ["bench", "--batch", "1,2,4", "--iters", "30", "--warmup", "3", "--threads", "2", "--compare",
                "--name", "default_ort_320x320"],
    # R50-FPN (torchvision maskrcnn_resnet50_fpn layout, random weights) at 800x1344 on 1080p frames
    "r50": ["bench", "--model", "r50", "--batch", "1", "--iters", "4", "--warmup", "1", "--threads", "2",
            "--compare", "--frame-size", "1080", "1920", "--profile-runs", "2", "--pipeline-frames", "2",
            "--name", "r50_ort_800x1344"],
}

if __name__ == "__main__":
    names = sys.argv[1:] or list(RUNS)
    for n in names:
        if n not in RUNS:
            raise SystemExit(f"unknown run {n!r}; choose from {list(RUNS)}")
    for n in names:
        rc = main(RUNS[n])
        if rc:
            raise SystemExit(rc)
