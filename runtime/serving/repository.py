"""Triton model repositories for maskrt artefacts (Triton's documented layout)::

    <repository>/
      README.md                     how to start a server on it
      <name>/config.pbtxt           ModelConfig (protobuf text): I/O from the deployment contract,
                                    dynamic batching, instance group, maskrt metadata as parameters
      <name>/1/model.onnx + model.py       CPU / any server: Python backend running OrtBackend
      <name>/1/model.plan (+ .json)        GPU server: platform tensorrt_plan (a `maskrt build` engine)
      plugins/libmaskrt_trt_plugins.so     the engine's plugin library (tensorrt_plan only)

I/O, from the contract (:mod:`maskrt.runtime.backends.base`), with the batch axis left to Triton
(``max_batch_size > 0``): ``images`` TYPE_UINT8 ``[H, W, 3]``; ``num_detections`` TYPE_INT32
``[1]``, ``boxes`` TYPE_FP32 ``[K, 4]``, ``scores`` TYPE_FP32 ``[K]``, ``classes`` TYPE_INT32
``[K]``, ``masks`` TYPE_FP32 ``[K, M, M]``.

NOTE: ``num_detections`` is one scalar per image. With ``max_batch_size > 0`` Triton needs at
least one dim per item, so it is published as ``[1]`` (clients see ``[B, 1]``;
:class:`~maskrt.runtime.backends.triton.TritonBackend` reshapes to the contract's ``[B]``). The
Python-backend model produces ``[B, 1]`` itself (Triton 2.51's Python backend rejects a
``reshape`` here); the TensorRT engine's tensor is ``[B]``, which Triton's documented
``reshape: { shape: [ ] }`` maps to ``[1]`` per item.

The model's metadata is published in the config's ``parameters`` (string values, the ONNX
metadata keys: ``maskrt.model_config``, ``maskrt.flavour``, ``maskrt.format_version``,
``maskrt.plugins``), which any client reads with Triton's model-configuration API; Triton's model
metadata API has no free-form fields.

The config is built as tritonclient's ``model_config_pb2.ModelConfig`` (Triton's own schema) and
written with protobuf's text format; tritonclient (``maskrt[serve]``) is imported when a config
is written.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sysconfig
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maskrt.runtime.config import ModelConfig
from maskrt.runtime.model_meta import FORMAT_VERSION, META_CONFIG, META_FLAVOUR, META_FORMAT, META_PLUGINS

__all__ = [
    "DEFAULT_MODEL_NAME", "ONNX_FILE", "PARAM_SITE_DIRS", "PARAM_THREADS", "PLAN_FILE", "PYTHON_MODEL_FILE",
    "RepositoryError", "TensorSpec", "contract_tensors", "load_config", "write_python_model", "write_tensorrt_model",
]

DEFAULT_MODEL_NAME = "maskrt"
PYTHON_MODEL_FILE = "model.py"
ONNX_FILE = "model.onnx"
PLAN_FILE = "model.plan"
PLUGINS_DIR = "plugins"
PARAM_SITE_DIRS = "maskrt.site_dirs"  # JSON list: site-packages the Python-backend stub adds (maskrt, onnxruntime)
PARAM_THREADS = "maskrt.intra_op_threads"  # ONNX Runtime intra-op threads per model instance
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_TEMPLATE = Path(__file__).with_name("triton_model.py")


class RepositoryError(ValueError):
    """A repository cannot be written as asked (bad options, an artefact that cannot be served)."""


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of the model config: Triton's data type and the per-item dims (no batch axis)."""

    name: str
    data_type: str  # "TYPE_UINT8", ...
    dims: tuple[int, ...]
    reshape: tuple[int, ...] | None = None  # the model's own per-item shape, when it differs


