"""``TrtBackend``: a serialized engine (``maskrt build``) run through TensorRT 10/11 or TensorRT-RTX and cuda-python.

Construction is cheap and needs neither TensorRT nor a GPU: it reads and validates the engine's
sidecar ``<engine>.json`` (:mod:`maskrt.runtime.engine_meta`: ModelConfig, batch profile, plugins,
the build machine), and checks that the engine file exists with the size the sidecar records.
:meth:`TrtBackend.open` then

1. imports the runtime kind that built the engine (the sidecar's ``runtime``: ``tensorrt`` >= 10
   or ``tensorrt_rtx``, through :mod:`maskrt.runtime.trt_lib`) and cuda-python
   (``cuda.bindings.runtime`` or the older ``cuda.cudart``); either missing ->
   :class:`BackendUnavailable`, one line naming the package and the extra;
2. compares the sidecar with this machine (runtime kind and version, GPU name and compute
   capability, plugin versions of the plugin table) -> :class:`EngineMismatchError` with every
   difference;
3. selects the CUDA device (no silent fallback to another one) and, when the engine has plugin
   nodes, loads the plugin library and checks TensorRT's registry has each plugin version;
4. reads the engine, checks its sha256 against the sidecar, deserializes it, and checks its I/O
   tensors against the deployment contract (:func:`check_engine_io`, a pure function);
5. allocates, for the profile's maximum batch, one pinned host and one device buffer per I/O
   tensor, the execution context's scratch memory, and one non-blocking stream.

:meth:`TrtBackend.infer` copies the batch into the pinned input buffer, then on the stream:
host-to-device copy, ``execute_async_v3`` (or a CUDA-graph launch), device-to-host copies of the
first ``B`` rows of each output, one synchronisation; it returns fresh numpy copies. ``infer`` is
thread-safe (serialised by a lock: the buffers are shared) and sets the CUDA device itself, so it
may be called from any thread (the video pipeline's inference thread).

CUDA graphs (``cuda_graph=True``): the first batch of each size runs once normally (TensorRT
finishes shape-dependent set-up on the first enqueue after a shape change), is captured into a
graph, and the graph is launched; later batches of that size only launch it. Each batch size gets
its own execution context (its input shape never changes once captured), all of them sharing one
scratch buffer, which is safe because every launch is serialised on the one stream. A capture
that fails raises :class:`BackendError`; ``cuda_graph="try"`` asks explicitly for the
alternative: a logged warning and normal execution for that batch size.

Every CUDA runtime call goes through :func:`check_cuda`, which raises :class:`CudaError` (a
:class:`BackendError`) naming the call and the ``cudaError_t`` (e.g. ``cudaErrorMemoryAllocation``).

Imports numpy and the standard library at import time; TensorRT and cuda-python only in
:meth:`TrtBackend.open`. Never torch, onnx or onnxruntime. NOTE: the TensorRT-RTX path is written
against its real Python API (the same I/O-tensor API as TensorRT 10) and has never run: running
an engine needs a GPU.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from maskrt.runtime.config import ModelConfig
from maskrt.runtime.engine_meta import (
    EngineMeta,
    EngineMetaError,
    EngineMismatch,
    check_compatible,
    current_environment,
    import_cudart,
    read_engine_meta,
    sidecar_path,
)
from maskrt.runtime.trt_lib import (
    ENV_PLUGINS,
    PLUGIN_LIBRARY_NAME,
    TRT_INSTALL_HINT,
    PluginLibraryError,
    TensorRTUnavailable,
    TrtLib,
    default_plugin_search_dirs,
    find_plugin_library,
    import_tensorrt,
    load_plugin_library,
    trt_logger,
)

from .base import (
    INPUT_NAME,
    OUTPUT_DTYPES,
    OUTPUT_NAMES,
    Backend,
    BackendError,
    ContractError,
    ModelLoadError,
    ModelNotFoundError,
    expected_output_shapes,
)

__all__ = [
    "BackendUnavailable", "CudaError", "ENV_PLUGINS", "EngineMismatchError", "EngineSidecarError", "EngineTensor",
    "PLUGIN_LIBRARY_NAME", "PluginLibraryError", "TRT_INSTALL_HINT", "TrtBackend", "check_cuda", "check_engine_io",
    "default_plugin_search_dirs", "engine_io_table", "find_plugin_library",
]

log = logging.getLogger("maskrt.trt")

CUDA_GRAPH_MODES = (False, True, "try")

# TensorRT DataType names (``trt.DataType.X.name``) -> numpy-style names, as check_engine_io compares them.
_TRT_DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8", "INT32": "int32",
               "INT64": "int64", "UINT8": "uint8", "BOOL": "bool", "FP8": "fp8", "INT4": "int4", "FP4": "fp4"}


# ------------------------------------------------------------------------------ errors
class BackendUnavailable(BackendError):
    """The backend's libraries cannot be imported here (TensorRT, cuda-python), or are too old."""


