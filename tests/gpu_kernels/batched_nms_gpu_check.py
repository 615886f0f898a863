"""GPU check of the batched_nms CUDA kernels against their CPU twins (maskrt._native).

Standalone script (not collected by pytest): needs an NVIDIA GPU, nvcc, numpy and the installed
maskrt package (for the CPU twins); no CuPy or PyTorch. It builds a small shared library from
plugins/batched_nms/batched_nms.cu and tests/gpu_kernels/batched_nms_shim.cu with nvcc, loads it
with ctypes, runs rpn_nms_cuda and detection_nms_cuda on random and adversarial inputs and
compares every output element with the CPU kernels (bitwise: both share batched_nms_math.h),
then prints timings.

    .venv/bin/python tests/gpu_kernels/batched_nms_gpu_check.py            # arch from nvidia-smi
    .venv/bin/python tests/gpu_kernels/batched_nms_gpu_check.py --arch 87 --repeats 50

Exit status 0 iff every case agrees.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
F32 = np.float32
c_int, c_float, c_size_t, c_void_p = ctypes.c_int, ctypes.c_float, ctypes.c_size_t, ctypes.c_void_p


# ----------------------------------------------------------------------------- build + load
def detect_arch() -> str:
    out = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"], check=True,
                         capture_output=True, text=True).stdout.split()[0]
    return out.replace(".", "")


def build(arch: str, nvcc: str, out_dir: Path) -> Path:
    lib = out_dir / f"libbatched_nms_shim_sm{arch}.so"
    cmd = [nvcc, "-std=c++17", "-O3", "-I", str(ROOT / "plugins"), "-Werror", "all-warnings",
           "-Xcompiler", "-Wall,-Wextra,-fPIC", "-shared", "-gencode", f"arch=compute_{arch},code=sm_{arch}",
           str(ROOT / "tests/gpu_kernels/batched_nms_shim.cu"), str(ROOT / "plugins/batched_nms/batched_nms.cu"),
           "-o", str(lib)]
    print("build:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return lib


class Shim:
    def __init__(self, path: Path):
        self.lib = ctypes.CDLL(str(path))
        L = self.lib
        L.shim_error_string.restype = ctypes.c_char_p
        L.shim_rpn_workspace.restype = c_size_t
        L.shim_rpn_workspace.argtypes = [c_int, c_int, c_int, c_void_p, c_int, c_int, c_float, c_float, c_float]
        L.shim_rpn.argtypes = [c_int, c_int, c_int, c_void_p, c_int, c_int, c_float, c_float, c_float,
                               c_void_p, c_void_p, c_void_p, c_void_p, c_void_p, c_void_p, c_int, c_void_p]
        L.shim_det_workspace.restype = c_size_t
        L.shim_det_workspace.argtypes = [c_int, c_int, c_int, c_float, c_float, c_int, c_float, c_int]
        L.shim_det.argtypes = [c_int, c_int, c_int, c_float, c_float, c_int, c_float, c_int,
                               c_void_p, c_void_p, c_void_p, c_void_p, c_void_p, c_void_p, c_void_p, c_void_p,
                               c_int, c_void_p]
        for name in ("shim_malloc", "shim_free", "shim_h2d", "shim_d2h", "shim_memset"):
            getattr(L, name).argtypes = {"shim_malloc": [ctypes.POINTER(c_void_p), c_size_t],
                                         "shim_free": [c_void_p],
                                         "shim_h2d": [c_void_p, c_void_p, c_size_t],
                                         "shim_d2h": [c_void_p, c_void_p, c_size_t],
                                         "shim_memset": [c_void_p, c_int, c_size_t]}[name]

    def check(self, err: int, what: str) -> None:
        if err != 0:
            raise RuntimeError(f"{what}: CUDA error {err} ({self.lib.shim_error_string(err).decode()})")


class DeviceArray:
    """A device copy of a numpy array (or an uninitialised one of a shape/dtype), poisoned with
    0xFF bytes when uninitialised so that an output the kernel forgets to write shows up."""

    def __init__(self, shim: Shim, host: np.ndarray | None = None, shape=None, dtype=None):
        self.shim = shim
        self.shape = host.shape if host is not None else tuple(shape)
        self.dtype = host.dtype if host is not None else np.dtype(dtype)
        self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self.ptr = c_void_p()
        shim.check(shim.lib.shim_malloc(ctypes.byref(self.ptr), max(self.nbytes, 1)), "cudaMalloc")
        if host is not None:
            host = np.ascontiguousarray(host)
            shim.check(shim.lib.shim_h2d(self.ptr, host.ctypes.data, self.nbytes), "H2D")
        else:
            shim.check(shim.lib.shim_memset(self.ptr, 0xFF, max(self.nbytes, 1)), "memset")

    def get(self) -> np.ndarray:
        out = np.empty(self.shape, self.dtype)
        self.shim.check(self.shim.lib.shim_d2h(out.ctypes.data, self.ptr, self.nbytes), "D2H")
        return out

    def __del__(self):
        self.shim.lib.shim_free(self.ptr)


# ----------------------------------------------------------------------------- runners
def run_rpn_gpu(shim, boxes, logits, level_sizes, pre, post, iou, min_size, score_thr, repeats):
    b, n = logits.shape
    ls = (c_int * len(level_sizes))(*level_sizes)
    ws_bytes = shim.lib.shim_rpn_workspace(b, n, len(level_sizes), ls, pre, post, iou, min_size, score_thr)
    d_boxes, d_logits = DeviceArray(shim, boxes), DeviceArray(shim, logits)
    rois = DeviceArray(shim, shape=(b, post, 4), dtype=F32)
    scores = DeviceArray(shim, shape=(b, post), dtype=F32)
    count = DeviceArray(shim, shape=(b,), dtype=np.int32)
    ws = DeviceArray(shim, shape=(max(ws_bytes, 1),), dtype=np.uint8)
    ms = c_float()
    shim.check(shim.lib.shim_rpn(b, n, len(level_sizes), ls, pre, post, iou, min_size, score_thr, d_boxes.ptr,
                                 d_logits.ptr, rois.ptr, scores.ptr, count.ptr, ws.ptr, repeats, ctypes.byref(ms)),
               "rpn_nms_cuda")
    return (rois.get(), scores.get(), count.get()), ms.value, ws_bytes


def run_det_gpu(shim, boxes, scores, num_rois, score_thr, iou, k, min_size, class_offset, repeats):
    b, r, c = scores.shape
    ws_bytes = shim.lib.shim_det_workspace(b, r, c, score_thr, iou, k, min_size, class_offset)
    d_boxes, d_scores = DeviceArray(shim, boxes), DeviceArray(shim, scores)
    d_rois = DeviceArray(shim, num_rois) if num_rois is not None else None
    count = DeviceArray(shim, shape=(b,), dtype=np.int32)
    ob = DeviceArray(shim, shape=(b, k, 4), dtype=F32)
    os_ = DeviceArray(shim, shape=(b, k), dtype=F32)
    oc = DeviceArray(shim, shape=(b, k), dtype=np.int32)
    ws = DeviceArray(shim, shape=(max(ws_bytes, 1),), dtype=np.uint8)
    ms = c_float()
    shim.check(shim.lib.shim_det(b, r, c, score_thr, iou, k, min_size, class_offset, d_boxes.ptr, d_scores.ptr,
                                 d_rois.ptr if d_rois is not None else None, count.ptr, ob.ptr, os_.ptr, oc.ptr,
                                 ws.ptr, repeats, ctypes.byref(ms)), "detection_nms_cuda")
    return (count.get(), ob.get(), os_.get(), oc.get()), ms.value, ws_bytes


def cpu_time(fn, repeats):
    fn()
    times = []
    for _ in range(max(repeats, 1)):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e3


# ----------------------------------------------------------------------------- inputs
def boxes_random(rng, shape, lo=0.0, hi=800.0, wh=(8.0, 200.0)):
    xy = rng.uniform(lo, hi, shape + (2,))
    size = rng.uniform(wh[0], wh[1], shape + (2,))
    return np.concatenate([xy, xy + size], -1).astype(F32)


def boxes_clustered(rng, shape, objects=40, jitter=6.0):
    base = boxes_random(rng, (objects,))
    return (base[rng.integers(0, objects, shape)] + rng.normal(0, jitter, shape + (4,))).astype(F32)


def rpn_cases(rng):
    """(name, boxes [B, N, 4], logits [B, N], level_sizes, pre, post, iou, min_size, score_thr)."""
    fpn = [200 * 336 * 3, 100 * 168 * 3, 50 * 84 * 3, 25 * 42 * 3, 13 * 21 * 3]  # 800 x 1344 input
    small = [3000, 1200, 300, 75, 20]
    cases = []
    n = sum(small)
    cases.append(("random 5 levels, B=2", boxes_clustered(rng, (2, n)), rng.normal(0, 2, (2, n)).astype(F32),
                  small, 1000, 1000, 0.7, 1e-3, 0.0))
    ties = np.round(rng.normal(0, 1, (2, n)) * 2).astype(F32) / F32(2)
    cases.append(("logit ties, post cut", boxes_clustered(rng, (2, n)), ties, small, 500, 300, 0.5, 1e-3, 0.0))
    degenerate = boxes_clustered(rng, (1, n))
    degenerate[0, ::5, 2] = degenerate[0, ::5, 0]  # zero width
    degenerate[0, 1::7] = degenerate[0, 1::7][:, [2, 3, 0, 1]]  # inverted
    cases.append(("degenerate boxes, score filter", degenerate, rng.normal(0, 2, (1, n)).astype(F32), small,
                  1000, 1000, 0.7, 1e-3, 0.6))
    exact = np.tile(np.array([[0, 0, 2, 1], [0, 0, 1, 1], [5, 5, 6, 6]], F32), (1, 1, 1))
    for thr in (0.5, 0.4999):
        cases.append((f"IoU exactly 0.5 at thr {thr}", exact, np.array([[3.0, 2.0, 1.0]], F32), [3], 10, 10, thr,
                      1e-3, 0.0))
    cases.append(("single level larger than 64*64 candidates", boxes_clustered(rng, (1, 20000), 300),
                  rng.normal(0, 1, (1, 20000)).astype(F32), [20000], 6000, 6000, 0.7, 1e-3, 0.0))
    nf = sum(fpn)
    cases.append(("FPN 800x1344, B=1 (timing)", boxes_clustered(rng, (1, nf), 200),
                  rng.normal(0, 2, (1, nf)).astype(F32), fpn, 1000, 1000, 0.7, 1e-3, 0.0))
    cases.append(("FPN 800x1344, B=4 (timing)", boxes_clustered(rng, (4, nf), 200),
                  rng.normal(0, 2, (4, nf)).astype(F32), fpn, 1000, 1000, 0.7, 1e-3, 0.0))
    return cases


def det_cases(rng):
    """(name, boxes [B, R, C, 4], scores [B, R, C], num_rois, score_thr, iou, k, min_size, offset)."""
    cases = []
    b, r, c = 2, 1000, 80
    scores = (rng.uniform(0, 1, (b, r, c)) ** 8).astype(F32)  # softmax-like: mostly small
    cases.append(("COCO-like 1000 x 80, B=2", boxes_clustered(rng, (b, r, c)), scores, np.array([1000, 613], np.int32),
                  0.05, 0.5, 100, 1e-2, 1))
    ties = (np.round(rng.uniform(0, 1, (1, 300, 10)) * 8) / 8).astype(F32)
    cases.append(("score ties, K > per-class kept", boxes_clustered(rng, (1, 300, 10)), ties, None, 0.05, 0.5, 1000,
                  1e-2, 0))
    cases.append(("num_rois 0 and partial, B=3", boxes_clustered(rng, (3, 200, 5)),
                  rng.uniform(0, 1, (3, 200, 5)).astype(F32), np.array([0, 57, 200], np.int32), 0.3, 0.6, 50, 1e-2, 1))
    cases.append(("all below threshold", boxes_clustered(rng, (1, 100, 4)),
                  rng.uniform(0, 0.05, (1, 100, 4)).astype(F32), None, 0.05, 0.5, 100, 1e-2, 1))
    exact = np.zeros((1, 3, 2, 4), F32)
    exact[0, :, 0] = [[0, 0, 2, 1], [0, 0, 1, 1], [5, 5, 6, 6]]
    exact[0, :, 1] = [[0, 0, 2, 1], [10, 10, 12, 12], [20, 20, 22, 22]]
    exact_scores = np.array([[[0.9, 0.8], [0.7, 0.05], [0.6, 0.04]]], F32)
    for thr in (0.5, 0.4999):
        cases.append((f"IoU exactly 0.5 at thr {thr}, score == threshold", exact, exact_scores, None, 0.05, thr, 10,
                      1e-2, 1))
    cases.append(("20000 boxes / 80 classes (timing)", boxes_clustered(rng, (1, 250, 80)),
                  rng.uniform(0.06, 1, (1, 250, 80)).astype(F32), None, 0.05, 0.5, 100, 1e-2, 1))
    cases.append(("COCO-like 1000 x 80, B=8 (timing)", boxes_clustered(rng, (8, 1000, 80)),
                  (rng.uniform(0, 1, (8, 1000, 80)) ** 8).astype(F32), None, 0.05, 0.5, 100, 1e-2, 1))
    return cases


def same(a, b) -> bool:
    return all(x.shape == y.shape and x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", help="compute capability without the dot, e.g. 87 (default: nvidia-smi)")
    ap.add_argument("--nvcc", default=shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--build-dir", default=None, help="where to put the shared library (default: a temp dir)")
    args = ap.parse_args()

    from maskrt import _native

    arch = args.arch or detect_arch()
    out_dir = Path(args.build_dir) if args.build_dir else Path(tempfile.mkdtemp(prefix="maskrt_nms_gpu_"))
    out_dir.mkdir(parents=True, exist_ok=True)
    shim = Shim(build(arch, args.nvcc, out_dir))
    rng = np.random.default_rng(0)
    threads = os.cpu_count() or 1
    failures = 0
    rows = []

    for name, boxes, logits, ls, pre, post, iou, min_size, thr in rpn_cases(rng):
        cpu = _native.rpn_nms(boxes, logits, ls, pre, post, iou, min_size, thr, threads=threads)
        gpu, ms, ws = run_rpn_gpu(shim, boxes, logits, ls, pre, post, iou, min_size, thr, args.repeats)
        gpu2, _, _ = run_rpn_gpu(shim, boxes, logits, ls, pre, post, iou, min_size, thr, 0)
        ok, det = same(cpu, gpu), same(gpu, gpu2)
        cpu_ms = cpu_time(lambda b=boxes, g=logits, s=ls, a=(pre, post, iou, min_size, thr):  # noqa: B023
                          _native.rpn_nms(b, g, s, *a, threads=threads), min(args.repeats, 10))
        failures += (not ok) + (not det)
        rows.append(("rpn", name, ok, det, list(cpu[2]), ms, cpu_ms, ws))
        if not ok:
            for b in range(logits.shape[0]):
                bad = np.nonzero(np.any(cpu[0][b] != gpu[0][b], axis=1) | (cpu[1][b] != gpu[1][b]))[0]
                print(f"  MISMATCH {name} image {b}: counts cpu {cpu[2][b]} gpu {gpu[2][b]}, first rows {bad[:8]}")

    for name, boxes, scores, nr, thr, iou, k, min_size, off in det_cases(rng):
        cpu = _native.detection_nms(boxes, scores, nr, thr, iou, k, min_size, off, threads=threads)
        gpu, ms, ws = run_det_gpu(shim, boxes, scores, nr, thr, iou, k, min_size, off, args.repeats)
        gpu2, _, _ = run_det_gpu(shim, boxes, scores, nr, thr, iou, k, min_size, off, 0)
        ok, det = same(cpu, gpu), same(gpu, gpu2)
        cpu_ms = cpu_time(lambda b=boxes, s=scores, n=nr, a=(thr, iou, k, min_size, off):  # noqa: B023
                          _native.detection_nms(b, s, n, *a, threads=threads), min(args.repeats, 10))
        failures += (not ok) + (not det)
        rows.append(("detection", name, ok, det, list(cpu[0]), ms, cpu_ms, ws))
        if not ok:
            for b in range(scores.shape[0]):
                bad = np.nonzero(np.any(cpu[1][b] != gpu[1][b], axis=1) | (cpu[3][b] != gpu[3][b]))[0]
                print(f"  MISMATCH {name} image {b}: counts cpu {cpu[0][b]} gpu {gpu[0][b]}, first rows {bad[:8]}")

    print(f"\n| op | case | GPU == CPU | GPU run-to-run identical | counts | GPU ms | CPU ms ({threads} thr) "
          "| workspace MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for op, name, ok, det, counts, ms, cpu_ms, ws in rows:
        shown = counts if len(counts) <= 4 else counts[:4] + ["..."]
        print(f"| {op} | {name} | {'yes' if ok else 'NO'} | {'yes' if det else 'NO'} | {shown} | {ms:.3f} | "
              f"{cpu_ms:.2f} | {ws / 2**20:.2f} |")
    print(f"\n{'ALL AGREE' if failures == 0 else f'{failures} FAILURE(S)'}")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
