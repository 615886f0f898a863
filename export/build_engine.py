"""``maskrt build``: a strongly typed TensorRT / TensorRT-RTX engine from the "trt" flavour graph.

Strongly typed only: every tensor's precision is the ONNX graph's, decided at export
(``maskrt export --precision fp32|fp16|int8``: fp16 casts with fp32 islands, INT8 as explicit
QuantizeLinear/DequantizeLinear). The same graph builds with TensorRT 10.x
(``NetworkDefinitionCreationFlag.STRONGLY_TYPED``), TensorRT 11.x (which builds nothing else) and
TensorRT-RTX; there is no builder precision flag and no implicit INT8 calibrator.

Steps, each reported with its time:

1. read the ONNX file and validate its maskrt metadata before anything else: flavour "trt", a
   valid ModelConfig, plugin versions equal to this install's plugin table, the ``images`` input
   uint8 ``[B, H, W, 3]``, the five contract outputs, and its precision: ``--fp16`` / ``--int8``
   must match it (a one-line error with the export command to run, nothing built);
2. import the runtime (:mod:`maskrt.runtime.trt_lib`: ``--runtime tensorrt|rtx``, else what is
   installed), find the GPU (TensorRT: required; TensorRT-RTX: optional, the engine targets the
   ``--compute-capability`` list, default all it supports but 7.5);
3. look the engine up in the engine cache (``~/.cache/maskrt/engines`` or
   ``$MASKRT_ENGINE_CACHE``; the key is :func:`maskrt.runtime.engine_meta.cache_key`);
4. load the plugin library ``libmaskrt_trt_plugins.so`` (``--plugins``, else
   ``$MASKRT_TRT_PLUGINS``, else next to the package / in the build folders) and check that
   every plugin of the model is registered -- only when the model has plugin nodes;
5. parse with the ONNX parser (errors reported node by node) into a strongly typed network, set
   the optimisation profile of ``images`` over ``--batch-range``, the workspace limit, the
   timing cache (TensorRT), the target compute capabilities (TensorRT-RTX);
6. build, write the engine and its sidecar ``<engine>.json`` atomically, fill the cache, save
   the timing cache.

Everything before the TensorRT import runs (and is tested) on machines without TensorRT. The
module imports neither torch nor TensorRT at import time; onnx is imported when a model is read.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import maskrt
from maskrt.runtime.backends.base import INPUT_NAME, OUTPUT_NAMES
from maskrt.runtime.cli import renamed_option
from maskrt.runtime.config import ModelConfig
from maskrt.runtime.engine_meta import (
    PRECISIONS,
    EngineMeta,
    EngineMetaError,
    atomic_write_bytes,
    cache_key,
    check_batch_profile,
    check_compatible,
    current_environment,
    engine_cache_dir,
    read_engine_meta,
    sidecar_path,
    write_engine_meta,
)
from maskrt.runtime.model_meta import FORMAT_VERSION as ONNX_FORMAT_VERSION
from maskrt.runtime.model_meta import (
    META_CALIBRATION,
    META_CONFIG,
    META_FLAVOUR,
    META_FORMAT,
    META_PLUGINS,
    META_PRECISION,
)
from maskrt.runtime.plugin_table import load_plugin_table, plugin_versions
from maskrt.runtime.trt_lib import (
    ENV_PLUGINS,
    PLUGIN_LIBRARY_NAME,
    RTX_COMPUTE_CAPABILITIES,
    RTX_DEFAULT_TARGETS,
    RUNTIMES,
    PluginLibraryError,
    TensorRTUnavailable,
    TrtLib,
    import_tensorrt,
    load_plugin_library,
    trt_logger,
)
from maskrt.runtime.trt_lib import find_plugin_library as _find_plugin_library

__all__ = [
    "BuildResult", "EngineBuildError", "EngineCache", "OnnxModelError", "OnnxModelInfo", "PluginLibraryError",
    "TensorRTUnavailable", "add_build_arguments", "build_engine", "find_plugin_library", "read_onnx_model",
    "run_build",
]

log = logging.getLogger("maskrt.build")

DEFAULT_WORKSPACE_MIB = 2048
_ONNX_UINT8 = 2  # onnx.TensorProto.UINT8, spelled out so this constant needs no onnx import


class OnnxModelError(ValueError):
    """The ONNX file is unreadable or is not a maskrt "trt" export this maskrt can build."""


class EngineBuildError(RuntimeError):
    """TensorRT's parser or builder failed, or the build cannot be set up as asked."""


