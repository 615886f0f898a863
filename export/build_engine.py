"""``maskrt build``: a TensorRT engine from the "trt" flavour ONNX graph, with its sidecar.

Steps, each reported with its time:

1. read the ONNX file and validate its maskrt metadata before anything else: flavour "trt" (the
   "ort" graph has no plugin nodes and is not what TensorRT should get), a valid ModelConfig,
   plugin versions equal to this install's plugin table, the ``images`` input uint8
   ``[B, H, W, 3]`` at the config's input size, the five contract outputs;
2. import TensorRT (>= 10: the plugins are IPluginV3), find the GPU (name, compute capability);
3. look the engine up in the engine cache (``~/.cache/maskrt/engines`` or
   ``$MASKRT_ENGINE_CACHE``; the key is :func:`maskrt.runtime.engine_meta.cache_key`);
4. load the plugin library ``libmaskrt_trt_plugins.so`` (``--plugins``, else
   ``$MASKRT_TRT_PLUGINS``, else next to the package / in the build folders) and check that
   every plugin of the model is registered -- only when the model has plugin nodes;
5. parse with TensorRT's ONNX parser (errors reported node by node), set the optimisation
   profile of ``images`` over the batch range, the precision flags, the workspace limit, the
   timing cache, the INT8 calibrator;
6. build, write the engine and its sidecar ``<engine>.json`` atomically, fill the cache, save
   the timing cache.

INT8 calibration (TensorRT 10's implicit quantization, ``IInt8EntropyCalibrator2``) reads the
images of a folder, letterboxed exactly as the runtime does (:mod:`maskrt.runtime.letterbox`),
in batches of the profile's ``opt`` size; the resulting calibration cache can be reused with
``--calib-cache`` alone. NOTE: TensorRT 11 removed the fp16/int8 builder flags and calibrators
(strong typing only): there, only fp32 engines are built; use TensorRT 10.x for fp16/int8.

Everything before the TensorRT import runs (and is tested) on machines without TensorRT. The
module imports neither torch nor TensorRT at import time; onnx is imported when a model is read.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as _dt
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

import maskrt
from maskrt.runtime.backends.trt import ENV_PLUGINS, PLUGIN_LIBRARY_NAME, PluginLibraryError
from maskrt.runtime.backends.trt import find_plugin_library as _find_plugin_library
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
    file_sha256,
    import_cudart,
    read_engine_meta,
    sidecar_path,
    write_engine_meta,
)
from maskrt.runtime.letterbox import letterbox
from maskrt.runtime.model_meta import FORMAT_VERSION as ONNX_FORMAT_VERSION
from maskrt.runtime.model_meta import META_CONFIG, META_FLAVOUR, META_FORMAT, META_PLUGINS
from maskrt.runtime.plugin_table import load_plugin_table, plugin_versions

__all__ = [
    "BuildResult", "CalibrationImages", "EngineBuildError", "EngineCache", "OnnxModelError", "OnnxModelInfo",
    "PluginLibraryError", "TensorRTUnavailable", "add_build_arguments", "build_engine", "find_plugin_library",
    "list_calibration_images", "read_onnx_model", "run_build",
]

log = logging.getLogger("maskrt.build")

# The metadata the exporter writes (keys shared through runtime/model_meta.py).
INPUT_NAME = "images"
OUTPUT_NAMES = ("num_detections", "boxes", "scores", "classes", "masks")

MIN_TENSORRT_MAJOR = 10
DEFAULT_WORKSPACE_MIB = 2048
DEFAULT_CALIB_BATCHES = 32
IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".pbm", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")

TENSORRT_MISSING = ("TensorRT is not installed: pip install 'maskrt[trt]' on a machine with an NVIDIA GPU "
                    "(on Jetson, use JetPack's python3-libnvinfer: see docs/jetson.md)")
_ONNX_UINT8 = 2  # onnx.TensorProto.UINT8, spelled out so this constant needs no onnx import


class OnnxModelError(ValueError):
    """The ONNX file is unreadable or is not a maskrt "trt" export this maskrt can build."""


class TensorRTUnavailable(RuntimeError):
    """TensorRT cannot be imported here (or is older than 10)."""




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
    return OnnxModelInfo(path, data, hashlib.sha256(data).hexdigest(), config, flavour, dict(plugins), batch_dim)


# ============================================================================ calibration input
def list_calibration_images(folder: str | os.PathLike) -> list[Path]:
    """The image files of ``folder`` (not recursive), sorted by name. Other files are skipped
    with a warning; a missing folder or one without images is a ValueError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"calibration folder {folder}: not a directory")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
    others = [p.name for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS]
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        log.warning("calibration: skipping %d file(s) that are not images: %s", len(others), shown)
    if not images:
        raise ValueError(f"calibration folder {folder} has no images ({', '.join(IMAGE_EXTENSIONS)})")
    return images


