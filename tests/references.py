"""Independent references for the kernels: float64 pure-Python mirrors and ONNX Runtime's ops.

These are deliberately written as plain loops, transcribing the published semantics, so that
they share nothing with the vectorised implementations they check.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

import numpy as np


def _session(graph, opset: int):
    """An ONNX Runtime CPU session for a one-node graph (IR version pinned to what ORT reads)."""
    import onnxruntime as ort
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


# ----------------------------------------------------------------------------- RoIAlign
def _bilinear64(data: np.ndarray, y: float, x: float) -> np.ndarray:
    """data: float64 [C, H, W]. Torchvision/Caffe2 border rule."""
    _, h, w = data.shape
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return np.zeros(data.shape[0])
    y = max(y, 0.0)
    x = max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= h - 1:
        y_high = y_low = h - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= w - 1:
        x_high = x_low = w - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1.0 - ly, 1.0 - lx
    return (hy * hx * data[:, y_low, x_low] + hy * lx * data[:, y_low, x_high]
            + ly * hx * data[:, y_high, x_low] + ly * lx * data[:, y_high, x_high])


def roi_align_mirror(features, rois, ph, pw, spatial_scale, sampling_ratio, aligned):
    """float64 RoIAlign. features [N, C, H, W]; rois [R, 5] (batch, x1, y1, x2, y2)."""
    feats = np.asarray(features, np.float64)
    rois = np.asarray(rois, np.float64)
    r_count, c = rois.shape[0], feats.shape[1]
    out = np.zeros((r_count, c, ph, pw))
    offset = 0.5 if aligned else 0.0
    for r in range(r_count):
        b = int(rois[r, 0])
        sw = rois[r, 1] * spatial_scale - offset
        sh = rois[r, 2] * spatial_scale - offset
        rw = rois[r, 3] * spatial_scale - offset - sw
        rh = rois[r, 4] * spatial_scale - offset - sh
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bh, bw = rh / ph, rw / pw
        gh = sampling_ratio if sampling_ratio > 0 else math.ceil(rh / ph)
        gw = sampling_ratio if sampling_ratio > 0 else math.ceil(rw / pw)
        count = max(gh * gw, 1)
        for py in range(ph):
            for px in range(pw):
                acc = np.zeros(c)
                for iy in range(gh):
                    y = sh + py * bh + (iy + 0.5) * bh / gh
                    for ix in range(gw):
                        x = sw + px * bw + (ix + 0.5) * bw / gw
                        acc += _bilinear64(feats[b], y, x)
                out[r, :, py, px] = acc / count
    return out


def ort_roi_align(features, rois, ph, pw, spatial_scale, sampling_ratio, aligned):
    """ONNX Runtime's RoiAlign (opset 16): half_pixel <-> aligned, output_half_pixel <-> not."""
    from onnx import TensorProto, helper

    node = helper.make_node(
        "RoiAlign", ["X", "rois", "batch_indices"], ["Y"], mode="avg", output_height=ph,
        output_width=pw, sampling_ratio=sampling_ratio, spatial_scale=float(spatial_scale),
        coordinate_transformation_mode="half_pixel" if aligned else "output_half_pixel",
    )
    graph = helper.make_graph(
        [node], "roi_align",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("rois", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("batch_indices", TensorProto.INT64, None)],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
    )
    sess = _session(graph, 16)
    rois = np.asarray(rois, np.float32)
    return sess.run(None, {
        "X": np.ascontiguousarray(features, np.float32),
        "rois": np.ascontiguousarray(rois[:, 1:]),
        "batch_indices": rois[:, 0].astype(np.int64),
    })[0]


# ----------------------------------------------------------------------------- NMS
def iou64(a, b) -> float:
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    inter = iw * ih
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def nms_mirror(boxes, scores, iou_threshold, classes=None) -> list[int]:
    """float64 greedy NMS: descending score, ties by index, suppress at IoU > threshold."""
    boxes = np.asarray(boxes, np.float64)
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    keep: list[int] = []
    for i in order:
        if all(
            (classes is not None and classes[i] != classes[k]) or iou64(boxes[k], boxes[i]) <= iou_threshold
            for k in keep
        ):
            keep.append(i)
    return keep