class CudaError(BackendError):
    """A CUDA runtime call failed; ``error_name`` is the ``cudaError_t`` name, ``code`` its value."""

    def __init__(self, message: str, *, error_name: str = "", code: int = -1) -> None:
        super().__init__(message)
        self.error_name = error_name
        self.code = code


class EngineMismatchError(BackendError, EngineMismatch):
    """The engine was built for another TensorRT / GPU / plugin set (both a :class:`BackendError`
    and :class:`maskrt.runtime.engine_meta.EngineMismatch`)."""


class EngineSidecarError(ModelLoadError, EngineMetaError):
    """The engine's sidecar is missing or invalid (both a :class:`ModelLoadError` and an
    :class:`maskrt.runtime.engine_meta.EngineMetaError`)."""


# ------------------------------------------------------------------------------ CUDA calls
def check_cuda(result: Any, what: str, cudart: Any = None) -> Any:
    """Checks the result of a cuda-python runtime call and returns its value(s).

    ``result``: what the call returned -- ``(err, *values)`` (cuda-python's convention for every
    call, e.g. ``cudaMalloc(n) -> (err, ptr)``, ``cudaStreamSynchronize(s) -> (err,)``) or a bare
    ``cudaError_t``. Returns None (no values), the value (one), or a tuple (several).
    ``cudart``: the cuda-python runtime module, to add ``cudaGetErrorString``'s description.

    Raises :class:`CudaError` ``"<what> failed: <cudaError name> (<description>)"`` when ``err``
    is not ``cudaSuccess`` (0).
    """
    if isinstance(result, tuple):
        if not result:
            raise TypeError(f"{what}: expected a cuda-python result (err, *values), got ()")
        err, values = result[0], result[1:]
    else:
        err, values = result, ()
    try:
        code = int(err)
    except (TypeError, ValueError):
        raise TypeError(f"{what}: expected a cudaError_t first, got {err!r}") from None
    if code != 0:
        name = getattr(err, "name", None) or f"cudaError {code}"
        desc = ""
        if cudart is not None:
            try:
                got = cudart.cudaGetErrorString(err)
                text = got[1] if isinstance(got, tuple) and len(got) == 2 and int(got[0]) == 0 else got
                if isinstance(text, (bytes, bytearray)):
                    desc = bytes(text).decode("utf-8", "replace")
                elif isinstance(text, str):
                    desc = text
            except Exception:  # the description is a nicety; the name is what matters
                desc = ""
        raise CudaError(f"{what} failed: {name}" + (f" ({desc})" if desc else ""), error_name=name, code=code)
    if not values:
        return None
    return values[0] if len(values) == 1 else values


# ------------------------------------------------------------------------------ engine I/O vs the contract
class EngineTensor(NamedTuple):
    """One I/O tensor of an engine, in plain Python terms (see :func:`engine_io_table`).

    ``mode``: "input" | "output" (anything else is refused); ``dtype``: numpy-style name
    ("uint8", "int32", "float32", "float16", ...); ``shape``: ints, -1 for a dynamic dim;
    ``location``: "device" | "host"; ``format``: TensorRT's tensor format, "linear" for row-major.
    """

    name: str
    mode: str
    dtype: str
    shape: tuple[int, ...]
    location: str = "device"
    format: str = "linear"


def _shape_text(shape: Iterable[int]) -> str:
    return "[" + ", ".join("?" if d < 0 else str(d) for d in shape) + "]"