class CalibrationImages:
    """Batches of calibration input from the images of a folder.

    Each batch is uint8 ``[batch_size, H, W, 3]`` BGR, every image read with ``cv2.imread`` and
    letterboxed into ``input_size`` (H, W) exactly as the runtime does. Images are taken in name
    order; unreadable ones are skipped with a warning; at most ``max_batches`` batches, only
    full ones (a trailing partial batch is dropped).
    """

    def __init__(self, folder: str | os.PathLike, input_size: Sequence[int], *, batch_size: int = 1,
                 max_batches: int = DEFAULT_CALIB_BATCHES):
        for name, v in (("batch_size", batch_size), ("max_batches", max_batches)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name}: expected a positive integer, got {v!r}")
        self.folder = Path(folder)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.batch_size = batch_size
        self.max_batches = max_batches
        self.files = list_calibration_images(self.folder)

    @property
    def batch_nbytes(self) -> int:
        return self.batch_size * self.input_size[0] * self.input_size[1] * 3

    def sha256(self) -> str:
        """Hash of everything that decides the calibration: the files' names and bytes, the input
        size, the batch size and count."""
        h = hashlib.sha256(json.dumps({"input_size": list(self.input_size), "batch_size": self.batch_size,
                                       "max_batches": self.max_batches, "letterbox": 1}).encode())
        for p in self.files:
            h.update(p.name.encode("utf-8") + b"\0" + file_sha256(p).encode("ascii"))
        return h.hexdigest()

    def batches(self) -> Iterator[np.ndarray]:
        """Yield uint8 ``[batch_size, H, W, 3]`` arrays (a new array each time)."""
        produced, n = 0, 0
        batch = np.empty((self.batch_size, *self.input_size, 3), np.uint8)
        for p in self.files:
            image = cv2.imread(str(p), cv2.IMREAD_COLOR)  # BGR uint8 [h, w, 3], or None
            if image is None:
                log.warning("calibration: skipping %s: not a readable image", p.name)
                continue
            letterbox(image, self.input_size, out=batch[n])
            n += 1
            if n == self.batch_size:
                yield batch
                produced, n = produced + 1, 0
                if produced == self.max_batches:
                    return
                batch = np.empty_like(batch)
        if produced == 0:
            raise ValueError(f"calibration folder {self.folder}: fewer readable images than one batch "
                             f"({self.batch_size})")
        if n:
            log.info("calibration: dropped a partial batch of %d image(s)", n)


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
    the first ``libmaskrt_trt_plugins.so`` in ``search_dirs`` (default: the runtime's
    :func:`default_plugin_search_dirs`, so the builder and TrtBackend look in the same places)."""
    return _find_plugin_library(explicit=explicit, search_dirs=search_dirs)


_LOADED_LIBRARIES: dict[str, Any] = {}  # keeps loaded libraries (and TensorRT's handles) alive


def _registered(registry, name: str, version: str, namespace: str) -> bool:
    try:
        get = getattr(registry, "get_creator", None)  # TensorRT 10: any creator interface
        if get is not None:
            return get(name, version, namespace) is not None
        return registry.get_plugin_creator(name, version, namespace) is not None
    except Exception:
        return False


def load_plugin_library(trt, path: Path, plugins: Mapping[str, str], namespace: str) -> None:
    """Load ``path`` into this process and check that TensorRT's plugin registry then has every
    plugin of ``plugins`` ({name: version}) in ``namespace``.

    NOTE: a library can register its creators two ways: statically (``REGISTER_TENSORRT_PLUGIN``,
    runs when the library is loaded) or through the exported entry points ``getCreators`` /
    ``setLoggerFinder`` that ``IPluginRegistry.load_library`` (and trtexec ``--dynamicPlugins``)
    call. We dlopen it first (RTLD_GLOBAL: clear errors for missing dependencies, static
    registration), then call ``load_library`` only if plugins are still missing and the entry
    points exist, so creators are never registered twice.
    """
    registry = trt.get_plugin_registry()

    def missing() -> list[str]:
        return [f"{n} v{v}" for n, v in sorted(plugins.items()) if not _registered(registry, n, v, namespace)]

    if not missing():
        return  # already loaded in this process
    key = str(Path(path).resolve())
    try:
        lib = ctypes.CDLL(key, mode=ctypes.RTLD_GLOBAL)
    except OSError as e:
        raise PluginLibraryError(f"cannot load plugin library {path}: {e}") from None
    _LOADED_LIBRARIES[key] = lib
    if missing() and (hasattr(lib, "getCreators") or hasattr(lib, "getPluginCreators")):
        handle = registry.load_library(key)
        if handle is None:
            raise PluginLibraryError(f"TensorRT could not register the plugins of {path} (see its messages above)")
        _LOADED_LIBRARIES[key + "#tensorrt"] = handle
    still = missing()
    if still:
        raise PluginLibraryError(f"{path.name} does not register {', '.join(still)} in namespace '{namespace}': "
                                 f"rebuild the library from this checkout (its plugin table must match)")


# ============================================================================ TensorRT helpers
def _import_tensorrt():
    try:
        import tensorrt as trt  # type: ignore[import-not-found]
    except ImportError:
        raise TensorRTUnavailable(TENSORRT_MISSING) from None
    except OSError as e:  # the Python package is there, libnvinfer is not
        raise TensorRTUnavailable(f"TensorRT's Python package is installed but its libraries do not load ({e})") \
            from None
    major = _major(trt.__version__)
    if major < MIN_TENSORRT_MAJOR:
        raise TensorRTUnavailable(f"TensorRT {trt.__version__} is too old: maskrt's plugins are IPluginV3, which "
                                  f"needs TensorRT >= {MIN_TENSORRT_MAJOR}")
    return trt


def _major(version: str) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return 0


def _make_logger(trt):
    """A TensorRT logger that forwards warnings and errors to ours and keeps the errors (for the
    exception message when a step fails)."""
    severity = trt.ILogger.Severity
    errors_at = {severity.INTERNAL_ERROR, severity.ERROR}

    class _Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, sev, msg):
            if sev in errors_at:
                self.errors.append(str(msg))
                log.error("TensorRT: %s", msg)
            elif sev == severity.WARNING:
                log.warning("TensorRT: %s", msg)

    return _Logger()


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


def _cuda_call(cudart, result, what: str):
    """Check a cuda-python call's ``(err, *values)`` result; returns the value(s)."""
    err, *values = result
    if err != cudart.cudaError_t.cudaSuccess:
        raise EngineBuildError(f"{what} failed: {getattr(err, 'name', err)}")
    return values[0] if len(values) == 1 else values


