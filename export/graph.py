"""A small ONNX graph builder: named nodes, constants and inlined sub-models.

The exporter writes the data-dependent parts of Mask R-CNN (proposal selection, multi-level
RoIAlign, detection NMS) node by node with this builder, and inlines the dense parts (backbone,
heads) traced by ``torch.onnx`` as sub-models with prefixed names.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# ONNX Runtime 1.17+ reads IR version 10; onnx 1.23 writes 11 by default.
IR_VERSION = 10
OPSET = 17


class GraphBuilder:
    """Accumulates nodes and initializers; every output name is unique (``prefix/op_N``)."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.domains: dict[str, int] = {"": OPSET}
        self._names: set[str] = set()
        self._counter = 0
        self._scope: list[str] = []
        self._const_cache: dict[tuple, str] = {}

    # ---------------------------------------------------------------- naming
    def scope(self, name: str) -> _Scope:
        """``with g.scope("rpn"):`` prefixes the names of the nodes made inside."""
        return _Scope(self, name)

    def fresh(self, hint: str) -> str:
        self._counter += 1
        name = "/".join([*self._scope, f"{hint}_{self._counter}"])
        self._names.add(name)
        return name

    # ---------------------------------------------------------------- nodes
    def op(self, op_type: str, inputs: Sequence[str], n_out: int = 1, *, domain: str = "",
           outputs: Sequence[str] | None = None, **attrs) -> str | list[str]:
        """Adds one node. Inputs may be "" for an omitted optional input. Returns the output
        name (or the list of names when ``n_out > 1``)."""
        outs = list(outputs) if outputs is not None else [self.fresh(op_type) for _ in range(n_out)]
        node = helper.make_node(op_type, list(inputs), outs, name=self.fresh(f"{op_type}_node"),
                                domain=domain or None, **attrs)
        self.nodes.append(node)
        return outs[0] if len(outs) == 1 else outs

    def const(self, value, dtype=None, hint: str = "const") -> str:
        """A constant as an initializer (deduplicated for small values)."""
        arr = np.asarray(value, dtype=dtype)
        key = None
        if arr.size <= 16:
            key = (arr.dtype.str, arr.shape, arr.tobytes())
            if key in self._const_cache:
                return self._const_cache[key]
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        if key is not None:
            self._const_cache[key] = name
        return name

    def i64(self, *values: int) -> str:
        """1-D int64 constant (shapes, axes, indices)."""
        return self.const(np.array(values, dtype=np.int64), hint="i64")

    def f32(self, value) -> str:
        return self.const(np.asarray(value, dtype=np.float32), hint="f32")

    # ---------------------------------------------------------------- sub-models
    def inline(self, model: onnx.ModelProto, inputs: dict[str, str], prefix: str) -> dict[str, str]:
        """Copies a model's nodes and initializers into this graph.

        inputs: the sub-model's graph input name -> the tensor of this graph that feeds it.
        Returns the sub-model's output name -> its (prefixed) name in this graph.
        """
        g = model.graph
        mapping = dict(inputs)
        constant = set()  # sub-model names that are initializers

        def add_initializer(tensor: onnx.TensorProto, name: str) -> None:
            t = onnx.TensorProto()
            t.CopyFrom(tensor)
            t.name = f"{prefix}/{name}"
            self.initializers.append(t)
            mapping[name] = t.name
            constant.add(name)

        for init in g.initializer:
            add_initializer(init, init.name)
        outputs = {o.name for o in g.output}
        for node in g.node:
            # NOTE: every weight and bias an initializer: torch.onnx writes some as Constant nodes and
            # feeds a tensor shared by several layers (equal Conv biases) through Identity nodes, so
            # a Conv's bias is a computed value, which quantizers ("Expected bias ... to be an
            # initializer") and parsers handle worse. Both become plain initializers here.
            if node.op_type == "Constant" and [a.name for a in node.attribute] == ["value"] \
                    and node.output[0] not in outputs:
                add_initializer(node.attribute[0].t, node.output[0])
                continue
            if node.op_type == "Identity" and node.input[0] in constant and node.output[0] not in outputs:
                mapping[node.output[0]] = mapping[node.input[0]]
                constant.add(node.output[0])
                continue
            n = onnx.NodeProto()
            n.CopyFrom(node)
            n.name = f"{prefix}/{node.name or node.op_type}"
            for i, name in enumerate(n.input):
                if name:
                    n.input[i] = mapping.get(name, f"{prefix}/{name}")
            for i, name in enumerate(n.output):
                mapping[name] = f"{prefix}/{name}"
                n.output[i] = mapping[name]
            if n.op_type in ("Loop", "If", "Scan"):
                raise ValueError(f"inline: control-flow node {n.op_type} in {prefix} is not supported")
            self.nodes.append(n)
        for imp in model.opset_import:
            dom = imp.domain or ""
            if dom == "" and imp.version > self.domains[""]:
                raise ValueError(f"inline: {prefix} needs opset {imp.version} > {self.domains['']}")
            self.domains.setdefault(dom, imp.version)
        missing = [i.name for i in g.input if i.name not in inputs and i.name not in mapping]
        if missing:
            raise ValueError(f"inline: inputs {missing} of {prefix} are not connected")
        return {o.name: mapping[o.name] for o in g.output}

    # ---------------------------------------------------------------- model
    def build(self, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto], name: str,
              metadata: dict[str, str]) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, initializer=self.initializers)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid(d, v) for d, v in self.domains.items()],
            producer_name="maskrt",
            ir_version=IR_VERSION,
        )
        for k, v in metadata.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = k, v
        return model


class _Scope:
    def __init__(self, g: GraphBuilder, name: str) -> None:
        self.g, self.name = g, name

    def __enter__(self) -> GraphBuilder:
        self.g._scope.append(self.name)
        return self.g

    def __exit__(self, *exc) -> None:
        self.g._scope.pop()


def value_info(name: str, elem_type: int, shape: Sequence[int | str]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, list(shape))


FLOAT, INT32, INT64, UINT8, BOOL = TensorProto.FLOAT, TensorProto.INT32, TensorProto.INT64, TensorProto.UINT8, \
    TensorProto.BOOL
FLOAT16 = TensorProto.FLOAT16