def contract_tensors(config: ModelConfig, *, scalar_reshape: bool) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The deployment contract as Triton tensors (module docstring). ``scalar_reshape``: the model
    produces ``num_detections`` as ``[B]`` (a TensorRT engine), published through a reshape."""
    h, w = (int(v) for v in config.input_size)
    k, m = int(config.detections_per_img), int(config.mask_resolution)
    inputs = [TensorSpec("images", "TYPE_UINT8", (h, w, 3))]
    outputs = [TensorSpec("num_detections", "TYPE_INT32", (1,), () if scalar_reshape else None),
               TensorSpec("boxes", "TYPE_FP32", (k, 4)), TensorSpec("scores", "TYPE_FP32", (k,)),
               TensorSpec("classes", "TYPE_INT32", (k,)), TensorSpec("masks", "TYPE_FP32", (k, m, m))]
    return inputs, outputs


def _pb():
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError as e:
        raise RepositoryError(f"writing a Triton model config needs tritonclient[grpc]: pip install 'maskrt[serve]' "
                              f"({e})") from None
    return model_config_pb2, text_format


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or name in (".", ".."):
        raise RepositoryError(f"model name must be 1-128 letters, digits, '_', '.', '-' (not starting with a "
                              f"punctuation mark), got {name!r}")
    return name


def _check_positive(name: str, v: Any, allow_zero: bool = False) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < (0 if allow_zero else 1):
        raise RepositoryError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} int, got {v!r}")
    return v


def _batching(max_batch: int, preferred: Sequence[int] | None, low: int = 1) -> list[int]:
    _check_positive("max_batch", max_batch)
    pref = sorted({int(b) for b in (preferred or [])})
    bad = [b for b in pref if not low <= b <= max_batch]
    if bad:
        raise RepositoryError(f"preferred batch sizes {bad} are outside {low}..{max_batch} (the model's batch range)")
    return pref


def _model_config(name: str, cfg: ModelConfig, *, platform: str | None, backend: str | None, max_batch: int,
                  preferred: Sequence[int], queue_delay_us: int, instances: int, kind: str,
                  gpus: Sequence[int] | None, parameters: Mapping[str, str], default_file: str | None):
    pb, _ = _pb()
    mc = pb.ModelConfig(name=name, max_batch_size=max_batch)
    if platform:
        mc.platform = platform
    if backend:
        mc.backend = backend
    if default_file:
        mc.default_model_filename = default_file
    dtypes = pb.DataType
    inputs, outputs = contract_tensors(cfg, scalar_reshape=platform == "tensorrt_plan")
    for t in inputs:
        mc.input.add(name=t.name, data_type=dtypes.Value(t.data_type), dims=list(t.dims))
    for t in outputs:
        o = mc.output.add(name=t.name, data_type=dtypes.Value(t.data_type), dims=list(t.dims))
        if t.reshape is not None:
            o.reshape.shape.extend(list(t.reshape))
            o.reshape.SetInParent()  # an empty shape ([ ]: a scalar per item) must still be written
    db = mc.dynamic_batching
    db.SetInParent()
    db.preferred_batch_size.extend(list(preferred))
    db.max_queue_delay_microseconds = int(queue_delay_us)
    group = mc.instance_group.add(count=int(instances), kind=pb.ModelInstanceGroup.Kind.Value(kind))
    if gpus:
        group.gpus.extend([int(g) for g in gpus])
    for k, v in parameters.items():
        mc.parameters[k].string_value = str(v)
    return mc


def _write_config(model_dir: Path, mc) -> Path:
    _, text_format = _pb()
    path = model_dir / "config.pbtxt"
    path.write_text(text_format.MessageToString(mc), encoding="utf-8")
    return path


def load_config(path: str | os.PathLike):
    """Parses a ``config.pbtxt`` into ``model_config_pb2.ModelConfig`` (strict: an unknown field
    or a syntax error raises ``google.protobuf.text_format.ParseError``)."""
    pb, text_format = _pb()
    return text_format.Parse(Path(path).read_text(encoding="utf-8"), pb.ModelConfig())


def _prepare(out_dir: str | os.PathLike, name: str, overwrite: bool) -> tuple[Path, Path]:
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise RepositoryError(f"{root} exists and is not a folder")
    model_dir = root / _check_name(name)
    if model_dir.exists():
        if not overwrite:
            raise RepositoryError(f"{model_dir} already exists: choose another --name or --out-dir, or pass --force")
        shutil.rmtree(model_dir)
    (model_dir / "1").mkdir(parents=True)
    return root, model_dir


def _site_dirs() -> list[str]:
    paths = sysconfig.get_paths()
    return list(dict.fromkeys(str(Path(paths[k]).resolve()) for k in ("purelib", "platlib")))


# ------------------------------------------------------------------------------ CPU / any server
def write_python_model(onnx: str | os.PathLike, out_dir: str | os.PathLike, *, name: str = DEFAULT_MODEL_NAME,
                       max_batch: int = 8, preferred: Sequence[int] | None = None, queue_delay_us: int = 2000,
                       instances: int = 1, threads: int | None = 2, site_dirs: Sequence[str] | None = None,
                       overwrite: bool = False) -> Path:
    """A Python-backend model running ``OrtBackend`` on an "ort" ONNX graph; returns the model
    folder. ``threads``: ONNX Runtime intra-op threads per instance (None: its default);
    ``site_dirs``: where the stub finds maskrt and onnxruntime (default: this interpreter's
    site-packages; the stub embeds the same Python, see :mod:`.server`)."""
    from maskrt.runtime.backends.ort import OrtBackend  # checks the file, its metadata and I/O (no session)

    backend = OrtBackend(onnx)
    meta = backend.model_metadata
    if backend.file_info.external_data:
        raise RepositoryError(f"{onnx}: the graph keeps tensors in external data files; save it as one file")
    if backend.max_batch is not None:
        raise RepositoryError(f"{onnx}: the graph has a fixed batch of {backend.max_batch}; dynamic batching needs a "
                              "dynamic batch axis (re-export with `maskrt export`)")
    _check_positive("instances", instances)
    _check_positive("queue_delay_us", queue_delay_us, allow_zero=True)
    if threads is not None:
        _check_positive("threads", threads)
    pref = _batching(max_batch, preferred)
    root, model_dir = _prepare(out_dir, name, overwrite)
    params = {META_CONFIG: meta.config.to_json(), META_FLAVOUR: meta.flavour, META_FORMAT: meta.format_version,
              PARAM_SITE_DIRS: json.dumps(list(site_dirs) if site_dirs is not None else _site_dirs()),
              PARAM_THREADS: str(threads or 0)}
    mc = _model_config(name, meta.config, platform=None, backend="python", max_batch=max_batch, preferred=pref,
                       queue_delay_us=queue_delay_us, instances=instances, kind="KIND_CPU", gpus=None,
                       parameters=params, default_file=None)
    shutil.copyfile(onnx, model_dir / "1" / ONNX_FILE)
    shutil.copyfile(_TEMPLATE, model_dir / "1" / PYTHON_MODEL_FILE)
    _write_config(model_dir, mc)
    _write_readme(root, name, kind="python")
    return model_dir


# ------------------------------------------------------------------------------ GPU server
def write_tensorrt_model(engine: str | os.PathLike, out_dir: str | os.PathLike, *, name: str = DEFAULT_MODEL_NAME,
                         plugin_library: str | os.PathLike | None = None, max_batch: int | None = None,
                         preferred: Sequence[int] | None = None, queue_delay_us: int = 2000, instances: int = 1,
                         gpus: Sequence[int] | None = None, overwrite: bool = False) -> Path:
    """A ``tensorrt_plan`` model for a ``maskrt build`` engine (its sidecar gives the ModelConfig
    and the batch profile); returns the model folder. ``max_batch`` defaults to the profile's
    maximum and must lie within it; the plugin library (the sidecar's ``plugin_library``, found
    as the TensorRT backend finds it (:func:`maskrt.runtime.trt_lib.find_plugin_library`), or
    ``plugin_library``) is copied
    into ``plugins/``."""
    from maskrt.runtime.engine_meta import EngineMetaError, file_sha256, read_engine_meta

    engine = Path(engine)
    try:
        meta = read_engine_meta(engine)
    except EngineMetaError as e:
        raise RepositoryError(str(e)) from None
    if not engine.is_file():
        raise RepositoryError(f"{engine}: engine file not found")
    if meta.runtime != "tensorrt":
        raise RepositoryError(f"{engine}: a {meta.runtime!r} engine (TensorRT-RTX); Triton's tensorrt_plan backend "
                              "runs TensorRT engines only: build one with `maskrt build --runtime tensorrt` on the "
                              "serving GPU, or serve the ONNX model (Python backend)")
    if file_sha256(engine) != meta.engine_sha256:
        raise RepositoryError(f"{engine}: sha256 differs from its sidecar's engine_sha256 (a different or damaged "
                              "engine): rebuild it with `maskrt build`")
    lo, _opt, hi = meta.batch
    if lo > 1:
        raise RepositoryError(f"{engine}: the engine's batch profile starts at {lo}; Triton's dynamic batcher sends "
                              "any batch from 1 up: rebuild with a profile from 1 "
                              "(`maskrt build --batch-range 1 OPT MAX`)")
    max_batch = hi if max_batch is None else max_batch
    if _check_positive("max_batch", max_batch) > hi:
        raise RepositoryError(f"max_batch {max_batch} is above the engine's profile maximum {hi}")
    pref = _batching(max_batch, preferred)
    _check_positive("instances", instances)
    _check_positive("queue_delay_us", queue_delay_us, allow_zero=True)
    lib: Path | None = None
    if meta.plugins:
        from maskrt.runtime.trt_lib import PluginLibraryError, find_plugin_library

        try:
            lib = find_plugin_library(meta.plugin_library, explicit=plugin_library, engine_dir=engine.parent)
        except PluginLibraryError as e:
            raise RepositoryError(str(e)) from None
    root, model_dir = _prepare(out_dir, name, overwrite)
    params = {META_CONFIG: meta.config.to_json(), META_FLAVOUR: "trt", META_FORMAT: FORMAT_VERSION}
    if meta.plugins:
        params[META_PLUGINS] = json.dumps(meta.plugins, sort_keys=True)
    mc = _model_config(name, meta.config, platform="tensorrt_plan", backend=None, max_batch=max_batch,
                       preferred=pref, queue_delay_us=queue_delay_us, instances=instances, kind="KIND_GPU",
                       gpus=gpus, parameters=params, default_file=PLAN_FILE)
    shutil.copyfile(engine, model_dir / "1" / PLAN_FILE)
    shutil.copyfile(engine.with_name(engine.name + ".json"), model_dir / "1" / (PLAN_FILE + ".json"))
    if lib is not None:
        (root / PLUGINS_DIR).mkdir(exist_ok=True)
        shutil.copy2(lib, root / PLUGINS_DIR / lib.name)
    _write_config(model_dir, mc)
    _write_readme(root, name, kind="tensorrt_plan", plugin=None if lib is None else lib.name, engine=meta)
    return model_dir


# ------------------------------------------------------------------------------ README
def _write_readme(root: Path, name: str, *, kind: str, plugin: str | None = None, engine: Any = None) -> None:
    lines = [f"# Triton model repository: `{name}` ({kind})", "", "Written by `maskrt serve`. Clients:",
             f"`Predictor.open(\"triton://HOST:8001/{name}\")` (gRPC) or `triton+http://HOST:8000/{name}`;",
             f"`maskrt video SOURCE --model triton://HOST:8001/{name}`.", ""]
    if kind == "python":
        lines += ["## Start", "", "```bash", "maskrt serve --start --repository .     # the bundled tritonserver "
                  "(127.0.0.1)", "# or any Triton >= 23.xx with the Python backend, in the same Python as maskrt:",
                  "tritonserver --model-repository=$PWD", "```", "",
                  f"The Python backend runs `{name}/1/{PYTHON_MODEL_FILE}`, which opens `{ONNX_FILE}` with "
                  "maskrt's OrtBackend. Its stub must embed the Python that has maskrt and onnxruntime: the "
                  f"`{PARAM_SITE_DIRS}` parameter of `config.pbtxt` names their site-packages, and "
                  "`LD_LIBRARY_PATH` must start with that Python's LIBDIR (`python -c \"import sysconfig; "
                  "print(sysconfig.get_config_var('LIBDIR'))\"`)."]
    else:
        lines += ["## Start (a GPU server with Triton's TensorRT backend)", "",
                  f"`{name}/1/{PLAN_FILE}` is the engine ({PLAN_FILE}.json: its sidecar). An engine runs only "
                  f"with the TensorRT version and GPU it was built for (here TensorRT "
                  f"{engine.tensorrt_version}, {engine.gpu_name}, compute capability {engine.compute_capability}): "
                  "use the tritonserver container release that ships that TensorRT version."]
        if plugin:
            lines += ["", f"The engine has maskrt plugin nodes: TensorRT must load `{PLUGINS_DIR}/{plugin}` before "
                      "the engine is deserialized. Either:", "", "```bash",
                      f"tritonserver --model-repository=$PWD --backend-config=tensorrt,plugins=\"$PWD/{PLUGINS_DIR}/"
                      f"{plugin}\"", f"LD_PRELOAD=$PWD/{PLUGINS_DIR}/{plugin} tritonserver --model-repository=$PWD",
                      "```"]
        else:
            lines += ["", "```bash", "tritonserver --model-repository=$PWD", "```"]
    (root / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
