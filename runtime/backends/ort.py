"""``OrtBackend``: the deployment graph in ONNX Runtime, with explicit execution providers.

Everything that can be checked is checked before a session exists, from the file itself
(:mod:`.onnx_file`): the file is there and is a well-formed ONNX model, it carries maskrt
metadata (ModelConfig, flavour, format version), its flavour can run with what was registered
(the "trt" flavour's plugin nodes need the plugin ops as ONNX Runtime custom ops), and its
input/output names, dtypes and fixed dims match the contract and the ModelConfig. Then
:meth:`OrtBackend.open` creates the session and refuses it if ONNX Runtime dropped a requested
execution provider: ONNX Runtime falls back to the CPU with only a log line when, say, the CUDA
provider cannot load its libraries; this backend raises instead.

Inference binds the uint8 batch and the five outputs on the host with IO binding (one IOBinding
per call, so :meth:`OrtBackend.infer` is thread-safe like ``InferenceSession.run``), or calls
``session.run`` with ``io_binding=False``; both give identical outputs.

Imports numpy and onnxruntime only (no torch, no onnx).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from maskrt.runtime.config import ModelConfig
from maskrt.runtime.plugin_table import plugin_table_path, plugin_versions

from .base import (
    INPUT_NAME,
    OUTPUT_DTYPES,
    OUTPUT_NAMES,
    Backend,
    BackendError,
    ModelLoadError,
    ModelMetadata,
)
from .onnx_file import OnnxFileInfo, TensorInfo, read_onnx_file

__all__ = ["OPTIMIZATION_LEVELS", "PROVIDER_ALIASES", "OrtBackend"]

OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}

# Short names accepted in ``providers`` (e.g. from a command line), mapped to ONNX Runtime's names.
PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "dml": "DmlExecutionProvider",
}

# ONNX Runtime type strings of NodeArg.type -> numpy-style names (as onnx_file.TensorInfo.dtype).
_ORT_TYPES = {"float": "float32", "double": "float64"}


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _check_threads(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int (or None for ONNX Runtime's default), got {value!r}")
    return int(value)


def _check_providers(providers: Any) -> tuple[list[str], list[dict[str, str]]]:
    """``providers``: a name, or a sequence of names or ``(name, options dict)`` pairs (ONNX
    Runtime's own form), in priority order; short aliases (:data:`PROVIDER_ALIASES`) allowed.
    Returns (names, options). Raises ValueError for an empty list, a duplicate, or a provider
    this onnxruntime build does not have (listing the ones it has)."""
    if isinstance(providers, str):
        providers = [providers]
    if not isinstance(providers, Iterable):
        raise ValueError(f"providers must be a sequence of execution provider names, got {providers!r}")
    available = ort.get_available_providers()
    names: list[str] = []
    options: list[dict[str, str]] = []
    for p in providers:
        opts: Mapping[str, Any] = {}
        if isinstance(p, (tuple, list)) and len(p) == 2 and isinstance(p[1], Mapping):
            p, opts = p
        if not isinstance(p, str):
            raise ValueError(f"providers: each entry must be a name or (name, options dict), got {p!r}")
        name = PROVIDER_ALIASES.get(p.lower(), p)
        if name not in available:
            hint = ""
            if name in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
                hint = " (it needs the onnxruntime-gpu package, not onnxruntime, and a CUDA device)"
            raise ValueError(f"execution provider {p!r} is not available in this onnxruntime {ort.__version__}{hint}; "
                             f"available: {available}")
        if name in names:
            raise ValueError(f"providers: {name} is listed twice")
        names.append(name)
        options.append({str(k): str(v) for k, v in opts.items()})
    if not names:
        raise ValueError(f"providers must name at least one execution provider; available: {available}")
    return names, options


def _check_io(inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo], cfg: ModelConfig,
              source: str) -> tuple[int, int | None]:
    """Checks graph I/O against the contract and ``cfg``; returns the batch range (min, max)
    the graph accepts: ``(1, None)`` for a dynamic batch, ``(n, n)`` for a fixed one.
    Raises ModelLoadError naming the input/output and dim."""

    def bad(why: str) -> ModelLoadError:
        return ModelLoadError(f"{source}: {why}")

    H, W = (int(v) for v in cfg.input_size)
    if [i.name for i in inputs] != [INPUT_NAME]:
        raise bad(f"graph inputs are {[i.name for i in inputs]}; the deployment contract has exactly one input "
                  f"'{INPUT_NAME}' uint8 [B, {H}, {W}, 3]")
    x = inputs[0]
    if x.dtype != "uint8":
        raise bad(f"graph input '{INPUT_NAME}' is {x.dtype}; the contract's is uint8 BGR (the graph casts and "
                  "normalises)")
    if x.shape is None or len(x.shape) != 4:
        raise bad(f"graph input '{INPUT_NAME}' has shape {x.shape}; the contract's is [B, H, W, 3]")
    b, h, w, c = x.shape
    if c != 3:
        raise bad(f"graph input '{INPUT_NAME}' has {c} channels in the last axis; the contract's is 3 (BGR, NHWC)")
    if not (isinstance(h, int) and isinstance(w, int)):
        raise bad(f"graph input '{INPUT_NAME}' has a dynamic height/width {x.shape}; the contract needs the fixed "
                  f"input size {H}x{W} of the ModelConfig")
    if (h, w) != (H, W):
        raise bad(f"graph input '{INPUT_NAME}' is {h}x{w} but its ModelConfig says input_size {H}x{W}")
    batch = b if isinstance(b, int) else None
    if batch is not None and batch < 1:
        raise bad(f"graph input '{INPUT_NAME}' has batch dim {batch}")

    found = {o.name: o for o in outputs}
    missing = [n for n in OUTPUT_NAMES if n not in found]
    if missing:
        raise bad(f"graph outputs {[o.name for o in outputs]} lack {missing}; the contract's are {list(OUTPUT_NAMES)}")
    K, M = int(cfg.detections_per_img), int(cfg.mask_resolution)
    want: dict[str, tuple[int | str, ...]] = {"num_detections": ("B",), "boxes": ("B", K, 4), "scores": ("B", K),
                                              "classes": ("B", K), "masks": ("B", K, M, M)}
    for name in OUTPUT_NAMES:
        o = found[name]
        if o.dtype != OUTPUT_DTYPES[name].name:
            raise bad(f"graph output '{name}' is {o.dtype}; the contract's is {OUTPUT_DTYPES[name]}")
        spec = want[name]
        if o.shape is None or len(o.shape) != len(spec):
            raise bad(f"graph output '{name}' has shape {o.shape}; the contract's is {list(spec)}")
        for axis, (got, exp) in enumerate(zip(o.shape, spec, strict=True)):
            if not isinstance(got, int):
                continue  # a dynamic dim: validate_outputs checks the actual size at every call
            if exp == "B":
                if batch is None or got != batch:
                    raise bad(f"graph output '{name}' has a fixed batch dim {got} but the input batch is "
                              f"{batch if batch is not None else 'dynamic'}")
            elif got != exp:
                what = {K: "K = detections_per_img", M: "M = mask_resolution", 4: "4"}.get(exp, str(exp))
                raise bad(f"graph output '{name}' dim {axis} is {got}; the ModelConfig gives {exp} ({what})")
    return (batch, batch) if batch is not None else (1, None)


def _session_io(args) -> tuple[TensorInfo, ...]:
    """ONNX Runtime NodeArgs -> TensorInfo (type 'tensor(float)' -> 'float32')."""
    out = []
    for a in args:
        t = a.type or ""
        if t.startswith("tensor(") and t.endswith(")"):
            t = _ORT_TYPES.get(t[7:-1], t[7:-1])
        else:
            t = "non-tensor"
        shape = None if a.shape is None else tuple(d if isinstance(d, (int, str)) else None for d in a.shape)
        out.append(TensorInfo(a.name, t, shape))
    return tuple(out)


class OrtBackend(Backend):
    """The deployment graph in ONNX Runtime.

    Args:
        path: the ONNX model (written by export/onnx_export.py: maskrt metadata, contract I/O).
        providers: execution providers in priority order: names, or ``(name, options dict)``
            pairs; aliases ``cpu``, ``cuda``, ``tensorrt``, ... allowed. Each must be in
            ``onnxruntime.get_available_providers()`` (else ValueError listing those), and each
            must still be active in the created session (else :class:`BackendError` at open:
            no silent fallback). ONNX Runtime adds the CPU provider itself for nodes the
            others do not support; that per-node placement is normal and allowed.
        intra_op_threads: threads inside one op (``SessionOptions.intra_op_num_threads``);
            None: ONNX Runtime's default (one per physical core).
        inter_op_threads: threads across ops (``inter_op_num_threads``); used by ONNX Runtime
            only in parallel execution mode (``session_options.execution_mode``).
        optimization_level: "all" | "extended" | "basic" | "disable" (graph optimizations).
            None: "all", or the level already set in ``session_options`` when one is given.
        io_binding: bind input and outputs on the host with IOBinding (default) or call
            ``session.run``; the outputs are identical.
        session_options: an ``onnxruntime.SessionOptions`` to start from (the arguments above,
            and custom-op registration, are applied to it: it is modified).
        custom_op_library: path of a custom-op shared library to register
            (``SessionOptions.register_custom_ops_library``).
        register_custom_ops: a callable that registers custom ops on the session options; called
            once per open, after the settings above, before the session is created.

    The model file is read and checked at construction (:class:`ModelLoadError`, a ValueError,
    names the path and the cause); the session is created by :meth:`open`. ``infer`` is
    thread-safe while the backend is open.
    """

    name = "ort"

    def __init__(self, path: str | os.PathLike, *, providers: Any = ("CPUExecutionProvider",),
                 intra_op_threads: int | None = None, inter_op_threads: int | None = None,
                 optimization_level: str | None = None, io_binding: bool = True,
                 session_options: ort.SessionOptions | None = None, custom_op_library: str | os.PathLike | None = None,
                 register_custom_ops: Callable[[ort.SessionOptions], None] | None = None) -> None:
        super().__init__()
        # ---- arguments (all of them before touching the file)
        if not isinstance(path, (str, os.PathLike)):
            raise ValueError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        self._path = Path(path)
        self._requested, self._provider_options = _check_providers(providers)
        self._intra = _check_threads(intra_op_threads, "intra_op_threads")
        self._inter = _check_threads(inter_op_threads, "inter_op_threads")
        if optimization_level is not None and optimization_level not in OPTIMIZATION_LEVELS:
            raise ValueError(f"optimization_level must be one of {list(OPTIMIZATION_LEVELS)}, "
                             f"got {optimization_level!r}")
        if optimization_level is None and session_options is None:
            optimization_level = "all"
        self._level = optimization_level
        if not isinstance(io_binding, bool):
            raise ValueError(f"io_binding must be a bool, got {io_binding!r}")
        self._io_binding = io_binding
        if session_options is not None and not isinstance(session_options, ort.SessionOptions):
            raise ValueError(f"session_options must be an onnxruntime.SessionOptions, "
                             f"got {type(session_options).__name__}")
        self._user_options = session_options
        self._user_options_prepared = False  # custom ops are registered once per SessionOptions
        self._custom_op_library: Path | None = None
        if custom_op_library is not None:
            if not isinstance(custom_op_library, (str, os.PathLike)):
                raise ValueError(f"custom_op_library must be a path, got {type(custom_op_library).__name__}")
            self._custom_op_library = Path(custom_op_library)
            if not self._custom_op_library.is_file():
                raise ValueError(f"custom_op_library {self._custom_op_library} does not exist or is not a file")
        if register_custom_ops is not None and not callable(register_custom_ops):
            raise ValueError(f"register_custom_ops must be a callable taking onnxruntime.SessionOptions, "
                             f"got {register_custom_ops!r}")
        self._register_custom_ops = register_custom_ops

        # ---- the model file, before any session exists
        self._info: OnnxFileInfo = read_onnx_file(self._path)
        self._meta = ModelMetadata.from_props(self._info.metadata, str(self._path))
        self._check_flavour()
        self._min_batch, self._max_batch = _check_io(self._info.inputs, self._info.outputs, self._meta.config,
                                                     str(self._path))
        self._session: ort.InferenceSession | None = None

    # ---------------------------------------------------------------- checks
    def _check_flavour(self) -> None:
        """The graph's custom-domain nodes can run with what was registered; the trt flavour's
        plugins are the versions this install's CPU kernels implement (the plugin table)."""
        src = str(self._path)
        registered = self._custom_op_library is not None or self._register_custom_ops is not None
        custom = sorted(self._info.custom_ops)
        listed = ", ".join(f"{d}::{op}" for d, op in custom)
        if self._meta.flavour == "trt":
            if not registered:
                ops = f" ({listed})" if custom else ""
                raise ModelLoadError(
                    f"{src} is the 'trt' flavour: its plugin nodes{ops} need the maskrt plugin ops registered in "
                    "ONNX Runtime as custom ops; pass register_custom_ops=... (the CPU plugin ops, see "
                    "export/plugin_ops.py) or custom_op_library=..., or export the 'ort' flavour (standard ops "
                    "only) for ONNX Runtime")
            unlisted = sorted(op for _, op in custom if op not in self._meta.plugins)
            if unlisted:
                raise ModelLoadError(f"{src}: nodes {unlisted} are not among the plugins its metadata lists "
                                     f"({sorted(self._meta.plugins)})")
            table = plugin_versions()
            for name, version in sorted(self._meta.plugins.items()):
                if table.get(name) != version:
                    have = f"version {table[name]}" if name in table else "no such plugin"
                    raise ModelLoadError(f"{src} uses plugin {name} version {version}, but this install's plugin "
                                         f"table ({plugin_table_path()}) has {have}: re-export the model with this "
                                         "maskrt")
        elif custom and not registered:
            raise ModelLoadError(f"{src}: the graph has nodes in non-standard domains ({listed}) that ONNX Runtime "
                                 "cannot run without custom ops; pass custom_op_library=... or register_custom_ops=...")

    # ---------------------------------------------------------------- properties
    @property
    def path(self) -> Path:
        return self._path

    @property
    def config(self) -> ModelConfig:
        return self._meta.config

    @property
    def model_metadata(self) -> ModelMetadata:
        """The parsed maskrt metadata (config, flavour, format version, plugins)."""
        return self._meta

    @property
    def metadata(self) -> dict[str, str]:
        """Every ``metadata_props`` entry of the file (a copy), as ONNX Runtime's
        ``session.get_modelmeta().custom_metadata_map`` reports it."""
        return dict(self._info.metadata)

    @property
    def flavour(self) -> str:
        return self._meta.flavour

    @property
    def file_info(self) -> OnnxFileInfo:
        return self._info

    @property
    def min_batch(self) -> int:
        return self._min_batch

    @property
    def max_batch(self) -> int | None:
        return self._max_batch

    @property
    def io_binding(self) -> bool:
        return self._io_binding

    @property
    def requested_providers(self) -> list[str]:
        return list(self._requested)

    @property
    def providers(self) -> list[str]:
        """The session's providers when open (``session.get_providers()``), else the requested ones."""
        return self._session.get_providers() if self._session is not None else list(self._requested)

    @property
    def session(self) -> ort.InferenceSession:
        """The ONNX Runtime session, for advanced use (profiling, run options). Only while open."""
        if self._session is None:
            raise BackendError(f"{self!r} is not open: call open() first or use `with backend: ...`")
        return self._session

    # ---------------------------------------------------------------- lifecycle
    def _session_options(self) -> ort.SessionOptions:
        """The options this open uses: the caller's (modified; custom ops registered once) or fresh."""
        so = self._user_options if self._user_options is not None else ort.SessionOptions()
        if self._intra is not None:
            so.intra_op_num_threads = self._intra
        if self._inter is not None:
            so.inter_op_num_threads = self._inter
        if self._level is not None:
            so.graph_optimization_level = OPTIMIZATION_LEVELS[self._level]
        if self._user_options is not None and self._user_options_prepared:
            return so
        if self._custom_op_library is not None:
            try:
                so.register_custom_ops_library(str(self._custom_op_library))
            except Exception as e:  # ORT's pybind errors derive from Exception only
                raise ValueError(f"custom_op_library {self._custom_op_library}: ONNX Runtime cannot load it "
                                 f"({_first_line(e)})") from e
        if self._register_custom_ops is not None:
            self._register_custom_ops(so)
        self._user_options_prepared = self._user_options is not None
        return so

    def _open(self) -> None:
        so = self._session_options()
        src = str(self._path)
        try:
            session = ort.InferenceSession(src, sess_options=so, providers=self._requested,
                                           provider_options=self._provider_options)
        except Exception as e:  # InvalidProtobuf, InvalidGraph, NotImplemented (unknown op), Fail, ...
            raise ModelLoadError(f"{src}: ONNX Runtime cannot load the model: {_first_line(e)}") from e
        # NOTE: ONNX Runtime drops a provider it cannot initialise (missing CUDA/cuDNN libraries,
        # no device) with a warning and runs on the CPU; that is the silent fallback we refuse.
        active = session.get_providers()
        dropped = [p for p in self._requested if p not in active]
        if dropped:
            del session
            raise BackendError(f"{src}: ONNX Runtime did not enable {dropped} (the session runs on {active}); "
                               "refusing to fall back silently: check the provider's libraries and device, or "
                               "request the providers that are active")
        # The file was read before the session existed; make sure ONNX Runtime sees the same model
        # (the file could have been replaced in between).
        meta = dict(session.get_modelmeta().custom_metadata_map)
        if meta != self._info.metadata:
            raise ModelLoadError(f"{src}: the model's metadata changed between reading the file and loading it; "
                                 "create the backend again")
        _check_io(_session_io(session.get_inputs()), _session_io(session.get_outputs()), self._meta.config, src)
        self._session = session

    def _close(self) -> None:
        # ONNX Runtime has no explicit release: dropping the last reference frees the session.
        self._session = None

    # ---------------------------------------------------------------- inference
    def _infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """``images``: validated C-contiguous uint8 [B, H, W, 3]; returns the five contract outputs
        as host numpy arrays (fresh copies owned by the caller)."""
        session = self.session
        try:
            if self._io_binding:
                # NOTE: bind_cpu_input wraps the numpy buffer without a copy (hence C-contiguity,
                # ensured by validate_images); `images` stays referenced until the run returns.
                binding = session.io_binding()
                binding.bind_cpu_input(INPUT_NAME, images)
                for name in OUTPUT_NAMES:
                    binding.bind_output(name, "cpu")
                session.run_with_iobinding(binding)
                arrays = binding.copy_outputs_to_cpu()
            else:
                arrays = session.run(list(OUTPUT_NAMES), {INPUT_NAME: images})
        except Exception as e:  # ORT's errors derive from Exception only
            raise BackendError(f"{self._path}: ONNX Runtime failed on a batch of {images.shape[0]}: "
                               f"{_first_line(e)}") from e
        return dict(zip(OUTPUT_NAMES, arrays, strict=True))

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        return f"<OrtBackend {self._path.name} flavour={self.flavour} providers={self._requested} ({state})>"
