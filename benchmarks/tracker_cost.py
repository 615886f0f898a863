"""The tracker's cost per frame at 10 / 50 / 100 instances (CPU, one thread, numpy + scipy).

    python -m maskrt.benchmarks.tracker_cost --out benchmarks/results/tracker_cost.json

Synthetic detections: N objects (40 x 60 px) moving at constant random velocities in a 1920 x
1080 frame with 1 px box noise, random 28 x 28 masks, scores in [0.3, 1] (so both ByteTrack
stages run), 10 % of the detections missing per frame (tracks go lost and are re-found). Each
update is timed alone (``Tracker.update``: prediction, both stages, lifecycle); warm-up frames
are left out; the median and p99 over the rest are reported, and the same for the greedy
baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import numpy as np

from maskrt.benchmarks.timing import timeit


def scene(n: int, frames: int, seed: int = 0) -> list[tuple]:
    rng = np.random.default_rng(seed)
    cx, cy = rng.uniform(100, 1820, n), rng.uniform(100, 980, n)
    vx, vy = rng.normal(0, 3, n), rng.normal(0, 3, n)
    masks = (rng.random((n, 28, 28)) > 0.3).astype(np.float32)
    out = []
    for i in range(frames):
        keep = rng.random(n) > 0.1
        x, y = cx + vx * i, cy + vy * i
        b = np.stack([x - 20, y - 30, x + 20, y + 30], 1) + rng.normal(0, 1, (n, 4))
        out.append((b[keep], rng.uniform(0.3, 1.0, n)[keep], np.ones(int(keep.sum()), np.int64), masks[keep]))
    return out


def time_updates(make, frames: list[tuple], warmup: int) -> dict:
    """benchmarks/timing.timeit over consecutive frames: each call is the next frame's update."""
    t = make()
    it = iter(enumerate(frames))

    def step() -> None:
        i, f = next(it)
        t.update(*f, frame_index=i)

    return timeit(step, repeats=len(frames) - warmup, warmup=warmup)


def main() -> None:
    from maskrt.runtime.tracking import GreedyIoUTracker, Tracker

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 50, 100])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rows = []
    for n in args.sizes:
        frames = scene(n, args.frames)
        for name, make in (("tracker", Tracker), ("greedy", GreedyIoUTracker)):
            rows.append({"tracker": name, "instances": n, **time_updates(make, frames, args.warmup)})
            print(f"{name:<8} {n:>4} instances: median {rows[-1]['median_ms']:.3f} ms, p99 {rows[-1]['p99_ms']:.3f} "
                  f"ms per frame")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({
            "benchmark": "tracker_cost", "command": "python -m maskrt.benchmarks.tracker_cost --out " + args.out,
            "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                        "numpy": np.__version__, "note": "shared 2-core machine (other jobs running)"},
            "results": rows}, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
