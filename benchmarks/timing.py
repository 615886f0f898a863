"""The one timing loop of the kernel and pre/post-processing benchmarks
(``maskrt.benchmarks.bench_nms``, ``bench_roi_align``, ``bench_postprocess``)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def timeit(fn: Callable[[], object], repeats: int, warmup: int = 3) -> dict:
    """Calls ``fn`` ``warmup`` times untimed, then ``repeats`` times timed (perf_counter_ns).
    Returns median, p99 (numpy linear percentile), mean and min in milliseconds, and ``repeats``."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        fn()
        ts.append((time.perf_counter_ns() - t0) / 1e6)
    a = np.array(ts)
    return {"median_ms": float(np.median(a)), "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean()),
            "min_ms": float(a.min()), "repeats": repeats}