# ============================================================================ ONNX metadata
@dataclass(frozen=True)
class OnnxModelInfo:
    """A validated maskrt "trt" ONNX file."""

    path: Path
    data: bytes  # the file's bytes (what the parser gets)
    sha256: str
    config: ModelConfig
    flavour: str
    plugins: dict[str, str]  # {plugin name: version} the graph uses
    batch_dim: int | None  # the fixed batch of ``images``, or None when it is dynamic
    precision: str = "fp32"  # the graph's (maskrt export --precision)
    calibration: dict[str, Any] | None = None  # int8: what the Q/DQ scales were calibrated on


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def read_onnx_model(path: str | os.PathLike, *, table: Mapping[str, Any] | None = None) -> OnnxModelInfo:
    """Read ``path`` and validate it as a maskrt "trt" export (see the module docstring).

    ``table``: the plugin table to compare plugin versions with (default: this install's).
    Raises OnnxModelError with one line saying what is wrong and what to do.
    """
    path = Path(path)
    if not path.is_file():
        raise OnnxModelError(f"{path}: no such ONNX file")
    data = path.read_bytes()
    if not data:
        raise OnnxModelError(f"{path}: empty file, not an ONNX model")
    try:
        import onnx
    except ImportError:
        raise RuntimeError("reading the ONNX model needs the onnx package: pip install onnx") from None
    try:
        # NOTE: external tensor data is not loaded: only metadata and graph I/O are checked here;
        # TensorRT's parser reads the weights itself (it gets the file path for that).
        model = onnx.load_model_from_string(data)
    except Exception as e:  # google.protobuf DecodeError and friends
        raise OnnxModelError(f"{path}: not a readable ONNX model (truncated or corrupt?): {_first_line(e)}") from None
    g = model.graph
    if not g.node or not g.output:
        raise OnnxModelError(f"{path}: contains no graph (truncated, or not an ONNX model)")
    meta = {p.key: p.value for p in model.metadata_props}
    if not any(k.startswith("maskrt.") for k in meta):
        raise OnnxModelError(f"{path}: has no maskrt metadata: export the model with `maskrt export --flavour trt`")
    fmt = meta.get(META_FORMAT)
    if fmt != ONNX_FORMAT_VERSION:
        raise OnnxModelError(f"{path}: maskrt format version {fmt!r}, this maskrt builds version "
                             f"{ONNX_FORMAT_VERSION!r}: export it again with this maskrt")
    flavour = meta.get(META_FLAVOUR)
    if flavour != "trt":
        what = ("the 'ort' flavour (standard ops for ONNX Runtime, no plugin nodes)" if flavour == "ort"
                else f"flavour {flavour!r}")
        raise OnnxModelError(f"{path}: was exported as {what}; TensorRT builds the plugin graph: export it with "
                             f"`maskrt export --flavour trt`")
    if META_CONFIG not in meta:
        raise OnnxModelError(f"{path}: has no {META_CONFIG} metadata (the ModelConfig): export it again with "
                             f"`maskrt export --flavour trt`")
    try:
        config = ModelConfig.from_json(meta[META_CONFIG])
    except (TypeError, ValueError) as e:
        raise OnnxModelError(f"{path}: invalid {META_CONFIG} metadata: {_first_line(e)}") from None
    try:
        plugins = json.loads(meta[META_PLUGINS])
    except KeyError:
        raise OnnxModelError(f"{path}: has no {META_PLUGINS} metadata: export it again with "
                             f"`maskrt export --flavour trt`") from None
    except json.JSONDecodeError as e:
        raise OnnxModelError(f"{path}: {META_PLUGINS} metadata is not JSON ({e})") from None
    if not isinstance(plugins, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in plugins.items()):
        raise OnnxModelError(f"{path}: {META_PLUGINS} must be a JSON object {{name: version}}, got {plugins!r}")

    table = load_plugin_table() if table is None else table
    have = plugin_versions(dict(table))
    for name in sorted(plugins):
        if name not in have:
            raise OnnxModelError(f"{path}: uses plugin {name} v{plugins[name]}, which this maskrt's plugin table "
                                 f"does not have: build it with the maskrt that exported it")
        if have[name] != plugins[name]:
            raise OnnxModelError(f"{path}: uses plugin {name} v{plugins[name]}, this maskrt's plugin table has "
                                 f"v{have[name]}: export the model again with this maskrt")
    domain = table["onnx_domain"]
    for node in g.node:
        if node.domain != domain:
            continue
        if node.op_type not in plugins:
            raise OnnxModelError(f"{path}: node {node.name!r} is plugin {node.op_type}, which the {META_PLUGINS} "
                                 f"metadata does not list")
        for a in node.attribute:
            if a.name == "plugin_version" and a.s.decode("utf-8", "replace") != plugins[node.op_type]:
                raise OnnxModelError(f"{path}: node {node.name!r} ({node.op_type}) has plugin_version "
                                     f"{a.s.decode('utf-8', 'replace')!r}, metadata says {plugins[node.op_type]!r}")

    precision = meta.get(META_PRECISION, "fp32")
    if precision not in PRECISIONS:
        raise OnnxModelError(f"{path}: {META_PRECISION} metadata is {precision!r}, expected one of {PRECISIONS}")
    calibration = None
    if precision == "int8":
        try:
            calibration = json.loads(meta[META_CALIBRATION])
        except (KeyError, json.JSONDecodeError):
            raise OnnxModelError(f"{path}: an int8 graph without valid {META_CALIBRATION} metadata: export it again "
                                 f"with `maskrt export --precision int8 --calib DIR`") from None
        if not isinstance(calibration, dict):
            raise OnnxModelError(f"{path}: {META_CALIBRATION} metadata must be a JSON object")

    initializers = {t.name for t in g.initializer}
    inputs = [i for i in g.input if i.name not in initializers]
    if [i.name for i in inputs] != [INPUT_NAME]:
        raise OnnxModelError(f"{path}: expected the single graph input '{INPUT_NAME}', got {[i.name for i in inputs]}")
    t = inputs[0].type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    in_h, in_w = config.input_size
    if t.elem_type != _ONNX_UINT8 or len(dims) != 4 or dims[1:] != [in_h, in_w, 3]:
        shown = ["?" if d is None else d for d in dims]
        raise OnnxModelError(f"{path}: input '{INPUT_NAME}' must be uint8 [B, {in_h}, {in_w}, 3] (the config's "
                             f"input size), got elem_type {t.elem_type} {shown}")
    missing = [n for n in OUTPUT_NAMES if n not in {o.name for o in g.output}]
    if missing:
        raise OnnxModelError(f"{path}: missing contract output(s) {missing}")
    batch_dim = dims[0] if dims[0] else None
    return OnnxModelInfo(path, data, hashlib.sha256(data).hexdigest(), config, flavour, dict(plugins), batch_dim,
                         precision, calibration)


