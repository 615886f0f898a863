"""The FLOP model: 2 x multiply-adds of the dense layers, counted from the exported ONNX graph's
shapes (``onnx`` shape inference, in a child process) or, when there is no ONNX graph, from PyTorch
forward hooks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from .options import INFER_STAGES, BenchError
from .profilers import stage_of_node

__all__ = ["count_onnx_flops", "count_onnx_flops_isolated", "count_torch_flops"]


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


def count_onnx_flops_isolated(path: str | os.PathLike, batches: Sequence[int]) -> dict[int, dict[str, Any]]:
    """:func:`count_onnx_flops` for each of ``batches``, in a child process (``python -m
    maskrt.benchmarks.flops``), so the benchmarked process never imports ``onnx``: its module set
    and its peak RSS stay those of the deployment (loading the graph and its shape inference would
    add to both). Returns {batch: count}; {} where ``onnx`` is not installed (a runtime-only install:
    the report then has no cost model)."""
    cmd = [sys.executable, "-m", "maskrt.benchmarks.flops", str(path), *(str(int(b)) for b in batches)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except subprocess.TimeoutExpired:
        raise BenchError("the FLOP count took over 1800 s") from None
    if r.returncode == _NO_ONNX:
        return {}
    if r.returncode != 0:
        raise BenchError(f"the FLOP count failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    return {int(b): v for b, v in json.loads(r.stdout.strip().splitlines()[-1]).items()}


_NO_ONNX = 3  # exit status of the child when onnx is not installed


def _main(argv: list[str]) -> int:
    try:
        import onnx  # noqa: F401
    except ImportError:
        return _NO_ONNX
    try:
        counts = {b: count_onnx_flops(argv[0], int(b)) for b in argv[1:]}
    except BenchError as e:
        print(e, file=sys.stderr)
        return 1
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