def check_engine_io(tensors: Sequence[EngineTensor | tuple], config: ModelConfig, *,
                    profile: Sequence[Sequence[int]] | None = None, source: str = "engine") -> tuple[int, int]:
    """Checks an engine's I/O tensors against the deployment contract and ``config``; returns the
    batch range ``(min, max)`` the engine takes.

    ``tensors``: :class:`EngineTensor` (or plain ``(name, mode, dtype, shape)`` tuples), every I/O
    tensor of the engine. ``profile``: the ``(min, opt, max)`` shapes of ``images`` in
    optimisation profile 0 (``engine.get_tensor_profile_shape``); required when the batch dim is
    dynamic (-1). The contract: exactly one input ``images`` uint8 ``[B, H, W, 3]`` with ``(H, W) ==
    config.input_size``, and exactly the outputs ``num_detections`` int32 ``[B]``, ``boxes``
    float32 ``[B, K, 4]``, ``scores`` float32 ``[B, K]``, ``classes`` int32 ``[B, K]``, ``masks``
    float32 ``[B, K, M, M]`` (K = ``detections_per_img``, M = ``mask_resolution``), all linear
    device tensors.

    NOTE: a dynamic (-1) non-batch output dim is accepted here, like OrtBackend does: TrtBackend
    checks the actual output shapes from the execution context for every batch size before the
    first run of that size (a data-dependent shape, still -1 then, is refused there).

    Raises :class:`ModelLoadError` ``"<source>: ..."`` naming the tensor and what differs.
    """

    def bad(why: str) -> ModelLoadError:
        return ModelLoadError(f"{source}: {why}")

    table = [t if isinstance(t, EngineTensor) else EngineTensor(*t) for t in tensors]
    names = [t.name for t in table]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise bad(f"I/O tensor names {dup} appear more than once")
    inputs = [t for t in table if t.mode == "input"]
    outputs = [t for t in table if t.mode == "output"]
    other = [t.name for t in table if t.mode not in ("input", "output")]
    if other:
        raise bad(f"tensors {other} are neither inputs nor outputs")
    H, W = (int(v) for v in config.input_size)
    if [t.name for t in inputs] != [INPUT_NAME]:
        raise bad(f"engine inputs are {[t.name for t in inputs]}; the deployment contract has exactly one input "
                  f"'{INPUT_NAME}' uint8 [B, {H}, {W}, 3]")
    x = inputs[0]
    shape = tuple(int(d) for d in x.shape)
    if x.dtype != "uint8":
        raise bad(f"engine input '{INPUT_NAME}' is {x.dtype}; the contract's is uint8 BGR (the graph casts and "
                  "normalises)")
    if len(shape) != 4 or shape[3] != 3:
        raise bad(f"engine input '{INPUT_NAME}' has shape {_shape_text(shape)}; the contract's is [B, {H}, {W}, 3]")
    if shape[1:3] != (H, W):
        raise bad(f"engine input '{INPUT_NAME}' is {_shape_text(shape[1:3])} (HxW) but the ModelConfig says "
                  f"input_size {H}x{W}")
    for t in (x, *outputs):
        if t.location != "device":
            raise bad(f"engine tensor '{t.name}' lives on the {t.location}; the backend binds device buffers")
        if t.format != "linear":
            raise bad(f"engine tensor '{t.name}' has format {t.format}; the contract's tensors are linear "
                      "(row-major)")

    if shape[0] >= 1:
        lo = hi = shape[0]
    elif shape[0] == -1:
        if profile is None:
            raise bad(f"engine input '{INPUT_NAME}' has a dynamic batch but no optimisation profile")
        prof = [tuple(int(d) for d in s) for s in profile]
        if len(prof) != 3 or any(len(s) != 4 for s in prof):
            raise bad(f"optimisation profile of '{INPUT_NAME}' must be (min, opt, max) 4-D shapes, got {profile!r}")
        for which, s in zip(("min", "opt", "max"), prof, strict=True):
            if s[1:] != (H, W, 3):
                raise bad(f"optimisation profile {which} shape of '{INPUT_NAME}' is {_shape_text(s)}; expected "
                          f"[B, {H}, {W}, 3]")
        lo, hi = prof[0][0], prof[2][0]
        if not 1 <= lo <= prof[1][0] <= hi:
            raise bad(f"optimisation profile batch range of '{INPUT_NAME}' is {lo}..{hi} (opt {prof[1][0]})")
    else:
        raise bad(f"engine input '{INPUT_NAME}' has batch dim {shape[0]}")

    found = {t.name: t for t in outputs}
    missing = [n for n in OUTPUT_NAMES if n not in found]
    extra = sorted(set(found) - set(OUTPUT_NAMES))
    if missing or extra:
        raise bad(f"engine outputs {list(found)}: missing {missing}, unexpected {extra}; the contract's are exactly "
                  f"{list(OUTPUT_NAMES)}")
    K, M = int(config.detections_per_img), int(config.mask_resolution)
    want: dict[str, tuple[int | str, ...]] = {"num_detections": ("B",), "boxes": ("B", K, 4), "scores": ("B", K),
                                              "classes": ("B", K), "masks": ("B", K, M, M)}
    for name in OUTPUT_NAMES:
        o = found[name]
        if o.dtype != OUTPUT_DTYPES[name].name:
            raise bad(f"engine output '{name}' is {o.dtype}; the contract's is {OUTPUT_DTYPES[name]}")
        got_shape = tuple(int(d) for d in o.shape)
        spec = want[name]
        if len(got_shape) != len(spec):
            raise bad(f"engine output '{name}' has shape {_shape_text(got_shape)}; the contract's is {list(spec)}")
        for axis, (got, exp) in enumerate(zip(got_shape, spec, strict=True)):
            if got < 0:
                continue  # dynamic: checked from the context at run time (see the NOTE above)
            if exp == "B":
                if lo != hi or got != lo:
                    raise bad(f"engine output '{name}' has a fixed batch dim {got} but the input batch is "
                              f"{lo if lo == hi else f'{lo}..{hi}'}")
            elif got != exp:
                what = {K: "K = detections_per_img", M: "M = mask_resolution", 4: "4"}.get(exp, str(exp))
                raise bad(f"engine output '{name}' dim {axis} is {got}; the ModelConfig gives {exp} ({what})")
    return lo, hi


def _enum_name(value: Any) -> str:
    """``trt.DataType.FLOAT`` -> "FLOAT" (pybind11 enums have ``.name``; str() is "DataType.FLOAT")."""
    name = getattr(value, "name", None)
    return str(name) if name is not None else str(value).rsplit(".", 1)[-1]


