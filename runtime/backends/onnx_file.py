"""Read what a backend must check in an ONNX file -- metadata, opsets, graph inputs/outputs, the
domains of its nodes -- without the ``onnx`` package and before any inference session exists.

The runtime must not import onnx (an edge box has numpy, opencv and onnxruntime only), and
ONNX Runtime exposes a model's metadata only after it has built a session -- too late to refuse
a model whose flavour needs custom ops that were not registered, or to give a clear message for
a truncated file. So this module decodes the few ONNX protobuf fields it needs straight from the
protobuf wire format (field numbers from onnx/onnx.proto, stable since IR version 3) and skips
everything else -- weights included -- by length, on a read-only memory map: a 170 MB model is
scanned in milliseconds without being copied.

A file that is cut short (a length-delimited field or varint running past the end), uses an
unknown wire type, or has no graph raises :class:`~maskrt.runtime.backends.base.ModelLoadError`
naming the path and the cause.

External data (tensors whose bytes live in another file, ``external_data`` "location"): every
location must name a file inside the model's folder -- relative, and still inside after ``..``
and symlinks are resolved -- or the model is refused here, before ONNX Runtime opens anything.
Recent ONNX Runtime versions refuse such paths themselves; older ones (the runtime accepts
onnxruntime >= 1.17) read whatever file the model names.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from pathlib import Path

from .base import ModelLoadError, ModelNotFoundError

__all__ = ["OnnxFileInfo", "TensorInfo", "read_onnx_file", "STANDARD_DOMAINS"]

# Op domains ONNX Runtime implements itself; a node in any other domain needs registered custom ops.
STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "ai.onnx.training",
                              "ai.onnx.preview.training"})

# TensorProto.DataType -> numpy-style name (onnx/onnx.proto).
_ELEM_TYPES = {
    1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 8: "string",
    9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 14: "complex64", 15: "complex128",
    16: "bfloat16",
}

# Wire types (protobuf encoding).
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output: ``dtype`` a numpy-style name ("uint8", "float32", ...; "onnx_type_N"
    for types numpy lacks, "non-tensor" for sequences/maps); ``shape`` a tuple of ints (fixed
    dims), strings (named dynamic dims) or None (unnamed dynamic dims), or None when the rank is
    unknown."""

    name: str
    dtype: str
    shape: tuple[int | str | None, ...] | None


@dataclass(frozen=True)
class OnnxFileInfo:
    """What :func:`read_onnx_file` found in a model file."""

    path: Path
    ir_version: int
    producer: str
    opsets: dict[str, int]  # opset_import: domain -> version ("" = the default ONNX domain)
    metadata: dict[str, str]  # metadata_props
    inputs: tuple[TensorInfo, ...]  # graph inputs that are not initializers (the ones a caller feeds)
    outputs: tuple[TensorInfo, ...]
    node_ops: frozenset[tuple[str, str]]  # (domain, op_type) of the main graph's nodes
    # (tensor name, "location") of every tensor stored as external data: initializers, sparse
    # initializers and tensor attributes of nodes (subgraphs included).
    external_data: tuple[tuple[str, str], ...] = ()

    @property
    def custom_ops(self) -> frozenset[tuple[str, str]]:
        """(domain, op_type) of nodes outside :data:`STANDARD_DOMAINS` (need registered custom ops).

        NOTE: nodes inside subgraphs (If/Loop/Scan bodies) and model-local functions are not
        scanned; the maskrt exporters write neither."""
        return frozenset(op for op in self.node_ops if op[0] not in STANDARD_DOMAINS)


class _Corrupt(Exception):
    """Internal: the bytes are not a well-formed protobuf message."""


# ------------------------------------------------------------------------------ wire format
def _varint(buf, pos: int, end: int) -> tuple[int, int]:
    """Decodes a base-128 varint at ``pos``; returns (value, new pos)."""
    result = shift = 0
    while True:
        if pos >= end:
            raise _Corrupt("a varint runs past the end of its message")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _Corrupt("a varint is longer than 10 bytes")


