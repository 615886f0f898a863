"""Where the time inside inference goes: ONNX Runtime profile attribution (node names of the
exported graph -> sub-stage, nodes the optimiser creates by their graph neighbours) and timers
inside a PyTorch model's forward (forward hooks; CUDA events when the model is on a GPU)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .options import INFER_STAGES, BenchError

__all__ = ["GraphNode", "TorchStageTimer", "assign_stages", "ort_profile", "parse_ort_profile", "read_graph_nodes",
           "stage_of_node"]


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
class GraphNode:
    name: str
    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def read_graph_nodes(path: str | os.PathLike) -> list[GraphNode]:
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
        nodes.append(GraphNode(name, op, tuple(ins), tuple(outs)))
    return nodes


def assign_stages(nodes: Sequence[GraphNode]) -> dict[str, str]:
    """Node name -> sub-stage for every node of an (optimised) graph: by prefix
    (:func:`stage_of_node`), else the stage of the node producing its first attributed input
    (forward pass in graph order), else of its first attributed consumer (backward pass), else
    "other"."""
    stage: dict[str, str] = {}
    producer: dict[str, str] = {}
    consumers: dict[str, list[GraphNode]] = {}
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


def ort_profile(onnx_path: Path, kwargs: dict[str, Any], batch: np.ndarray, runs: int, tmp: Path,
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


class TorchStageTimer:
    """Timers inside a PyTorch MaskRCNN's forward: ``backbone`` (+FPN), ``rpn`` (head + proposals),
    ``roi_heads`` (box + mask branch) and ``roi_heads.mask_branch`` (wrapped on the instance).

    On the CPU each boundary reads ``time.perf_counter``. On CUDA each boundary records a
    ``torch.cuda.Event(enable_timing=True)`` on the current stream and :meth:`take` synchronises
    once and reads ``elapsed_time`` between the pairs (device time of the work queued in between,
    with no synchronisation inside the forward)."""

    def __init__(self, model: Any) -> None:
        import torch

        self._cuda = next(model.parameters()).is_cuda
        self._torch = torch
        self.times: dict[str, float] = {}
        self._t0: dict[str, Any] = {}
        self._pairs: list[tuple[str, Any, Any]] = []  # CUDA: (key, start event, end event) until take()
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

    def _mark(self) -> Any:
        if self._cuda:
            ev = self._torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def _start(self, key: str):
        def pre(_m, _i):
            self._t0[key] = self._mark()
        return pre

    def _stop(self, key: str):
        def post(_m, _i, _o):
            end, start = self._mark(), self._t0.pop(key)
            if self._cuda:
                self._pairs.append((key, start, end))
            else:
                self.times[key] = self.times.get(key, 0.0) + (end - start) * 1e3
        return post

    def take(self, infer_ms: float) -> dict[str, float]:
        """The sub-stage ms of the forward(s) since the last call; ``other`` = ``infer_ms`` minus them."""
        if self._pairs:
            self._torch.cuda.synchronize()
            for key, start, end in self._pairs:
                self.times[key] = self.times.get(key, 0.0) + float(start.elapsed_time(end))
            self._pairs = []
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
