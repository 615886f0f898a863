"""Everything TensorRT in one place: which TensorRT, its logger, the plugin library, versions.

Two kinds of runtime build and run maskrt engines:

* ``"tensorrt"``: NVIDIA TensorRT 10.x or 11.x (``import tensorrt``), for data-centre GPUs and
  Jetson (JetPack ships TensorRT 10). Builds need the GPU the engine is for.
* ``"rtx"``: TensorRT-RTX (``import tensorrt_rtx``), for RTX desktops and workstations. Its
  builder works without a GPU ("CPU-only ahead-of-time" builds) for a list of target compute
  capabilities.

Both are driven strongly typed only (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``): the
precision of every tensor is the ONNX graph's (``maskrt export --precision``). TensorRT 11 and
TensorRT-RTX build nothing else; TensorRT 10 gets the same flag, so one graph per precision
builds the same way everywhere.

The builder (``maskrt build``), the backend (:class:`maskrt.runtime.backends.trt.TrtBackend`)
and the benchmark use this module, and nothing else imports TensorRT. It imports only the
standard library (and the backends' error base class) at import time.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import os
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maskrt.runtime.backends.base import BackendError

__all__ = [
    "ENV_PLUGINS", "MIN_TENSORRT_MAJOR", "PLUGIN_LIBRARY_NAME", "RTX_COMPUTE_CAPABILITIES", "RTX_DEFAULT_TARGETS",
    "RUNTIMES",
    "TRT_INSTALL_HINT", "PluginLibraryError", "TensorRTUnavailable", "TrtLib", "default_plugin_search_dirs",
    "ensure_rtx_library_name", "find_plugin_library", "import_tensorrt", "installed_runtime", "load_plugin_library",
    "trt_logger",
]

log = logging.getLogger("maskrt.trt")

RUNTIMES = ("tensorrt", "rtx")
MODULES = {"tensorrt": "tensorrt", "rtx": "tensorrt_rtx"}
MIN_TENSORRT_MAJOR = 10  # the plugins are IPluginV3; strongly typed networks; the I/O-tensor API
PLUGIN_LIBRARY_NAME = "libmaskrt_trt_plugins.so"
ENV_PLUGINS = "MASKRT_TRT_PLUGINS"
TRT_INSTALL_HINT = ("pip install 'maskrt[trt]' on a machine with an NVIDIA GPU (TensorRT 10/11), or "
                    "pip install 'maskrt[rtx]' (TensorRT-RTX, builds without a GPU); on Jetson, use JetPack's "
                    "python3-libnvinfer")
# TensorRT-RTX ComputeCapability members (SM75 ...) as "major.minor"; NONE/CURRENT are not targets.
RTX_COMPUTE_CAPABILITIES = ("7.5", "8.0", "8.6", "8.9", "12.0", "12.1")
# NOTE: the default targets leave out Turing (7.5): TensorRT-RTX 1.7 refuses fp32 GEMMs there
# ("Cannot compile operation ... for Turing (SM75): FP32 GEMM is not supported", seen building
# the default model's fp32 graph); ask for 7.5 explicitly with an fp16/int8 graph.
RTX_DEFAULT_TARGETS = ("8.0", "8.6", "8.9", "12.0", "12.1")


class TensorRTUnavailable(RuntimeError):
    """TensorRT (or TensorRT-RTX) cannot be imported here, is too old, or is not what was asked for.
    ``missing``: True when the package is simply not installed."""

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


class PluginLibraryError(BackendError):
    """The plugin library is missing, does not load, or does not register the model's plugins
    (a :class:`BackendError`: TrtBackend raises it too)."""


@dataclass(frozen=True)
class TrtLib:
    """An imported TensorRT: ``kind`` ("tensorrt" | "rtx"), the module, its version string."""

    kind: str
    trt: Any
    version: str

    @property
    def major(self) -> int:
        return _major(self.version)

    @property
    def label(self) -> str:
        """"TensorRT 10.16.0" or "TensorRT-RTX 1.7.1.116"."""
        return f"{'TensorRT-RTX' if self.kind == 'rtx' else 'TensorRT'} {self.version}"

    def strongly_typed_network(self, builder: Any) -> Any:
        """A network definition with ``STRONGLY_TYPED`` (explicit batch is the only mode in >= 10)."""
        flag = 1 << int(self.trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        return builder.create_network(flag)


def _major(version: str) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return 0


def _import(kind: str) -> TrtLib:
    name = MODULES[kind]
    try:
        module = importlib.import_module(name)
    except ImportError:
        raise TensorRTUnavailable(f"{'TensorRT-RTX' if kind == 'rtx' else 'TensorRT'} is not installed: "
                                  f"{TRT_INSTALL_HINT}", missing=True) from None
    except Exception as e:  # OSError: the Python package is there, its libraries are not; a registry stub
        raise TensorRTUnavailable(f"{name} is installed but does not import ({type(e).__name__}: "
                                  f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}): "
                                  f"{TRT_INSTALL_HINT}") from None
    version = str(getattr(module, "__version__", ""))
    if not hasattr(module, "Builder") or not version:
        raise TensorRTUnavailable(f"{name} imports but is not TensorRT (no Builder / __version__: a placeholder "
                                  f"package?): {TRT_INSTALL_HINT}")
    lib = TrtLib(kind, module, version)
    if kind == "tensorrt" and lib.major < MIN_TENSORRT_MAJOR:
        raise TensorRTUnavailable(f"TensorRT {version} is too old: maskrt needs TensorRT >= {MIN_TENSORRT_MAJOR} "
                                  f"(IPluginV3 plugins, strongly typed networks)")
    if kind == "rtx":
        ensure_rtx_library_name(module)
    return lib


def import_tensorrt(kind: str | None = None) -> TrtLib:
    """The TensorRT to use: ``kind`` "tensorrt" or "rtx" (``--runtime``), else whichever is
    installed, TensorRT first. Raises :class:`TensorRTUnavailable` with one line saying what
    to install. (Python caches the module import; nothing else is cached here.)"""
    if kind is not None and kind not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {kind!r}")
    if kind is not None:
        return _import(kind)
    errors: list[TensorRTUnavailable] = []
    for k in RUNTIMES:
        try:
            return _import(k)
        except TensorRTUnavailable as e:
            errors.append(e)
    if all(e.missing for e in errors):
        raise TensorRTUnavailable(f"TensorRT is not installed: {TRT_INSTALL_HINT}", missing=True)
    raise TensorRTUnavailable("; ".join(str(e) for e in errors if not e.missing))


def installed_runtime(kind: str) -> TrtLib | None:
    """The TensorRT of ``kind`` if it imports here, else None (for environment checks)."""
    try:
        return import_tensorrt(kind)
    except TensorRTUnavailable:
        return None


def ensure_rtx_library_name(module: Any) -> Path | None:
    """Makes ``libtensorrt_rtx.so`` (unversioned) resolvable next to ``libtensorrt_rtx.so.1``.

    NOTE: TensorRT-RTX's ONNX parser ``dlopen``-s ``libtensorrt_rtx.so`` when it imports a plugin
    node, but the wheel ships only ``libtensorrt_rtx.so.1``: parsing a graph with plugin nodes
    then aborts the process (``terminate called without an active exception``). The parser's
    RPATH is ``$ORIGIN``, so a symlink in the wheel's library folder is what resolves it (a
    ctypes preload does not: glibc matches an already loaded library by its soname, ``.so.1``).
    The symlink is made once, atomically; it stays after ``pip uninstall`` (a dangling link,
    harmless). A read-only install gets a one-line error with the command to run.
    Returns the link (None when there is nothing to do: a system install with the dev symlink).
    """
    libs = None
    try:
        libs_mod = importlib.import_module("tensorrt_rtx_libs")
        libs = Path(libs_mod.__file__).resolve().parent
    except Exception:  # not the pip wheel layout (a tarball install has its own lib/ with the symlink)
        return None
    real = libs / "libtensorrt_rtx.so.1"
    link = libs / "libtensorrt_rtx.so"
    if not real.is_file() or link.exists():
        return link if link.exists() else None
    tmp = libs / f".libtensorrt_rtx.so.{os.getpid()}.tmp"
    try:
        if tmp.is_symlink():
            tmp.unlink()
        tmp.symlink_to(real.name)
        os.replace(tmp, link)
    except OSError as e:
        raise TensorRTUnavailable(f"TensorRT-RTX's ONNX parser needs {link} (the wheel ships only {real.name}) "
                                  f"and maskrt could not create it ({e.strerror}): run "
                                  f"`ln -s {real.name} {link}`") from None
    log.info("TensorRT-RTX: created %s -> %s (its ONNX parser loads the unversioned name)", link, real.name)
    return link


# ------------------------------------------------------------------------------ the logger
class _LoggerBox:
    """Per runtime kind, the one process-wide logger (see :func:`trt_logger`)."""

    loggers: dict[str, Any] = {}
    lock = threading.Lock()


def trt_logger(lib: TrtLib) -> Any:
    """The process-wide logger of ``lib``'s kind: forwards errors and warnings to the
    ``maskrt.trt`` Python logger (info/verbose at debug level) and keeps the last 256 error
    messages in ``.errors`` (for exception messages: ``errors_since(n)``).

    NOTE: one logger per process and runtime kind: TensorRT keeps the first logger it gets as
    the global logger (the one its logger finder hands to plugins), and warns when a later
    Builder/Runtime brings another; so builder and backend share this one.
    """
    with _LoggerBox.lock:
        have = _LoggerBox.loggers.get(lib.kind)
        if have is not None:
            return have
        trt = lib.trt
        severity = trt.ILogger.Severity
        errors_at = {severity.INTERNAL_ERROR, severity.ERROR}

        class _Logger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)
                self.errors: deque[str] = deque(maxlen=256)
                self.count = 0  # errors seen so far (the deque may have dropped old ones)

            def log(self, sev, msg):  # noqa: ANN001 - TensorRT's signature
                text = str(msg)
                if sev in errors_at:
                    self.errors.append(text)
                    self.count += 1
                    log.error("%s: %s", lib.label, text)
                elif sev == severity.WARNING:
                    log.warning("%s: %s", lib.label, text)
                else:
                    log.debug("%s: %s", lib.label, text)

            def errors_since(self, n: int) -> list[str]:
                """Error messages logged after ``count`` was ``n``."""
                new = self.count - n
                return list(self.errors)[-new:] if new > 0 else []

        logger = _Logger()
        _LoggerBox.loggers[lib.kind] = logger
        return logger


# ------------------------------------------------------------------------------ plugin library
def default_plugin_search_dirs() -> list[Path]:
    """Folders searched for the plugin library after the explicit path, ``$MASKRT_TRT_PLUGINS`` and
    the engine's folder: the package folder (a wheel installs it there) and ``lib/`` in it, then
    in a source checkout the CMake build folders (``build/plugins/tensorrt`` of ``cmake -B build``,
    ``build-*/``, ``build/<name>/...``)."""
    import maskrt

    pkg = Path(maskrt.__file__).resolve().parent
    dirs = [pkg, pkg / "lib"]
    repo = pkg.parent
    if (repo / "pyproject.toml").is_file():
        # NOTE: build-* too: plugins/tensorrt/README.md configures the library in build-trt/.
        for build in [repo / "build", *sorted(p for p in repo.glob("build-*") if p.is_dir()),
                      *sorted(p for p in repo.glob("build/*") if p.is_dir())]:
            dirs += [build / "plugins" / "tensorrt", build / "plugins", build]
    return list(dict.fromkeys(dirs))


def find_plugin_library(name: str = PLUGIN_LIBRARY_NAME, *, explicit: str | os.PathLike | None = None,
                        engine_dir: str | os.PathLike | None = None,
                        search_dirs: Sequence[str | os.PathLike] | None = None) -> Path:
    """The plugin library to load: ``explicit`` (``--plugins`` / ``plugins=``), else
    ``$MASKRT_TRT_PLUGINS``, else the first file called ``name`` (the sidecar's
    ``plugin_library``) in ``engine_dir`` and then ``search_dirs`` (default
    :func:`default_plugin_search_dirs`). :class:`PluginLibraryError` says where it looked."""
    if explicit is not None:
        p = Path(explicit)
        if not p.is_file():
            raise PluginLibraryError(f"plugins={str(p)!r}: no such file")
        return p
    env = os.environ.get(ENV_PLUGINS)
    if env:
        p = Path(env)
        if not p.is_file():
            raise PluginLibraryError(f"${ENV_PLUGINS}={env}: no such file")
        return p
    dirs = ([Path(engine_dir)] if engine_dir is not None else []) + [
        Path(d) for d in (search_dirs if search_dirs is not None else default_plugin_search_dirs())]
    for d in dirs:
        if (d / name).is_file():
            return d / name
    raise PluginLibraryError(f"plugin library {name} not found (looked in {', '.join(str(d) for d in dirs)}): build "
                             f"the CMake target maskrt_trt_plugins (plugins/tensorrt/README.md) and pass "
                             f"--plugins PATH or set ${ENV_PLUGINS}")


_LOADED: dict[str, Any] = {}  # keeps loaded libraries (and TensorRT's handles) alive for the process
_LOAD_LOCK = threading.Lock()


def _registered(registry: Any, name: str, version: str, namespace: str) -> bool:
    # NOTE: the creator list first: get_creator logs an ERROR for every plugin not (yet) registered,
    # which would make each first load look like a failure.
    creators = getattr(registry, "all_creators", None)
    if creators is not None:
        try:
            return any((getattr(c, "name", None), getattr(c, "plugin_version", None),
                        getattr(c, "plugin_namespace", None)) == (name, version, namespace) for c in creators)
        except Exception:
            pass
    try:
        return registry.get_creator(name, version, namespace) is not None  # >= 10: V1 or V3 creators
    except Exception:
        return False


def load_plugin_library(lib: TrtLib, path: Path, plugins: Mapping[str, str], namespace: str) -> None:
    """Loads ``path`` into ``lib``'s plugin registry unless every plugin of ``plugins``
    ({name: version}) is already registered in ``namespace``; then checks they all are.

    NOTE: the library registers its creators only through its exported ``getCreators`` and
    receives TensorRT's logger finder through ``setLoggerFinder``; ``IPluginRegistry.load_library``
    (like ``trtexec --dynamicPlugins``) calls both. It is ``dlopen``-ed first with ctypes only to
    turn a missing dependency into a clear error; it is not loaded again when its plugins are
    already registered, so creators are never registered twice.
    """
    trt = lib.trt
    registry = trt.get_plugin_registry()
    logger = trt_logger(lib)  # before load_library: the library's logger finder finds this logger

    def missing() -> list[str]:
        return [f"{n} v{v}" for n, v in sorted(plugins.items()) if not _registered(registry, n, v, namespace)]

    with _LOAD_LOCK:
        if not missing():
            return
        key = str(Path(path).resolve())
        try:
            _LOADED.setdefault(key, ctypes.CDLL(key, mode=ctypes.RTLD_GLOBAL))
        except OSError as e:
            raise PluginLibraryError(f"cannot load plugin library {path}: {e}") from None
        n = logger.count
        handle = registry.load_library(key)
        if handle is None:
            why = "; ".join(logger.errors_since(n)) or "see TensorRT's messages"
            raise PluginLibraryError(f"{lib.label} could not load the plugin library {path}: {why}")
        _LOADED[f"{key}#{lib.kind}"] = handle
        still = missing()
        if still:
            raise PluginLibraryError(f"{path.name} does not register {', '.join(still)} in namespace '{namespace}': "
                                     "rebuild the library from this checkout (its plugin table must match)")
