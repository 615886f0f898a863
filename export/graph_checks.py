"""Static checks of exported graphs: what TensorRT's ONNX parser will accept."""

from __future__ import annotations

import onnx
from onnx import numpy_helper

# Operators marked supported ("Y") in onnx-tensorrt's docs/operators.md for the TensorRT 10.1 GA
# release (onnx/onnx-tensorrt commit 96e7811, opset 9..20). Anything else in a "trt" graph must be
# one of our plugin nodes.
TRT_PARSER_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast CastLike Ceil
Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace
DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements
GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample
GroupNormalization GRU HardSigmoid HardSwish Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN
LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max
MaxPool Mean MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad
ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range
Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum
ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign Round ScaledTanh Scan Scatter ScatterElements
ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt
Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())

# The parser's documented restrictions that our graphs could run into.
TOPK_MAX_K = 3840  # "K input must be less than 3840"
# Inputs that must be initializers (constants), by op: index of the input.
_MUST_BE_CONSTANT = {
    "TopK": (1,), "Slice": (1, 2, 3, 4), "Squeeze": (1,), "Unsqueeze": (1,), "Pad": (1, 2, 3), "ReduceSum": (1,),
    "Conv": (1,), "ConvTranspose": (1,),
}


class TensorRTCompatibilityError(ValueError):
    pass


def check_trt_ops(model: onnx.ModelProto, table: dict) -> None:
    """Raises TensorRTCompatibilityError listing every node TensorRT's ONNX parser would reject:
    an op outside TRT_PARSER_OPS that is not one of our plugins (right domain, name, version and
    namespace), a TopK with K >= 3840, a non-constant input where the parser needs one, or any
    standard RoiAlign / NonMaxSuppression (the trt flavour must use our plugins for both)."""
    plugins = {p["name"]: p for p in table["plugins"]}
    consts = {i.name: i for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            consts[n.output[0]] = n
    # NOTE: an int8 weight is DequantizeLinear(int8 initializer, scale, zero point): the explicit
    # quantization pattern TensorRT's parser takes as a constant weight (export/quantize.py).
    weights = dict(consts)
    for n in model.graph.node:
        if n.op_type == "DequantizeLinear" and all(x in consts for x in n.input if x):
            weights[n.output[0]] = n
    problems = []
    for n in model.graph.node:
        where = f"node {n.name or '?'} ({n.op_type})"
        if n.domain not in ("", "ai.onnx"):
            spec = plugins.get(n.op_type)
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            if n.domain != table["onnx_domain"] or spec is None:
                problems.append(f"{where}: domain {n.domain!r} op is not in the plugin table")
                continue
            if attrs.get("plugin_version", b"").decode() != spec["version"]:
                problems.append(f"{where}: plugin_version {attrs.get('plugin_version')!r} != table {spec['version']}")
            if attrs.get("plugin_namespace", b"").decode() != table["namespace"]:
                problems.append(f"{where}: plugin_namespace must be {table['namespace']!r}")
            unknown = set(attrs) - {a["name"] for a in spec["attributes"]} - {"plugin_version", "plugin_namespace"}
            if unknown:
                problems.append(f"{where}: attributes {sorted(unknown)} are not in the plugin table")
            continue
        if n.op_type in ("RoiAlign", "NonMaxSuppression"):
            problems.append(f"{where}: the trt flavour must use the maskrt plugin instead")
        elif n.op_type not in TRT_PARSER_OPS:
            problems.append(f"{where}: not supported by TensorRT's ONNX parser")
        for i in _MUST_BE_CONSTANT.get(n.op_type, ()):
            known = weights if n.op_type in ("Conv", "ConvTranspose") else consts
            if i < len(n.input) and n.input[i] and n.input[i] not in known:
                problems.append(f"{where}: input {i} must be a constant for TensorRT")
        if n.op_type == "TopK" and len(n.input) > 1 and n.input[1] in consts:
            c = consts[n.input[1]]
            k = numpy_helper.to_array(c if isinstance(c, onnx.TensorProto) else c.attribute[0].t)
            if int(k.reshape(-1)[0]) >= TOPK_MAX_K:
                problems.append(f"{where}: K = {int(k.reshape(-1)[0])} >= {TOPK_MAX_K}")
    if problems:
        raise TensorRTCompatibilityError(
            f"{len(problems)} node(s) TensorRT cannot take:\n  " + "\n  ".join(problems[:50]))
