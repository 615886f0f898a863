"""CPU NMS: maskrt's kernels (maskrt._native) vs ONNX Runtime's NonMaxSuppression.

Workloads, N = 4,000 and 20,000 boxes in an 800 x 800 image, scores in (0, 1), IoU 0.5, two box
distributions: "clustered" (around 200 "objects": each box an object's box plus N(0, 6 px)
jitter per coordinate, sizes 8..200 px; heavy suppression, as detector outputs) and "uniform"
(uniform corners, sizes 8..200 px; most boxes kept, the expensive regime of greedy NMS):

  class-agnostic   ours: _native.nms (one greedy NMS) and _native.rpn_nms with one level,
                   pre = post = N (top-k + sigmoid + NMS + merge: the RPN plugin's CPU twin)
                   ORT:  NonMaxSuppression, boxes [1, N, 4], scores [1, 1, N]
  class-aware, 80  ours: _native.detection_nms, boxes [1, N/80, 80, 4] (each box belongs to one
                   class), K = N (every kept box returned: same output as ORT) and K = 100
                   ORT, two ways of expressing per-class NMS with its classes dimension:
                     "batch = class": boxes [80, N/80, 4], scores [80, 1, N/80] (each class an
                        independent problem over its own boxes: the same work as ours);
                     "scores [1, 80, N]": boxes [1, N, 4] shared, each box's score in its own
                        class row and 0 elsewhere, score_threshold 0 (how a model exports it
                        when boxes are class-agnostic; ORT scans 80 x N scores).
                   ORT's time covers the node only: it returns per-class lists, and the merge
                   across classes (which ours includes) is not timed for ORT.

Both sides run with 2 threads (ours: threads=2; ORT: intra_op_num_threads=2, inter_op 1). Each
measurement: 3 warm-up calls, then >= 20 timed calls; median and p99 reported. Every pair of
results is checked identical up to score ties (the kept score sequences are equal; ORT does not
promise our tie order).

    .venv/bin/python -m maskrt.benchmarks.bench_nms [--repeats 30] [--out benchmarks/results/nms_cpu.json]
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

F32 = np.float32
THREADS = 2
IOU = 0.5
CLASSES = 80


def make_uniform_boxes(rng, n, image=800.0):
    """float32 [n, 4] boxes with uniform corners and sizes 8..200 px: few overlap strongly, so most
    boxes are kept and each kept box scans nearly all the rest (NMS's expensive regime)."""
    xy = rng.uniform(0, image - 200, (n, 2))
    wh = rng.uniform(8, 200, (n, 2))
    return np.concatenate([xy, xy + wh], 1).astype(F32)


def make_boxes(rng, n, objects=200, image=800.0, jitter=6.0):
    """float32 [n, 4] boxes clustered around `objects` random boxes; every box at least 1 px wide
    and high (ONNX NonMaxSuppression reorders inverted corners, ours drop such boxes)."""
    xy = rng.uniform(0, image - 200, (objects, 2))
    wh = rng.uniform(8, 200, (objects, 2))
    base = np.concatenate([xy, xy + wh], 1)
    boxes = base[rng.integers(0, objects, n)] + rng.normal(0, jitter, (n, 4))
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1.0)
    return boxes.astype(F32)


def sigmoid32(x):
    return (1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))).astype(F32)