def engine_io_table(trt: Any, engine: Any) -> tuple[tuple[EngineTensor, ...], tuple[tuple[int, ...], ...] | None]:
    """The I/O tensors of a deserialized TensorRT 10 ``ICudaEngine`` as :class:`EngineTensor` rows,
    and the ``(min, opt, max)`` shapes of ``images`` in profile 0 (None when it has no dynamic dim
    or the engine has no ``images`` input / no profile)."""
    rows = []
    profile = None
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        mode = {"INPUT": "input", "OUTPUT": "output"}.get(_enum_name(engine.get_tensor_mode(name)), "none")
        dt = _enum_name(engine.get_tensor_dtype(name))
        shape = tuple(int(d) for d in engine.get_tensor_shape(name))
        location = _enum_name(engine.get_tensor_location(name)).lower()
        fmt = _enum_name(engine.get_tensor_format(name)).lower() if hasattr(engine, "get_tensor_format") else "linear"
        rows.append(EngineTensor(name, mode, _TRT_DTYPES.get(dt, dt.lower()), shape, location, fmt))
        if name == INPUT_NAME and mode == "input" and any(d < 0 for d in shape) and engine.num_optimization_profiles:
            profile = tuple(tuple(int(d) for d in s) for s in engine.get_tensor_profile_shape(name, 0))
    return tuple(rows), profile


# ------------------------------------------------------------------------------ TensorRT and cuda-python
def _import_trt_and_cuda(kind: str = "tensorrt") -> tuple[TrtLib, Any]:
    """(the TensorRT of ``kind``, cuda-python's runtime module) or :class:`BackendUnavailable`
    naming each missing one."""
    problems: list[str] = []
    lib: TrtLib | None = None
    try:
        lib = import_tensorrt(kind)
    except TensorRTUnavailable as e:
        name = "tensorrt_rtx" if kind == "rtx" else "tensorrt"
        problems.append(f"{name} is not installed" if e.missing else str(e).split(": pip install")[0])
    cudart = import_cudart()
    if cudart is None:
        problems.append("cuda-python is not installed (neither cuda.bindings.runtime nor cuda.cudart imports)")
    if problems or lib is None:
        what = "TensorRT-RTX" if kind == "rtx" else "TensorRT >= 10"
        raise BackendUnavailable(f"TrtBackend needs {what} (the runtime that built the engine) and cuda-python: "
                                 + "; ".join(problems) + f". {TRT_INSTALL_HINT}")
    return lib, cudart


# ------------------------------------------------------------------------------ the backend
class _Buffer:
    """A pinned host buffer and a device buffer for one I/O tensor at the maximum batch.

    ``host``: numpy view ``[max_batch, *row_shape]`` of ``dtype`` over the pinned memory;
    ``row_nbytes``: bytes of one batch row (the copies move ``B * row_nbytes`` bytes: with a linear
    layout the first B rows of a [max_batch, ...] buffer are exactly the [B, ...] tensor)."""

    def __init__(self, name: str, dtype: np.dtype, row_shape: tuple[int, ...], max_batch: int) -> None:
        self.name = name
        self.dtype = np.dtype(dtype)
        self.row_shape = row_shape
        self.row_nbytes = int(np.prod(row_shape, dtype=np.int64)) * self.dtype.itemsize
        self.nbytes = self.row_nbytes * max_batch
        self.max_batch = max_batch
        self.host_ptr = 0
        self.device_ptr = 0
        self.host: np.ndarray | None = None

    def map_host(self) -> None:
        raw = (ctypes.c_uint8 * self.nbytes).from_address(self.host_ptr)
        self.host = np.frombuffer(raw, dtype=np.uint8).view(self.dtype).reshape(self.max_batch, *self.row_shape)


