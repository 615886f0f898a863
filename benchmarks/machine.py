"""The machine a benchmark ran on: CPU, cores, library versions (from package metadata, nothing
imported), GPUs (nvidia-smi), load average, peak RSS, and the fp32 GEMM probe that gives the cost
model its floor (numpy matmul in a subprocess with the BLAS thread count fixed)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from .options import BenchError

__all__ = ["gemm_rate", "load_average", "machine_info", "peak_rss_mib"]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    try:
        return importlib_metadata.version(dist)
    except importlib_metadata.PackageNotFoundError:
        return None


def _gpus() -> list[dict[str, str]]:
    """GPUs from nvidia-smi (name, driver, memory); [] where there is none."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    gpus = []
    for line in out.stdout.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            gpus.append({"name": parts[0], "driver": parts[1], "memory": parts[2]})
    return gpus


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (``resource.getrusage``), MiB."""
    import resource

    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / (1 << 20) if sys.platform == "darwin" else kb / 1024.0  # bytes on macOS, KiB on Linux


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def machine_info(threads: int) -> dict[str, Any]:
    """CPU model (/proc/cpuinfo), logical cores, threads used, library versions (from package
    metadata: nothing is imported), GPUs and TensorRT where present, load average."""
    libs = {d: _version(d) for d in ("numpy", "opencv-python", "opencv-python-headless", "onnxruntime",
                                     "onnxruntime-gpu", "onnx", "torch", "tensorrt", "tensorrt-rtx", "cuda-python",
                                     "maskrt")}
    return {
        "cpu": _cpu_model(), "logical_cores": os.cpu_count(), "threads_used": int(threads),
        "platform": platform.platform(), "python": platform.python_version(),
        "libraries": {k: v for k, v in libs.items() if v is not None},
        "gpus": _gpus(), "tensorrt": libs["tensorrt"], "tensorrt_rtx": libs["tensorrt-rtx"],
        "trtexec": shutil.which("trtexec"),
        "load_average_start": load_average(),
        "shared_machine_note": "other jobs may share this machine; the load average (1, 5, 15 min) is recorded at "
                               "the start and end of the run",
    }


_GEMM_SCRIPT = r"""
import json, sys, time
import numpy as np
sizes, repeats = json.loads(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
out = []
for n in sizes:
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)
    np.matmul(a, b, out=c)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        np.matmul(a, b, out=c)
        best = min(best, time.perf_counter() - t)
    out.append({"n": n, "best_s": best, "gflops": 2.0 * n ** 3 / best / 1e9})
print(json.dumps(out))
"""


def gemm_rate(threads: int, sizes: Sequence[int] = (256, 512, 1024, 2048), repeats: int = 5) -> dict[str, Any]:
    """This machine's fp32 GEMM rate: numpy matmul of square float32 [n, n] matrices in a
    subprocess whose BLAS (OpenBLAS/MKL/OpenMP) thread count is fixed to ``threads`` by
    environment variables (they are read only when the BLAS loads); best time of ``repeats`` per
    size, the rate of the best size. Returns {gflops, per_size, threads, method}."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
        env[var] = str(int(threads))
    try:
        r = subprocess.run([sys.executable, "-c", _GEMM_SCRIPT, json.dumps(list(sizes)), str(repeats)],
                           capture_output=True, text=True, env=env, timeout=600)
    except subprocess.TimeoutExpired:
        raise BenchError("the GEMM rate measurement took over 600 s") from None
    if r.returncode != 0:
        raise BenchError(f"the GEMM rate measurement failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    per = json.loads(r.stdout.strip().splitlines()[-1])
    best = max(p["gflops"] for p in per)
    return {"gflops": best, "per_size": per, "threads": int(threads),
            "method": "numpy.matmul float32 [n,n]x[n,n], subprocess with *_NUM_THREADS fixed, best of "
                      f"{repeats} per size, best size"}
