"""``maskrt export --precision int8``: explicit INT8 Q/DQ in the graph, calibrated on a folder of images.

The quantizer is **onnxruntime.quantization** (static, QDQ format). Why it and not NVIDIA
ModelOpt's ONNX PTQ: it ships inside onnxruntime, which every maskrt install already has (no new
dependency, no CUDA/cupy stack at export time), it calibrates by running the graph in ONNX Runtime
on the CPU, and its QDQ output is what both consumers take: ONNX Runtime fuses DQ -> Conv -> Q
into QLinearConv (the CPU int8 mode), TensorRT (10, 11, RTX) builds strongly typed INT8 from the
same Q/DQ pairs. The calibration math (ranges, scales, per-channel weight quantization) is
entirely onnxruntime's; this module picks what to quantize and caches the ranges.

What is quantized: Conv, Gemm and MatMul of the dense network only (the traced sub-models:
backbone + FPN + RPN head ``front/``, box head ``box_head/``, mask head ``mask_head/``), weights
per output channel, activations per tensor, both symmetric int8 (zero point 0: what TensorRT
requires), biases left float32. Everything the graph builder writes node by node stays float32:
pre-processing, anchors, decoding, clipping, level assignment, the RoIs, NMS and every output.

Calibration runs on the **ort** flavour's fp32 graph (ONNX Runtime runs it on any machine); the
trt flavour inlines the same sub-models under the same tensor names, so its Q/DQ use the same
ranges. The ranges are cached as JSON in ``~/.cache/maskrt/calibration`` (or
``$MASKRT_CALIB_CACHE``), keyed by the sha256 of that fp32 graph, the hash of the image set (names
and bytes, input size, count) and the settings: a changed image set, model or setting means a new
calibration.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from maskrt.runtime.engine_meta import atomic_write_bytes
from maskrt.runtime.model_meta import META_CALIBRATION, META_PRECISION

from .calibration import DEFAULT_CALIB_IMAGES, CalibrationImages, OrtCalibrationReader
from .onnx_export import build_graph, check_model, read_metadata

__all__ = ["CALIB_OPS", "Calibration", "ENV_CALIB_CACHE", "calibrate_ranges", "calibration_cache_dir",
           "load_or_calibrate", "quantize_graph", "quantize_int8"]

log = logging.getLogger("maskrt.quantize")

CALIB_OPS = ("Conv", "Gemm", "MatMul")
DENSE_PREFIXES = ("front/", "box_head/", "mask_head/")  # the inlined torch.onnx sub-models (onnx_export.py)
ENV_CALIB_CACHE = "MASKRT_CALIB_CACHE"
# The dense sub-models' outputs that feed the float32 islands (onnx_export.py names them so).
HEAD_OUTPUTS = ("front/rpn_logits", "front/rpn_deltas", "box_head/class_logits", "box_head/box_deltas",
                "mask_head/mask_logits")
_SHAPE_OPS = frozenset({"Reshape", "Transpose", "Flatten", "Concat", "Squeeze", "Unsqueeze", "Cast", "Identity",
                        "Slice", "Split"})
CACHE_VERSION = 1
METHODS = ("minmax", "percentile", "entropy")  # onnxruntime.quantization's CalibrationMethod
# NOTE: percentile, not minmax: on the default checkpoint (synthetic val, 64 calibration images)
# minmax ranges cost 2.0 mask AP points, percentile 99.999 none (docs/results.md).
METHOD = "percentile"
PERCENTILE = 99.999


def calibration_cache_dir() -> Path:
    """``$MASKRT_CALIB_CACHE``, else ``~/.cache/maskrt/calibration``."""
    env = os.environ.get(ENV_CALIB_CACHE)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "maskrt" / "calibration"


def _dense_nodes(model: onnx.ModelProto) -> list[str]:
    return [n.name for n in model.graph.node if n.op_type in CALIB_OPS and n.name.startswith(DENSE_PREFIXES)]


class _OneBatch:
    """A CalibrationDataReader of one batch."""

    def __init__(self, batch: dict[str, np.ndarray]):
        self.batch: dict[str, np.ndarray] | None = batch

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch, self.batch = self.batch, None
        return batch


def _head_layers(model: onnx.ModelProto) -> set[str]:
    """Output tensors of the Conv/Gemm/MatMul nodes that make :data:`HEAD_OUTPUTS` (through shape
    ops only): RPN logits and deltas, class logits, box deltas, mask logits."""
    producers = {o: n for n in model.graph.node for o in n.output}
    found, stack, seen = set(), [t for t in HEAD_OUTPUTS if t in producers], set()
    while stack:
        t = stack.pop()
        if t in seen or t not in producers:
            continue
        seen.add(t)
        n = producers[t]
        if n.op_type in CALIB_OPS:
            found.add(t)
        elif n.op_type in _SHAPE_OPS:
            stack.extend(x for x in n.input if x)
    return found


def _drop_output_qdq(model: onnx.ModelProto, tensors: set[str]) -> int:
    """Removes the Q -> DQ pair on each tensor of ``tensors``: its consumers read the float
    tensor again. Returns the number of pairs removed."""
    g = model.graph
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for x in n.input:
            consumers.setdefault(x, []).append(n)
    drop, rename = [], {}
    for q in g.node:
        if q.op_type != "QuantizeLinear" or q.input[0] not in tensors:
            continue
        dqs = consumers.get(q.output[0], [])
        if not dqs or any(d.op_type != "DequantizeLinear" for d in dqs):
            continue
        drop.append(q)
        for d in dqs:
            drop.append(d)
            rename[d.output[0]] = q.input[0]
    keep = [n for n in g.node if not any(n is d for d in drop)]
    for n in keep:
        for i, x in enumerate(n.input):
            if x in rename:
                n.input[i] = rename[x]
    del g.node[:]
    g.node.extend(keep)
    used = {x for n in g.node for x in n.input}
    unused = [t for t in g.initializer if t.name not in used]  # the dropped pairs' scales and zero points
    for t in unused:
        g.initializer.remove(t)
    return sum(n.op_type == "QuantizeLinear" for n in drop)


def calibrate_ranges(model: onnx.ModelProto, reader: OrtCalibrationReader,
                     method: str = METHOD) -> dict[str, tuple[float, float]]:
    """{tensor name: (min, max)} of the inputs and outputs of every Conv/Gemm/MatMul of ``model``
    over the reader's batches: onnxruntime.quantization's calibrator (ONNX Runtime, CPU) with
    ``method`` "minmax", "percentile" (99.999 %, symmetric) or "entropy"."""
    if method not in METHODS:
        raise ValueError(f"calibration method must be one of {METHODS}, got {method!r}")
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    with tempfile.TemporaryDirectory(prefix="maskrt-calib-") as tmp:
        path = Path(tmp) / "model.onnx"
        onnx.save_model(model, str(path))
        how = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}[method]
        extra = {"percentile": PERCENTILE, "symmetric": True} if method == "percentile" else {}
        calibrator = create_calibrator(path, list(CALIB_OPS), augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=how, extra_options=extra)
        # NOTE: one collect_data call per batch: each computes that batch's ranges and merges them
        # into the running ones, then drops the activations (the augmented graph outputs every
        # Conv activation: GBs per image at 800x1344). onnxruntime's own max_intermediate_outputs
        # option drops them without merging (onnxruntime 1.32), so it is not used.
        while (batch := reader.get_next()) is not None:
            calibrator.collect_data(_OneBatch(batch))
        if reader.batches_read == 0:
            raise ValueError(f"calibration folder {reader.source.folder}: no readable image")
        data = calibrator.compute_data()
        del calibrator
    out = {}
    for name in data:
        lo, hi = data[name].range_value
        out[name] = (float(np.asarray(lo).reshape(-1)[0]), float(np.asarray(hi).reshape(-1)[0]))
    return out


def quantize_graph(model: onnx.ModelProto, ranges: dict[str, tuple[float, float]]) -> onnx.ModelProto:
    """The QDQ graph of ``model`` with the given activation ranges (onnxruntime.quantization's
    QDQQuantizer; see the module docstring for what is quantized and how)."""
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer

    nodes = _dense_nodes(model)
    missing = sorted({t for n in model.graph.node if n.name in set(nodes) for t in (n.input[0], n.output[0])}
                     - set(ranges))
    if missing:
        raise ValueError(f"the calibration has no range for {len(missing)} tensor(s) of the graph (e.g. {missing[0]}): "
                         f"the cache does not belong to this graph; delete it or calibrate again")
    tensors = TensorsData(CalibrationMethod.MinMax, {
        k: TensorData(lowest=np.array(lo, np.float32), highest=np.array(hi, np.float32))
        for k, (lo, hi) in ranges.items()})
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    quantizer = QDQQuantizer(
        copy, True, False, QuantType.QInt8, QuantType.QInt8, tensors, nodes, [], list(CALIB_OPS),
        extra_options={
            "ActivationSymmetric": True,  # zero point 0 (TensorRT's int8)
            "WeightSymmetric": True,
            "QuantizeBias": False,  # biases stay float32 (TensorRT folds them; no int32 bias DQ)
            "ForceQuantizeNoInputCheck": False,
        })
    quantizer.quantize_model()  # ranges -> symmetric scales, per-channel weights: onnxruntime's math
    quantizer.model.topological_sort()  # the Q/DQ nodes are appended; ONNX wants producers first
    out = quantizer.model.model
    # NOTE: the layers that make the RPN logits/deltas, class logits, box deltas and mask logits
    # keep a float32 output: those values enter the float32 islands (decoding, softmax, NMS), and
    # an int8 grid on box deltas would move every box.
    _drop_output_qdq(out, _head_layers(model))
    # NOTE: the quantizer may raise the opset; keep the exporter's IR version (ONNX Runtime >= 1.18)
    out.ir_version = model.ir_version
    return out


@dataclass(frozen=True)
class Calibration:
    ranges: dict[str, tuple[float, float]]
    key: str  # the cache key
    model_sha256: str  # of the fp32 graph calibrated
    images_sha256: str  # CalibrationImages.sha256()
    images: int  # images the ranges come from
    cached: bool  # True: read from the cache


def load_or_calibrate(reference: onnx.ModelProto, source: CalibrationImages,
                      cache_dir: str | os.PathLike | None = None, *, method: str = METHOD,
                      progress: Callable[[str], None] | None = None) -> Calibration:
    """The activation ranges of ``reference`` (an fp32 graph ONNX Runtime runs) over ``source``:
    from the calibration cache when its key (graph sha256, image-set hash, settings) is there,
    else calibrated (:func:`calibrate_ranges`, progress bar) and stored."""
    say = progress or (lambda s: None)
    model_sha = hashlib.sha256(reference.SerializeToString()).hexdigest()
    images_sha = source.sha256()
    settings = {"version": CACHE_VERSION, "method": method, "ops": list(CALIB_OPS), "model_sha256": model_sha,
                "images_sha256": images_sha}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    cache = Path(cache_dir) if cache_dir is not None else calibration_cache_dir()
    path = cache / f"{key}.json"
    if path.is_file():
        try:
            doc = json.loads(path.read_text())
            if {k: doc.get(k) for k in settings} == settings:
                ranges = {k: (float(v[0]), float(v[1])) for k, v in doc["ranges"].items()}
                say(f"calibration: cache hit {key[:12]} ({len(ranges)} tensors; model {model_sha[:12]}, images "
                    f"{images_sha[:12]})")
                return Calibration(ranges, key, model_sha, images_sha, int(doc["images"]), True)
            log.warning("calibration cache %s does not match its key: calibrating again", path)
        except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
            log.warning("calibration cache %s is unreadable (%s): calibrating again", path, e)
    t = time.perf_counter()
    n = min(len(source.files), source.max_batches)
    reader = OrtCalibrationReader(source, desc=f"calibrating on {n} image(s)")
    ranges = calibrate_ranges(reference, reader, method)
    try:
        atomic_write_bytes(path, json.dumps({**settings, "images": reader.batches_read, "ranges": ranges}).encode())
    except OSError as e:
        log.warning("calibration: could not write the cache %s (%s)", path, e)
    say(f"calibration: {reader.batches_read} image(s), {len(ranges)} tensors, cached as {path} "
        f"({time.perf_counter() - t:.1f} s)")
    return Calibration(ranges, key, model_sha, images_sha, reader.batches_read, False)


def quantize_int8(model, flavour: str, calib_dir: str | os.PathLike, *, calib_images: int | None = None,
                  cache_dir: str | os.PathLike | None = None, method: str = METHOD,
                  progress: Callable[[str], None] | None = None) -> onnx.ModelProto:
    """The int8 Q/DQ graph of an eval-mode MaskRCNN for ``flavour``, calibrated on the images of
    ``calib_dir`` (at most ``calib_images``, default 64) or taken from the calibration cache."""
    say = progress or (lambda s: None)
    cfg = model.cfg
    source = CalibrationImages(calib_dir, cfg.input_size, batch_size=1,
                               max_batches=calib_images or DEFAULT_CALIB_IMAGES)
    reference = build_graph(model, "ort", "fp32", progress=progress)
    target = reference if flavour == "ort" else build_graph(model, flavour, "fp32", progress=progress)
    cal = load_or_calibrate(reference, source, cache_dir, method=method, progress=progress)
    ranges, images_sha, model_sha, key, n_images = cal.ranges, cal.images_sha256, cal.model_sha256, cal.key, cal.images
    t = time.perf_counter()
    out = quantize_graph(target, ranges)
    meta = read_metadata(target)
    import onnxruntime

    meta[META_PRECISION] = "int8"
    meta[META_CALIBRATION] = json.dumps({"sha256": images_sha, "images": n_images, "method": method,
                                         "model_sha256": model_sha, "cache_key": key,
                                         "library": f"onnxruntime.quantization {onnxruntime.__version__}"},
                                        sort_keys=True)
    del out.metadata_props[:]
    for k, v in meta.items():
        entry = out.metadata_props.add()
        entry.key, entry.value = k, v
    check_model(out)
    n_q = sum(n.op_type == "QuantizeLinear" for n in out.graph.node)
    say(f"int8: {len(_dense_nodes(target))} Conv/Gemm/MatMul quantized ({n_q} QuantizeLinear), the rest float32 "
        f"({time.perf_counter() - t:.1f} s)")
    if flavour == "trt":
        from maskrt.runtime.plugin_table import load_plugin_table

        from .graph_checks import check_trt_ops

        check_trt_ops(out, load_plugin_table())
    return out