def ort_nms_session():
    node = helper.make_node("NonMaxSuppression", ["boxes", "scores", "max", "iou", "thr"], ["sel"],
                            center_point_box=0)
    graph = helper.make_graph(
        [node], "nms",
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("max", TensorProto.INT64, [1]),
         helper.make_tensor_value_info("iou", TensorProto.FLOAT, [1]),
         helper.make_tensor_value_info("thr", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("sel", TensorProto.INT64, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def ort_feed(boxes_xyxy, scores, max_out, thr=None):
    """ORT wants (y1, x1, y2, x2) corners; score_threshold None -> no threshold input value."""
    return {"boxes": np.ascontiguousarray(boxes_xyxy[..., [1, 0, 3, 2]]), "scores": np.ascontiguousarray(scores),
            "max": np.array([max_out], np.int64), "iou": np.array([IOU], F32),
            "thr": np.array([-1.0 if thr is None else thr], F32)}


def bench(n, repeats, sess, rng, distribution):
    rows = []
    boxes = make_boxes(rng, n) if distribution == "clustered" else make_uniform_boxes(rng, n)
    logits = rng.normal(0, 2, n).astype(F32)
    scores = sigmoid32(logits)  # the rpn kernel's scores, so all sides rank the same float32 values

    # ---------------------------------------------------------------- class-agnostic
    keep = _native.nms(boxes, scores, IOU)
    ref_seq = scores[keep].tolist()
    rois, roi_scores, count = _native.rpn_nms(boxes[None], logits[None], [n], n, n, IOU, 0.0, 0.0, threads=THREADS)
    feed = ort_feed(boxes[None], scores[None, None], n)
    sel = sess.run(None, feed)[0]
    ort_seq = scores[sel[:, 2]].tolist()
    agree_rpn = roi_scores[0, : count[0]].tolist() == ref_seq
    agree_ort = ort_seq == ref_seq
    rows.append(dict(n=n, form="class-agnostic", impl="maskrt nms", kept=len(keep), identical_up_to_ties=agree_ort,
                     **timeit(lambda: _native.nms(boxes, scores, IOU), repeats)))
    rows.append(dict(n=n, form="class-agnostic", impl="maskrt rpn_nms (1 level, pre=post=N)", kept=int(count[0]),
                     identical_up_to_ties=agree_rpn and agree_ort,
                     **timeit(lambda: _native.rpn_nms(boxes[None], logits[None], [n], n, n, IOU, 0.0, 0.0,
                                                      threads=THREADS), repeats)))
    rows.append(dict(n=n, form="class-agnostic", impl="ORT NonMaxSuppression", kept=len(sel),
                     identical_up_to_ties=agree_ort, **timeit(lambda: sess.run(None, feed), repeats)))

    # ---------------------------------------------------------------- class-aware, 80 classes
    r = n // CLASSES
    cb = boxes[: r * CLASSES].reshape(1, r, CLASSES, 4)
    cs = np.clip(scores[: r * CLASSES], 1e-6, None).astype(F32).reshape(1, r, CLASSES)
    flat_scores = cs.reshape(-1)
    cnt, ob, os_, oc = _native.detection_nms(cb, cs, None, 0.0, IOU, r * CLASSES, 0.0, 0, threads=THREADS)
    ours_seq = os_[0, : cnt[0]].tolist()

    def merged_seq(triples, index_of):
        """ORT triples -> kept scores merged across classes (descending score, ties by flat index)."""
        flat = sorted((index_of(t) for t in triples), key=lambda f: (-float(flat_scores[f]), f))
        return [float(flat_scores[f]) for f in flat]

    per_class_boxes = np.ascontiguousarray(cb[0].transpose(1, 0, 2))  # [80, r, 4]
    per_class_scores = np.ascontiguousarray(cs[0].T[:, None, :])  # [80, 1, r]
    feed_batch = ort_feed(per_class_boxes, per_class_scores, r)
    sel_b = sess.run(None, feed_batch)[0]
    seq_b = merged_seq(sel_b, lambda t: int(t[2]) * CLASSES + int(t[0]))
    dense = np.zeros((1, CLASSES, r * CLASSES), F32)
    dense[0, np.arange(r * CLASSES) % CLASSES, np.arange(r * CLASSES)] = flat_scores
    feed_dense = ort_feed(cb.reshape(1, -1, 4), dense, r * CLASSES, thr=0.0)
    sel_d = sess.run(None, feed_dense)[0]
    seq_d = merged_seq(sel_d, lambda t: int(t[2]))
    rows.append(dict(n=r * CLASSES, form="class-aware, 80 classes", impl="maskrt detection_nms (K = N)",
                     kept=int(cnt[0]), identical_up_to_ties=ours_seq == seq_b == seq_d,
                     **timeit(lambda: _native.detection_nms(cb, cs, None, 0.0, IOU, r * CLASSES, 0.0, 0,
                                                            threads=THREADS), repeats)))
    cnt100 = _native.detection_nms(cb, cs, None, 0.0, IOU, 100, 0.0, 0, threads=THREADS)
    rows.append(dict(n=r * CLASSES, form="class-aware, 80 classes", impl="maskrt detection_nms (K = 100)",
                     kept=int(cnt100[0][0]), identical_up_to_ties=cnt100[2][0].tolist() == ours_seq[:100],
                     **timeit(lambda: _native.detection_nms(cb, cs, None, 0.0, IOU, 100, 0.0, 0, threads=THREADS),
                              repeats)))
    classes = (np.arange(r * CLASSES) % CLASSES).astype(np.int64)
    flat_boxes = np.ascontiguousarray(cb.reshape(-1, 4))
    nms_keep = _native.nms(flat_boxes, flat_scores, IOU, classes=classes)
    rows.append(dict(n=r * CLASSES, form="class-aware, 80 classes", impl="maskrt nms (classes=, 1 thread)",
                     kept=len(nms_keep), identical_up_to_ties=flat_scores[nms_keep].tolist() == ours_seq,
                     **timeit(lambda: _native.nms(flat_boxes, flat_scores, IOU, classes=classes), repeats)))
    rows.append(dict(n=r * CLASSES, form="class-aware, 80 classes", impl="ORT NonMaxSuppression (batch = class)",
                     kept=len(sel_b), identical_up_to_ties=seq_b == ours_seq,
                     **timeit(lambda: sess.run(None, feed_batch), repeats)))
    rows.append(dict(n=r * CLASSES, form="class-aware, 80 classes", impl="ORT NonMaxSuppression (scores [1, 80, N])",
                     kept=len(sel_d), identical_up_to_ties=seq_d == ours_seq,
                     **timeit(lambda: sess.run(None, feed_dense), repeats)))
    for r in rows:
        r["boxes"] = distribution
    return rows


def bench_plugin_workloads(repeats, rng):
    """The two plugins' CPU twins on their deployment shapes (no ORT counterpart: ORT runs these
    as multi-node subgraphs). RPN: 800 x 1344 input, P2..P6 with 3 anchors per location; boxes
    clustered around 200 objects, logits N(0, 2). Detection: 1000 proposals x 80 classes,
    softmax-like scores (u^8: ~69 % below the 0.05 threshold)."""
    rows = []
    levels = [200 * 336 * 3, 100 * 168 * 3, 50 * 84 * 3, 25 * 42 * 3, 13 * 21 * 3]
    n = sum(levels)
    for b in (1, 4):
        boxes = np.stack([make_boxes(rng, n) for _ in range(b)])
        logits = rng.normal(0, 2, (b, n)).astype(F32)
        out = _native.rpn_nms(boxes, logits, levels, 1000, 1000, 0.7, 1e-3, 0.0, threads=THREADS)
        rows.append(dict(workload=f"MaskrtRpnNMS B={b}, N={n} (800x1344, 5 levels), pre=post=1000, IoU 0.7",
                         kept=[int(c) for c in out[2]],
                         **timeit(lambda bx=boxes, lg=logits: _native.rpn_nms(bx, lg, levels, 1000, 1000, 0.7, 1e-3,
                                                                               0.0, threads=THREADS), repeats)))
    for b in (1, 4):
        boxes = np.stack([make_boxes(rng, 1000 * CLASSES).reshape(1000, CLASSES, 4) for _ in range(b)])
        scores = (rng.uniform(0, 1, (b, 1000, CLASSES)) ** 8).astype(F32)
        out = _native.detection_nms(boxes, scores, None, 0.05, 0.5, 100, 1e-2, 1, threads=THREADS)
        rows.append(dict(workload=f"MaskrtDetectionNMS B={b}, R=1000, C=80, score > 0.05, IoU 0.5, K=100",
                         kept=[int(c) for c in out[0]],
                         **timeit(lambda bx=boxes, sc=scores: _native.detection_nms(bx, sc, None, 0.05, 0.5, 100,
                                                                                     1e-2, 1, threads=THREADS),
                                  repeats)))
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--sizes", type=int, nargs="+", default=[4000, 20000])
    ap.add_argument("--distributions", nargs="+", default=["clustered", "uniform"], choices=["clustered", "uniform"])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "nms_cpu.json"))
    args = ap.parse_args(argv)
    if args.repeats < 20:
        raise SystemExit("--repeats must be >= 20")
    sess = ort_nms_session()
    rng = np.random.default_rng(0)
    load_before = os.getloadavg()[0]
    rows = []
    for dist in args.distributions:
        for n in args.sizes:
            rows += bench(n, args.repeats, sess, rng, dist)
    plugin_rows = bench_plugin_workloads(args.repeats, rng)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    result = {
        "benchmark": "CPU NMS: maskrt._native vs ONNX Runtime NonMaxSuppression",
        "setup": {"threads": THREADS, "iou_threshold": IOU, "classes": CLASSES, "warmup": 3,
                  "repeats": args.repeats, "boxes": {"clustered": "around 200 objects, 800x800 image, jitter 6 px",
                            "uniform": "uniform corners in 800x800, sizes 8..200 px"},
                  "cpu": cpu, "cpu_count": os.cpu_count(), "onnxruntime": ort.__version__,
                  "numpy": np.__version__, "python": platform.python_version(),
                  "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                  # other processes competing for the cores make every number slower
                  "load_average_1min_before_after": [load_before, os.getloadavg()[0]]},
        "rows": rows,
        "plugin_workloads": plugin_rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("| boxes | N | form | implementation | kept | median ms | p99 ms | identical up to ties |")
    print("|---|---:|---|---|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['boxes']} | {r['n']} | {r['form']} | {r['impl']} | {r['kept']} | {r['median_ms']:.2f} | "
              f"{r['p99_ms']:.2f} | {'yes' if r['identical_up_to_ties'] else 'NO'} |")
    print("\n| plugin workload (maskrt CPU twin, 2 threads) | kept | median ms | p99 ms |")
    print("|---|---|---:|---:|")
    for r in plugin_rows:
        print(f"| {r['workload']} | {r['kept']} | {r['median_ms']:.2f} | {r['p99_ms']:.2f} |")
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