def _make_calibrator(trt, cudart, source: CalibrationImages | None, cache_path: Path):
    """An ``IInt8EntropyCalibrator2`` over ``source`` (None: calibrate from ``cache_path`` only).

    NOTE: TensorRT swallows exceptions raised in ``get_batch`` (it reads them as "no more
    data"), so the first one is kept in ``error`` and re-raised by the caller after the build.
    NOTE: with ``source`` the cache file is written, never read: a stale cache from other images
    must not silently replace the calibration that was asked for.
    """

    class _Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.error: BaseException | None = None
            self.batches_used = 0
            self._it = source.batches() if source is not None else iter(())
            self._dptr = None
            if source is not None:
                self._dptr = _cuda_call(cudart, cudart.cudaMalloc(source.batch_nbytes), "cudaMalloc")

        def get_batch_size(self):
            return source.batch_size if source is not None else 1

        def get_batch(self, names, *args):
            if self.error is not None or source is None:
                return None
            try:
                if list(names) != [INPUT_NAME]:
                    raise EngineBuildError(f"calibration feeds only '{INPUT_NAME}', TensorRT asks for {list(names)}")
                batch = next(self._it, None)  # uint8 [B, H, W, 3], C-contiguous
                if batch is None:
                    return None
                _cuda_call(cudart, cudart.cudaMemcpy(self._dptr, batch.ctypes.data, batch.nbytes,
                                                     cudart.cudaMemcpyKind.cudaMemcpyHostToDevice), "cudaMemcpy")
                self.batches_used += 1
                return [int(self._dptr)]
            except BaseException as e:
                self.error = e
                return None

        def read_calibration_cache(self):
            if source is None and cache_path.is_file():
                data = cache_path.read_bytes()
                return data or None
            return None

        def write_calibration_cache(self, cache):
            try:
                atomic_write_bytes(cache_path, bytes(cache))
            except OSError as e:
                log.warning("calibration: could not write the cache %s (%s)", cache_path, e)

        def free(self):
            if self._dptr is not None:
                cudart.cudaFree(self._dptr)
                self._dptr = None

    return _Calibrator()


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