def _fields(buf, pos: int, end: int):
    """Yields ``(field number, wire type, value)`` for each field of the message in
    ``buf[pos:end]``: the integer for varints, ``(start, stop)`` for length-delimited fields,
    None for fixed-size ones (skipped)."""
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Corrupt("field number 0")
        if wire == _VARINT:
            value, pos = _varint(buf, pos, end)
            yield number, wire, value
        elif wire == _LEN:
            n, pos = _varint(buf, pos, end)
            if pos + n > end:
                raise _Corrupt(f"field {number} declares {n} bytes but only {end - pos} remain")
            yield number, wire, (pos, pos + n)
            pos += n
        elif wire in (_I64, _I32):
            pos += 8 if wire == _I64 else 4
            if pos > end:
                raise _Corrupt(f"fixed-size field {number} runs past the end")
            yield number, wire, None
        else:  # 3/4 are the deprecated groups, 6/7 do not exist
            raise _Corrupt(f"field {number} has wire type {wire}, which ONNX never writes")


def _expect(number: int, wire: int, want: int, what: str) -> None:
    if wire != want:
        raise _Corrupt(f"{what} (field {number}) has wire type {wire}, expected {want}")


def _str(buf, span: tuple[int, int], what: str) -> str:
    try:
        return bytes(buf[span[0]:span[1]]).decode("utf-8")
    except UnicodeDecodeError:
        raise _Corrupt(f"{what} is not valid UTF-8") from None


def _int64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


# ------------------------------------------------------------------------------ messages
def _string_entry(buf, span) -> tuple[str, str]:
    """StringStringEntryProto: key = 1, value = 2."""
    key = value = ""
    for number, wire, v in _fields(buf, *span):
        if number in (1, 2):
            _expect(number, wire, _LEN, "metadata entry")
            if number == 1:
                key = _str(buf, v, "a metadata key")
            else:
                value = _str(buf, v, f"metadata value of {key!r}")
    return key, value


def _opset(buf, span) -> tuple[str, int]:
    """OperatorSetIdProto: domain = 1, version = 2."""
    domain, version = "", 0
    for number, wire, v in _fields(buf, *span):
        if number == 1:
            _expect(number, wire, _LEN, "opset domain")
            domain = _str(buf, v, "an opset domain")
        elif number == 2:
            _expect(number, wire, _VARINT, "opset version")
            version = _int64(v)
    return domain, version


def _shape(buf, span) -> tuple[int | str | None, ...]:
    """TensorShapeProto: repeated dim = 1; Dimension: dim_value = 1 (int64), dim_param = 2."""
    dims: list[int | str | None] = []
    for number, wire, v in _fields(buf, *span):
        if number != 1:
            continue
        _expect(number, wire, _LEN, "shape dim")
        dim: int | str | None = None
        for n2, w2, v2 in _fields(buf, *v):
            if n2 == 1:
                _expect(n2, w2, _VARINT, "dim_value")
                dim = _int64(v2)
            elif n2 == 2:
                _expect(n2, w2, _LEN, "dim_param")
                dim = _str(buf, v2, "a dim_param") or None
        dims.append(dim)
    return tuple(dims)