# ============================================================================ engine cache
class EngineCache:
    """Engines by :func:`cache_key`: ``<root>/<key>.engine`` + its sidecar. An entry counts only
    when its sidecar is valid and the engine's size and sha256 match the sidecar (so a torn or
    corrupted entry is rebuilt, not used)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else engine_cache_dir()

    def path(self, key: str) -> Path:
        return self.root / f"{key}.engine"

    def lookup(self, key: str) -> tuple[bytes, EngineMeta] | None:
        p = self.path(key)
        if not p.is_file():
            return None
        try:
            meta = read_engine_meta(p)
            data = p.read_bytes()
        except (EngineMetaError, OSError) as e:
            log.warning("engine cache: ignoring broken entry %s (%s)", p.name, e)
            return None
        if len(data) != meta.engine_size or hashlib.sha256(data).hexdigest() != meta.engine_sha256:
            log.warning("engine cache: ignoring %s: the engine does not match its sidecar", p.name)
            return None
        return data, meta

    def store(self, key: str, data: bytes, meta: EngineMeta) -> None:
        p = self.path(key)
        try:  # engine first, sidecar last: a reader never sees a sidecar without its engine
            atomic_write_bytes(p, data)
            write_engine_meta(meta, p)
        except OSError as e:
            log.warning("engine cache: could not store %s (%s)", p, e)


# ============================================================================ plugin library
def find_plugin_library(explicit: str | os.PathLike | None = None, *,
                        search_dirs: Sequence[str | os.PathLike] | None = None) -> Path:
    """The plugin library to load: ``explicit`` (``--plugins``), else ``$MASKRT_TRT_PLUGINS``, else
    the first ``libmaskrt_trt_plugins.so`` in ``search_dirs`` (default: the same folders as
    TrtBackend searches, :func:`maskrt.runtime.trt_lib.default_plugin_search_dirs`)."""
    return _find_plugin_library(explicit=explicit, search_dirs=search_dirs)


# ============================================================================ TensorRT helpers
def _parser_errors(parser) -> str:
    """One line: every error of TensorRT's ONNX parser with its node."""
    parts = []
    for i in range(parser.num_errors):
        e = parser.get_error(i)
        where = f"node {e.node()}"
        with contextlib.suppress(Exception):  # node_name/node_operator: TensorRT >= 8.6
            name, op = e.node_name(), e.node_operator()
            if name or op:
                where += f" '{name}' ({op})"
        parts.append(f"{where}: {e.desc()} [{e.code()}]")
    return "; ".join(parts) or "no details"


