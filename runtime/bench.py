"""``maskrt bench``: end-to-end and per-stage latency of a deployed Mask R-CNN, with a cost model.

    maskrt bench                                   # embedded default model, ONNX Runtime, batch 1
    maskrt bench --batch 1,2,4 --iters 30          # FPS vs batch size
    maskrt bench --model r50 --iters 5 --compare   # R50-FPN (random weights) ORT vs PyTorch eager
    maskrt bench --model model.engine --backend trt --precision fp16

What one iteration measures (the :class:`~maskrt.runtime.predictor.Predictor` steps, as the video
pipeline runs them, on the same B frames every iteration):

    prepare    ``Predictor.prepare``: letterbox B camera-sized frames into a reused uint8 batch
    infer      ``Predictor.infer``: the backend (validation + graph + output checks)
    finish     ``Predictor.finish``: boxes back to frame coordinates, one ``Detections`` per frame
    paste_rle  the video pipeline's postprocess work for a JSON record (``FrameResult.json_record``:
               full-resolution mask paste + COCO RLE by the native core)

Inside ``infer`` where the backend allows: backbone+FPN, RPN, box branch (RoIAlign, box head,
detection NMS), mask branch (RoIAlign, mask head). PyTorch: timers on the model's modules
(forward hooks). ONNX Runtime: a separate profiled session (``SessionOptions.enable_profiling``)
on the same batch; node times are attributed by the exporter's node-name prefixes
(export/onnx_export.py: ``front/`` ... ``mask_head/``), nodes ONNX Runtime's optimiser creates
without a prefix (layout reorders, decomposed activations) by their graph neighbours in the
optimised model. Sub-stage times are the profile's fractions scaled to the unprofiled median.

Every CPU result carries the cost model: the model's FLOPs (Conv, ConvTranspose, Gemm, MatMul,
counted from the ONNX graph's shapes, or from the PyTorch modules when no ONNX graph exists),
this machine's fp32 GEMM rate (numpy matmul in a subprocess with the BLAS thread count fixed to
``--threads``, best of a few sizes) and the fraction of it that inference reaches.

Runtime module: imports numpy (and OpenCV through the runtime) only at import time; torch, onnx,
onnxruntime, matplotlib and tqdm are imported where they are used.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "BACKENDS", "INFER_STAGES", "PRECISIONS", "RESULT_FORMAT", "STAGES", "BenchOptions", "add_bench_arguments",
    "count_onnx_flops", "gemm_rate", "machine_info", "make_frames", "run_bench", "run_benchmark", "summarize",
    "validate_result",
]

RESULT_FORMAT = "maskrt.bench/1"
BACKENDS = ("ort", "trt", "torch")
PRECISIONS = ("fp32", "fp16", "int8")
STAGES = ("prepare", "infer", "finish", "paste_rle")
INFER_STAGES = ("backbone_fpn", "rpn", "box_branch", "mask_branch", "other")
STAGE_LABELS = {"prepare": "prepare (letterbox)", "infer": "infer", "finish": "finish (Detections)",
                "paste_rle": "paste + RLE (native)", "backbone_fpn": "backbone+FPN", "rpn": "RPN",
                "box_branch": "box branch", "mask_branch": "mask branch", "other": "other (I/O, glue)"}
DEFAULT_FRAME_SIZE = (720, 1280)
MODEL_SUFFIXES = {".onnx": "onnx", ".engine": "engine", ".plan": "engine", ".trt": "engine", ".pt": "checkpoint",
                  ".pth": "checkpoint"}


class BenchError(ValueError):
    """A benchmark cannot run as asked (bad argument, a model/backend combination that cannot work)."""


# ====================================================================== statistics
def summarize(ms: Sequence[float]) -> dict[str, float]:
    """Statistics of latency samples ``ms`` (float milliseconds, >= 1 sample): p50/p90/p99
    (numpy linear interpolation), mean, std (population), min, max, n."""
    a = np.asarray(ms, np.float64)
    if a.size == 0:
        raise ValueError("summarize: no samples")
    p50, p90, p99 = (float(v) for v in np.percentile(a, [50, 90, 99]))
    return {"p50": p50, "p90": p90, "p99": p99, "mean": float(a.mean()), "std": float(a.std()),
            "min": float(a.min()), "max": float(a.max()), "n": int(a.size)}


# ====================================================================== machine
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
                                     "onnxruntime-gpu", "onnx", "torch", "tensorrt", "cuda-python", "maskrt")}
    return {
        "cpu": _cpu_model(), "logical_cores": os.cpu_count(), "threads_used": int(threads),
        "platform": platform.platform(), "python": platform.python_version(),
        "libraries": {k: v for k, v in libs.items() if v is not None},
        "gpus": _gpus(), "tensorrt": libs["tensorrt"], "trtexec": shutil.which("trtexec"),
        "load_average_start": load_average(),
        "shared_machine_note": "other jobs may share this machine; the load average (1, 5, 15 min) is recorded at "
                               "the start and end of the run",
    }


# ====================================================================== inputs
def _fallback_scene(size: tuple[int, int], seed: int) -> np.ndarray:
    """Shapes on a noisy textured background with numpy/OpenCV only: uint8 [H, W, 3] BGR."""
    import cv2

    h, w = size
    rng = np.random.default_rng([int(seed), 7])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(40, 200, 3).astype(np.float32)
    img = base + 30 * np.sin(xx[..., None] / rng.uniform(20, 80) + yy[..., None] / rng.uniform(20, 80))
    img = np.clip(img + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)
    s = min(h, w)
    for _ in range(int(rng.integers(3, 9))):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        r = int(s * math.exp(rng.uniform(math.log(0.04), math.log(0.2))))
        kind = int(rng.integers(0, 3))
        if kind == 0:
            cv2.circle(img, (cx, cy), r, color, -1)
        elif kind == 1:
            cv2.rectangle(img, (cx - r, cy - r // 2), (cx + r, cy + r // 2), color, -1)
        else:
            pts = np.array([[cx, cy - r], [cx - r, cy + r], [cx + r, cy + r]], np.int32)
            cv2.fillPoly(img, [pts], color)
    return np.ascontiguousarray(img)


def make_frames(n: int, frame_size: tuple[int, int], seed: int = 0) -> tuple[list[np.ndarray], str]:
    """``n`` distinct synthetic camera frames, each uint8 [H, W, 3] BGR (``frame_size`` = (H, W)).

    The training set's scene renderer (``maskrt.train.data.synthetic.render_scene``, the
    distribution the embedded model was trained on, so it yields a realistic number of
    detections) when the [train] extra is installed, else a numpy/OpenCV shapes scene. Returns
    (frames, generator name)."""
    try:
        from maskrt.train.data.synthetic import render_scene
    except ImportError:
        return [_fallback_scene(frame_size, seed + i) for i in range(n)], "runtime.bench._fallback_scene"
    return [np.ascontiguousarray(render_scene(frame_size, seed + i)) for i in range(n)], \
        "maskrt.train.data.synthetic.render_scene"


# ====================================================================== GEMM rate
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


# ====================================================================== node -> stage
def stage_of_node(name: str) -> str | None:
    """The inference sub-stage of a node of the exported graph, from the name prefixes the
    exporter writes (export/onnx_export.py ``build``): ``front/`` = input cast/normalise +
    backbone + FPN (``front//backbone/...``) and the RPN head (``front//head/...``), ``rpn/`` =
    anchors, decode, NMS, top-k,
    ``box_roi_align/``, ``box_head/``, ``detections/`` = box branch, ``masks/``, ``mask_head/`` =
    mask branch. ONNX Runtime's fused nodes keep the name with ``fused `` in front. None: no
    known prefix (a node ONNX Runtime's optimiser created)."""
    n = name[6:] if name.startswith("fused ") else name
    head = n.split("/", 1)[0]
    if head == "front":  # traced module paths follow: front//backbone/..., front//head/... (the RPN head)
        rest = n[len("front/"):].lstrip("/")
        return "rpn" if rest.startswith(("head/", "rpn/")) else "backbone_fpn"
    return {"rpn": "rpn", "box_roi_align": "box_branch", "box_head": "box_branch", "detections": "box_branch",
            "masks": "mask_branch", "mask_head": "mask_branch"}.get(head)


@dataclass(frozen=True)
class _Node:
    name: str
    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def read_graph_nodes(path: str | os.PathLike) -> list[_Node]:
    """The nodes (name, op, inputs, outputs) of an ONNX file, read from the protobuf wire format
    with the runtime's onnx-free reader (no ``onnx`` import). Weights are skipped by length."""
    from maskrt.runtime.backends.onnx_file import _fields, _str

    data = Path(path).read_bytes()
    graph = None
    for number, _wire, v in _fields(data, 0, len(data)):
        if number == 7:
            graph = v
    if graph is None:
        raise BenchError(f"{path}: no graph")
    nodes = []
    for number, _wire, v in _fields(data, *graph):
        if number != 1:
            continue
        name = op = ""
        ins: list[str] = []
        outs: list[str] = []
        for n2, _w2, v2 in _fields(data, *v):
            if n2 == 1:
                ins.append(_str(data, v2, "input"))
            elif n2 == 2:
                outs.append(_str(data, v2, "output"))
            elif n2 == 3:
                name = _str(data, v2, "name")
            elif n2 == 4:
                op = _str(data, v2, "op")
        nodes.append(_Node(name, op, tuple(ins), tuple(outs)))
    return nodes


def assign_stages(nodes: Sequence[_Node]) -> dict[str, str]:
    """Node name -> sub-stage for every node of an (optimised) graph: by prefix
    (:func:`stage_of_node`), else the stage of the node producing its first attributed input
    (forward pass in graph order), else of its first attributed consumer (backward pass), else
    "other"."""
    stage: dict[str, str] = {}
    producer: dict[str, str] = {}
    consumers: dict[str, list[_Node]] = {}
    for n in nodes:
        s = stage_of_node(n.name)
        if s is not None:
            stage[n.name] = s
        for i in n.inputs:
            consumers.setdefault(i, []).append(n)
    for _ in range(3):  # graph order is topological in ONNX files; a few passes cover both directions
        for n in nodes:
            if n.name not in stage:
                for i in n.inputs:
                    if i in producer:
                        stage[n.name] = producer[i]
                        break
            if n.name in stage:
                for o in n.outputs:
                    producer[o] = stage[n.name]
        for n in reversed(nodes):
            if n.name in stage:
                continue
            found = next((stage[m.name] for o in n.outputs for m in consumers.get(o, ()) if m.name in stage), None)
            if found is not None:
                stage[n.name] = found
    return {n.name: stage.get(n.name, "other") for n in nodes}


def parse_ort_profile(events: list[dict[str, Any]], node_stage: dict[str, str] | None = None,
                      skip_runs: int = 1) -> dict[str, Any]:
    """ONNX Runtime profile events (the JSON list ``end_profiling`` writes) -> per-run sub-stage
    times in ms. Node events (``cat`` "Node", ``<node name>_kernel_time``) are assigned to the
    ``model_run`` whose time span holds them; ``node_stage`` maps optimised node names to stages
    (default: :func:`stage_of_node`, unknown -> "other"). The first ``skip_runs`` runs are warm-up.
    Returns {runs: [{stage: ms, ..., run: ms, unattributed: ms}], median: {...}, n_nodes_unknown}."""
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])
    if len(runs) <= skip_runs:
        raise BenchError(f"the ONNX Runtime profile has {len(runs)} runs; need more than {skip_runs}")
    per: list[dict[str, float]] = [dict.fromkeys((*INFER_STAGES, "run"), 0.0) for _ in runs]
    starts = np.array([r["ts"] for r in runs])
    unknown: set[str] = set()
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        name = e["name"][: -len("_kernel_time")]
        i = int(np.searchsorted(starts, e["ts"], side="right")) - 1
        if i < 0 or e["ts"] > runs[i]["ts"] + runs[i]["dur"]:
            continue
        s = (node_stage or {}).get(name) or stage_of_node(name)
        if s is None:
            unknown.add(name)
            s = "other"
        per[i][s] += e["dur"] / 1e3
    for p, r in zip(per, runs, strict=True):
        p["run"] = r["dur"] / 1e3
        p["unattributed"] = max(p["run"] - sum(p[s] for s in INFER_STAGES), 0.0)
        p["other"] += p.pop("unattributed")  # executor overhead between nodes counts as "other"
    kept = per[skip_runs:]
    median = {k: float(np.median([p[k] for p in kept])) for k in kept[0]}
    return {"runs": kept, "median": median, "n_nodes_unknown": len(unknown)}