def ort_nms(boxes, scores, iou_threshold, max_output=100000) -> list[int]:
    """ONNX Runtime's NonMaxSuppression (one batch, one class); corner boxes (y1, x1, y2, x2)."""
    from onnx import TensorProto, helper

    node = helper.make_node("NonMaxSuppression", ["boxes", "scores", "max", "iou"], ["sel"],
                            center_point_box=0)
    graph = helper.make_graph(
        [node], "nms",
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("max", TensorProto.INT64, [1]),
         helper.make_tensor_value_info("iou", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("sel", TensorProto.INT64, None)],
    )
    sess = _session(graph, 17)
    b = np.asarray(boxes, np.float32)[:, [1, 0, 3, 2]]
    sel = sess.run(None, {
        "boxes": np.ascontiguousarray(b[None]),
        "scores": np.asarray(scores, np.float32)[None, None],
        "max": np.array([max_output], np.int64),
        "iou": np.array([iou_threshold], np.float32),
    })[0]
    return [int(i) for i in sel[:, 2]]


def same_up_to_ties(a: list[int], b: list[int], scores) -> bool:
    """NMS parity that tolerates score ties: the kept score sequences are equal. Where scores are
    distinct this is index-for-index equality; among equal scores either box may be kept."""
    return [float(scores[i]) for i in a] == [float(scores[i]) for i in b]


# ----------------------------------------------------------------------------- mask paste
def _half_pixel_taps(d: int, n_in: int, n_out: int) -> tuple[int, int, float]:
    """Source taps of output index ``d`` for a half-pixel (align_corners=False) linear resize."""
    src = (d + 0.5) * n_in / n_out - 0.5
    if src < 0.0:
        src = 0.0
    i0 = int(src)
    if i0 >= n_in - 1:
        return n_in - 1, n_in - 1, 0.0
    return i0, i0 + 1, src - i0


def paste_masks_mirror(masks, boxes, image_size) -> np.ndarray:
    """float64 probabilities [K, H, W] of torchvision's ``paste_masks_in_image``, as loops.

    Transcribes roi_heads.py: pad the M x M mask by one zero pixel per side, scale the box by
    (M + 2) / M about its centre, truncate it to int64, resize the padded mask bilinearly
    (half-pixel centres) to the inclusive box size (x1 - x0 + 1, at least 1), and copy the part
    inside the image. Only the box expansion uses float32 (np.float32 scalars), as torchvision
    computes it: the truncation to an integer turns its last bit into a whole pixel. A box wholly
    outside the image gives zeros (torchvision would fail on the wrapped slice there).
    """
    masks = np.asarray(masks, np.float32)
    boxes = np.asarray(boxes, np.float32)
    im_h, im_w = image_size
    k = masks.shape[0]
    out = np.zeros((k, im_h, im_w))
    for i in range(k):
        m = masks.shape[-1]
        s = m + 2
        padded = [[0.0] * s for _ in range(s)]
        for r in range(m):
            for c in range(m):
                padded[r + 1][c + 1] = float(masks[i, r, c])
        scale = np.float32((m + 2) / m)
        half = np.float32(0.5)
        x1, y1, x2, y2 = (np.float32(v) for v in boxes[i])
        w_half = (x2 - x1) * half * scale
        h_half = (y2 - y1) * half * scale
        x_c = (x2 + x1) * half
        y_c = (y2 + y1) * half
        bx0, by0 = int(x_c - w_half), int(y_c - h_half)  # int() truncates toward zero
        bx1, by1 = int(x_c + w_half), int(y_c + h_half)
        w = max(bx1 - bx0 + 1, 1)
        h = max(by1 - by0 + 1, 1)
        for y in range(max(by0, 0), min(by1 + 1, im_h)):
            r0, r1, ly = _half_pixel_taps(y - by0, s, h)
            for x in range(max(bx0, 0), min(bx1 + 1, im_w)):
                c0, c1, lx = _half_pixel_taps(x - bx0, s, w)
                out[i, y, x] = ((1.0 - ly) * ((1.0 - lx) * padded[r0][c0] + lx * padded[r0][c1])
                                + ly * ((1.0 - lx) * padded[r1][c0] + lx * padded[r1][c1]))
    return out


def python_ticks_during(call: Callable[[], object], margin: float = 0.0) -> int:
    """Runs ``call`` in a worker thread while this thread spins taking timestamps; returns how
    many timestamps fall strictly inside the call (less ``margin`` × its duration at each end).
    With the GIL held through a native call this thread could not advance until it returned, so
    a GIL-releasing kernel gives many ticks and a GIL-holding one almost none."""
    window = {}

    def work():
        window["t0"] = time.perf_counter()
        call()
        window["t1"] = time.perf_counter()

    ticks = []
    worker = threading.Thread(target=work)
    worker.start()
    while worker.is_alive():
        ticks.append(time.perf_counter())
    worker.join()
    t0, t1 = window["t0"], window["t1"]
    pad = margin * (t1 - t0)
    return sum(1 for t in ticks if t0 + pad < t < t1 - pad)