def _value_info(buf, span) -> TensorInfo:
    """ValueInfoProto: name = 1, type = 2. TypeProto: tensor_type = 1 (others are not tensors);
    TypeProto.Tensor: elem_type = 1, shape = 2 (absent: rank unknown)."""
    name, dtype, shape = "", "non-tensor", None
    for number, wire, v in _fields(buf, *span):
        if number == 1:
            _expect(number, wire, _LEN, "value name")
            name = _str(buf, v, "a value name")
        elif number == 2:
            _expect(number, wire, _LEN, "value type")
            for n2, w2, v2 in _fields(buf, *v):
                if n2 != 1:
                    continue
                _expect(n2, w2, _LEN, "tensor_type")
                dtype = "onnx_type_0"
                for n3, w3, v3 in _fields(buf, *v2):
                    if n3 == 1:
                        _expect(n3, w3, _VARINT, "elem_type")
                        dtype = _ELEM_TYPES.get(v3, f"onnx_type_{v3}")
                    elif n3 == 2:
                        _expect(n3, w3, _LEN, "tensor shape")
                        shape = _shape(buf, v3)
    return TensorInfo(name, dtype, shape)


def _tensor(buf, span, external: list[tuple[str, str]]) -> str:
    """TensorProto: name = 8, external_data = 13 (StringStringEntryProto; key "location" names the
    file). raw_data and the other payload fields are skipped by length. Appends (name, location)
    to ``external`` for a tensor with an external location; returns the name."""
    name, location = "", None
    for number, wire, v in _fields(buf, *span):
        if number == 8:
            _expect(number, wire, _LEN, "tensor name")
            name = _str(buf, v, "an initializer name")
        elif number == 13:
            _expect(number, wire, _LEN, "external_data entry")
            key, value = _string_entry(buf, v)
            if key == "location":
                location = value
    if location is not None:
        external.append((name, location))
    return name


def _sparse_tensor(buf, span, external: list[tuple[str, str]]) -> str:
    """SparseTensorProto: values = 1, indices = 2 (TensorProtos); the name is the values' name."""
    name = ""
    for number, wire, v in _fields(buf, *span):
        if number in (1, 2) and wire == _LEN:
            tensor_name = _tensor(buf, v, external)
            if number == 1:
                name = tensor_name
    return name


def _node_external(buf, span, external: list[tuple[str, str]]) -> None:
    """External tensors in a NodeProto's attributes (attribute = 5). AttributeProto: t = 5,
    g = 6, tensors = 10, graphs = 11, sparse_tensor = 22, sparse_tensors = 23."""
    for number, wire, v in _fields(buf, *span):
        if number != 5 or wire != _LEN:
            continue
        for n2, w2, v2 in _fields(buf, *v):
            if w2 != _LEN:
                continue
            if n2 in (5, 10):
                _tensor(buf, v2, external)
            elif n2 in (22, 23):
                _sparse_tensor(buf, v2, external)
            elif n2 in (6, 11):
                _graph(buf, v2, external)


def _node_op(buf, span) -> tuple[str, str]:
    """NodeProto: op_type = 4, domain = 7 (inputs, outputs, attributes skipped)."""
    op_type = domain = ""
    for number, wire, v in _fields(buf, *span):
        if number == 4:
            _expect(number, wire, _LEN, "op_type")
            op_type = _str(buf, v, "an op_type")
        elif number == 7:
            _expect(number, wire, _LEN, "node domain")
            domain = _str(buf, v, "a node domain")
    return domain, op_type


def _graph(buf, span, external: list[tuple[str, str]]):
    """GraphProto: node = 1, initializer = 5, input = 11, output = 12, sparse_initializer = 15
    (SparseTensorProto: values = 1, a TensorProto whose name is the initializer's). External
    tensors (see :func:`_tensor`) are appended to ``external``."""
    ops: set[tuple[str, str]] = set()
    initializers: set[str] = set()
    inputs: list[TensorInfo] = []
    outputs: list[TensorInfo] = []
    for number, wire, v in _fields(buf, *span):
        if number not in (1, 5, 11, 12, 15):
            continue
        _expect(number, wire, _LEN, "graph entry")
        if number == 1:
            ops.add(_node_op(buf, v))
            _node_external(buf, v, external)
        elif number == 5:
            initializers.add(_tensor(buf, v, external))
        elif number == 11:
            inputs.append(_value_info(buf, v))
        elif number == 12:
            outputs.append(_value_info(buf, v))
        else:
            initializers.add(_sparse_tensor(buf, v, external))
    # NOTE: before IR version 4 every initializer also had to be listed as a graph input; those
    # are weights (with defaults), not inputs a caller feeds, so they are dropped here.
    return ops, tuple(i for i in inputs if i.name not in initializers), tuple(outputs)


