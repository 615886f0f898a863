"""Run the "trt" flavour on the CPU: its plugin nodes executed by our native CPU kernels.

The trt graph's plugin nodes (domain ``maskrt``) are what TensorRT maps to our CUDA plugins.
Here the same nodes run inside ONNX Runtime as onnxruntime-extensions Python ops that call the
CPU twins in ``maskrt._native`` (same math headers as the CUDA kernels). This proves on any
machine that the plugin graph is wired right: same inputs, attributes and outputs.

Two mechanical rewrites are needed, and nothing else changes in the graph: onnxruntime-extensions
registers Python ops only in its own domain (``ai.onnx.contrib``), and its Python ops take
scalar attributes only, so each plugin node's attributes travel as one JSON string attribute.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import onnx

from maskrt import _native

CPU_DOMAIN = "ai.onnx.contrib"  # the only domain onnxruntime-extensions' Python ops live in
ATTRS_KEY = "maskrt_attrs"
_registered = False
_lock = threading.Lock()


def _attrs(kw: dict) -> dict:
    return json.loads(kw[ATTRS_KEY])


def _pyramid_roi_align(rois, p2, p3, p4, p5, **kw):
    """rois float32 [B, R, 4]; P2..P5 float32 [B, C, H_l, W_l] -> float32 [B, R, C, P, P]."""
    a = _attrs(kw)
    return _native.pyramid_roi_align(
        np.ascontiguousarray(rois, np.float32), [np.ascontiguousarray(f, np.float32) for f in (p2, p3, p4, p5)],
        output_size=a["output_size"], sampling_ratio=a["sampling_ratio"], aligned=bool(a["aligned"]),
        strides=tuple(a["strides"]), first_level=a["first_level"], canonical_scale=a["canonical_scale"],
        canonical_level=a["canonical_level"])


def _rpn_nms(boxes, logits, **kw):
    """boxes float32 [B, N, 4]; logits float32 [B, N] -> rois [B, P, 4], scores [B, P], count int32 [B]."""
    a = _attrs(kw)
    return _native.rpn_nms(
        np.ascontiguousarray(boxes, np.float32), np.ascontiguousarray(logits, np.float32), a["level_sizes"],
        pre_nms_top_n=a["pre_nms_top_n"], post_nms_top_n=a["post_nms_top_n"], iou_threshold=a["iou_threshold"],
        min_size=a["min_size"], score_threshold=a["score_threshold"])


def _detection_nms(boxes, scores, num_rois, **kw):
    """boxes float32 [B, R, C, 4]; scores float32 [B, R, C]; num_rois int32 [B] ->
    count int32 [B], boxes [B, K, 4], scores [B, K], classes int32 [B, K]."""
    a = _attrs(kw)
    return _native.detection_nms(
        np.ascontiguousarray(boxes, np.float32), np.ascontiguousarray(scores, np.float32),
        np.ascontiguousarray(num_rois, np.int32), score_threshold=a["score_threshold"],
        iou_threshold=a["iou_threshold"], max_detections=a["max_detections"], min_size=a["min_size"],
        class_offset=a["class_offset"])


def register_plugin_ops() -> str:
    """Registers the three plugin ops with onnxruntime-extensions (once per process) and returns
    the custom-op library path to pass to ``SessionOptions.register_custom_ops_library``."""
    global _registered
    try:
        from onnxruntime_extensions import PyCustomOpDef, get_library_path, onnx_op
    except ImportError as e:
        raise RuntimeError("running the trt flavour on the CPU needs onnxruntime-extensions: "
                           "pip install 'maskrt[export]'") from e
    with _lock:
        if not _registered:
            f32, i32, s = PyCustomOpDef.dt_float, PyCustomOpDef.dt_int32, PyCustomOpDef.dt_string
            onnx_op(op_type="MaskrtPyramidRoIAlign", inputs=[f32] * 5, outputs=[f32],
                    attrs={ATTRS_KEY: s})(_pyramid_roi_align)
            onnx_op(op_type="MaskrtRpnNMS", inputs=[f32, f32], outputs=[f32, f32, i32],
                    attrs={ATTRS_KEY: s})(_rpn_nms)
            onnx_op(op_type="MaskrtDetectionNMS", inputs=[f32, f32, i32], outputs=[i32, f32, f32, i32],
                    attrs={ATTRS_KEY: s})(_detection_nms)
            _registered = True
    return get_library_path()


def cpu_runnable(model: onnx.ModelProto, table: dict) -> onnx.ModelProto:
    """A copy of a trt-flavour model whose plugin nodes ONNX Runtime can run with
    :func:`register_plugin_ops`: domain -> ``ai.onnx.contrib``, attributes -> one JSON string.
    Plugin names/versions are checked against the plugin table first."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    from maskrt.runtime.model_meta import META_PRECISION

    fp16 = {p.key: p.value for p in model.metadata_props}.get(META_PRECISION) == "fp16"
    specs = {p["name"]: p for p in table["plugins"]}
    casts: dict[int, tuple[list[onnx.NodeProto], list[onnx.NodeProto]]] = {}  # node index -> casts
    n_plugins = 0
    for index, node in enumerate(out.graph.node):
        if node.domain != table["onnx_domain"]:
            continue
        spec = specs.get(node.op_type)
        if spec is None:
            raise ValueError(f"node {node.name}: {node.op_type} is not in the plugin table")
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        version = attrs.pop("plugin_version", b"").decode()
        attrs.pop("plugin_namespace", None)
        if version != spec["version"]:
            raise ValueError(f"node {node.name}: {node.op_type} version {version!r}, "
                             f"the CPU kernels implement version {spec['version']}")
        if node.op_type == "MaskrtPyramidRoIAlign" and len(node.input) != 5:
            raise ValueError(f"node {node.name}: the CPU path takes exactly 4 feature maps (P2..P5)")
        full = {a["name"]: a["default"] for a in spec["attributes"]}
        full.update(attrs)
        del node.attribute[:]
        node.attribute.append(onnx.helper.make_attribute(ATTRS_KEY, json.dumps(full)))
        node.domain = CPU_DOMAIN
        n_plugins += 1
        if fp16 and node.op_type == "MaskrtPyramidRoIAlign":
            # NOTE: the fp16 graph feeds float16 features (the plugin table allows them) and gets
            # float16 pooled RoIs; the CPU twin takes float32, so the features are widened
            # (exactly) and the result rounded once, as the CUDA kernel accumulates in float32.
            before, after = [], []
            for i in range(1, len(node.input)):
                wide = f"{node.input[i]}/cpu_f32_{index}"
                before.append(onnx.helper.make_node("Cast", [node.input[i]], [wide], to=onnx.TensorProto.FLOAT))
                node.input[i] = wide
            narrow = node.output[0]
            node.output[0] = f"{narrow}/cpu_f32"
            after.append(onnx.helper.make_node("Cast", [node.output[0]], [narrow], to=onnx.TensorProto.FLOAT16))
            casts[index] = (before, after)
    if n_plugins == 0:
        raise ValueError("no plugin nodes found: is this a trt-flavour model?")
    if casts:
        nodes = []
        for index, node in enumerate(out.graph.node):
            before, after = casts.get(index, ([], []))
            nodes += [*before, node, *after]
        del out.graph.node[:]
        out.graph.node.extend(nodes)
    for imp in out.opset_import:
        if imp.domain == table["onnx_domain"]:
            imp.domain = CPU_DOMAIN
    return out