class TrtBackend(Backend):
    """A serialized TensorRT engine (``maskrt build``) with its sidecar ``<engine>.json``.

    Args:
        engine_path: the engine file; its sidecar ``<engine_path>.json`` must be next to it.
        plugins: the plugin library ``libmaskrt_trt_plugins.so`` (only used when the engine has
            plugin nodes). Default: ``$MASKRT_TRT_PLUGINS``, else the sidecar's ``plugin_library``
            next to the engine, in the package folder, or in a source checkout's build folders.
        device: CUDA device ordinal. It must exist at :meth:`open` (no fallback to another).
        cuda_graph: False (default): ``execute_async_v3`` per batch. True: capture one CUDA graph
            per batch size on its first batch and launch it afterwards; a failed capture raises
            :class:`BackendError`. "try": the same, but a failed capture logs a warning and that
            batch size runs without a graph (see :attr:`graph_status`).
        check_environment: compare the sidecar with this machine at :meth:`open` (TensorRT
            version, GPU, plugin versions) and refuse a mismatch (:class:`EngineMismatchError`).
            False skips the comparison (TensorRT itself still refuses engines from another
            TensorRT version).

    Construction reads the sidecar (:class:`EngineSidecarError`, a :class:`ModelLoadError`, when
    it is missing or invalid: rebuild with ``maskrt build``) and checks the engine file exists
    (:class:`ModelNotFoundError`) with the recorded size; it needs neither TensorRT nor a GPU.
    """

    name = "trt"

    def __init__(self, engine_path: str | os.PathLike, *, plugins: str | os.PathLike | None = None, device: int = 0,
                 cuda_graph: bool | str = False, check_environment: bool = True) -> None:
        super().__init__()
        # ---- arguments, before touching any file
        if not isinstance(engine_path, (str, os.PathLike)):
            raise ValueError(f"engine_path must be a str or os.PathLike, got {type(engine_path).__name__}")
        path = Path(engine_path)
        if path.name.endswith(".json"):
            raise ValueError(f"engine_path {path} is a sidecar (.json); pass the engine file itself "
                             f"({path.name[:-5] or 'M.engine'})")
        self._path = path
        self._plugins_arg: Path | None = None
        if plugins is not None:
            if not isinstance(plugins, (str, os.PathLike)):
                raise ValueError(f"plugins must be a path to {PLUGIN_LIBRARY_NAME}, got {type(plugins).__name__}")
            self._plugins_arg = Path(plugins)
            if not self._plugins_arg.is_file():
                raise ValueError(f"plugins={str(self._plugins_arg)!r}: no such file (the plugin library "
                                 f"{PLUGIN_LIBRARY_NAME})")
        if isinstance(device, bool) or not isinstance(device, (int, np.integer)) or device < 0:
            raise ValueError(f"device must be a CUDA device ordinal (int >= 0), got {device!r}")
        self._device = int(device)
        if not any(cuda_graph is m or (isinstance(m, str) and cuda_graph == m) for m in CUDA_GRAPH_MODES):
            raise ValueError(f"cuda_graph must be False, True or 'try', got {cuda_graph!r}")
        self._cuda_graph: bool | str = cuda_graph
        if not isinstance(check_environment, bool):
            raise ValueError(f"check_environment must be a bool, got {check_environment!r}")
        self._check_environment = check_environment

        # ---- the sidecar, then the engine file it describes
        side = sidecar_path(path)
        if not side.is_file():
            raise EngineSidecarError(f"{side}: engine sidecar not found: TrtBackend reads the engine's ModelConfig, "
                                     f"batch range and build machine from it; rebuild the engine with `maskrt build` "
                                     f"(it writes {side.name} next to the engine)")
        try:
            self._meta: EngineMeta = read_engine_meta(path)
        except EngineMetaError as e:  # the message starts with the sidecar's path
            raise EngineSidecarError(f"{e}; rebuild the engine with `maskrt build`") from None
        if not path.is_file():
            raise ModelNotFoundError(f"{path}: engine file not found (its sidecar {sidecar_path(path).name} exists); "
                                     "rebuild it with `maskrt build`")
        size = path.stat().st_size
        if size != self._meta.engine_size:
            raise ModelLoadError(f"{path}: the engine is {size} bytes but its sidecar records "
                                 f"{self._meta.engine_size}: the engine was replaced or truncated without its "
                                 "sidecar; rebuild it with `maskrt build`")
        self._config = self._meta.config
        lo, _, hi = self._meta.batch
        self._min_batch, self._max_batch = int(lo), int(hi)

        # ---- run-time state (open() fills it; _release() empties it)
        self._lock = threading.Lock()
        self._lib: TrtLib | None = None
        self._trt: Any = None
        self._cudart: Any = None
        self._logger: Any = None
        self._runtime: Any = None
        self._engine: Any = None
        self._stream: Any = None
        self._scratch_ptr = 0
        self._scratch_nbytes = 0
        self._buffers: dict[str, _Buffer] = {}
        self._contexts: dict[int, Any] = {}  # key 0: the one context (no graphs); key B: batch B's context (graphs)
        self._context_batch: dict[int, int] = {}  # context key -> the batch its input shape is set to
        self._graphs: dict[int, Any] = {}  # batch -> cudaGraphExec_t
        self._graph_status: dict[int, str] = {}
        self._plugin_path: Path | None = None

    # ---------------------------------------------------------------- properties
    @property
    def path(self) -> Path:
        return self._path

    @property
    def config(self) -> ModelConfig:
        return self._config

    @property
    def engine_meta(self) -> EngineMeta:
        """The parsed sidecar."""
        return self._meta

    @property
    def min_batch(self) -> int:
        return self._min_batch

    @property
    def max_batch(self) -> int:
        return self._max_batch

    @property
    def device(self) -> int:
        return self._device

    @property
    def cuda_graph(self) -> bool | str:
        return self._cuda_graph

    @property
    def plugins(self) -> dict[str, str]:
        """{plugin name: version} the engine uses (from the sidecar)."""
        return dict(self._meta.plugins)

    @property
    def plugin_library(self) -> Path | None:
        """The plugin library loaded by :meth:`open` (None before, or when the engine has no plugins)."""
        return self._plugin_path

    @property
    def graph_status(self) -> dict[int, str]:
        """CUDA graphs per batch size: "captured" or "failed: <why>" (``cuda_graph="try"``)."""
        return dict(self._graph_status)

    # ---------------------------------------------------------------- helpers
    def _cuda(self, result: Any, what: str) -> Any:
        return check_cuda(result, what, self._cudart)

    def _trt_errors_since(self, n: int) -> str:
        return "; ".join(self._logger.errors_since(n)) if self._logger is not None else ""

    def _n_errors(self) -> int:
        return self._logger.count if self._logger is not None else 0

    # ---------------------------------------------------------------- lifecycle
    def _open(self) -> None:
        lib, cudart = _import_trt_and_cuda(self._meta.runtime)
        src = str(self._path)
        self._lib, self._trt, self._cudart = lib, lib.trt, cudart
        count = self._cuda(cudart.cudaGetDeviceCount(), "cudaGetDeviceCount (is there an NVIDIA GPU and driver?)")
        if self._device >= count:
            raise BackendError(f"{src}: CUDA device {self._device} requested but {count} device(s) are visible "
                               "(CUDA_VISIBLE_DEVICES?); no fallback to another device")
        if self._check_environment:
            try:
                check_compatible(self._meta, current_environment(device=self._device, runtime=lib.kind))
            except EngineMismatch as e:
                raise EngineMismatchError(f"{src}: {e}") from None
        try:
            self._open_device(lib, cudart, src)
        except BaseException:
            self._release(raise_errors=False)
            raise

    def _open_device(self, lib: TrtLib, cudart: Any, src: str) -> None:
        trt = lib.trt
        self._cuda(cudart.cudaSetDevice(self._device), f"cudaSetDevice({self._device})")
        self._logger = trt_logger(lib)

        # plugins, before deserialising: TensorRT looks their creators up while it deserialises
        if self._meta.plugins:
            from maskrt.runtime.plugin_table import load_plugin_table

            path = find_plugin_library(self._meta.plugin_library or PLUGIN_LIBRARY_NAME, explicit=self._plugins_arg,
                                       engine_dir=self._path.parent)
            load_plugin_library(lib, path, self._meta.plugins, load_plugin_table()["namespace"])
            self._plugin_path = path

        # the engine: bytes checked against the sidecar, then deserialised
        data = self._path.read_bytes()
        if len(data) != self._meta.engine_size or hashlib.sha256(data).hexdigest() != self._meta.engine_sha256:
            raise ModelLoadError(f"{src}: the engine does not match its sidecar's sha256 (modified or corrupted "
                                 "after the build); rebuild it with `maskrt build`")
        n_err = self._n_errors()
        self._runtime = trt.Runtime(self._logger)
        if self._runtime is None:
            raise BackendError(f"{src}: TensorRT could not create a runtime: {self._trt_errors_since(n_err)}")
        engine = self._runtime.deserialize_cuda_engine(data)
        del data
        if engine is None:
            why = self._trt_errors_since(n_err) or "see TensorRT's messages"
            raise ModelLoadError(f"{src}: {lib.label} cannot deserialize the engine: {why}. Rebuild "
                                 "it here with `maskrt build`")
        self._engine = engine

        # the contract, from the engine itself
        table, profile = engine_io_table(trt, engine)
        lo, hi = check_engine_io(table, self._config, profile=profile, source=src)
        if (lo, hi) != (self._min_batch, self._max_batch):
            raise ModelLoadError(f"{src}: the engine takes batches {lo}..{hi} but its sidecar says "
                                 f"{self._min_batch}..{self._max_batch}; rebuild it with `maskrt build`")

        # buffers for the maximum batch, the shared scratch memory, one stream
        K, M = int(self._config.detections_per_img), int(self._config.mask_resolution)
        h, w = self.input_size
        rows = {INPUT_NAME: (np.dtype(np.uint8), (h, w, 3))}
        for name, shape in expected_output_shapes(1, K, M).items():
            rows[name] = (OUTPUT_DTYPES[name], shape[1:])
        for name, (dtype, row_shape) in rows.items():
            buf = _Buffer(name, dtype, row_shape, hi)
            self._buffers[name] = buf
            buf.host_ptr = self._cuda(cudart.cudaMallocHost(buf.nbytes), f"cudaMallocHost({buf.nbytes}) for '{name}'")
            buf.map_host()
            buf.device_ptr = self._cuda(cudart.cudaMalloc(buf.nbytes), f"cudaMalloc({buf.nbytes}) for '{name}'")
        size = getattr(engine, "device_memory_size_v2", None)  # TensorRT >= 10.1
        if size is None:
            size = engine.device_memory_size
        self._scratch_nbytes = max(int(size), 1)
        self._scratch_ptr = self._cuda(cudart.cudaMalloc(self._scratch_nbytes),
                                       f"cudaMalloc({self._scratch_nbytes}) for TensorRT's scratch memory")
        # NOTE: non-blocking: no implicit synchronisation with the legacy default stream, which
        # would also make CUDA-graph capture fail.
        self._stream = self._cuda(cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking),
                                  "cudaStreamCreateWithFlags")
        if not self._cuda_graph:
            self._make_context(0)

    def _make_context(self, key: int) -> Any:
        """An execution context on the shared scratch memory with every tensor address set."""
        trt, src = self._trt, str(self._path)
        n_err = self._n_errors()
        ctx = self._engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
        if ctx is None:
            raise BackendError(f"{src}: TensorRT could not create an execution context: "
                               f"{self._trt_errors_since(n_err) or 'see its messages'}")
        if hasattr(ctx, "set_device_memory"):  # TensorRT >= 10.1
            ctx.set_device_memory(self._scratch_ptr, self._scratch_nbytes)
        else:
            ctx.device_memory = self._scratch_ptr
        for name, buf in self._buffers.items():
            if not ctx.set_tensor_address(name, int(buf.device_ptr)):
                raise BackendError(f"{src}: set_tensor_address('{name}') failed: {self._trt_errors_since(n_err)}")
        self._contexts[key] = ctx
        return ctx

    def _set_batch(self, key: int, b: int) -> Any:
        """The context for ``key`` with its input shape set to batch ``b`` and its output shapes
        checked against the contract (once per change of shape)."""
        ctx = self._contexts.get(key)
        if ctx is None:
            ctx = self._make_context(key)
        if self._context_batch.get(key) == b:
            return ctx
        src = str(self._path)
        h, w = self.input_size
        n_err = self._n_errors()
        if not ctx.set_input_shape(INPUT_NAME, (b, h, w, 3)):
            raise BackendError(f"{src}: TensorRT refused input shape [{b}, {h}, {w}, 3]: "
                               f"{self._trt_errors_since(n_err) or 'see its messages'}")
        want = expected_output_shapes(b, self.max_detections, self.mask_resolution)
        for name in OUTPUT_NAMES:
            got = tuple(int(d) for d in ctx.get_tensor_shape(name))
            if got != want[name]:
                dyn = " (a data-dependent shape: the contract's outputs are fixed-size)" if any(
                    d < 0 for d in got) else ""
                raise ContractError(f"{src}: for a batch of {b} the engine's output '{name}' has shape "
                                    f"{_shape_text(got)}; the contract's is {list(want[name])}{dyn}")
        self._context_batch[key] = b
        return ctx

    def _enqueue(self, ctx: Any, what: str) -> None:
        n_err = self._n_errors()
        if not ctx.execute_async_v3(int(self._stream)):
            raise BackendError(f"{self._path}: TensorRT execute_async_v3 failed ({what}): "
                               f"{self._trt_errors_since(n_err) or 'see its messages'}")

    def _capture(self, ctx: Any, b: int) -> bool:
        """Captures ``ctx``'s enqueue (shape batch ``b``) into a graph; True when it worked.
        Raises BackendError on failure unless ``cuda_graph="try"``."""
        cudart = self._cudart
        # NOTE: TensorRT finishes shape-dependent set-up (and may call non-capturable CUDA APIs)
        # on the first enqueue after set_input_shape; run it outside the capture. It computes this
        # batch's real outputs; the graph launch that follows computes them again.
        self._enqueue(ctx, f"warm-up before capturing batch {b}")
        self._cuda(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize (before capture)")
        # NOTE: thread-local capture mode: only this thread's non-capturable calls invalidate the
        # capture, so other pipeline threads using CUDA (e.g. onnxruntime) do not break it.
        self._cuda(cudart.cudaStreamBeginCapture(self._stream,
                                                 cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal),
                   "cudaStreamBeginCapture")
        reason = ""
        n_err = self._n_errors()
        try:
            ok = ctx.execute_async_v3(int(self._stream))
            if not ok:
                reason = f"execute_async_v3 failed during capture: {self._trt_errors_since(n_err) or 'no message'}"
        except Exception as e:  # TensorRT's bindings raise on some failures; the capture must still end
            reason = f"execute_async_v3 raised during capture: {e}"
        end = cudart.cudaStreamEndCapture(self._stream)  # always: leaves capture mode
        graph = end[1] if isinstance(end, tuple) and len(end) > 1 else None
        if int(end[0] if isinstance(end, tuple) else end) != 0:
            reason = reason or f"cudaStreamEndCapture failed: {getattr(end[0], 'name', end[0])}"
            graph = None
        if not reason:
            inst = cudart.cudaGraphInstantiateWithFlags(graph, 0)
            if int(inst[0]) == 0:
                self._graphs[b] = inst[1]
            else:
                reason = f"cudaGraphInstantiateWithFlags failed: {getattr(inst[0], 'name', inst[0])}"
        if graph is not None:
            cudart.cudaGraphDestroy(graph)  # the executable graph keeps what it needs
        if not reason:
            self._graph_status[b] = "captured"
            return True
        cudart.cudaGetLastError()  # clears the (non-sticky) capture error so later calls do not see it
        if self._cuda_graph != "try":
            raise BackendError(f"{self._path}: CUDA graph capture failed for a batch of {b}: {reason}. Engines with "
                               "data-dependent shapes, loops or plugins that synchronise cannot be captured; open "
                               "with cuda_graph=False, or cuda_graph='try' to run such batch sizes without a graph")
        log.warning("%s: CUDA graph capture failed for a batch of %d (%s); running this batch size without a graph "
                    "(cuda_graph='try')", self._path.name, b, reason)
        self._graph_status[b] = f"failed: {reason}"
        return False

    def _close(self) -> None:
        self._release(raise_errors=True)

    def _release(self, *, raise_errors: bool) -> None:
        """Frees everything :meth:`_open` made, in reverse order; safe on a partial open and twice.
        Every step runs even when one fails; the failures are raised together at the end."""
        cudart = self._cudart
        errors: list[str] = []

        def attempt(fn, *args) -> None:  # noqa: ANN001
            try:
                fn(*args)
            except Exception as e:
                errors.append(str(e))

        with self._lock:
            if cudart is not None:
                attempt(lambda: self._cuda(cudart.cudaSetDevice(self._device), "cudaSetDevice"))
                if self._stream is not None:  # nothing may still run on our buffers
                    attempt(lambda: self._cuda(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize"))
                for g in self._graphs.values():
                    attempt(lambda g=g: self._cuda(cudart.cudaGraphExecDestroy(g), "cudaGraphExecDestroy"))
            self._graphs.clear()
            self._graph_status.clear()
            # TensorRT objects: contexts, then the engine, then the runtime (dropping the last
            # reference destroys each; the scratch memory is ours and freed below).
            self._contexts.clear()
            self._context_batch.clear()
            self._engine = None
            self._runtime = None
            if cudart is not None:
                if self._scratch_ptr:
                    attempt(lambda: self._cuda(cudart.cudaFree(self._scratch_ptr), "cudaFree (scratch)"))
                for buf in self._buffers.values():
                    buf.host = None  # no numpy view may outlive the pinned memory
                    if buf.device_ptr:
                        attempt(lambda b=buf: self._cuda(cudart.cudaFree(b.device_ptr), f"cudaFree '{b.name}'"))
                    if buf.host_ptr:
                        attempt(lambda b=buf: self._cuda(cudart.cudaFreeHost(b.host_ptr), f"cudaFreeHost '{b.name}'"))
                if self._stream is not None:
                    attempt(lambda: self._cuda(cudart.cudaStreamDestroy(self._stream), "cudaStreamDestroy"))
            self._scratch_ptr = 0
            self._buffers = {}
            self._stream = None
            self._plugin_path = None
        if errors and raise_errors:
            raise BackendError(f"{self._path}: closing: " + "; ".join(errors))

    # ---------------------------------------------------------------- inference
    def _infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """``images``: validated C-contiguous uint8 [B, H, W, 3] with min_batch <= B <= max_batch.
        Returns the five contract outputs for the B images as fresh host arrays (copies of the
        pinned buffers, which the next call reuses)."""
        b = int(images.shape[0])
        cudart = self._cudart
        with self._lock:
            if self._stream is None:
                raise BackendError(f"{self!r} is not open")
            # NOTE: the CUDA current device is per thread; infer may run on any thread.
            self._cuda(cudart.cudaSetDevice(self._device), f"cudaSetDevice({self._device})")
            inp = self._buffers[INPUT_NAME]
            np.copyto(inp.host[:b], images)  # pinned staging: the H2D copy below is truly asynchronous
            H2D, D2H = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
            self._cuda(cudart.cudaMemcpyAsync(inp.device_ptr, inp.host_ptr, b * inp.row_nbytes, H2D, self._stream),
                       "cudaMemcpyAsync (images, host to device)")
            if not self._cuda_graph:
                self._enqueue(self._set_batch(0, b), f"batch of {b}")
            else:
                ctx = self._set_batch(b, b)
                if b not in self._graph_status:
                    self._capture(ctx, b)
                if b in self._graphs:
                    self._cuda(cudart.cudaGraphLaunch(self._graphs[b], self._stream), f"cudaGraphLaunch (batch {b})")
                else:
                    self._enqueue(ctx, f"batch of {b}, no graph")
            for name in OUTPUT_NAMES:
                buf = self._buffers[name]
                self._cuda(cudart.cudaMemcpyAsync(buf.host_ptr, buf.device_ptr, b * buf.row_nbytes, D2H, self._stream),
                           f"cudaMemcpyAsync ('{name}', device to host)")
            # NOTE: kernel faults (e.g. an illegal address in a plugin) surface here; they are
            # sticky: the CUDA context is unusable afterwards and the process must restart.
            self._cuda(cudart.cudaStreamSynchronize(self._stream), f"cudaStreamSynchronize (batch of {b})")
            return {name: self._buffers[name].host[:b].copy() for name in OUTPUT_NAMES}

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        graph = f" cuda_graph={self._cuda_graph!r}" if self._cuda_graph else ""
        return (f"<TrtBackend {self._path.name} {self._meta.precision} batch={self._min_batch}..{self._max_batch} "
                f"device={self._device}{graph} ({state})>")