# ============================================================================ build
@dataclass(frozen=True)
class BuildResult:
    engine_path: Path
    sidecar_path: Path
    meta: EngineMeta
    cached: bool  # True: copied from the engine cache, not built
    seconds: float


class _Steps:
    """Progress lines: ``<step>: <detail> (<seconds> s)``; long steps also announce their start."""

    def __init__(self, progress: Callable[[str], None] | None):
        self.progress = progress

    def say(self, text: str) -> None:
        if self.progress is not None:
            self.progress(text)

    @contextlib.contextmanager
    def __call__(self, what: str, *, announce: bool = False):
        t0 = time.perf_counter()
        if announce:
            self.say(f"{what} ...")
        detail: dict[str, str] = {}
        yield detail
        self.say(f"{what}: {detail.get('text', 'done')} ({time.perf_counter() - t0:.1f} s)")


def _export_command(info: OnnxModelInfo, precision: str) -> str:
    calib = " --calib DIR" if precision == "int8" else ""
    out = info.path.with_name(f"{info.path.stem}_{precision}.onnx")
    return f"maskrt export --flavour trt --precision {precision}{calib} --out {out}"


def check_precision(info: OnnxModelInfo, requested: str | None) -> str:
    """The precision to build: the graph's. ``requested`` (``--fp16`` / ``--int8``; None: take the
    graph's) must equal it; a mismatch is an OnnxModelError naming the export command to run."""
    if requested is None or requested == info.precision:
        return info.precision
    if requested not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {requested!r}")
    flag = "no precision flag" if requested == "fp32" else f"--{requested}"
    raise OnnxModelError(f"{info.path}: the graph is {info.precision} but {flag} asks for {requested}: builds are "
                         f"strongly typed (the precision is the graph's): run `{_export_command(info, requested)}` "
                         f"and build that")