def _model(buf, size: int, path: Path) -> OnnxFileInfo:
    """ModelProto: ir_version = 1, producer_name = 2, graph = 7, opset_import = 8, metadata_props = 14."""
    ir_version, producer, graph = 0, "", None
    opsets: dict[str, int] = {}
    metadata: dict[str, str] = {}
    for number, wire, v in _fields(buf, 0, size):
        if number == 1:
            _expect(number, wire, _VARINT, "ir_version")
            ir_version = _int64(v)
        elif number == 2:
            _expect(number, wire, _LEN, "producer_name")
            producer = _str(buf, v, "producer_name")
        elif number == 7:
            _expect(number, wire, _LEN, "graph")
            graph = v
        elif number == 8:
            _expect(number, wire, _LEN, "opset_import")
            domain, version = _opset(buf, v)
            opsets[domain] = version
        elif number == 14:
            _expect(number, wire, _LEN, "metadata_props")
            key, value = _string_entry(buf, v)
            if key in metadata:
                raise _Corrupt(f"metadata key {key!r} appears twice")
            metadata[key] = value
    if graph is None:
        raise _Corrupt("no graph (is it an ONNX model at all?)")
    if ir_version <= 0:
        raise _Corrupt(f"ir_version is {ir_version} (missing or invalid)")
    external: list[tuple[str, str]] = []
    ops, inputs, outputs = _graph(buf, graph, external)
    return OnnxFileInfo(path=path, ir_version=ir_version, producer=producer, opsets=opsets, metadata=metadata,
                        inputs=inputs, outputs=outputs, node_ops=frozenset(ops), external_data=tuple(external))


def _check_external_data(info: OnnxFileInfo) -> None:
    """Every external-data location is a relative path to a file inside the model's folder, after
    ``..`` and symlinks are resolved (what ONNX Runtime would open: the location joined to the
    model's folder)."""
    folder = info.path.parent.resolve()
    for name, location in info.external_data:
        where = f"{info.path}: tensor {name!r} keeps its data in {location!r}"
        if not location or "\0" in location:
            raise ModelLoadError(f"{where}: not a file name")
        if os.path.isabs(location) or location.startswith(("/", "\\")) or Path(location).drive:
            raise ModelLoadError(f"{where}, an absolute path: refused (external data must be a file in the "
                                 f"model's folder {folder})")
        target = (folder / location).resolve()
        if target != folder and folder in target.parents:
            continue
        raise ModelLoadError(f"{where}, which resolves to {target}, outside the model's folder {folder}: refused "
                             "(external data must be a file in the model's folder)")


def read_onnx_file(path: str | os.PathLike) -> OnnxFileInfo:
    """Reads ``path``'s metadata, opsets, graph I/O and node domains (see the module docstring).

    Raises :class:`ModelNotFoundError` when the file does not exist and :class:`ModelLoadError`
    (with the path and a one-line cause) when it is not a readable, well-formed ONNX model."""
    path = Path(path)
    if not path.exists():
        raise ModelNotFoundError(f"model file {path} does not exist")
    if not path.is_file():
        raise ModelLoadError(f"model path {path} is not a file")
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise ModelLoadError(f"{path}: the file is empty (0 bytes)")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                info = _model(buf, size, path)
    except OSError as e:
        raise ModelLoadError(f"{path}: cannot read the file ({e.strerror or e})") from None
    except _Corrupt as e:
        raise ModelLoadError(f"{path}: not a valid ONNX model, truncated or corrupt ({e})") from None
    _check_external_data(info)
    return info