# ====================================================================== FLOPs
def _conv_like_flops(op: str, w: Sequence[int], out: Sequence[int], inp: Sequence[int], group: int) -> float:
    if op == "Conv":  # w [Cout, Cin/g, kh, kw], out [N, Cout, ...]
        return 2.0 * float(np.prod(out)) * float(np.prod(w[1:]))
    # ConvTranspose: w [Cin, Cout/g, kh, kw]; every input pixel scatters Cout/g * k outputs
    return 2.0 * float(np.prod(inp)) * float(np.prod(w[1:]))


def count_onnx_flops(path: str | os.PathLike, batch: int) -> dict[str, Any]:
    """FLOPs (2 x multiply-adds) of the Conv, ConvTranspose, Gemm and MatMul nodes of an ONNX
    graph for a batch of ``batch`` images: the batch dim is fixed, ``onnx.shape_inference``
    (with data propagation) gives every tensor's shape, and each node's count comes from its
    weight and output shapes. The exported graph runs the box head on B x rpn_post_nms_top_n
    RoIs and the mask head on B x detections_per_img RoIs (fixed-size, padded), so the count does
    not depend on the image. Needs the ``onnx`` package. Returns {total_gflop, per_stage_gflop,
    nodes_counted, method}. Elementwise ops, RoIAlign, NMS are not counted (small next to these)."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(path))
    g = model.graph
    g.input[0].type.tensor_type.shape.dim[0].dim_value = int(batch)
    model = shape_inference.infer_shapes(model, data_prop=True)
    g = model.graph
    shapes: dict[str, list[int]] = {}
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in dims]
    for init in g.initializer:
        shapes[init.name] = list(init.dims)
    per: dict[str, float] = dict.fromkeys(INFER_STAGES[:4], 0.0)
    counted, unresolved = 0, []
    for n in g.node:
        if n.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            continue
        a, b = shapes.get(n.input[0]), shapes.get(n.input[1])
        out = shapes.get(n.output[0])
        if a is None or b is None or out is None or min(a + b + out) < 0:
            unresolved.append(n.name)
            continue
        if n.op_type in ("Conv", "ConvTranspose"):
            group = next((at.i for at in n.attribute if at.name == "group"), 1)
            f = _conv_like_flops(n.op_type, b, out, a, group)
        elif n.op_type == "Gemm":
            trans_a = next((at.i for at in n.attribute if at.name == "transA"), 0)
            k = a[0] if trans_a else a[1]
            f = 2.0 * out[0] * out[1] * k
        else:  # MatMul: [..., M, K] x [..., K, N]
            f = 2.0 * float(np.prod(out)) * a[-1]
        per[stage_of_node(n.name) or "backbone_fpn"] += f
        counted += 1
    if unresolved:
        raise BenchError(f"{path}: shape inference left {len(unresolved)} Conv/Gemm/MatMul shapes unknown "
                         f"(e.g. {unresolved[0]}); cannot count FLOPs")
    return {"total_gflop": sum(per.values()) / 1e9, "per_stage_gflop": {k: v / 1e9 for k, v in per.items()},
            "nodes_counted": counted,
            "method": "onnx shape inference on the exported graph (batch fixed); 2 x MACs of Conv, ConvTranspose, "
                      "Gemm, MatMul; box head on B x rpn_post_nms_top_n RoIs, mask head on B x detections_per_img "
                      "RoIs (the graph's fixed sizes)"}


def count_torch_flops(model: Any, images: np.ndarray) -> dict[str, Any]:
    """FLOPs (2 x MACs) of Conv2d, ConvTranspose2d and Linear layers in one eager forward of
    ``images`` (uint8 [B, H, W, 3]), from forward hooks (actual shapes: the mask head runs on the
    detections found, not on a padded K)."""
    import torch
    from torch import nn

    per: dict[str, float] = dict.fromkeys(INFER_STAGES[:4], 0.0)
    owner = {}
    for prefix, stage in (("backbone", "backbone_fpn"), ("rpn", "rpn"), ("roi_heads.box_", "box_branch"),
                          ("roi_heads.mask_", "mask_branch")):
        for name, m in model.named_modules():
            if name.startswith(prefix):
                owner[m] = stage
    handles = []

    def hook(mod, inp, out):
        x = inp[0]
        if isinstance(mod, nn.Conv2d):
            f = 2.0 * out.numel() * mod.weight[0].numel()
        elif isinstance(mod, nn.ConvTranspose2d):
            f = 2.0 * x.numel() * mod.weight[0].numel()
        else:
            f = 2.0 * out.numel() * mod.in_features
        per[owner.get(mod, "backbone_fpn")] += f

    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            handles.append(m.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            model(torch.from_numpy(images))
    finally:
        for h in handles:
            h.remove()
    return {"total_gflop": sum(per.values()) / 1e9, "per_stage_gflop": {k: v / 1e9 for k, v in per.items()},
            "method": "PyTorch forward hooks on Conv2d, ConvTranspose2d, Linear (2 x MACs, actual shapes of one "
                      "eager forward: the mask head on the detections found)"}


# ====================================================================== options
@dataclass
class BenchOptions:
    """What to benchmark (the ``maskrt bench`` arguments)."""

    model: str | None = None  # .onnx | .pt | engine | preset name (random weights) | None (embedded default)
    backend: str = "ort"
    batches: tuple[int, ...] = (1,)
    size: tuple[int, int] | None = None
    precision: str = "fp32"
    iters: int = 20
    warmup: int = 3
    threads: int = 2
    detections: int | None = None
    out: str | None = None
    compare: bool = False
    frame_size: tuple[int, int] = DEFAULT_FRAME_SIZE
    device: str = "cpu"
    profile_runs: int = 3
    pipeline_frames: int | None = None
    post_repeats: int = 10
    gemm_sizes: tuple[int, ...] = (256, 512, 1024, 2048)
    seed: int = 0
    name: str | None = None
    progress: bool = True
    plots: bool = True

    def check(self) -> None:
        """Raises :class:`BenchError` naming the first bad option."""
        if self.backend not in BACKENDS:
            raise BenchError(f"--backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.precision not in PRECISIONS:
            raise BenchError(f"--precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not self.batches or any(b < 1 for b in self.batches) or len(set(self.batches)) != len(self.batches):
            raise BenchError(f"--batch must list distinct positive batch sizes, got {list(self.batches)}")
        for name, v, lo in (("--iters", self.iters, 1), ("--warmup", self.warmup, 0), ("--threads", self.threads, 1),
                            ("--profile-runs", self.profile_runs, 0), ("--post-repeats", self.post_repeats, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise BenchError(f"{name} must be an integer >= {lo}, got {v!r}")
        if self.size is not None and (len(self.size) != 2 or any(s <= 0 or s % 32 for s in self.size)):
            raise BenchError(f"--size must be H W, positive multiples of 32, got {list(self.size)}")
        if len(self.frame_size) != 2 or any(s <= 0 for s in self.frame_size):
            raise BenchError(f"--frame-size must be two positive integers H W, got {list(self.frame_size)}")
        if self.detections is not None and self.detections < 1:
            raise BenchError(f"--detections must be >= 1, got {self.detections}")
        if self.pipeline_frames is not None and self.pipeline_frames < 0:
            raise BenchError(f"--pipeline-frames must be >= 0, got {self.pipeline_frames}")
        if self.precision != "fp32" and self.backend != "trt":
            raise BenchError(f"--precision {self.precision} needs a TensorRT engine built with it (--backend trt); "
                             f"the {self.backend} backend runs the fp32 graph")
        if self.compare and self.backend == "torch":
            raise BenchError("--compare runs PyTorch eager beside ONNX Runtime / TensorRT; with --backend torch "
                             "there is nothing to compare")


# ====================================================================== model artefacts
@dataclass
class _Artefacts:
    source: str  # what --model named
    kind: str  # onnx | engine | checkpoint | preset | default
    run_path: Path  # the file the chosen backend opens
    config: Any  # ModelConfig
    onnx_path: Path | None = None  # an ONNX graph of the same model (FLOPs), if any
    torch_path: Path | None = None  # a checkpoint of the same weights and config (torch backend / --compare)
    notes: list[str] = field(default_factory=list)


def _default_checkpoint() -> Path:
    import maskrt

    return Path(maskrt.__file__).resolve().parent / "assets" / "default.pt"


def _classify(model: str | None) -> tuple[str, Path | None, str | None]:
    """(kind, path, preset name) of a --model value."""
    from maskrt.runtime.config import PRESETS

    if model is None:
        return "default", _default_checkpoint(), None
    p = Path(model)
    kind = MODEL_SUFFIXES.get(p.suffix.lower())
    if kind is not None:
        if not p.is_file():
            raise BenchError(f"--model {model}: no such file")
        return kind, p, None
    if model in PRESETS:
        return "preset", None, model
    raise BenchError(f"--model {model!r}: not a .onnx / .pt / .engine file nor a preset name ({sorted(PRESETS)})")


def _prepare_artefacts(opts: BenchOptions, tmp: Path, say: Any) -> _Artefacts:
    kind, path, preset_name = _classify(opts.model)
    source = opts.model or f"embedded default ({path})"
    if kind == "onnx":
        if opts.backend != "ort":
            raise BenchError(f"--model {path}: an ONNX graph runs with --backend ort (TensorRT needs an engine from "
                             "`maskrt build`; --backend torch needs a .pt checkpoint)")
        if opts.detections is not None:
            raise BenchError("--detections K re-exports the model with score threshold 0 and K detections: pass the "
                             ".pt checkpoint (or a preset), not an exported graph")
        if opts.compare:
            raise BenchError("--compare needs the PyTorch weights: pass the .pt checkpoint (it is exported to ONNX "
                             "for ONNX Runtime), not an exported graph")
        from maskrt.runtime.backends.ort import OrtBackend

        cfg = OrtBackend(path).config
        if opts.size is not None and tuple(opts.size) != tuple(cfg.input_size):
            raise BenchError(f"--size {opts.size[0]} {opts.size[1]}: {path} was exported for "
                             f"{cfg.input_size[0]}x{cfg.input_size[1]}; re-export it (or pass the checkpoint)")
        return _Artefacts(source, kind, path, cfg, onnx_path=path)
    if kind == "engine":
        if opts.backend != "trt":
            raise BenchError(f"--model {path}: a TensorRT engine runs with --backend trt")
        if opts.detections is not None or opts.size is not None:
            raise BenchError("--detections/--size are fixed when the engine is built; rebuild it instead")
        from maskrt.runtime.backends.trt import TrtBackend

        backend = TrtBackend(path)
        meta = backend.engine_meta
        if meta.precision != opts.precision:
            raise BenchError(f"--precision {opts.precision}: {path} was built for {meta.precision}")
        return _Artefacts(source, kind, path, backend.config)
    # a checkpoint, a preset or the embedded default: PyTorch weights we can export
    if opts.backend == "trt":
        raise BenchError("--backend trt needs a TensorRT engine: `maskrt export --flavour trt` then `maskrt build`, "
                         "and pass the .engine file")
    try:
        import torch
    except ImportError as e:
        raise BenchError(f"--model {source}: a PyTorch checkpoint/preset needs torch (pip install 'maskrt[train]'; "
                         f"{e})") from None
    from maskrt.runtime.config import preset
    from maskrt.train.model.checkpoint import load_checkpoint, save_checkpoint
    from maskrt.train.model.mask_rcnn import MaskRCNN

    torch.set_num_threads(opts.threads)
    if kind == "preset":
        torch.manual_seed(opts.seed)
        model = MaskRCNN(preset(preset_name)).eval()
        notes = [f"preset {preset_name!r} with random weights (torch.manual_seed({opts.seed}))"]
    else:
        if kind == "default" and not path.is_file():
            raise BenchError(f"the embedded default checkpoint {path} is missing; pass --model")
        model, _ = load_checkpoint(path)
        notes = []
    cfg = model.cfg
    changes: dict[str, Any] = {}
    if opts.size is not None and tuple(opts.size) != tuple(cfg.input_size):
        changes["input_size"] = tuple(int(s) for s in opts.size)
    if opts.detections is not None:
        # NOTE: the worst case is made honestly by the model itself: every class score above 0
        # passes (box_score_thresh 0; the test is strict, softmax scores are > 0), then per-class
        # NMS and the top-K, so the count reaches K whenever NMS leaves K candidates (it is
        # reported per image, never assumed).
        changes.update(box_score_thresh=0.0, detections_per_img=int(opts.detections))
        notes.append(f"--detections {opts.detections}: box_score_thresh 0.0 and detections_per_img "
                     f"{opts.detections} (re-exported); the achieved counts are in detections_per_image")
    if changes:
        state = model.state_dict()
        model = MaskRCNN(cfg.replace(**changes)).eval()
        model.load_state_dict(state, strict=True)
        cfg = model.cfg
    art = _Artefacts(source, kind, Path(), cfg, notes=notes)
    if opts.backend == "torch" or opts.compare:
        if kind == "checkpoint" and not changes:
            art.torch_path = path
        elif kind == "default" and not changes:
            art.torch_path = path
        else:
            art.torch_path = tmp / "model.pt"
            save_checkpoint(art.torch_path, model)
    try:
        import onnx  # noqa: F401

        have_onnx = True
    except ImportError:
        have_onnx = False
    if opts.backend == "ort" or have_onnx:
        from maskrt.export.onnx_export import export_model

        art.onnx_path = tmp / "model.onnx"
        t = time.perf_counter()
        export_model(model, art.onnx_path, "ort")
        say(f"exported {cfg.name} {cfg.input_size[0]}x{cfg.input_size[1]} to ONNX ({time.perf_counter() - t:.1f} s)")
    art.run_path = art.onnx_path if opts.backend == "ort" else art.torch_path
    art._model = model  # kept for the torch FLOP count when there is no ONNX graph
    return art


def _backend_kwargs(backend: str, opts: BenchOptions) -> dict[str, Any]:
    if backend == "ort":
        providers = ["cuda"] if opts.device.startswith("cuda") else ["cpu"]
        return {"intra_op_threads": opts.threads, "inter_op_threads": 1, "providers": providers}
    if backend == "torch":
        return {"threads": opts.threads, "device": opts.device}
    return {}


# ====================================================================== measurement
class _TorchStageTimer:
    """Wall-clock timers inside a PyTorch MaskRCNN's forward: ``backbone`` (+FPN), ``rpn`` (head +
    proposals), ``roi_heads`` (box + mask branch) and ``roi_heads.mask_branch`` (wrapped on the
    instance). On CUDA each boundary synchronises the device."""

    def __init__(self, model: Any) -> None:
        import torch

        self._sync = torch.cuda.synchronize if next(model.parameters()).is_cuda else (lambda: None)
        self.times: dict[str, float] = {}
        self._t0: dict[str, float] = {}
        self._handles = []
        for attr, key in (("backbone", "backbone_fpn"), ("rpn", "rpn"), ("roi_heads", "roi_heads")):
            mod = getattr(model, attr)
            self._handles.append(mod.register_forward_pre_hook(self._start(key)))
            self._handles.append(mod.register_forward_hook(self._stop(key)))
        heads = model.roi_heads
        self._heads = heads
        original = heads.mask_branch

        def mask_branch(*a, **k):
            self._start("mask_branch")(None, None)
            try:
                return original(*a, **k)
            finally:
                self._stop("mask_branch")(None, None, None)

        heads.mask_branch = mask_branch

    def _start(self, key: str):
        def pre(_m, _i):
            self._sync()
            self._t0[key] = time.perf_counter()
        return pre

    def _stop(self, key: str):
        def post(_m, _i, _o):
            self._sync()
            self.times[key] = self.times.get(key, 0.0) + (time.perf_counter() - self._t0.pop(key)) * 1e3
        return post

    def take(self, infer_ms: float) -> dict[str, float]:
        t, self.times = self.times, {}
        mask = t.get("mask_branch", 0.0)
        out = {"backbone_fpn": t.get("backbone_fpn", 0.0), "rpn": t.get("rpn", 0.0),
               "box_branch": max(t.get("roi_heads", 0.0) - mask, 0.0), "mask_branch": mask}
        out["other"] = max(infer_ms - sum(out.values()), 0.0)
        return out

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._heads.__dict__.pop("mask_branch", None)


def _record_stage(frames: Sequence[np.ndarray], dets: Sequence[Any]) -> list[dict]:
    """The video pipeline's postprocess work for a JSON record sink, per frame: ``FrameResult``
    (runtime/video/sinks.py) -> ``json_record()`` = native paste to RLE."""
    from maskrt.runtime.video.sinks import FrameResult
    from maskrt.runtime.video.sources import Frame

    return [FrameResult(Frame(f, i, None), d).json_record() for i, (f, d) in enumerate(zip(frames, dets, strict=True))]


def _device_memory(backend: Any) -> dict[str, Any]:
    """Peak device memory where a GPU is in use, else a reason."""
    if getattr(backend, "name", "") == "torch" and str(getattr(backend, "_device", "cpu")).startswith("cuda"):
        import torch

        return {"peak_mib": torch.cuda.max_memory_allocated() / 2**20, "method": "torch.cuda.max_memory_allocated"}
    if getattr(backend, "name", "") == "trt":
        try:
            from maskrt.runtime.engine_meta import import_cudart

            cudart = import_cudart()
            err, free, total = cudart.cudaMemGetInfo()
            return {"used_mib": (total - free) / 2**20, "total_mib": total / 2**20,
                    "method": "cudaMemGetInfo after the run (device-wide)"}
        except Exception as e:  # no cuda-python: say so
            return {"skipped": f"device memory not read: {type(e).__name__}: {e}"}
    return {"skipped": "no GPU in use (CPU backend)"}


def _measure(predictor: Any, frames: list[np.ndarray], opts: BenchOptions, bar: Any,
             timer: _TorchStageTimer | None) -> dict[str, Any]:
    """Warm-up, then ``opts.iters`` timed iterations of prepare / infer / finish / paste_rle on
    the same frames (uint8 [h, w, 3] each); per-iteration ms of each stage and of the sum."""
    h, w = predictor.input_size
    buf = np.empty((len(frames), h, w, 3), np.uint8)
    samples: dict[str, list[float]] = {s: [] for s in (*STAGES, "end_to_end")}
    inner: dict[str, list[float]] = {s: [] for s in INFER_STAGES}
    counts: list[int] = []
    for it in range(opts.warmup + opts.iters):
        t0 = time.perf_counter()
        batch, infos = predictor.prepare(frames, out=buf)
        t1 = time.perf_counter()
        outputs = predictor.infer(batch)
        t2 = time.perf_counter()
        dets = predictor.finish(outputs, infos)
        t3 = time.perf_counter()
        _record_stage(frames, dets)
        t4 = time.perf_counter()
        bar.update(1)
        infer_ms = (t2 - t1) * 1e3
        sub = timer.take(infer_ms) if timer is not None else None
        if it < opts.warmup:
            continue
        for s, v in zip((*STAGES, "end_to_end"), ((t1 - t0) * 1e3, infer_ms, (t3 - t2) * 1e3, (t4 - t3) * 1e3,
                                                  (t4 - t0) * 1e3), strict=True):
            samples[s].append(v)
        if sub is not None:
            for s in INFER_STAGES:
                inner[s].append(sub[s])
        counts = [int(n) for n in outputs["num_detections"]]
    return {"samples": samples, "inner": inner if timer is not None else None, "outputs": outputs,
            "infos": infos, "detections_per_image": counts}


def _ort_profile(onnx_path: Path, kwargs: dict[str, Any], batch: np.ndarray, runs: int, tmp: Path,
                 node_stage: dict[str, str] | None) -> tuple[dict[str, Any], dict[str, str] | None]:
    """``runs`` profiled ONNX Runtime runs (+1 warm-up) of ``batch`` (uint8 [B, H, W, 3]) in a
    separate session with ``enable_profiling``; the optimised graph is saved once to attribute
    the nodes ONNX Runtime creates. Returns (parse_ort_profile result, node -> stage)."""
    import onnxruntime as ort

    from maskrt.runtime.backends.ort import OrtBackend

    so = ort.SessionOptions()
    so.enable_profiling = True
    so.log_severity_level = 3  # no warning about saving an NCHWc-optimised graph (it is read back, not reused)
    so.profile_file_prefix = str(tmp / f"ort_profile_b{batch.shape[0]}")
    opt_path = tmp / "optimized.onnx"
    if node_stage is None:
        so.optimized_model_filepath = str(opt_path)
    backend = OrtBackend(onnx_path, session_options=so, **kwargs)
    with backend:
        for _ in range(runs + 1):
            backend.infer(batch)
        prof = Path(backend.session.end_profiling())
    if node_stage is None and opt_path.is_file():
        node_stage = assign_stages(read_graph_nodes(opt_path))
    events = json.loads(prof.read_text())
    prof.unlink(missing_ok=True)
    return parse_ort_profile(events, node_stage, skip_runs=1), node_stage


def _postprocess_compare(outputs: dict[str, np.ndarray], infos: Sequence[Any], predictor: Any, frames: list,
                         repeats: int) -> dict[str, Any]:
    """Native paste + RLE (the pipeline's path) vs the pure-Python reference (runtime/postprocess.py
    ``paste_masks`` + ``masks_to_rle``, pycocotools) on the same detections: median ms per batch."""
    from maskrt.runtime import postprocess

    dets = predictor.finish(outputs, infos)
    res: dict[str, Any] = {"detections": [len(d) for d in dets], "repeats": repeats}

    def native() -> None:
        _record_stage(frames, dets)

    def python() -> None:
        for d in dets:
            bm = postprocess.paste_masks(d.masks, d.boxes, d.image_size, 0.5)
            postprocess.masks_to_rle(bm)

    for name, fn in (("native_ms", native), ("python_ms", python)):
        try:
            fn()
        except ImportError as e:
            res["skipped"] = f"pure-Python reference needs pycocotools ([train] extra): {e}"
            return res
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t) * 1e3)
        res[name] = float(np.median(ts))
    res["python_over_native"] = res["python_ms"] / max(res["native_ms"], 1e-9)
    return res


def _pipeline_fps(predictor: Any, frames: list[np.ndarray], batch: int, n_frames: int) -> dict[str, Any]:
    """FPS of the threaded :class:`VideoPipeline` over an in-memory file-like source of
    ``n_frames`` (cycling ``frames``) with a sink that needs the JSON record (paste + RLE) and
    discards it."""
    from maskrt.runtime.video.pipeline import VideoPipeline
    from maskrt.runtime.video.sinks import Sink
    from maskrt.runtime.video.sources import Frame, Source

    class _MemorySource(Source):
        def __init__(self) -> None:
            super().__init__("memory")
            self._i = 0

        @property
        def fps(self) -> float | None:
            return None

        @property
        def frame_count(self) -> int | None:
            return n_frames

        def _open(self) -> None:
            self._i = 0

        def _close(self) -> None:
            pass

        def _read(self) -> Frame | None:
            if self._i >= n_frames:
                return None
            f = Frame(frames[self._i % len(frames)], self._i, None)
            self._i += 1
            return f

    class _RecordSink(Sink):
        name = "discard"
        needs = frozenset({"record"})

        def write(self, result) -> None:
            pass

    stats = VideoPipeline(_MemorySource(), predictor, [_RecordSink()], batch=batch).run()
    st = stats.stages
    return {"frames": stats.frames_out, "elapsed_s": stats.elapsed_s, "fps": stats.fps,
            "stage_mean_ms_per_frame": {k: v.mean for k, v in st.items()}}


def _trtexec(engine: Path, plugin_lib: Path | None, batch: int, input_size: tuple[int, int],
             iters: int) -> dict[str, Any]:
    exe = shutil.which("trtexec")
    if exe is None:
        return {"skipped": "trtexec is not on PATH"}
    h, w = input_size
    cmd = [exe, f"--loadEngine={engine}", f"--shapes=images:{batch}x{h}x{w}x3", f"--iterations={iters}",
           "--warmUp=500", "--avgRuns=1"]
    if plugin_lib is not None:
        cmd.append(f"--staticPlugins={plugin_lib}")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        return {"skipped": f"trtexec failed (exit {r.returncode}): {(r.stderr or r.stdout).strip()[-300:]}",
                "command": " ".join(cmd)}
    found = {}
    for key in ("GPU Compute Time", "Latency", "Throughput"):
        m = re.search(rf"{key}: (.*)", r.stdout)
        if m:
            found[key] = m.group(1).strip()
    return {"command": " ".join(cmd), "summary": found}


# ====================================================================== the run
def _cost(flops: dict[str, Any] | None, gemm: dict[str, Any] | None, infer_ms: float,
          inner_ms: dict[str, float] | None) -> dict[str, Any] | None:
    """Achieved GFLOP/s and fraction of the GEMM rate, whole inference and per sub-stage."""
    if flops is None or gemm is None or infer_ms <= 0:
        return None
    rate = gemm["gflops"]
    out = {"gflop": flops["total_gflop"], "achieved_gflops": flops["total_gflop"] / (infer_ms / 1e3)}
    out["fraction_of_gemm_peak"] = out["achieved_gflops"] / rate
    out["floor_ms"] = flops["total_gflop"] / rate * 1e3
    if inner_ms:
        per = {}
        for s, g in flops["per_stage_gflop"].items():
            ms = inner_ms.get(s, 0.0)
            per[s] = {"gflop": g, "ms": ms, "floor_ms": g / rate * 1e3,
                      "fraction_of_gemm_peak": (g / (ms / 1e3) / rate) if ms > 0 else None}
        out["per_stage"] = per
    return out


def _run_backend(backend_name: str, run_path: Path, opts: BenchOptions, frames_all: list[np.ndarray],
                 bar: Any, tmp: Path, onnx_path: Path | None, flops_by_batch: dict[int, Any],
                 gemm: dict[str, Any] | None, say: Any, *, main: bool) -> dict[str, Any]:
    from maskrt.runtime.predictor import Predictor, open_backend

    kwargs = _backend_kwargs(backend_name, opts)
    predictor = Predictor(open_backend(run_path, **kwargs))
    results: dict[str, Any] = {"backend": backend_name, "artefact": str(run_path.name), "batches": {}}
    node_stage = None
    with predictor:
        backend = predictor.backend
        if backend_name == "ort":
            results["providers"] = backend.providers
        timer = None
        if backend_name == "torch":
            model = getattr(backend, "_model", None)
            timer = _TorchStageTimer(model) if model is not None else None
            results["inner_method"] = "forward hooks on backbone, rpn, roi_heads; roi_heads.mask_branch wrapped"
        try:
            for b in opts.batches:
                frames = frames_all[:b]
                m = _measure(predictor, frames, opts, bar, timer)
                stats = {s: summarize(v) for s, v in m["samples"].items()}
                e2e = stats["end_to_end"]["p50"]
                entry: dict[str, Any] = {
                    "batch": b, "stats_ms": stats, "samples_ms": {k: [round(x, 4) for x in v]
                                                                 for k, v in m["samples"].items()},
                    "fps_end_to_end": b / (e2e / 1e3), "fps_infer_only": b / (stats["infer"]["p50"] / 1e3),
                    "detections_per_image": m["detections_per_image"],
                }
                inner = None
                if m["inner"] is not None:
                    inner = {s: float(np.median(v)) for s, v in m["inner"].items()}
                    entry["inner_ms"] = inner
                    entry["inner_samples_ms"] = {k: [round(x, 4) for x in v] for k, v in m["inner"].items()}
                elif backend_name == "ort" and opts.profile_runs > 0 and onnx_path is not None:
                    batch_arr, _ = predictor.prepare(frames)
                    prof, node_stage = _ort_profile(onnx_path, kwargs, np.ascontiguousarray(batch_arr),
                                                    opts.profile_runs, tmp, node_stage)
                    med = prof["median"]
                    scale = stats["infer"]["p50"] / med["run"] if med["run"] > 0 else 0.0
                    inner = {s: med[s] * scale for s in INFER_STAGES}
                    entry["inner_ms"] = inner
                    entry["ort_profile"] = {"runs": len(prof["runs"]), "median_ms": med,
                                            "scale_to_unprofiled": scale,
                                            "nodes_without_prefix": prof["n_nodes_unknown"]}
                if main:
                    if m["detections_per_image"] is not None:
                        entry["postprocess_native_vs_python"] = _postprocess_compare(
                            m["outputs"], m["infos"], predictor, frames, opts.post_repeats)
                    n_pipe = opts.pipeline_frames if opts.pipeline_frames is not None else max(opts.iters, 2) * b
                    if n_pipe > 0:
                        say(f"{backend_name} batch {b}: pipeline over {n_pipe} frames")
                        pipe = _pipeline_fps(predictor, frames, b, n_pipe)
                        pipe["over_infer_only_fps"] = pipe["fps"] / entry["fps_infer_only"]
                        entry["pipeline"] = pipe
                results["batches"][str(b)] = entry
        finally:
            if timer is not None:
                timer.remove()
        results["device_memory"] = _device_memory(backend)
        if backend_name == "trt" and main:
            lib = getattr(backend, "plugin_library", None)
            results["trtexec"] = {str(b): _trtexec(run_path, lib, b, predictor.input_size, max(opts.iters, 10))
                                  for b in opts.batches}
    results["peak_rss_mib"] = peak_rss_mib()
    return results


def _default_name(opts: BenchOptions, cfg: Any) -> str:
    h, w = cfg.input_size
    det = f"_det{opts.detections}" if opts.detections else ""
    label = "default" if opts.model is None else Path(opts.model).stem if Path(opts.model).suffix else opts.model
    return f"{label}_{opts.backend}_{h}x{w}{det}"


def run_benchmark(opts: BenchOptions) -> dict[str, Any]:
    """Runs the benchmark described by ``opts``; writes JSON, markdown and plots to the output
    folder (``opts.out``, default benchmarks/results/<name>) and returns the result dict."""
    opts.check()
    os.environ.setdefault("OMP_NUM_THREADS", str(opts.threads))
    try:
        import cv2

        cv2.setNumThreads(opts.threads)
    except ImportError:
        pass
    from tqdm import tqdm

    log: list[str] = []

    def say(msg: str) -> None:
        log.append(msg)
        if opts.progress:
            tqdm.write(f"maskrt bench: {msg}", file=sys.stderr)

    t_start = time.time()
    machine = machine_info(opts.threads)
    with tempfile.TemporaryDirectory(prefix="maskrt_bench_") as td:
        tmp = Path(td)
        art = _prepare_artefacts(opts, tmp, say)
        cfg = art.config
        name = opts.name or _default_name(opts, cfg)
        out_dir = Path(opts.out) if opts.out else Path("benchmarks") / "results" / name
        frames, generator = make_frames(max(opts.batches), tuple(opts.frame_size), opts.seed)

        gemm = None
        if opts.device == "cpu":
            say(f"measuring the fp32 GEMM rate with {opts.threads} threads")
            gemm = gemm_rate(opts.threads, opts.gemm_sizes)
        flops_by_batch: dict[int, Any] = {}
        for b in opts.batches:
            if art.onnx_path is not None:
                try:
                    flops_by_batch[b] = count_onnx_flops(art.onnx_path, b)
                    continue
                except ImportError:
                    pass
            model = getattr(art, "_model", None)
            if model is not None:
                from maskrt.runtime.letterbox import letterbox

                imgs = np.stack([letterbox(f, cfg.input_size).image for f in frames[:b]])
                flops_by_batch[b] = count_torch_flops(model, imgs)

        n_iter = (opts.warmup + opts.iters) * len(opts.batches) * (2 if opts.compare else 1)
        bar = tqdm(total=n_iter, desc="maskrt bench", unit="it", file=sys.stderr, disable=not opts.progress)
        try:
            main = _run_backend(opts.backend, art.run_path, opts, frames, bar, tmp, art.onnx_path, flops_by_batch,
                                gemm, say, main=True)
            ref = None
            if opts.compare:
                ref = _run_backend("torch", art.torch_path, opts, frames, bar, tmp, None, flops_by_batch, gemm, say,
                                   main=False)
        finally:
            bar.close()

    comparisons: dict[str, Any] = {}
    if ref is not None:
        comparisons[f"{opts.backend}_vs_torch_eager"] = {
            str(b): {"infer_p50_ratio": main["batches"][str(b)]["stats_ms"]["infer"]["p50"]
                     / ref["batches"][str(b)]["stats_ms"]["infer"]["p50"],
                     "end_to_end_p50_ratio": main["batches"][str(b)]["stats_ms"]["end_to_end"]["p50"]
                     / ref["batches"][str(b)]["stats_ms"]["end_to_end"]["p50"],
                     "same_detection_counts": main["batches"][str(b)]["detections_per_image"]
                     == ref["batches"][str(b)]["detections_per_image"]}
            for b in opts.batches}
    else:
        comparisons["vs_torch_eager"] = {"skipped": "not requested (--compare)"}
    if gemm is not None:
        # NOTE: the GEMM probe runs again at the end and the better of the two counts: on a shared
        # machine a probe that met another job's burst would understate the floor.
        again = gemm_rate(opts.threads, opts.gemm_sizes)
        gemm["probes_gflops"] = [gemm["gflops"], again["gflops"]]
        if again["gflops"] > gemm["gflops"]:
            again["probes_gflops"] = gemm["probes_gflops"]
            gemm = again
    for run in (main, ref):
        for b, e in (run or {}).get("batches", {}).items():
            e["cost"] = _cost(flops_by_batch.get(int(b)), gemm, e["stats_ms"]["infer"]["p50"], e.get("inner_ms"))
    machine["load_average_end"] = load_average()
    result = {
        "format": RESULT_FORMAT,
        "name": name,
        "created_unix": round(t_start, 1),
        "duration_s": round(time.time() - t_start, 1),
        "command": "maskrt bench " + " ".join(_argv_of(opts)),
        "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(opts).items()},
        "model": {"source": art.source, "kind": art.kind, "name": cfg.name, "backbone": cfg.backbone,
                  "input_size": list(cfg.input_size), "detections_per_img": cfg.detections_per_img,
                  "box_score_thresh": cfg.box_score_thresh, "rpn_post_nms_top_n_test": cfg.rpn_post_nms_top_n_test,
                  "notes": art.notes},
        "inputs": {"generator": generator, "frame_size": list(opts.frame_size), "seed": opts.seed,
                   "identical_every_iteration": True},
        "machine": machine,
        "gemm": gemm if gemm is not None else {"skipped": f"device {opts.device}: the CPU GEMM floor does not apply"},
        "flops": {str(b): v for b, v in flops_by_batch.items()},
        "results": {"main": main, "torch_eager": ref},
        "comparisons": comparisons,
        "log": log,
    }
    validate_result(result)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench.json").write_text(json.dumps(result, indent=1))
    (out_dir / "bench.md").write_text(markdown_report(result))
    if opts.plots:
        write_plots(result, out_dir)
    result["out_dir"] = str(out_dir)
    return result


def _argv_of(opts: BenchOptions) -> list[str]:
    a = []
    if opts.model:
        a += ["--model", opts.model]
    a += ["--backend", opts.backend, "--batch", ",".join(map(str, opts.batches))]
    if opts.size:
        a += ["--size", *map(str, opts.size)]
    a += ["--precision", opts.precision, "--iters", str(opts.iters), "--warmup", str(opts.warmup),
          "--threads", str(opts.threads)]
    if opts.detections:
        a += ["--detections", str(opts.detections)]
    if opts.compare:
        a.append("--compare")
    return a


# ====================================================================== schema
_SCHEMA_TOP = {"format": str, "name": str, "command": str, "options": dict, "model": dict, "inputs": dict,
               "machine": dict, "gemm": dict, "flops": dict, "results": dict, "comparisons": dict}
_SCHEMA_STATS = ("p50", "p90", "p99", "mean", "std", "min", "max", "n")


def validate_result(r: dict[str, Any]) -> None:
    """Checks a result dict against the bench JSON schema (format ``maskrt.bench/1``): the
    top-level keys and types, machine info, per batch the stage statistics (p50 <= p90 <= p99,
    all finite), FPS and detection counts. Raises ValueError naming the first violation."""
    def need(cond: bool, what: str) -> None:
        if not cond:
            raise ValueError(f"bench result: {what}")

    for k, t in _SCHEMA_TOP.items():
        need(isinstance(r.get(k), t), f"'{k}' must be a {t.__name__}")
    need(r["format"] == RESULT_FORMAT, f"format must be {RESULT_FORMAT!r}")
    for k in ("cpu", "logical_cores", "threads_used", "libraries", "gpus", "load_average_start"):
        need(k in r["machine"], f"machine.{k} missing")
    main = r["results"].get("main")
    need(isinstance(main, dict) and isinstance(main.get("batches"), dict) and main["batches"], "results.main.batches")
    runs = [main] + ([r["results"]["torch_eager"]] if r["results"].get("torch_eager") else [])
    for run in runs:
        need(isinstance(run.get("peak_rss_mib"), float), "peak_rss_mib must be a float")
        for b, e in run["batches"].items():
            need(int(b) == e.get("batch"), f"batch key {b}")
            for s in (*STAGES, "end_to_end"):
                st = e["stats_ms"].get(s)
                need(isinstance(st, dict) and all(k in st for k in _SCHEMA_STATS), f"stats_ms.{s} incomplete")
                need(all(math.isfinite(st[k]) for k in _SCHEMA_STATS[:-1]), f"stats_ms.{s} not finite")
                need(st["min"] <= st["p50"] <= st["p90"] <= st["p99"] <= st["max"], f"stats_ms.{s} percentiles order")
            need(e["fps_end_to_end"] > 0 and e["fps_infer_only"] > 0, "fps must be positive")
            need(len(e["detections_per_image"]) == e["batch"], "detections_per_image length")


# ====================================================================== report
def _fmt(v: float | None, nd: int = 1) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def markdown_report(r: dict[str, Any]) -> str:
    """The markdown summary of a result dict: setup, latency table, inner stages with the cost
    model, comparisons."""
    m, mc = r["model"], r["machine"]
    gemm = r["gemm"].get("gflops")
    lines = [f"# maskrt bench: {r['name']}", "",
             f"`{r['command']}`", "",
             f"* model: {m['name']} ({m['backbone']}), input {m['input_size'][0]}x{m['input_size'][1]}, "
             f"K = {m['detections_per_img']}, score threshold {m['box_score_thresh']}; source: {m['source']}",
             *[f"* note: {n}" for n in m["notes"]],
             f"* inputs: {r['inputs']['generator']} frames "
             f"{r['inputs']['frame_size'][0]}x{r['inputs']['frame_size'][1]} "
             "(identical every iteration), letterboxed to the input size",
             f"* machine: {mc['cpu']}, {mc['logical_cores']} logical cores, {mc['threads_used']} threads used; "
             f"load average at start {mc['load_average_start']}, end {mc.get('load_average_end')} "
             "(a shared machine: other jobs ran alongside)",
             f"* fp32 GEMM rate (numpy, {mc['threads_used']} threads): "
             + (f"{gemm:.1f} GFLOP/s" if gemm else r["gemm"].get("skipped", "-")), ""]
    runs = [r["results"]["main"]] + ([r["results"]["torch_eager"]] if r["results"].get("torch_eager") else [])
    lines += ["## Latency (ms per batch call; FPS = frames/s)", "",
              "| backend | batch | dets/img | prepare p50 | infer p50 | infer p90 | infer p99 | finish p50 | "
              "paste+RLE p50 | end-to-end p50 | p90 | p99 | mean ± std | FPS e2e | FPS infer | GFLOP | "
              "% of GEMM peak | peak RSS MiB |",
              "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for run in runs:
        for b, e in run["batches"].items():
            s = e["stats_ms"]
            cost = e.get("cost") or {}
            frac = cost.get("fraction_of_gemm_peak")
            lines.append(
                f"| {run['backend']} | {b} | {','.join(map(str, e['detections_per_image']))} | "
                f"{_fmt(s['prepare']['p50'], 2)} | {_fmt(s['infer']['p50'])} | {_fmt(s['infer']['p90'])} | "
                f"{_fmt(s['infer']['p99'])} | {_fmt(s['finish']['p50'], 2)} | {_fmt(s['paste_rle']['p50'], 2)} | "
                f"{_fmt(s['end_to_end']['p50'])} | {_fmt(s['end_to_end']['p90'])} | {_fmt(s['end_to_end']['p99'])} | "
                f"{_fmt(s['end_to_end']['mean'])} ± {_fmt(s['end_to_end']['std'])} | {_fmt(e['fps_end_to_end'], 2)} | "
                f"{_fmt(e['fps_infer_only'], 2)} | {_fmt(cost.get('gflop'))} | "
                f"{_fmt(None if frac is None else 100 * frac)} | {run['peak_rss_mib']:.0f} |")
    lines += ["", "## Inside inference (ms per batch call, median) and distance to the GEMM floor", "",
              "| backend | batch | stage | ms | GFLOP | floor ms | % of GEMM peak |",
              "|---|---:|---|---:|---:|---:|---:|"]
    for run in runs:
        for b, e in run["batches"].items():
            inner = e.get("inner_ms")
            if not inner:
                continue
            per = ((r["flops"].get(b) or {}).get("per_stage_gflop") or {})
            for s in INFER_STAGES:
                g = per.get(s)
                floor = g / gemm * 1e3 if (g is not None and gemm) else None
                frac = (g / (inner[s] / 1e3) / gemm * 100) if (g and gemm and inner[s] > 0) else None
                lines.append(f"| {run['backend']} | {b} | {STAGE_LABELS[s]} | {_fmt(inner[s])} | {_fmt(g, 2)} | "
                             f"{_fmt(floor)} | {_fmt(frac)} |")
    lines += ["", "## Comparisons (ratios)", ""]
    main = r["results"]["main"]
    for b, e in main["batches"].items():
        pp = e.get("postprocess_native_vs_python") or {}
        if "python_over_native" in pp:
            lines.append(f"* batch {b}: pure-Python paste + RLE / native = {pp['python_over_native']:.1f}x "
                         f"({pp['python_ms']:.2f} ms vs {pp['native_ms']:.2f} ms for {pp['detections']} detections)")
        elif pp.get("skipped"):
            lines.append(f"* batch {b}: native vs pure-Python post-processing skipped: {pp['skipped']}")
        pipe = e.get("pipeline")
        if pipe:
            lines.append(f"* batch {b}: pipeline FPS / inference-only FPS = {pipe['over_infer_only_fps']:.2f} "
                         f"({pipe['fps']:.2f} vs {e['fps_infer_only']:.2f} FPS, {pipe['frames']} frames)")
    for key, comp in r["comparisons"].items():
        if "skipped" in comp:
            lines.append(f"* {key}: skipped ({comp['skipped']})")
            continue
        for b, c in comp.items():
            lines.append(f"* batch {b}: {key.replace('_', ' ')}: infer p50 ratio {c['infer_p50_ratio']:.2f}, "
                         f"end-to-end p50 ratio {c['end_to_end_p50_ratio']:.2f}; same detection counts: "
                         f"{c['same_detection_counts']}")
    if "trtexec" in main:
        for b, t in main["trtexec"].items():
            lines.append(f"* trtexec batch {b}: {t.get('summary') or t.get('skipped')}")
    else:
        lines.append("* trtexec: skipped (no TensorRT engine benchmarked)")
    dm = main.get("device_memory", {})
    lines.append(f"* device memory: {dm.get('skipped') or dm}")
    return "\n".join(lines) + "\n"


def write_plots(r: dict[str, Any], out_dir: Path) -> list[Path]:
    """PNG plots (matplotlib, Agg): latency distribution per stage (violins), per-stage stacked
    bars (ms per frame), FPS vs batch size. Returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r["results"]["main"]] + ([r["results"]["torch_eager"]] if r["results"].get("torch_eager") else [])
    paths = []
    title = f"{r['model']['name']} {r['model']['input_size'][0]}x{r['model']['input_size'][1]}"

    # 1. latency distribution: one violin per stage, batch = first batch size of the main backend
    main = runs[0]
    b0, e0 = next(iter(main["batches"].items()))
    keys = [*STAGES, "end_to_end"]
    data = [e0["samples_ms"][k] for k in keys]
    fig, ax = plt.subplots(figsize=(6.4, 3.4), dpi=90)
    ax.violinplot(data, showmedians=True)
    ax.set_xticks(range(1, len(keys) + 1), [STAGE_LABELS.get(k, "end-to-end") for k in keys], rotation=20,
                  fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("ms per batch call (log)")
    ax.set_title(f"{title}: latency distribution, {main['backend']}, batch {b0}, n={len(data[0])}", fontsize=9)
    fig.tight_layout()
    p = out_dir / "latency_distribution.png"
    fig.savefig(p)
    plt.close(fig)
    paths.append(p)

    # 2. stacked bars: ms per frame by stage (inference split into its sub-stages where known)
    labels, stacks = [], []
    for run in runs:
        for b, e in run["batches"].items():
            s = e["stats_ms"]
            row = {"prepare": s["prepare"]["p50"]}
            if e.get("inner_ms"):
                row.update(e["inner_ms"])
            else:
                row["infer"] = s["infer"]["p50"]
            row.update(finish=s["finish"]["p50"], paste_rle=s["paste_rle"]["p50"])
            stacks.append({k: v / int(b) for k, v in row.items()})
            labels.append(f"{run['backend']}\nB={b}")
    order = ["prepare", "backbone_fpn", "rpn", "box_branch", "mask_branch", "other", "infer", "finish", "paste_rle"]
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=90)
    bottom = np.zeros(len(stacks))
    for k in order:
        vals = np.array([st.get(k, 0.0) for st in stacks])
        if vals.any():
            ax.bar(labels, vals, bottom=bottom, label=STAGE_LABELS[k])
            bottom += vals
    ax.set_ylabel("ms per frame (p50 of each stage)")
    ax.set_title(f"{title}: per-stage time", fontsize=9)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    p = out_dir / "stages_stacked.png"
    fig.savefig(p)
    plt.close(fig)
    paths.append(p)

    # 3. FPS vs batch size
    fig, ax = plt.subplots(figsize=(5.0, 3.2), dpi=90)
    for run in runs:
        bs = [int(b) for b in run["batches"]]
        ax.plot(bs, [e["fps_infer_only"] for e in run["batches"].values()], "o-", label=f"{run['backend']} infer")
        ax.plot(bs, [e["fps_end_to_end"] for e in run["batches"].values()], "s--", label=f"{run['backend']} e2e")
        pipe = [(int(b), e["pipeline"]["fps"]) for b, e in run["batches"].items() if e.get("pipeline")]
        if pipe:
            ax.plot(*zip(*pipe, strict=True), "^:", label=f"{run['backend']} pipeline")
    ax.set_xlabel("batch size")
    ax.set_ylabel("frames per second")
    ax.set_xticks(sorted({int(b) for run in runs for b in run["batches"]}))
    ax.set_title(f"{title}: FPS vs batch", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    p = out_dir / "fps_vs_batch.png"
    fig.savefig(p)
    plt.close(fig)
    paths.append(p)
    return paths


# ====================================================================== CLI
def _int_list(text: str, what: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise BenchError(f"{what} must be a comma-separated list of integers, got {text!r}") from None
    return vals


def _int(text: Any, what: str) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        raise BenchError(f"{what} must be an integer, got {text!r}") from None


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``maskrt bench``. Values are parsed in :func:`run_bench` so that every bad
    value is a one-line error."""
    parser.description = ("Latency benchmark: end-to-end and per-stage p50/p90/p99, FPS, peak memory, the FLOP cost "
                          "model against this machine's GEMM rate; JSON + markdown + PNG plots.")
    parser.add_argument("--model", default=None, help="a .onnx graph, a .pt checkpoint, a TensorRT engine, or a preset "
                                                      "name (random weights); default: the embedded checkpoint")
    parser.add_argument("--backend", default="ort", help="ort | trt | torch (default ort)")
    parser.add_argument("--batch", default="1", help="batch sizes, comma-separated (default 1)")
    parser.add_argument("--size", nargs=2, default=None, metavar=("H", "W"), help="model input size (re-exports a "
                                                                                "checkpoint; multiples of 32)")
    parser.add_argument("--precision", default="fp32", help="fp32 | fp16 | int8 (fp16/int8: TensorRT engines)")
    parser.add_argument("--iters", default="20", help="timed iterations per batch size (default 20)")
    parser.add_argument("--warmup", default="3", help="untimed warm-up iterations (default 3)")
    parser.add_argument("--threads", default="2", help="CPU threads for the backend, OpenCV and the GEMM probe (2)")
    parser.add_argument("--detections", default=None, metavar="K",
                        help="worst case: score threshold 0 and K detections per image (re-exports a checkpoint)")
    parser.add_argument("--compare", action="store_true", help="also run PyTorch eager on the same weights and inputs")
    parser.add_argument("--frame-size", nargs=2, default=list(DEFAULT_FRAME_SIZE), metavar=("H", "W"),
                        help="size of the generated camera frames (default 720 1280)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda (ORT CUDA provider / torch CUDA)")
    parser.add_argument("--profile-runs", default="3", help="profiled ONNX Runtime runs for the inner stages (3)")
    parser.add_argument("--pipeline-frames", default=None, help="frames through the video pipeline per batch size "
                                                                "(default iters x batch; 0: skip)")
    parser.add_argument("--name", default=None, help="result name (default <model>_<backend>_<H>x<W>)")
    parser.add_argument("--out", default=None, metavar="DIR", help="output folder (default benchmarks/results/<name>)")
    parser.add_argument("--no-plots", action="store_true", help="JSON and markdown only")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_bench)


def options_from_args(args: argparse.Namespace) -> BenchOptions:
    """Parsed command-line arguments -> :class:`BenchOptions` (BenchError for bad values)."""
    size = None if args.size is None else tuple(_int(v, "--size") for v in args.size)
    opts = BenchOptions(
        model=args.model, backend=args.backend, batches=_int_list(args.batch, "--batch"), size=size,
        precision=args.precision, iters=_int(args.iters, "--iters"), warmup=_int(args.warmup, "--warmup"),
        threads=_int(args.threads, "--threads"),
        detections=None if args.detections is None else _int(args.detections, "--detections"),
        out=args.out, compare=args.compare, frame_size=tuple(_int(v, "--frame-size") for v in args.frame_size),
        device=args.device, profile_runs=_int(args.profile_runs, "--profile-runs"),
        pipeline_frames=None if args.pipeline_frames is None else _int(args.pipeline_frames, "--pipeline-frames"),
        name=args.name, progress=not args.no_progress, plots=not args.no_plots)
    opts.check()
    return opts


def run_bench(args: argparse.Namespace) -> int:
    """``maskrt bench``: runs, writes the results, prints the markdown table."""
    opts = options_from_args(args)
    r = run_benchmark(opts)
    print(markdown_report(r))
    print(f"wrote {r['out_dir']}/bench.json, bench.md" + (", *.png" if opts.plots else ""))
    return 0