def parse_compute_capabilities(values: Sequence[str] | None) -> tuple[str, ...]:
    """TensorRT-RTX targets as "major.minor" (``8.6``, ``86`` or ``sm_86``); default
    :data:`RTX_DEFAULT_TARGETS` (all it supports but Turing, see there)."""
    if not values:
        return RTX_DEFAULT_TARGETS
    out = []
    for v in values:
        t = str(v).strip().lower().removeprefix("sm_").removeprefix("sm")
        if "." not in t and t.isdigit() and len(t) in (2, 3):
            t = f"{t[:-1]}.{t[-1]}"
        if t not in RTX_COMPUTE_CAPABILITIES:
            raise ValueError(f"--compute-capability {v}: TensorRT-RTX targets {', '.join(RTX_COMPUTE_CAPABILITIES)}")
        out.append(t)
    return tuple(sorted(set(out), key=lambda c: tuple(int(x) for x in c.split("."))))


def _set_rtx_targets(lib: TrtLib, config: Any, ccs: Sequence[str]) -> None:
    cc_enum = lib.trt.ComputeCapability
    config.num_compute_capabilities = len(ccs)
    for i, cc in enumerate(ccs):
        config.set_compute_capability(getattr(cc_enum, "SM" + cc.replace(".", "")), i)


