"""CPU multi-level RoIAlign: maskrt's kernel (maskrt._native.pyramid_roi_align, the CPU twin of the
MaskrtPyramidRoIAlign plugin) vs ONNX Runtime's RoiAlign-16.

Workload (Mask R-CNN's box/mask heads at torchvision's default size): one 800 x 1344 image, FPN
P2..P5 with 256 channels (200x336, 100x168, 50x84, 25x42), 1000 RoIs whose sqrt(area) is
log-uniform in 16..600 px (aspect 1:2..2:1, centres uniform in the image, clipped to it), which
spreads them over the four levels the way RPN proposals are; output 7x7 (box head) and 14x14
(mask head), sampling_ratio 2, aligned False (torchvision's Mask R-CNN).

  ours  _native.pyramid_roi_align(rois [1, R, 4], [P2..P5]): level assignment included
  ORT   one graph with four RoiAlign nodes (one per level, mode avg, output_half_pixel); the RoIs
        are split by level beforehand (torch's assign_fpn_levels) and only session.run is timed,
        so ORT's time excludes the level assignment, the split and the scatter back (ours
        includes them).

Both sides run with 2 threads (ours: threads=2; ORT: intra_op_num_threads=2, inter_op 1). Each
measurement: 2 warm-up calls, then >= 10 timed calls (default 15); median and p99 reported. The
results are compared element-wise (max abs diff printed; the kernels share torchvision's float32
arithmetic, so it is 0 on x86-64).

    .venv/bin/python -m maskrt.benchmarks.bench_roi_align [--repeats 15] [--out benchmarks/results/roi_align_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

from maskrt import _native
from maskrt.benchmarks.timing import timeit

THREADS = 2
IMG_H, IMG_W = 800, 1344
STRIDES = (4, 8, 16, 32)
CHANNELS = 256
NUM_ROIS = 1000
SAMPLING_RATIO = 2
ALIGNED = False


def make_inputs(rng):
    """features: 4 float32 [1, 256, H/s, W/s]; rois float32 [1, R, 4] (see the module doc)."""
    feats = [rng.standard_normal((1, CHANNELS, IMG_H // s, IMG_W // s)).astype(np.float32) for s in STRIDES]
    side = np.exp(rng.uniform(np.log(16.0), np.log(600.0), NUM_ROIS))
    aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0), NUM_ROIS))
    w, h = side * np.sqrt(aspect), side / np.sqrt(aspect)
    cx, cy = rng.uniform(0, IMG_W, NUM_ROIS), rng.uniform(0, IMG_H, NUM_ROIS)
    rois = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    rois[:, 0::2] = rois[:, 0::2].clip(0, IMG_W)
    rois[:, 1::2] = rois[:, 1::2].clip(0, IMG_H)
    return feats, rois.astype(np.float32)[None]


def fpn_levels(rois):
    """torchvision's LevelMapper (train/model/roi_align.assign_fpn_levels) on float32 [R, 4]."""
    import torch

    from maskrt.train.model.roi_align import assign_fpn_levels

    return assign_fpn_levels(torch.from_numpy(rois)).numpy()


def ort_session(output_size):
    """Four RoiAlign-16 nodes, one per level: X_l [1, C, H_l, W_l], rois_l [R_l, 4], idx_l [R_l]."""
    nodes, inputs, outputs = [], [], []
    for lvl, stride in enumerate(STRIDES):
        nodes.append(helper.make_node(
            "RoiAlign", [f"X{lvl}", f"rois{lvl}", f"idx{lvl}"], [f"Y{lvl}"], mode="avg",
            output_height=output_size, output_width=output_size, sampling_ratio=SAMPLING_RATIO,
            spatial_scale=1.0 / stride,
            coordinate_transformation_mode="half_pixel" if ALIGNED else "output_half_pixel"))
        inputs += [helper.make_tensor_value_info(f"X{lvl}", TensorProto.FLOAT, None),
                   helper.make_tensor_value_info(f"rois{lvl}", TensorProto.FLOAT, None),
                   helper.make_tensor_value_info(f"idx{lvl}", TensorProto.INT64, None)]
        outputs.append(helper.make_tensor_value_info(f"Y{lvl}", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "pyramid_roi_align", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)], ir_version=10)
    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "roi_align_cpu.json"))
    args = ap.parse_args(argv)
    if args.repeats < 10:
        ap.error("--repeats must be >= 10")

    rng = np.random.default_rng(0)
    feats, rois = make_inputs(rng)
    levels = fpn_levels(rois[0])
    per_level = [np.nonzero(levels == lvl)[0] for lvl in range(len(STRIDES))]
    load_before = os.getloadavg()[0]

    rows = []
    for output_size in (7, 14):
        sess = ort_session(output_size)
        feed = {}
        for lvl, sel in enumerate(per_level):
            feed[f"X{lvl}"] = feats[lvl]
            feed[f"rois{lvl}"] = np.ascontiguousarray(rois[0, sel])
            feed[f"idx{lvl}"] = np.zeros(len(sel), np.int64)

        ours = _native.pyramid_roi_align(rois, feats, output_size, SAMPLING_RATIO, ALIGNED, threads=THREADS)[0]
        ys = sess.run(None, feed)
        ref = np.empty_like(ours)
        for sel, y in zip(per_level, ys, strict=True):
            ref[sel] = y
        diff = float(np.max(np.abs(ours - ref)))

        t_ours = timeit(lambda o=output_size: _native.pyramid_roi_align(rois, feats, o, SAMPLING_RATIO, ALIGNED,
                                                                         threads=THREADS), args.repeats, warmup=2)
        t_ort = timeit(lambda s=sess, f=feed: s.run(None, f), args.repeats, warmup=2)
        for impl, t in (("maskrt _native.pyramid_roi_align", t_ours), ("ORT RoiAlign-16 x 4 levels", t_ort)):
            rows.append({"output": f"{output_size}x{output_size}", "impl": impl, "max_abs_diff_vs_other": diff,
                         "identical": diff == 0.0, **t})

    result = {
        "benchmark": "CPU multi-level RoIAlign: maskrt._native.pyramid_roi_align vs ONNX Runtime RoiAlign-16",
        "setup": {
            "threads": THREADS, "image": [IMG_H, IMG_W], "strides": list(STRIDES), "channels": CHANNELS,
            "rois": NUM_ROIS, "roi_sizes": "sqrt(area) log-uniform 16..600 px, aspect 1:2..2:1, clipped",
            "rois_per_level": [int(len(s)) for s in per_level], "sampling_ratio": SAMPLING_RATIO,
            "aligned": ALIGNED, "warmup": 2, "repeats": args.repeats,
            "ort_timing": "session.run only (level split and scatter not timed)",
            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "onnxruntime": ort.__version__, "numpy": np.__version__, "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "load_average_1min_before_after": [load_before, os.getloadavg()[0]],
        },
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"RoIs per level P2..P5: {result['setup']['rois_per_level']}; {THREADS} threads; "
          f"load average {load_before:.2f} -> {os.getloadavg()[0]:.2f}")
    print("| output | implementation | median ms | p99 ms | max abs diff (ours vs ORT) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['output']} | {r['impl']} | {r['median_ms']:.1f} | {r['p99_ms']:.1f} | "
              f"{r['max_abs_diff_vs_other']:.3g} |")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
