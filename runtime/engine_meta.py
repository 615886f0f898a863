"""The engine sidecar ``<engine>.json`` and the key of the engine cache.

A serialized TensorRT engine runs only where it was built: the same TensorRT version, the same
GPU (compute capability, and for best results the same model), and plugin libraries whose
plugins have the versions the engine was built with. The engine file itself says none of that in
a form we can check before TensorRT refuses it (or, worse, misbehaves), so ``maskrt build``
writes a sidecar next to it: ``M.engine`` -> ``M.engine.json`` holding

* ``format`` / ``format_version`` -- "maskrt.engine" / 2 (version 1 sidecars, from before
  ``runtime`` existed, still read: they are TensorRT engines);
* ``model_config`` -- the ModelConfig (the deployment contract: input size, classes, ...);
* ``runtime`` -- "tensorrt" (TensorRT 10/11) or "rtx" (TensorRT-RTX): an engine runs only with
  the kind that built it; ``tensorrt_version`` is that runtime's version;
* ``gpu_name``, ``compute_capability`` ("8.7") of the build GPU (null for TensorRT-RTX
  CPU-only builds), ``compute_capabilities``: the targets the engine runs on (TensorRT: the
  build GPU's; TensorRT-RTX: the list given to the builder);
* ``plugins`` {name: version} the engine uses, ``plugin_library`` (file name, or null when the
  model has no plugin nodes);
* ``onnx_sha256``, ``precision`` (fp32 | fp16 | int8), ``batch`` [min, opt, max],
  ``workspace_mib``, ``calibration`` (int8 only: hash of the calibration input);
* ``engine_sha256`` / ``engine_size`` of the engine file the sidecar describes;
* ``created_at`` (UTC, ISO 8601) and ``maskrt_version``.

This module is on the runtime side: numpy/stdlib only, no torch, no onnx, and TensorRT /
cuda-python only inside :func:`current_environment`, which the runtime calls when it has them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maskrt.runtime.config import ModelConfig
from maskrt.runtime.model_meta import PRECISIONS

__all__ = [
    "ENV_ENGINE_CACHE", "EngineMeta", "EngineMetaError", "EngineMismatch", "Environment", "PRECISIONS",
    "atomic_write_bytes", "cache_key", "check_batch_profile", "check_compatible", "current_environment",
    "engine_cache_dir", "file_sha256", "import_cudart", "read_engine_meta", "sidecar_path", "write_engine_meta",
]

FORMAT = "maskrt.engine"
FORMAT_VERSION = 2
READ_FORMAT_VERSIONS = (1, 2)
RUNTIMES = ("tensorrt", "rtx")  # = maskrt.runtime.trt_lib.RUNTIMES (no import: this module stays light)
ENV_ENGINE_CACHE = "MASKRT_ENGINE_CACHE"
CACHE_KEY_VERSION = 1  # bump when the meaning of a key input changes
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CC = re.compile(r"^\d+\.\d+$")


class EngineMetaError(ValueError):
    """A sidecar is missing, unreadable, corrupt, or not a maskrt engine sidecar."""


class EngineMismatch(RuntimeError):
    """An engine was built for another TensorRT / GPU / plugin set than this machine has."""


# ---------------------------------------------------------------------------- small helpers
def check_batch_profile(batch: Sequence[int], name: str = "batch") -> tuple[int, int, int]:
    """``(min, opt, max)`` as ints with ``1 <= min <= opt <= max``; ValueError naming ``name``."""
    try:
        vals = tuple(batch)
    except TypeError:
        raise ValueError(f"{name}: expected (min, opt, max), got {batch!r}") from None
    if len(vals) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
        raise ValueError(f"{name}: expected three integers (min, opt, max), got {batch!r}")
    lo, opt, hi = vals
    if not 1 <= lo <= opt <= hi:
        raise ValueError(f"{name}: need 1 <= min <= opt <= max, got {lo} {opt} {hi}")
    return lo, opt, hi


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: str | os.PathLike, data: bytes | bytearray | memoryview) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never a
    part: a temporary file in the same folder, fsync, then ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def sidecar_path(engine_path: str | os.PathLike) -> Path:
    """``M.engine`` -> ``M.engine.json`` (the engine's full file name plus ``.json``)."""
    p = Path(engine_path)
    return p if p.name.endswith(".json") else p.with_name(p.name + ".json")


# ---------------------------------------------------------------------------- the sidecar
@dataclass(frozen=True)
class EngineMeta:
    """What an engine was built from and for. See the module docstring for the fields."""

    model_config: dict[str, Any]
    tensorrt_version: str
    gpu_name: str | None
    compute_capability: str | None
    plugins: dict[str, str]
    plugin_library: str | None
    onnx_sha256: str
    precision: str
    batch: tuple[int, int, int]
    workspace_mib: int
    engine_sha256: str
    engine_size: int
    created_at: str
    maskrt_version: str
    calibration: dict[str, Any] | None = None
    format_version: int = FORMAT_VERSION
    runtime: str = "tensorrt"
    compute_capabilities: tuple[str, ...] | None = None  # None: (compute_capability,)

    def __post_init__(self) -> None:
        object.__setattr__(self, "batch", tuple(self.batch))
        object.__setattr__(self, "plugins", dict(self.plugins))
        if self.compute_capabilities is None and isinstance(self.compute_capability, str):
            object.__setattr__(self, "compute_capabilities", (self.compute_capability,))
        elif isinstance(self.compute_capabilities, (list, tuple)):
            object.__setattr__(self, "compute_capabilities", tuple(self.compute_capabilities))
        self._validate()

    def _validate(self) -> None:
        def bad(name: str, why: str) -> EngineMetaError:
            return EngineMetaError(f"field '{name}': {why} (got {getattr(self, name)!r})")

        if self.runtime not in RUNTIMES:
            raise bad("runtime", f"must be one of {RUNTIMES}")
        for name in ("tensorrt_version", "created_at", "maskrt_version"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise bad(name, "must be a non-empty string")
        # NOTE: TensorRT builds on the GPU it targets; TensorRT-RTX may build with none (CPU-only
        # ahead-of-time builds), so there the build GPU is optional and the targets say it all.
        gpu_optional = self.runtime == "rtx"
        if not (gpu_optional and self.gpu_name is None) and (not isinstance(self.gpu_name, str) or not self.gpu_name):
            raise bad("gpu_name", "must be a non-empty string" + (" or null" if gpu_optional else ""))
        if not (gpu_optional and self.compute_capability is None) and (
                not isinstance(self.compute_capability, str) or not _CC.match(self.compute_capability)):
            raise bad("compute_capability", 'must be "major.minor", e.g. "8.7"' + (" or null" if gpu_optional else ""))
        ccs = self.compute_capabilities
        if not isinstance(ccs, tuple) or not ccs or not all(isinstance(c, str) and _CC.match(c) for c in ccs):
            raise bad("compute_capabilities", 'must be a non-empty list of "major.minor"')
        if self.runtime == "tensorrt" and ccs != (self.compute_capability,):
            raise bad("compute_capabilities", "a TensorRT engine runs on its build GPU's compute capability only")
        for name in ("onnx_sha256", "engine_sha256"):
            if not isinstance(getattr(self, name), str) or not _SHA256.match(getattr(self, name)):
                raise bad(name, "must be 64 lower-case hex digits")
        if self.precision not in PRECISIONS:
            raise bad("precision", f"must be one of {PRECISIONS}")
        if not all(isinstance(k, str) and isinstance(v, str) and k and v for k, v in self.plugins.items()):
            raise bad("plugins", "must map plugin names to version strings")
        if self.plugin_library is not None and (not isinstance(self.plugin_library, str) or not self.plugin_library):
            raise bad("plugin_library", "must be a file name or null")
        # NOTE: a bare file name, looked up in the engine's folder and the search folders only
        # (TrtBackend). A path would let a sidecar -- a JSON file that looks like data -- make the
        # runtime dlopen any library on the machine ("/tmp/x.so", "../../x.so").
        if self.plugin_library is not None and (
                self.plugin_library in (".", "..") or any(c in self.plugin_library for c in "/\\\0")):
            raise bad("plugin_library", "must be a bare file name (no folder), found next to the engine or in the "
                                        "plugin search folders")
        if self.plugins and self.plugin_library is None:
            raise bad("plugin_library", "an engine with plugins must name the plugin library")
        try:
            check_batch_profile(self.batch)
        except ValueError as e:
            raise EngineMetaError(f"field 'batch': {e}") from None
        for name in ("workspace_mib", "engine_size", "format_version"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise bad(name, "must be a positive integer")
        if self.format_version not in READ_FORMAT_VERSIONS:
            raise bad("format_version", f"this maskrt reads format_version {READ_FORMAT_VERSIONS}")
        if self.format_version == 1 and self.runtime != "tensorrt":
            raise bad("runtime", "format_version 1 sidecars are TensorRT engines")
        if (self.precision == "int8") != (self.calibration is not None):
            raise bad("calibration", "is required for int8 engines and only for them")
        if self.calibration is not None and not isinstance(self.calibration, dict):
            raise bad("calibration", "must be an object")
        if not isinstance(self.model_config, dict):
            raise bad("model_config", "must be an object")
        try:
            ModelConfig.from_dict(self.model_config)
        except (TypeError, ValueError) as e:
            raise EngineMetaError(f"field 'model_config': {e}") from None

    @property
    def config(self) -> ModelConfig:
        """The engine's ModelConfig."""
        return ModelConfig.from_dict(self.model_config)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["batch"] = list(self.batch)
        d["compute_capabilities"] = list(self.compute_capabilities or ())
        return {"format": FORMAT, **d}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, d: Any) -> EngineMeta:
        """Validate a parsed sidecar; EngineMetaError says what is wrong."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise EngineMetaError(f"not a maskrt engine sidecar (no \"format\": \"{FORMAT}\")")
        version = d.get("format_version")
        if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
            raise EngineMetaError(f"sidecar format_version {version} is newer than this maskrt reads "
                                  f"({FORMAT_VERSION}): upgrade maskrt or rebuild the engine")
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        missing = sorted(required - set(d))
        if missing:
            raise EngineMetaError(f"sidecar is missing field(s) {missing}")
        unknown = sorted(set(d) - names - {"format"})
        if unknown:
            raise EngineMetaError(f"sidecar has unknown field(s) {unknown}")
        if not isinstance(d["batch"], (list, tuple)) or not isinstance(d["plugins"], dict):
            raise EngineMetaError("sidecar fields 'batch' (list) and 'plugins' (object) have the wrong type")
        return cls(**{k: v for k, v in d.items() if k != "format"})


def write_engine_meta(meta: EngineMeta, engine_path: str | os.PathLike) -> Path:
    """Write ``meta`` atomically as the sidecar of ``engine_path``; returns the sidecar path."""
    p = sidecar_path(engine_path)
    atomic_write_bytes(p, meta.to_json().encode("utf-8"))
    return p


def read_engine_meta(engine_path: str | os.PathLike) -> EngineMeta:
    """Read and validate the sidecar of ``engine_path`` (``M.engine`` or ``M.engine.json``).

    Raises EngineMetaError with the file name and what is wrong: missing, unreadable, not JSON,
    not a maskrt sidecar, from a newer maskrt, missing/unknown/invalid fields.
    """
    p = sidecar_path(engine_path)
    if not p.is_file():
        raise EngineMetaError(f"{p}: engine sidecar not found (it is written by `maskrt build` next to the "
                              f"engine; rebuild the engine)")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise EngineMetaError(f"{p}: cannot read the engine sidecar ({e})") from None
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise EngineMetaError(f"{p}: engine sidecar is not valid JSON (corrupt or truncated: {e})") from None
    try:
        return EngineMeta.from_dict(d)
    except EngineMetaError as e:
        raise EngineMetaError(f"{p}: {e}") from None
    except TypeError as e:  # a field of the wrong type deep inside the dataclass
        raise EngineMetaError(f"{p}: invalid engine sidecar ({e})") from None


# ---------------------------------------------------------------------------- environment
@dataclass(frozen=True)
class Environment:
    """What decides whether an engine runs here. ``None``: could not be determined.

    ``runtime``: the TensorRT kind the versions are of ("tensorrt" | "rtx"; None: unknown)."""

    tensorrt_version: str | None = None
    gpu_name: str | None = None
    compute_capability: str | None = None
    plugins: dict[str, str] | None = field(default=None)
    runtime: str | None = None


def import_cudart():
    """cuda-python's CUDA runtime module, or None: ``cuda.bindings.runtime`` (cuda-python >= 12.6)
    or the older ``cuda.cudart``."""
    try:
        from cuda.bindings import runtime as cudart  # type: ignore[import-not-found]

        return cudart
    except ImportError:
        pass
    try:
        from cuda import cudart  # type: ignore[import-not-found,attr-defined]

        return cudart
    except ImportError:
        return None


def _gpu_from_cudart(cudart, device: int | None) -> tuple[str, str] | None:
    """(name, "major.minor") of the current (or given) device through cuda-python, or None."""
    try:
        if device is None:
            err, device = cudart.cudaGetDevice()
            if err != cudart.cudaError_t.cudaSuccess:
                return None
        err, prop = cudart.cudaGetDeviceProperties(int(device))
        if err != cudart.cudaError_t.cudaSuccess:
            return None
        name = prop.name
        if isinstance(name, (bytes, bytearray)):
            name = bytes(name).split(b"\0", 1)[0].decode("utf-8", "replace")
        return str(name).strip(), f"{int(prop.major)}.{int(prop.minor)}"
    except Exception:  # a broken driver / no device: "unknown", not a crash
        return None


def _gpu_from_nvidia_smi(device: int | None) -> tuple[str, str] | None:
    """(name, "major.minor") from ``nvidia-smi`` (drivers >= 510 know ``compute_cap``), or None."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        r = subprocess.run([exe, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    rows = [line.rsplit(",", 1) for line in r.stdout.strip().splitlines() if "," in line]
    if r.returncode != 0 or not rows:
        return None
    # NOTE: nvidia-smi numbers GPUs physically, CUDA after CUDA_VISIBLE_DEVICES; this fallback is
    # for the usual one-GPU machine (cuda-python, tried first, has no such ambiguity).
    name, cc = rows[min(device or 0, len(rows) - 1)]
    cc = cc.strip()
    return (name.strip(), cc) if _CC.match(cc) else None


def current_environment(*, device: int | None = None, plugins: Mapping[str, str] | None = None,
                        runtime: str = "tensorrt") -> Environment:
    """The version of the TensorRT of kind ``runtime`` ("tensorrt" | "rtx"), the GPU name and
    compute capability of this machine, and the plugin versions of this install (``plugins``
    overrides them). Each is None where it cannot be determined: that TensorRT not importable,
    no cuda-python and no nvidia-smi, no device."""
    from maskrt.runtime.trt_lib import installed_runtime

    lib = installed_runtime(runtime)
    gpu = None
    cudart = import_cudart()
    if cudart is not None:
        gpu = _gpu_from_cudart(cudart, device)
    if gpu is None:
        gpu = _gpu_from_nvidia_smi(device)
    if plugins is None:
        try:
            from maskrt.runtime.plugin_table import plugin_versions

            plugins = plugin_versions()
        except ValueError:
            plugins = None
    return Environment(lib.version if lib is not None else None, gpu[0] if gpu else None, gpu[1] if gpu else None,
                       dict(plugins) if plugins is not None else None, runtime)


_RUNTIME_LABEL = {"tensorrt": "TensorRT", "rtx": "TensorRT-RTX"}


def check_compatible(meta: EngineMeta, env: Environment) -> None:
    """Raise EngineMismatch listing everything that differs between the engine's build
    (``meta``) and ``env``: runtime kind, its version, compute capability, GPU name, plugin
    versions. Fields of ``env`` that are None (unknown here) are not compared.

    NOTE: versions must match exactly (engines are not portable across TensorRT releases unless
    built version-compatible, which maskrt does not do). TensorRT engines are tuned for one GPU
    model, so the GPU name is compared too; TensorRT-RTX engines run on any GPU whose compute
    capability is one of their targets.
    """
    diffs: list[str] = []
    label = _RUNTIME_LABEL[meta.runtime]
    if env.runtime is not None and env.runtime != meta.runtime:
        raise EngineMismatch(f"engine was built with {label} and runs only with it, not with "
                             f"{_RUNTIME_LABEL.get(env.runtime, env.runtime)}: open it with the runtime that built it "
                             f"or rebuild it with `maskrt build --runtime {env.runtime}`")
    if env.tensorrt_version is not None and env.tensorrt_version != meta.tensorrt_version:
        diffs.append(f"{label} {meta.tensorrt_version} (engine) vs {env.tensorrt_version} (here)")
    ccs = meta.compute_capabilities or ()
    if env.compute_capability is not None and env.compute_capability not in ccs:
        targets = ccs[0] if len(ccs) == 1 else "one of " + ", ".join(ccs)
        diffs.append(f"compute capability {targets} (engine) vs {env.compute_capability} (here)")
    if meta.runtime == "tensorrt" and env.gpu_name is not None and env.gpu_name != meta.gpu_name:
        diffs.append(f"GPU '{meta.gpu_name}' (engine) vs '{env.gpu_name}' (here)")
    if env.plugins is not None:
        for name in sorted(meta.plugins):
            have = env.plugins.get(name)
            if have is None:
                diffs.append(f"plugin {name} v{meta.plugins[name]} (engine) is not in this install's plugin table")
            elif have != meta.plugins[name]:
                diffs.append(f"plugin {name} v{meta.plugins[name]} (engine) vs v{have} (here)")
    if diffs:
        raise EngineMismatch("engine was built for another environment: " + "; ".join(diffs)
                             + ". Rebuild it here with `maskrt build`")


# ---------------------------------------------------------------------------- engine cache
def engine_cache_dir() -> Path:
    """``$MASKRT_ENGINE_CACHE``, else ``~/.cache/maskrt/engines``."""
    env = os.environ.get(ENV_ENGINE_CACHE)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "maskrt" / "engines"


def cache_key(*, onnx_sha256: str, precision: str, batch: Sequence[int], tensorrt_version: str,
              compute_capability: str | Sequence[str], plugins: Mapping[str, str],
              calibration_sha256: str | None = None, gpu_name: str | None = None, workspace_mib: int | None = None,
              runtime: str = "tensorrt") -> str:
    """Hex sha256 naming an engine in the cache: everything that changes the engine.

    Inputs: the ONNX bytes' hash, precision, batch profile, TensorRT version, compute capability,
    plugin versions, the runtime kind, and for int8 the hash of the calibration input (required
    then, refused otherwise). ``compute_capability``: one "major.minor", or the list of targets
    (TensorRT-RTX). ``gpu_name`` and ``workspace_mib`` also go in when given (the builder gives them:
    tactics are chosen per GPU model and within the workspace limit).
    """
    if not isinstance(onnx_sha256, str) or not _SHA256.match(onnx_sha256):
        raise ValueError(f"onnx_sha256: expected 64 lower-case hex digits, got {onnx_sha256!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
    if (precision == "int8") != (calibration_sha256 is not None):
        raise ValueError("calibration_sha256 is required for int8 and only for int8")
    if not tensorrt_version or not isinstance(tensorrt_version, str):
        raise ValueError(f"tensorrt_version: expected a version string, got {tensorrt_version!r}")
    ccs = [compute_capability] if isinstance(compute_capability, str) else list(compute_capability)
    if not ccs or not all(isinstance(c, str) and _CC.match(c) for c in ccs):
        raise ValueError(f"compute_capability: expected 'major.minor' (or a list of them), got {compute_capability!r}")
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime: expected one of {RUNTIMES}, got {runtime!r}")
    doc = {
        "key_version": CACHE_KEY_VERSION,
        "onnx_sha256": onnx_sha256,
        "precision": precision,
        "batch": list(check_batch_profile(batch)),
        "tensorrt_version": tensorrt_version,
        "compute_capability": ccs[0] if isinstance(compute_capability, str) else ccs,
        "plugins": {str(k): str(v) for k, v in plugins.items()},
        "calibration_sha256": calibration_sha256,
        "gpu_name": gpu_name,
        "workspace_mib": workspace_mib,
    }
    if runtime != "tensorrt":  # NOTE: only then: the keys of TensorRT engines stay what they were
        doc["runtime"] = runtime
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode("utf-8")).hexdigest()