def build_engine(onnx_path: str | os.PathLike, out_path: str | os.PathLike, *, precision: str | None = None,
                 batch: Sequence[int] = (1, 1, 1), workspace_mib: int = DEFAULT_WORKSPACE_MIB,
                 timing_cache: str | os.PathLike | None = None, plugins: str | os.PathLike | None = None,
                 runtime: str | None = None, compute_capabilities: Sequence[str] | None = None,
                 use_cache: bool = True, cache_dir: str | os.PathLike | None = None,
                 progress: Callable[[str], None] | None = None) -> BuildResult:
    """Build a strongly typed engine from a maskrt "trt" ONNX file (see the module docstring).

    Args:
        onnx_path: the ``maskrt export --flavour trt [--precision ...]`` output.
        out_path: the engine file to write; its sidecar is ``<out_path>.json``.
        precision: None (the graph's), or "fp32" / "fp16" / "int8", which must be the graph's.
        batch: (min, opt, max) of the optimisation profile of ``images``'s batch dimension.
        workspace_mib: the workspace memory pool limit.
        timing_cache: a timing cache file to load (if it exists) and save after the build.
        plugins: the plugin library (else ``$MASKRT_TRT_PLUGINS``, else searched).
        runtime: "tensorrt" or "rtx" (None: what is installed, TensorRT first).
        compute_capabilities: TensorRT-RTX targets ("8.6", ...; default all it supports).
        use_cache: look up / fill the engine cache.
        cache_dir: the engine cache folder (default :func:`engine_cache_dir`).
        progress: called with one line per step.
    """
    t_start = time.perf_counter()
    steps = _Steps(progress)
    onnx_path, out_path = Path(onnx_path), Path(out_path)
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
    if runtime is not None and runtime not in RUNTIMES:
        raise ValueError(f"--runtime: expected one of {RUNTIMES}, got {runtime!r}")
    lo, opt, hi = check_batch_profile(tuple(batch), "--batch-range")
    if not isinstance(workspace_mib, int) or isinstance(workspace_mib, bool) or workspace_mib < 1:
        raise ValueError(f"workspace: expected a positive number of MiB, got {workspace_mib!r}")
    if out_path.name.endswith(".json"):
        raise ValueError(f"--out {out_path}: the engine file must not end in .json (that is its sidecar's name)")
    if out_path.resolve() == onnx_path.resolve():
        raise ValueError("--out must not be the ONNX file")
    if compute_capabilities and runtime == "tensorrt":
        raise ValueError("--compute-capability is for --runtime rtx (TensorRT builds for the GPU it runs on)")
    targets = parse_compute_capabilities(compute_capabilities)

    # 1. the ONNX file, before anything needs TensorRT
    table = load_plugin_table()
    with steps("read ONNX") as d:
        info = read_onnx_model(onnx_path, table=table)
        precision = check_precision(info, precision)
        d["text"] = (f"{info.config.name}, input {info.config.input_size[0]}x{info.config.input_size[1]}, "
                     f"{precision}, {len(info.plugins)} plugin(s), {len(info.data) / 2**20:.1f} MiB")
    if info.batch_dim is not None and (lo, opt, hi) != (info.batch_dim,) * 3:
        raise ValueError(f"{onnx_path}: input '{INPUT_NAME}' has a fixed batch of {info.batch_dim}: use --batch-range "
                         f"{info.batch_dim} {info.batch_dim} {info.batch_dim} (or export with a dynamic batch)")

    # 2. the runtime and the GPU
    with steps("runtime") as d:
        lib = import_tensorrt(runtime)
        if compute_capabilities and lib.kind != "rtx":
            raise ValueError(f"--compute-capability is for TensorRT-RTX; this is {lib.label}")
        env = current_environment(plugins=plugin_versions(table), runtime=lib.kind)
        if lib.kind == "tensorrt":
            if env.gpu_name is None or env.compute_capability is None:
                raise EngineBuildError(f"{lib.label} builds on the GPU the engine is for, and none was found (install "
                                       f"cuda-python for your CUDA major version, e.g. pip install "
                                       f"'cuda-python>=12,<13', or make nvidia-smi available); TensorRT-RTX builds "
                                       f"without a GPU: --runtime rtx")
            ccs: tuple[str, ...] = (env.compute_capability,)
            where = f"on {env.gpu_name} (sm_{env.compute_capability.replace('.', '')})"
        else:
            ccs = targets
            where = (f"for sm_{', sm_'.join(c.replace('.', '') for c in ccs)}"
                     + (f" (GPU here: {env.gpu_name})" if env.gpu_name else " (no GPU here: CPU-only build)"))
        d["text"] = f"{lib.label} {where}"

    key = cache_key(onnx_sha256=info.sha256, precision=precision, batch=(lo, opt, hi), tensorrt_version=lib.version,
                    compute_capability=ccs[0] if lib.kind == "tensorrt" else list(ccs), plugins=info.plugins,
                    calibration_sha256=info.calibration.get("sha256", "") if info.calibration is not None else None,
                    gpu_name=env.gpu_name if lib.kind == "tensorrt" else None, workspace_mib=workspace_mib,
                    runtime=lib.kind)

    # 3. the engine cache
    cache = EngineCache(cache_dir) if use_cache else None
    if cache is not None:
        hit = cache.lookup(key)
        if hit is not None:
            data, meta = hit
            try:
                check_compatible(meta, env)
            except Exception as e:  # the key says it matches; be safe anyway
                log.warning("engine cache: ignoring %s (%s)", key[:12], e)
            else:
                with steps("engine cache") as d:
                    atomic_write_bytes(out_path, data)
                    side = write_engine_meta(meta, out_path)
                    d["text"] = f"hit {key[:12]}, copied to {out_path}"
                return BuildResult(out_path, side, meta, True, time.perf_counter() - t_start)

    # 4. plugins
    trt = lib.trt
    logger = trt_logger(lib)
    n_err = logger.count
    # NOTE: the builder first: TensorRT's logger finder hands plugins the logger of an existing
    # builder/runtime; a library loaded before any exists got no logger (its messages went to stderr).
    builder = trt.Builder(logger)
    lib_path = None
    if info.plugins:
        with steps("plugins") as d:
            lib_path = find_plugin_library(plugins)
            load_plugin_library(lib, lib_path, info.plugins, table["namespace"])
            d["text"] = f"{lib_path} ({', '.join(sorted(info.plugins))})"

    # 5. parse and configure
    network = lib.strongly_typed_network(builder)
    parser = trt.OnnxParser(network, logger)
    with steps("parse ONNX") as d:
        if not parser.parse(info.data, path=str(onnx_path.resolve())):
            raise EngineBuildError(f"{lib.label}'s ONNX parser failed on {parser.num_errors} error(s): "
                                   f"{_parser_errors(parser)}")
        d["text"] = f"{network.num_layers} layers, strongly typed"
    inp = next((network.get_input(i) for i in range(network.num_inputs)
                if network.get_input(i).name == INPUT_NAME), None)
    in_h, in_w = info.config.input_size
    if inp is None or len(inp.shape) != 4 or tuple(inp.shape)[1:] != (in_h, in_w, 3):
        shape = None if inp is None else tuple(inp.shape)
        raise EngineBuildError(f"the parsed network's input '{INPUT_NAME}' is {shape}, expected [B, {in_h}, {in_w}, 3]")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, (lo, in_h, in_w, 3), (opt, in_h, in_w, 3), (hi, in_h, in_w, 3))
    config.add_optimization_profile(profile)
    if hasattr(trt.BuilderFlag, "TF32"):
        # NOTE: TF32 (10-bit mantissa) matmul/conv is on by default on Ampere and later, also for
        # the fp32 tensors of a strongly typed network; fp32 here means fp32 (ONNX Runtime parity).
        config.clear_flag(trt.BuilderFlag.TF32)
    if lib.kind == "rtx":
        _set_rtx_targets(lib, config, ccs)
    tcache_path = Path(timing_cache) if timing_cache is not None else None
    if tcache_path is not None:
        blob = tcache_path.read_bytes() if tcache_path.is_file() else b""
        try:
            tcache = config.create_timing_cache(blob)
        except Exception:  # a corrupt file: TensorRT may raise instead of returning None
            tcache = None
        if tcache is None and blob:
            log.warning("timing cache %s is unreadable by %s: starting an empty one", tcache_path, lib.label)
            tcache = config.create_timing_cache(b"")
        # NOTE: ignore_mismatch=False: a cache from another GPU / TensorRT is refused, not used.
        if tcache is None or not config.set_timing_cache(tcache, False):
            log.warning("timing cache %s was not accepted: building without it", tcache_path)
            tcache_path = None

    # 6. build and write
    with steps(f"build {precision} engine (batch {lo}..{hi}, workspace {workspace_mib} MiB)", announce=True) as d:
        plan = builder.build_serialized_network(network, config)
        if plan is None or plan.nbytes == 0:
            errs = logger.errors_since(n_err)
            why = errs[-1] if errs else "see its messages above"
            raise EngineBuildError(f"{lib.label} could not build the engine: {why}")
        data = bytes(memoryview(plan))
        d["text"] = f"{len(data) / 2**20:.1f} MiB"

    meta = EngineMeta(
        model_config=info.config.to_dict(),
        tensorrt_version=lib.version,
        gpu_name=env.gpu_name,
        compute_capability=env.compute_capability if lib.kind == "tensorrt" else None,
        plugins=info.plugins,
        plugin_library=lib_path.name if lib_path is not None else None,
        onnx_sha256=info.sha256,
        precision=precision,
        batch=(lo, opt, hi),
        workspace_mib=workspace_mib,
        engine_sha256=hashlib.sha256(data).hexdigest(),
        engine_size=len(data),
        created_at=_dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        maskrt_version=maskrt.__version__,
        calibration=info.calibration,
        runtime=lib.kind,
        compute_capabilities=ccs,
    )
    with steps("write") as d:
        atomic_write_bytes(out_path, data)
        side = write_engine_meta(meta, out_path)
        if tcache_path is not None:
            atomic_write_bytes(tcache_path, bytes(memoryview(config.get_timing_cache().serialize())))
        if cache is not None:
            cache.store(key, data, meta)
        d["text"] = f"{out_path}, {side.name}" + (f", cache {key[:12]}" if cache is not None else "")
    return BuildResult(out_path, side, meta, False, time.perf_counter() - t_start)