def build_engine(onnx_path: str | os.PathLike, out_path: str | os.PathLike, *, precision: str = "fp32",
                 calib_dir: str | os.PathLike | None = None, calib_cache: str | os.PathLike | None = None,
                 calib_batches: int = DEFAULT_CALIB_BATCHES, batch: Sequence[int] = (1, 1, 1),
                 workspace_mib: int = DEFAULT_WORKSPACE_MIB, timing_cache: str | os.PathLike | None = None,
                 plugins: str | os.PathLike | None = None, use_cache: bool = True,
                 cache_dir: str | os.PathLike | None = None,
                 progress: Callable[[str], None] | None = None) -> BuildResult:
    """Build a TensorRT engine from a maskrt "trt" ONNX file (see the module docstring).

    Args:
        onnx_path: the ``maskrt export --flavour trt`` output.
        out_path: the engine file to write; its sidecar is ``<out_path>.json``.
        precision: "fp32", "fp16" or "int8" (int8 also enables fp16 for layers left unquantized).
        calib_dir: int8: folder of calibration images.
        calib_cache: int8: calibration cache file (default ``<out_path>.calib``); written when
            calibrating from ``calib_dir``, read when ``calib_dir`` is not given.
        calib_batches: int8: at most this many calibration batches of ``batch[1]`` images.
        batch: (min, opt, max) of the optimisation profile of ``images``'s batch dimension.
        workspace_mib: TensorRT's workspace memory pool limit.
        timing_cache: a timing cache file to load (if it exists) and save after the build.
        plugins: the plugin library (else ``$MASKRT_TRT_PLUGINS``, else searched).
        use_cache: look up / fill the engine cache.
        cache_dir: the engine cache folder (default :func:`engine_cache_dir`).
        progress: called with one line per step.
    """
    t_start = time.perf_counter()
    steps = _Steps(progress)
    onnx_path, out_path = Path(onnx_path), Path(out_path)
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
    lo, opt, hi = check_batch_profile(tuple(batch), "batch")
    if not isinstance(workspace_mib, int) or isinstance(workspace_mib, bool) or workspace_mib < 1:
        raise ValueError(f"workspace: expected a positive number of MiB, got {workspace_mib!r}")
    if not isinstance(calib_batches, int) or isinstance(calib_batches, bool) or calib_batches < 1:
        raise ValueError(f"calib_batches: expected a positive integer, got {calib_batches!r}")
    if precision != "int8" and (calib_dir is not None or calib_cache is not None):
        raise ValueError("calibration (--calib, --calib-cache) is for --int8 only")
    if out_path.name.endswith(".json"):
        raise ValueError(f"--out {out_path}: the engine file must not end in .json (that is its sidecar's name)")
    if out_path.resolve() == onnx_path.resolve():
        raise ValueError("--out must not be the ONNX file")
    calib_cache_path = Path(calib_cache) if calib_cache is not None else out_path.with_name(out_path.name + ".calib")
    if precision == "int8" and calib_dir is None and not calib_cache_path.is_file():
        raise ValueError(f"--int8 needs --calib DIR (calibration images) or an existing --calib-cache "
                         f"(no {calib_cache_path})")

    # 1. the ONNX file, before anything needs TensorRT
    table = load_plugin_table()
    with steps("read ONNX") as d:
        info = read_onnx_model(onnx_path, table=table)
        d["text"] = (f"{info.config.name}, input {info.config.input_size[0]}x{info.config.input_size[1]}, "
                     f"{len(info.plugins)} plugin(s), {len(info.data) / 2**20:.1f} MiB")
    if info.batch_dim is not None and (lo, opt, hi) != (info.batch_dim,) * 3:
        raise ValueError(f"{onnx_path}: input '{INPUT_NAME}' has a fixed batch of {info.batch_dim}: use --batch "
                         f"{info.batch_dim} {info.batch_dim} {info.batch_dim} (or export with a dynamic batch)")
    source = None
    if precision == "int8" and calib_dir is not None:
        source = CalibrationImages(calib_dir, info.config.input_size, batch_size=opt, max_batches=calib_batches)

    # 2. TensorRT and the GPU
    with steps("TensorRT") as d:
        trt = _import_tensorrt()
        major = _major(trt.__version__)
        if major > MIN_TENSORRT_MAJOR and precision != "fp32":
            raise EngineBuildError(f"TensorRT {trt.__version__} removed the fp16/int8 builder flags and INT8 "
                                   f"calibration (strongly typed networks only): build --{precision} engines with "
                                   f"TensorRT 10.x, or build fp32")
        env = current_environment(plugins=plugin_versions(table))
        if env.gpu_name is None or env.compute_capability is None:
            raise EngineBuildError("cannot determine the GPU (name, compute capability) for the engine sidecar: "
                                   "install cuda-python for your CUDA major version (e.g. pip install "
                                   "'cuda-python>=12,<13') or make nvidia-smi available")
        d["text"] = f"{trt.__version__} on {env.gpu_name} (sm_{env.compute_capability.replace('.', '')})"

    calibration = None
    if precision == "int8":
        calib_sha = source.sha256() if source is not None else file_sha256(calib_cache_path)
        calibration = {"sha256": calib_sha, "source": "images" if source is not None else "cache",
                       "batch_size": opt, "max_batches": calib_batches if source is not None else None}
    key = cache_key(onnx_sha256=info.sha256, precision=precision, batch=(lo, opt, hi),
                    tensorrt_version=str(trt.__version__), compute_capability=env.compute_capability,
                    plugins=info.plugins, calibration_sha256=calibration["sha256"] if calibration else None,
                    gpu_name=env.gpu_name, workspace_mib=workspace_mib)

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
    lib_path = None
    if info.plugins:
        with steps("plugins") as d:
            lib_path = find_plugin_library(plugins)
            load_plugin_library(trt, lib_path, info.plugins, table["namespace"])
            d["text"] = f"{lib_path} ({', '.join(sorted(info.plugins))})"

    # 5. parse and configure
    logger = _make_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT >= 10
    parser = trt.OnnxParser(network, logger)
    with steps("parse ONNX") as d:
        if not parser.parse(info.data, path=str(onnx_path.resolve())):
            raise EngineBuildError(f"TensorRT's ONNX parser failed on {parser.num_errors} error(s): "
                                   f"{_parser_errors(parser)}")
        d["text"] = f"{network.num_layers} layers"
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
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    elif hasattr(trt.BuilderFlag, "TF32"):
        # NOTE: TensorRT enables TF32 (10-bit mantissa) matmul/conv by default on Ampere and later;
        # "fp32" here means fp32, so scores near thresholds match ONNX Runtime's fp32 results.
        config.clear_flag(trt.BuilderFlag.TF32)
    calibrator = None
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        cudart = import_cudart() if source is not None else None
        if source is not None and cudart is None:
            raise EngineBuildError("INT8 calibration needs cuda-python for its device buffer: "
                                   "pip install 'cuda-python>=12,<13' (CUDA 12)")
        calibrator = _make_calibrator(trt, cudart, source, calib_cache_path)
        config.int8_calibrator = calibrator
        # NOTE: a network with a dynamic batch is calibrated at one fixed shape: the opt batch.
        cprof = builder.create_optimization_profile()
        cprof.set_shape(INPUT_NAME, (opt, in_h, in_w, 3), (opt, in_h, in_w, 3), (opt, in_h, in_w, 3))
        config.set_calibration_profile(cprof)
    tcache_path = Path(timing_cache) if timing_cache is not None else None
    if tcache_path is not None:
        blob = tcache_path.read_bytes() if tcache_path.is_file() else b""
        try:
            tcache = config.create_timing_cache(blob)
        except Exception:  # a corrupt file: TensorRT may raise instead of returning None
            tcache = None
        if tcache is None and blob:
            log.warning("timing cache %s is unreadable by this TensorRT: starting an empty one", tcache_path)
            tcache = config.create_timing_cache(b"")
        # NOTE: ignore_mismatch=False: a cache from another GPU / TensorRT is refused, not used.
        if tcache is None or not config.set_timing_cache(tcache, False):
            log.warning("timing cache %s was not accepted: building without it", tcache_path)
            tcache_path = None

    # 6. build and write
    with steps(f"build {precision} engine (batch {lo}..{hi}, workspace {workspace_mib} MiB)", announce=True) as d:
        try:
            plan = builder.build_serialized_network(network, config)
        finally:
            if calibrator is not None:
                calibrator.free()
        if calibrator is not None and calibrator.error is not None:
            err = calibrator.error
            raise EngineBuildError(f"INT8 calibration failed: {_first_line(err)}") from err
        if plan is None or plan.nbytes == 0:
            why = logger.errors[-1] if logger.errors else "see TensorRT's messages above"
            raise EngineBuildError(f"TensorRT could not build the engine: {why}")
        data = bytes(memoryview(plan))
        if calibrator is not None and source is not None:
            d["text"] = f"{len(data) / 2**20:.1f} MiB, calibrated on {calibrator.batches_used} batch(es)"
        else:
            d["text"] = f"{len(data) / 2**20:.1f} MiB"

    meta = EngineMeta(
        model_config=info.config.to_dict(),
        tensorrt_version=str(trt.__version__),
        gpu_name=env.gpu_name,
        compute_capability=env.compute_capability,
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
        calibration=calibration,
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
    parser.description = ("Build a TensorRT engine (+ its sidecar <engine>.json) from a "
                          "`maskrt export --flavour trt` model.")
    parser.add_argument("--onnx", required=True, metavar="M.onnx", help="the trt-flavour ONNX model")
    parser.add_argument("--out", required=True, metavar="M.engine", help="the engine file to write")
    prec = parser.add_mutually_exclusive_group()
    prec.add_argument("--fp16", action="store_true", help="allow fp16 kernels (TensorRT 10.x)")
    prec.add_argument("--int8", action="store_true", help="INT8 with entropy calibration (+fp16; TensorRT 10.x)")
    parser.add_argument("--calib", metavar="DIR", default=None, help="int8: folder of calibration images")
    parser.add_argument("--calib-cache", metavar="FILE", default=None,
                        help="int8: calibration cache (default <out>.calib); reused when --calib is not given")
    parser.add_argument("--calib-batches", type=int, metavar="N", default=None,
                        help=f"int8: at most N calibration batches of OPT images (default {DEFAULT_CALIB_BATCHES})")
    parser.add_argument("--batch", type=int, nargs=3, metavar=("MIN", "OPT", "MAX"), default=[1, 1, 1],
                        help="batch range of the optimisation profile (default 1 1 1)")
    parser.add_argument("--workspace", type=int, metavar="MiB", default=DEFAULT_WORKSPACE_MIB,
                        help=f"TensorRT workspace limit in MiB (default {DEFAULT_WORKSPACE_MIB})")
    parser.add_argument("--timing-cache", metavar="FILE", default=None,
                        help="TensorRT timing cache to load (if present) and save")
    parser.add_argument("--plugins", metavar="LIB", default=None,
                        help=f"the plugin library {PLUGIN_LIBRARY_NAME} (default: ${ENV_PLUGINS}, else searched "
                             f"next to the package and in build/)")
    parser.add_argument("--no-cache", action="store_true",
                        help="neither use nor fill the engine cache (~/.cache/maskrt/engines or $MASKRT_ENGINE_CACHE)")


def run_build(args: argparse.Namespace) -> int:
    """``maskrt build``: errors propagate as one-line exceptions (the CLI prints and exits 1)."""
    precision = "int8" if args.int8 else "fp16" if args.fp16 else "fp32"
    if precision != "int8" and (args.calib is not None or args.calib_cache is not None
                                or args.calib_batches is not None):
        raise ValueError("--calib, --calib-cache and --calib-batches need --int8")
    result = build_engine(
        args.onnx, args.out, precision=precision, calib_dir=args.calib, calib_cache=args.calib_cache,
        calib_batches=args.calib_batches if args.calib_batches is not None else DEFAULT_CALIB_BATCHES,
        batch=tuple(args.batch), workspace_mib=args.workspace, timing_cache=args.timing_cache,
        plugins=args.plugins, use_cache=not args.no_cache,
        progress=lambda line: print(f"maskrt build: {line}", flush=True),
    )
    how = "copied from the engine cache" if result.cached else "built"
    print(f"maskrt build: {how} {result.engine_path} ({result.meta.engine_size / 2**20:.1f} MiB, "
          f"{result.meta.precision}, TensorRT {result.meta.tensorrt_version}, {result.meta.gpu_name}) and "
          f"{sidecar_path(result.engine_path).name} in {result.seconds:.1f} s")
    return 0