# ============================================================================ command line
def add_build_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``maskrt build``."""
    parser.description = ("Build a strongly typed TensorRT / TensorRT-RTX engine (+ its sidecar <engine>.json) from "
                          "a `maskrt export --flavour trt [--precision fp16|int8]` model.")
    parser.add_argument("--onnx", required=True, metavar="M.onnx", help="the trt-flavour ONNX model")
    parser.add_argument("--out", required=True, metavar="M.engine", help="the engine file to write")
    prec = parser.add_mutually_exclusive_group()
    prec.add_argument("--fp16", action="store_true",
                      help="check that the graph is fp16 (maskrt export --precision fp16); the graph decides")
    prec.add_argument("--int8", action="store_true",
                      help="check that the graph is int8 Q/DQ (maskrt export --precision int8 --calib DIR)")
    parser.add_argument("--runtime", choices=RUNTIMES, default=None,
                        help="tensorrt (TensorRT 10/11, needs the GPU) or rtx (TensorRT-RTX, builds without a GPU); "
                             "default: the one installed, tensorrt first")
    parser.add_argument("--compute-capability", nargs="+", metavar="CC", default=None,
                        help=f"--runtime rtx: target compute capabilities, of {' '.join(RTX_COMPUTE_CAPABILITIES)} "
                             f"(default {' '.join(RTX_DEFAULT_TARGETS)}: 7.5 cannot compile fp32 GEMMs)")
    parser.add_argument("--batch-range", type=int, nargs=3, metavar=("MIN", "OPT", "MAX"), default=[1, 1, 1],
                        help="batch range of the optimisation profile of 'images' (default 1 1 1)")
    renamed_option(parser, "--batch", "--batch-range MIN OPT MAX (--batch N is frames per inference)")
    parser.add_argument("--workspace", type=int, metavar="MiB", default=DEFAULT_WORKSPACE_MIB,
                        help=f"workspace limit in MiB (default {DEFAULT_WORKSPACE_MIB})")
    parser.add_argument("--timing-cache", metavar="FILE", default=None,
                        help="timing cache to load (if present) and save")
    parser.add_argument("--plugins", metavar="LIB", default=None,
                        help=f"the plugin library {PLUGIN_LIBRARY_NAME} (default: ${ENV_PLUGINS}, else searched "
                             f"next to the package and in build/)")
    parser.add_argument("--no-cache", action="store_true",
                        help="neither use nor fill the engine cache (~/.cache/maskrt/engines or $MASKRT_ENGINE_CACHE)")


def run_build(args: argparse.Namespace) -> int:
    """``maskrt build``: errors propagate as one-line exceptions (the CLI prints and exits 1)."""
    precision = "int8" if args.int8 else "fp16" if args.fp16 else None
    result = build_engine(
        args.onnx, args.out, precision=precision, batch=tuple(args.batch_range), workspace_mib=args.workspace,
        timing_cache=args.timing_cache, plugins=args.plugins, runtime=args.runtime,
        compute_capabilities=args.compute_capability, use_cache=not args.no_cache,
        progress=lambda line: print(f"maskrt build: {line}", flush=True),
    )
    m = result.meta
    how = "copied from the engine cache" if result.cached else "built"
    label = "TensorRT-RTX" if m.runtime == "rtx" else "TensorRT"
    where = m.gpu_name or "sm_" + ", sm_".join(c.replace(".", "") for c in m.compute_capabilities or ())
    print(f"maskrt build: {how} {result.engine_path} ({m.engine_size / 2**20:.1f} MiB, {m.precision}, {label} "
          f"{m.tensorrt_version}, {where}) and {sidecar_path(result.engine_path).name} in {result.seconds:.1f} s")
    return 0
