"""TrtBackend (runtime/backends/trt.py).

Three kinds of tests:

* what needs neither TensorRT nor a GPU, run for real everywhere: the sidecar and argument checks
  at construction, ``open()`` failing with :class:`BackendUnavailable` where TensorRT / cuda-python
  really cannot be imported, the contract checker of engine I/O tensors (a pure function), the
  plugin-library search, the CUDA error helper on cuda-python's own error enums (where cuda-python
  is installed), and the import of the module without torch / onnx / TensorRT;
* the backend's own bookkeeping (buffer sizes and offsets, batch slicing, one context per batch
  size for CUDA graphs, graph capture and replay, release of every allocation exactly once, error
  paths) driven through small stand-ins for ``tensorrt`` and ``cuda.bindings.runtime``
  (``FakeTrt`` / ``FakeCudart`` below). The stand-ins follow the real calling conventions
  (cuda-python's ``(err, *values)`` tuples, TensorRT 10's tensor-name API) and keep "device"
  memory in host buffers, checking every copy against the allocations it touches. They prove the
  plumbing, not TensorRT: that is what the next kind does;
* real TensorRT on a GPU (``@pytest.mark.trt``, ``@pytest.mark.gpu``): a tiny contract graph is
  built into an engine with ``maskrt build``'s :func:`build_engine`, and TrtBackend's outputs are
  compared with OrtBackend's on the same graph and with a float64 numpy reference. They skip
  themselves with the reason where TensorRT or a CUDA device is missing.
"""

from __future__ import annotations

import ctypes
import enum
import hashlib
import importlib.util
import json
import logging
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from maskrt.runtime import trt_lib
from maskrt.runtime.backends import Backend, BackendError, ContractError, ModelLoadError, ModelNotFoundError
from maskrt.runtime.backends import trt as trt_mod
from maskrt.runtime.backends.trt import (
    BackendUnavailable,
    CudaError,
    EngineMismatchError,
    EngineSidecarError,
    EngineTensor,
    PluginLibraryError,
    TrtBackend,
    check_cuda,
    check_engine_io,
    engine_io_table,
    find_plugin_library,
)
from maskrt.runtime.config import ModelConfig
from maskrt.runtime.engine_meta import EngineMeta, EngineMetaError, EngineMismatch, Environment, write_engine_meta
from maskrt.runtime.plugin_table import plugin_versions
from maskrt.runtime.trt_lib import TrtLib

H, W = 64, 96
K = 5  # detections_per_img
M = 8  # mask_resolution = 2 * mask_roi_size
C = 4  # num_classes (with background)
CFG = ModelConfig(name="tiny-trt-test", backbone="resnet18", norm="gn", num_classes=C, input_size=(H, W),
                  detections_per_img=K, mask_roi_size=M // 2)
FAKE_MAGIC = b"FAKE-TRT-ENGINE\0"


# ============================================================================ reference model
def reference_outputs(images: np.ndarray) -> dict[str, np.ndarray]:
    """float64 mirror of the tiny graph (``build_onnx`` below); images uint8 [B, H, W, 3] ->
    num_detections = floor(mean * (K+1) / 256); boxes[b, k, j] = channel_mean[j % 3] + 4k + j;
    scores = sigmoid(mean / 255 - 0.1 k); classes = floor(mean / 64) + k;
    masks = sigmoid((grey[:M, :M] - 128) / 32 + 0.25 k) with grey the mean over channels."""
    x = images.astype(np.float64)
    mean = x.mean(axis=(1, 2, 3))
    ch = x.mean(axis=(1, 2))
    k = np.arange(K)
    grey = x.mean(axis=3)[:, :M, :M]
    return {
        "num_detections": np.floor(mean * (K + 1) / 256),
        "boxes": ch[:, [0, 1, 2, 0]][:, None, :] + np.arange(K * 4).reshape(K, 4),
        "scores": 1 / (1 + np.exp(-(mean[:, None] / 255 - 0.1 * k))),
        "classes": np.floor(mean[:, None] / 64) + k,
        "masks": 1 / (1 + np.exp(-((grey[:, None] - 128) / 32 + 0.25 * k[None, :, None, None]))),
    }


def contract_cast(ref: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The reference in the contract's dtypes (what an exact engine returns)."""
    ints = ("num_detections", "classes")
    return {n: v.astype(np.int32) if n in ints else v.astype(np.float32) for n, v in ref.items()}


def test_images(n: int, seed: int = 0) -> np.ndarray:
    """uint8 [n, H, W, 3]: each image a different base level + noise in [-2, 2], so every image
    has different outputs (catches batch mix-ups) and the floors in the graph are far from
    integer boundaries (float32 engines and the float64 reference agree exactly on them)."""
    bases = np.array([20, 100, 150, 230, 60, 200, 40, 180])
    rng = np.random.default_rng(seed)
    noise = rng.integers(-2, 3, size=(n, H, W, 3))
    return (bases[np.arange(n) % len(bases)][:, None, None, None] + noise).astype(np.uint8)


test_images.__test__ = False  # a helper, not a test (pytest collects test_* functions)


def assert_matches_reference(out: dict[str, np.ndarray], images: np.ndarray, *, exact: bool = False) -> None:
    """``exact``: bit-equal to the float32 cast of the reference (the stand-in engine computes the
    reference itself); else within float32 accumulation error (a mean over 18432 values in
    another summation order), far below the differences between images or detections."""
    ref = reference_outputs(images)
    assert list(out) == ["num_detections", "boxes", "scores", "classes", "masks"]
    for name in ("num_detections", "classes"):
        assert out[name].dtype == np.int32
        np.testing.assert_array_equal(out[name], ref[name], err_msg=name)
    for name in ("boxes", "scores", "masks"):
        assert out[name].dtype == np.float32
        if exact:
            np.testing.assert_array_equal(out[name], ref[name].astype(np.float32), err_msg=name)
        else:
            np.testing.assert_allclose(out[name], ref[name], rtol=1e-4, atol=1e-4, err_msg=name)


# ============================================================================ sidecar helpers
def make_meta(data: bytes, **changes) -> EngineMeta:
    fields = dict(
        model_config=CFG.to_dict(), tensorrt_version="10.3.0", gpu_name="Fake GPU", compute_capability="8.7",
        plugins={}, plugin_library=None, onnx_sha256="a" * 64, precision="fp32", batch=(1, 2, 4), workspace_mib=256,
        engine_sha256=hashlib.sha256(data).hexdigest(), engine_size=len(data),
        created_at="2026-01-01T00:00:00+00:00", maskrt_version="0.1.0",
    )
    fields.update(changes)
    return EngineMeta(**fields)


def write_engine(folder: Path, data: bytes = FAKE_MAGIC + b"tiny", name: str = "m.engine", **changes) -> Path:
    """An engine file with ``data`` and a valid sidecar (``changes`` overrides sidecar fields)."""
    path = folder / name
    path.write_bytes(data)
    write_engine_meta(make_meta(data, **changes), path)
    return path


# ============================================================================ construction (no TensorRT needed)
def test_construction_reads_the_sidecar_without_tensorrt(tmp_path):
    path = write_engine(tmp_path, batch=(2, 3, 8))
    b = TrtBackend(path)
    assert isinstance(b, Backend) and b.name == "trt" and not b.is_open
    assert b.config == CFG and b.input_size == (H, W)
    assert (b.min_batch, b.max_batch, b.max_detections, b.mask_resolution) == (2, 8, K, M)
    assert b.engine_meta.precision == "fp32" and b.plugins == {} and b.plugin_library is None
    assert b.device == 0 and b.cuda_graph is False and b.graph_status == {}
    assert "m.engine" in repr(b) and "closed" in repr(b)
    with pytest.raises(BackendError, match="not open"):
        b.infer(test_images(2))
    b.close()  # closing a backend that never opened does nothing


def test_missing_sidecar_says_to_rebuild(tmp_path):
    path = tmp_path / "m.engine"
    path.write_bytes(b"engine bytes")
    with pytest.raises(EngineSidecarError, match=r"m\.engine\.json: engine sidecar not found.*maskrt build") as e:
        TrtBackend(path)
    assert isinstance(e.value, ModelLoadError) and isinstance(e.value, EngineMetaError)
    # without the engine too: the sidecar is what is reported (it is read first)
    with pytest.raises(EngineSidecarError, match="sidecar not found"):
        TrtBackend(tmp_path / "nothing.engine")


@pytest.mark.parametrize(("content", "match"), [
    ("{not json", "not valid JSON"),
    ("[]", "not a maskrt engine sidecar"),
    (json.dumps({"format": "maskrt.engine", "format_version": 1}), "missing field"),
])
def test_corrupt_sidecar(tmp_path, content, match):
    path = write_engine(tmp_path)
    (tmp_path / "m.engine.json").write_text(content)
    with pytest.raises(EngineSidecarError, match=match) as e:
        TrtBackend(path)
    assert "maskrt build" in str(e.value)


def test_sidecar_with_an_invalid_config_or_field(tmp_path):
    path = write_engine(tmp_path)
    side = tmp_path / "m.engine.json"
    d = json.loads(side.read_text())
    d["model_config"]["input_size"] = [65, 96]  # not a multiple of 32
    side.write_text(json.dumps(d))
    with pytest.raises(EngineSidecarError, match="model_config.*input_size"):
        TrtBackend(path)
    d = json.loads(side.read_text())
    d["model_config"]["input_size"] = [64, 96]
    d["batch"] = [4, 2, 1]
    side.write_text(json.dumps(d))
    with pytest.raises(EngineSidecarError, match="batch"):
        TrtBackend(path)


def test_engine_missing_or_not_matching_its_sidecar(tmp_path):
    path = write_engine(tmp_path)
    path.unlink()
    with pytest.raises(ModelNotFoundError, match="engine file not found") as e:
        TrtBackend(path)
    assert isinstance(e.value, FileNotFoundError)
    path = write_engine(tmp_path)
    path.write_bytes(path.read_bytes() + b"x")
    with pytest.raises(ModelLoadError, match="sidecar records .*maskrt build"):
        TrtBackend(path)


def test_argument_errors(tmp_path):
    path = write_engine(tmp_path)
    with pytest.raises(ValueError, match="engine_path must be"):
        TrtBackend(123)
    with pytest.raises(ValueError, match="is a sidecar"):
        TrtBackend(tmp_path / "m.engine.json")
    with pytest.raises(ValueError, match="plugins=.*no such file"):
        TrtBackend(path, plugins=tmp_path / "nope.so")
    with pytest.raises(ValueError, match="plugins must be a path"):
        TrtBackend(path, plugins=1)
    for device in (-1, True, 1.0, "0"):
        with pytest.raises(ValueError, match="device must be"):
            TrtBackend(path, device=device)
    for mode in ("yes", 1, None):
        with pytest.raises(ValueError, match="cuda_graph must be"):
            TrtBackend(path, cuda_graph=mode)
    with pytest.raises(ValueError, match="check_environment must be a bool"):
        TrtBackend(path, check_environment=1)
    assert TrtBackend(path, cuda_graph="try", device=np.int64(0)).cuda_graph == "try"


# ============================================================================ real import failures
def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def test_open_without_tensorrt_or_cuda_python_says_what_to_install(tmp_path):
    """No mock: where TensorRT or cuda-python is really missing, open() names each missing package
    and the extra to install, in one line."""
    have_trt = _importable("tensorrt")
    have_cuda = trt_mod.import_cudart() is not None
    if have_trt and have_cuda:
        pytest.skip("TensorRT and cuda-python are both installed here: nothing is missing")
    b = TrtBackend(write_engine(tmp_path))
    with pytest.raises(BackendUnavailable) as e:
        b.open()
    msg = str(e.value)
    assert isinstance(e.value, BackendError) and "\n" not in msg
    assert "pip install 'maskrt[trt]'" in msg
    assert ("tensorrt is not installed" in msg) == (not have_trt)
    assert ("cuda-python is not installed" in msg) == (not have_cuda)
    assert not b.is_open
    with pytest.raises(BackendError, match="not open"):
        b.infer(test_images(1))


def test_module_imports_without_torch_onnx_tensorrt():
    """The runtime's dependency rule: importing the backend (and constructing one needs nothing
    more) loads neither torch, onnx, onnxruntime, TensorRT nor cuda-python."""
    # NOTE: `before`: cuda-bindings 12.9 installs a .pth hook that imports the `cuda` namespace
    # package at interpreter start; what counts is what importing maskrt adds.
    code = ("import sys; before = set(sys.modules); import maskrt.runtime.backends.trt, maskrt.runtime.backends as b; "
            "b.TrtBackend; bad = [m for m in ('torch', 'onnx', 'onnxruntime', 'tensorrt', 'tensorrt_rtx', 'cuda', "
            "'cuda.bindings') if m in sys.modules and m not in before]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


# ============================================================================ the contract checker (pure)
def good_table(batch: int = -1) -> list[EngineTensor]:
    return [
        EngineTensor("images", "input", "uint8", (batch, H, W, 3)),
        EngineTensor("num_detections", "output", "int32", (batch,)),
        EngineTensor("boxes", "output", "float32", (batch, K, 4)),
        EngineTensor("scores", "output", "float32", (batch, K)),
        EngineTensor("classes", "output", "int32", (batch, K)),
        EngineTensor("masks", "output", "float32", (batch, K, M, M)),
    ]


PROFILE = ((1, H, W, 3), (2, H, W, 3), (4, H, W, 3))


def test_check_engine_io_accepts_the_contract():
    assert check_engine_io(good_table(), CFG, profile=PROFILE) == (1, 4)
    assert check_engine_io(good_table(3), CFG) == (3, 3)  # a fixed batch needs no profile
    # plain (name, mode, dtype, shape) tuples, in any order
    rows = [tuple(t)[:4] for t in reversed(good_table())]
    assert check_engine_io(rows, CFG, profile=PROFILE) == (1, 4)
    # a dynamic non-batch output dim is left to the run-time check
    table = good_table()
    table[2] = EngineTensor("boxes", "output", "float32", (-1, -1, 4))
    assert check_engine_io(table, CFG, profile=PROFILE) == (1, 4)


def _replace(table, tensor, **changes):
    return [t._replace(**changes) if t.name == tensor else t for t in table]


@pytest.mark.parametrize(("mutate", "match"), [
    (lambda t: _replace(t, "images", name="input"), r"inputs are \['input'\]"),
    (lambda t: [*t, EngineTensor("extra_in", "input", "float32", (1,))], r"exactly one input 'images'"),
    (lambda t: _replace(t, "images", dtype="float32"), "input 'images' is float32; the contract's is uint8"),
    (lambda t: _replace(t, "images", shape=(-1, 3, H, W)), r"has shape \[\?, 3, 64, 96\]"),
    (lambda t: _replace(t, "images", shape=(-1, H, W)), r"has shape \[\?, 64, 96\]"),
    (lambda t: _replace(t, "images", shape=(-1, 32, W, 3)), "input_size 64x96"),
    (lambda t: _replace(t, "images", shape=(0, H, W, 3)), "batch dim 0"),
    (lambda t: _replace(t, "images", location="host"), "'images' lives on the host"),
    (lambda t: _replace(t, "masks", format="chw32"), "'masks' has format chw32"),
    (lambda t: [x for x in t if x.name != "scores"], r"missing \['scores'\]"),
    (lambda t: [*t, EngineTensor("debug", "output", "float32", (-1,))], r"unexpected \['debug'\]"),
    (lambda t: _replace(t, "classes", dtype="int64"), "'classes' is int64; the contract's is int32"),
    (lambda t: _replace(t, "masks", dtype="float16"), "'masks' is float16; the contract's is float32"),
    (lambda t: _replace(t, "num_detections", dtype="float32"), "'num_detections' is float32"),
    (lambda t: _replace(t, "boxes", shape=(-1, K)), r"'boxes' has shape \[\?, 5\]"),
    (lambda t: _replace(t, "boxes", shape=(-1, K + 1, 4)), r"'boxes' dim 1 is 6.*K = detections_per_img"),
    (lambda t: _replace(t, "masks", shape=(-1, K, M, 2 * M)), r"'masks' dim 3 is 16.*M = mask_resolution"),
    (lambda t: _replace(t, "scores", shape=(2, K)), "fixed batch dim 2 but the input batch is 1..4"),
    (lambda t: _replace(t, "boxes", mode="none"), r"\['boxes'\] are neither inputs nor outputs"),
    (lambda t: [*t, t[1]], r"names \['num_detections'\] appear more than once"),
])
def test_check_engine_io_refuses(mutate, match):
    with pytest.raises(ModelLoadError, match=match) as e:
        check_engine_io(mutate(good_table()), CFG, profile=PROFILE, source="x.engine")
    assert str(e.value).startswith("x.engine: ")


@pytest.mark.parametrize(("profile", "match"), [
    (None, "dynamic batch but no optimisation profile"),
    (((1, H, W, 3), (2, H, W, 3)), r"must be \(min, opt, max\)"),
    (((1, H, W, 3), (2, H, W, 3), (4, H, 2 * W, 3)), r"max shape of 'images' is \[4, 64, 192, 3\]"),
    (((3, H, W, 3), (2, H, W, 3), (4, H, W, 3)), "batch range"),
])
def test_check_engine_io_refuses_bad_profiles(profile, match):
    with pytest.raises(ModelLoadError, match=match):
        check_engine_io(good_table(), CFG, profile=profile)


def test_check_engine_io_follows_the_config():
    """The same table against another config: K and M come from the config, not from the table."""
    with pytest.raises(ModelLoadError, match="dim 1 is 5; the ModelConfig gives 7"):
        check_engine_io(good_table(), CFG.replace(detections_per_img=7), profile=PROFILE)
    with pytest.raises(ModelLoadError, match="input_size 96x96"):
        check_engine_io(good_table(), CFG.replace(input_size=(96, 96)), profile=PROFILE)


# ============================================================================ plugin library search
def test_find_plugin_library(tmp_path, monkeypatch):
    monkeypatch.delenv(trt_mod.ENV_PLUGINS, raising=False)
    lib_name = trt_mod.PLUGIN_LIBRARY_NAME
    a, b, engine_dir = tmp_path / "a", tmp_path / "b", tmp_path / "engines"
    for d in (a, b, engine_dir):
        d.mkdir()
    with pytest.raises(PluginLibraryError, match=f"{lib_name} not found.*{a}.*MASKRT_TRT_PLUGINS"):
        find_plugin_library(search_dirs=[a, b])
    (b / lib_name).write_bytes(b"")
    assert find_plugin_library(search_dirs=[a, b]) == b / lib_name
    (a / lib_name).write_bytes(b"")
    assert find_plugin_library(search_dirs=[a, b]) == a / lib_name  # first hit wins
    (engine_dir / lib_name).write_bytes(b"")
    assert find_plugin_library(engine_dir=engine_dir, search_dirs=[a, b]) == engine_dir / lib_name
    # the sidecar's name is what is looked for
    with pytest.raises(PluginLibraryError, match="libother.so not found"):
        find_plugin_library("libother.so", engine_dir=engine_dir, search_dirs=[a, b])
    env_lib = tmp_path / "env.so"
    env_lib.write_bytes(b"")
    monkeypatch.setenv(trt_mod.ENV_PLUGINS, str(env_lib))
    assert find_plugin_library(engine_dir=engine_dir, search_dirs=[a]) == env_lib
    assert find_plugin_library(explicit=b / lib_name, search_dirs=[a]) == b / lib_name  # explicit beats the env
    monkeypatch.setenv(trt_mod.ENV_PLUGINS, str(tmp_path / "gone.so"))
    with pytest.raises(PluginLibraryError, match=r"\$MASKRT_TRT_PLUGINS=.*gone.so: no such file"):
        find_plugin_library(search_dirs=[a])
    with pytest.raises(PluginLibraryError, match="plugins=.*nope.so.*no such file"):
        find_plugin_library(explicit=tmp_path / "nope.so")
    import maskrt

    dirs = trt_mod.default_plugin_search_dirs()
    pkg = Path(maskrt.__file__).resolve().parent
    assert dirs[0] == pkg
    if (pkg.parent / "pyproject.toml").is_file():  # a source checkout: CMake's build folder is searched
        assert pkg.parent / "build" / "plugins" / "tensorrt" in dirs


# ============================================================================ the CUDA error helper
def test_check_cuda_with_plain_values():
    class Err(enum.IntEnum):
        cudaSuccess = 0
        cudaErrorMemoryAllocation = 2

    assert check_cuda((Err.cudaSuccess,), "cudaFree") is None
    assert check_cuda((Err.cudaSuccess, 1234), "cudaMalloc") == 1234
    assert check_cuda((Err.cudaSuccess, 1, 2), "x") == (1, 2)
    assert check_cuda(Err.cudaSuccess, "bare") is None
    with pytest.raises(CudaError, match=r"^cudaMalloc\(64\) failed: cudaErrorMemoryAllocation$") as e:
        check_cuda((Err.cudaErrorMemoryAllocation, 0), "cudaMalloc(64)")
    assert isinstance(e.value, BackendError) and e.value.code == 2
    assert e.value.error_name == "cudaErrorMemoryAllocation"
    with pytest.raises(CudaError, match="failed: cudaError 7"):  # a plain int has no name
        check_cuda((7,), "x")
    with pytest.raises(TypeError):
        check_cuda((), "x")
    with pytest.raises(TypeError):
        check_cuda(("oops",), "x")


def test_check_cuda_with_cuda_python():
    """cuda-python's own error enums and a real call (which fails on a machine without a driver
    and succeeds with one: both are checked)."""
    cudart = trt_mod.import_cudart()
    if cudart is None:
        pytest.skip("cuda-python not installed")
    ok = cudart.cudaError_t.cudaSuccess
    assert check_cuda((ok, 7), "x", cudart) == 7
    bad = cudart.cudaError_t.cudaErrorInvalidValue
    with pytest.raises(CudaError, match=r"^cudaMemcpyAsync failed: cudaErrorInvalidValue \(invalid argument\)$") as e:
        check_cuda((bad,), "cudaMemcpyAsync", cudart)
    assert e.value.code == int(bad) and e.value.error_name == "cudaErrorInvalidValue"
    with pytest.raises(CudaError, match=r"cudaErrorMemoryAllocation \(out of memory\)"):
        check_cuda((cudart.cudaError_t.cudaErrorMemoryAllocation, None), "cudaMalloc", cudart)
    result = cudart.cudaGetDeviceCount()
    if int(result[0]) == 0:
        assert check_cuda(result, "cudaGetDeviceCount", cudart) == result[1]
    else:  # e.g. cudaErrorInsufficientDriver / cudaErrorNoDevice on a machine without a GPU
        with pytest.raises(CudaError, match=f"cudaGetDeviceCount failed: {result[0].name} "):
            check_cuda(result, "cudaGetDeviceCount", cudart)


# ============================================================================ stand-ins for tensorrt + cuda-python
class CudaErr(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInvalidDevice = 101
    cudaErrorStreamCaptureInvalidated = 901


class FakeStream:
    def __init__(self, handle: int):
        self.handle = handle

    def __int__(self) -> int:
        return self.handle


class FakeCudart:
    """The subset of ``cuda.bindings.runtime`` TrtBackend uses, with its (err, *values) results.
    "Device" and pinned memory are host buffers; every copy is checked against its allocations."""

    cudaError_t = CudaErr
    cudaStreamNonBlocking = 1
    cudaMemcpyKind = enum.IntEnum("cudaMemcpyKind", {"cudaMemcpyHostToDevice": 1, "cudaMemcpyDeviceToHost": 2})
    cudaStreamCaptureMode = enum.IntEnum("cudaStreamCaptureMode", {"cudaStreamCaptureModeGlobal": 0,
                                                                   "cudaStreamCaptureModeThreadLocal": 1})

    def __init__(self, devices: int = 1):
        self.devices = devices
        self.live: dict[int, tuple[object, int, str]] = {}  # address -> (buffer, size, "host" | "device")
        self.streams: set[int] = set()
        self.capturing: dict[int, list] = {}
        self.graphs: set[int] = set()
        self.execs: set[int] = set()
        self.fail_malloc_after: int | None = None  # fail the N+1-th cudaMalloc
        self.fail_capture = False
        self.mallocs = 0
        self.errors: list[str] = []  # misuse the backend should never cause
        self.current_device: dict[int, int] = {}  # thread id -> device
        self.capture_modes: list[int] = []
        self.launches = 0
        self._next = 1

    def _ok(self, *values):
        return (CudaErr.cudaSuccess, *values)

    def _alloc(self, n: int, kind: str):
        buf = (ctypes.c_uint8 * n)()
        addr = ctypes.addressof(buf)
        self.live[addr] = (buf, n, kind)
        return self._ok(addr)

    def _region(self, ptr: int, n: int) -> str | None:
        for addr, (_, size, kind) in self.live.items():
            if addr <= ptr and ptr + n <= addr + size:
                return kind
        return None

    # devices
    def cudaGetDeviceCount(self):
        return self._ok(self.devices)

    def cudaSetDevice(self, d):
        if not 0 <= d < self.devices:
            return (CudaErr.cudaErrorInvalidDevice,)
        self.current_device[threading.get_ident()] = d
        return self._ok()

    def cudaGetLastError(self):
        return self._ok()

    def cudaGetErrorString(self, err):
        return self._ok({2: b"out of memory", 901: b"operation failed due to a previous error during capture"}
                        .get(int(err), b"error"))

    # memory
    def cudaMallocHost(self, n):
        return self._alloc(n, "host")

    def cudaMalloc(self, n):
        self.mallocs += 1
        if self.fail_malloc_after is not None and self.mallocs > self.fail_malloc_after:
            return (CudaErr.cudaErrorMemoryAllocation, 0)
        return self._alloc(n, "device")

    def _free(self, ptr, kind):
        if ptr not in self.live or self.live[ptr][2] != kind:
            self.errors.append(f"free of {ptr:#x} ({kind}) that is not a live allocation")
            return (CudaErr.cudaErrorInvalidValue,)
        del self.live[ptr]
        return self._ok()

    def cudaFree(self, ptr):
        return self._free(ptr, "device")

    def cudaFreeHost(self, ptr):
        return self._free(ptr, "host")

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):
        want = {self.cudaMemcpyKind.cudaMemcpyHostToDevice: ("host", "device"),
                self.cudaMemcpyKind.cudaMemcpyDeviceToHost: ("device", "host")}[kind]
        got = (self._region(src, n), self._region(dst, n))
        if got != want or int(stream) not in self.streams:
            self.errors.append(f"memcpy of {n} bytes {got} with kind {kind.name} on stream {int(stream)}")
            return (CudaErr.cudaErrorInvalidValue,)
        ctypes.memmove(dst, src, n)
        return self._ok()

    # streams and graphs
    def cudaStreamCreateWithFlags(self, flags):
        assert flags == self.cudaStreamNonBlocking
        s = FakeStream(0x5000 + self._next)
        self._next += 1
        self.streams.add(s.handle)
        return self._ok(s)

    def cudaStreamSynchronize(self, s):
        return self._ok() if int(s) in self.streams else (CudaErr.cudaErrorInvalidValue,)

    def cudaStreamDestroy(self, s):
        if int(s) not in self.streams:
            self.errors.append("destroy of an unknown stream")
            return (CudaErr.cudaErrorInvalidValue,)
        self.streams.discard(int(s))
        return self._ok()

    def cudaStreamBeginCapture(self, s, mode):
        self.capture_modes.append(int(mode))
        self.capturing[int(s)] = []
        return self._ok()

    def cudaStreamEndCapture(self, s):
        ops = self.capturing.pop(int(s))
        if self.fail_capture:
            return (CudaErr.cudaErrorStreamCaptureInvalidated, None)
        g = ("graph", self._next, ops)
        self._next += 1
        self.graphs.add(g[1])
        return self._ok(g)

    def cudaGraphInstantiateWithFlags(self, g, flags):
        assert flags == 0 and g[1] in self.graphs
        e = ("exec", self._next, list(g[2]))
        self._next += 1
        self.execs.add(e[1])
        return self._ok(e)

    def cudaGraphDestroy(self, g):
        self.graphs.discard(g[1])
        return self._ok()

    def cudaGraphExecDestroy(self, e):
        if e[1] not in self.execs:
            self.errors.append("destroy of an unknown graph exec")
        self.execs.discard(e[1])
        return self._ok()

    def cudaGraphLaunch(self, e, s):
        assert e[1] in self.execs
        self.launches += 1
        for op in e[2]:
            op()
        return self._ok()

    def enqueue(self, stream_handle: int, op) -> None:
        """A kernel launch: recorded while the stream captures, else run now."""
        if stream_handle in self.capturing:
            self.capturing[stream_handle].append(op)
        else:
            op()


def _enum(name, members):
    return enum.Enum(name, members)


class FakeTrt:
    """The subset of TensorRT 10's Python API TrtBackend uses. The engine computes
    :func:`reference_outputs` (float64, cast to the contract dtypes) from its input buffer."""

    __version__ = "10.3.0"
    DataType = _enum("DataType", ["FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8", "INT64"])
    TensorIOMode = _enum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"])
    TensorLocation = _enum("TensorLocation", ["DEVICE", "HOST"])
    TensorFormat = _enum("TensorFormat", ["LINEAR", "CHW32"])
    ExecutionContextAllocationStrategy = _enum("ExecutionContextAllocationStrategy",
                                               ["STATIC", "ON_PROFILE_CHANGE", "USER_MANAGED"])

    class ILogger:
        Severity = _enum("Severity", ["INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"])

        def __init__(self):
            pass

    def __init__(self, cudart: FakeCudart, table=None, profile=PROFILE):
        self.cudart = cudart
        self.table = table if table is not None else good_table()
        self.profile = profile
        self.registered: set[tuple[str, str, str]] = set()
        self.library_provides: list[tuple[str, str, str]] = []
        self.loaded: list[str] = []
        self.fail_execute = False
        self.data_dependent = False
        self.contexts: list[FakeContext] = []
        self.runtimes = 0
        trt = self

        class Runtime:
            def __init__(self, logger):
                self.logger = logger
                trt.runtimes += 1

            def deserialize_cuda_engine(self, data):
                if not bytes(data).startswith(FAKE_MAGIC):
                    self.logger.log(trt.ILogger.Severity.ERROR, "IRuntime::deserializeCudaEngine: magic tag mismatch")
                    return None
                return FakeEngine(trt)

        self.Runtime = Runtime

    def get_plugin_registry(self):
        trt = self

        class Registry:
            def get_creator(self, name, version, namespace):
                return object() if (name, version, namespace) in trt.registered else None

            def load_library(self, path):
                trt.loaded.append(path)
                trt.registered.update(trt.library_provides)
                return object()

        return Registry()


class FakeEngine:
    def __init__(self, trt: FakeTrt):
        self.trt = trt
        self.rows = {t.name: t for t in trt.table}
        self.names = [t.name for t in trt.table]
        self.device_memory_size_v2 = 4096
        self.num_optimization_profiles = 1

    @property
    def num_io_tensors(self):
        return len(self.names)

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_mode(self, name):
        return self.trt.TensorIOMode[self.rows[name].mode.upper()]

    def get_tensor_dtype(self, name):
        names = {"float32": "FLOAT", "float16": "HALF", "int32": "INT32", "uint8": "UINT8", "int64": "INT64"}
        return self.trt.DataType[names[self.rows[name].dtype]]

    def get_tensor_shape(self, name):
        return self.rows[name].shape

    def get_tensor_location(self, name):
        return self.trt.TensorLocation[self.rows[name].location.upper()]

    def get_tensor_format(self, name):
        return self.trt.TensorFormat[self.rows[name].format.upper()]

    def get_tensor_profile_shape(self, name, index):
        assert name == "images" and index == 0
        return list(self.trt.profile)

    def create_execution_context(self, strategy):
        assert strategy is self.trt.ExecutionContextAllocationStrategy.USER_MANAGED
        ctx = FakeContext(self)
        self.trt.contexts.append(ctx)
        return ctx


class FakeContext:
    def __init__(self, engine: FakeEngine):
        self.engine = engine
        self.trt = engine.trt
        self.addresses: dict[str, int] = {}
        self.batch: int | None = None
        self.memory: tuple[int, int] | None = None
        self.shape_changes = 0
        self.enqueues = 0

    def set_device_memory(self, ptr, size):
        assert size >= self.engine.device_memory_size_v2
        self.memory = (ptr, size)

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr
        return name in self.engine.rows

    def set_input_shape(self, name, shape):
        lo, hi = self.trt.profile[0][0], self.trt.profile[2][0]
        if name != "images" or not lo <= shape[0] <= hi or tuple(shape[1:]) != (H, W, 3):
            return False
        self.batch = shape[0]
        self.shape_changes += 1
        return True

    def get_tensor_shape(self, name):
        b = self.batch
        shapes = {"images": (b, H, W, 3), "num_detections": (b,), "boxes": (b, K, 4), "scores": (b, K),
                  "classes": (b, K), "masks": (b, K, M, M)}
        if self.trt.data_dependent and name == "boxes":
            return (b, -1, 4)
        return shapes[name]

    def execute_async_v3(self, stream_handle):
        assert isinstance(stream_handle, int) and stream_handle in self.trt.cudart.streams
        assert self.memory is not None and self.trt.cudart._region(self.memory[0], self.memory[1]) == "device"
        if self.trt.fail_execute:
            return False
        self.enqueues += 1
        b = self.batch

        def run():  # reads the input buffer when it runs (a graph replays it on the new data)
            cudart = self.trt.cudart
            n = b * H * W * 3
            assert cudart._region(self.addresses["images"], n) == "device"
            images = np.frombuffer((ctypes.c_uint8 * n).from_address(self.addresses["images"]),
                                   np.uint8).reshape(b, H, W, 3)
            for name, value in contract_cast(reference_outputs(images)).items():
                value = np.ascontiguousarray(value)
                assert cudart._region(self.addresses[name], value.nbytes) == "device", name
                ctypes.memmove(self.addresses[name], value.ctypes.data, value.nbytes)

        self.trt.cudart.enqueue(stream_handle, run)
        return True


@pytest.fixture
def fakes(monkeypatch):
    """(FakeTrt, FakeCudart) installed as what TrtBackend.open() imports; the environment check
    sees exactly the sidecar's machine unless a test changes ``env``."""
    cudart = FakeCudart()
    trt = FakeTrt(cudart)
    monkeypatch.setattr(trt_mod, "_import_trt_and_cuda", lambda kind="tensorrt": (TrtLib(kind, trt, "10.3.0"), cudart))
    # a logger of the fake class must not outlive the test
    monkeypatch.setattr(trt_lib._LoggerBox, "loggers", {})
    env = {"value": Environment("10.3.0", "Fake GPU", "8.7", plugin_versions())}
    calls = []

    def current_environment(*, device=None, plugins=None, runtime="tensorrt"):
        calls.append(device)
        return env["value"]

    monkeypatch.setattr(trt_mod, "current_environment", current_environment)
    trt.env, trt.env_calls = env, calls
    return trt, cudart


def assert_released(cudart: FakeCudart) -> None:
    assert cudart.live == {} and cudart.streams == set() and cudart.execs == set() and cudart.graphs == set()
    assert cudart.errors == []


# ============================================================================ bookkeeping through the stand-ins
def test_fake_open_infer_close(fakes, tmp_path):
    trt, cudart = fakes
    b = TrtBackend(write_engine(tmp_path))
    with b:
        assert b.is_open and "open" in repr(b)
        assert trt.env_calls == [0]
        # buffers for the max batch (4): input + five outputs + TensorRT's scratch, all live
        sizes = sorted(size for _, size, _ in cudart.live.values())
        row = {"images": H * W * 3, "num_detections": 4, "boxes": K * 16, "scores": K * 4, "classes": K * 4,
               "masks": K * M * M * 4}
        assert sizes == sorted([4 * n for n in row.values()] * 2 + [4096])
        assert len(trt.contexts) == 1
        for n in (1, 3, 4, 2, 3):  # shape changes back and forth
            images = test_images(n, seed=n)
            out = b.infer(images)
            assert_matches_reference(out, images, exact=True)
        assert trt.contexts[0].shape_changes == 5 and trt.contexts[0].enqueues == 5
        b.infer(test_images(3, seed=9))  # the same batch again: no new shape
        assert trt.contexts[0].shape_changes == 5
        # outputs are copies: the next call does not change them
        first = b.infer(test_images(2, seed=1))
        keep = {k: v.copy() for k, v in first.items()}
        b.infer(test_images(2, seed=2))
        for k in keep:
            np.testing.assert_array_equal(first[k], keep[k])
        with pytest.raises(ValueError, match="batch size of 1..4"):
            b.infer(test_images(5))
        with pytest.raises(BackendError, match="already open"):
            b.open()
    assert not b.is_open
    assert_released(cudart)
    b.close()  # idempotent
    assert_released(cudart)
    # reopen
    with b:
        assert_matches_reference(b.infer(test_images(1)), test_images(1), exact=True)
    assert_released(cudart)


def test_fake_infer_from_several_threads(fakes, tmp_path):
    """infer serialises on a lock (the buffers are shared) and sets the device on each thread."""
    trt, cudart = fakes
    errors = []
    with TrtBackend(write_engine(tmp_path)) as b:
        def work(seed):
            try:
                for i in range(5):
                    images = test_images(1 + (seed + i) % 4, seed=seed * 10 + i)
                    assert_matches_reference(b.infer(images), images, exact=True)
            except Exception as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    assert len(cudart.current_device) >= 4 and set(cudart.current_device.values()) == {0}
    assert_released(cudart)


def test_fake_cuda_graphs_one_per_batch_size(fakes, tmp_path):
    trt, cudart = fakes
    with TrtBackend(write_engine(tmp_path), cuda_graph=True) as b:
        assert trt.contexts == []  # contexts are made per batch size, on first use
        for n, seed in ((2, 0), (2, 1), (2, 2), (1, 3), (2, 4), (1, 5), (4, 6)):
            images = test_images(n, seed)
            assert_matches_reference(b.infer(images), images, exact=True)  # a replay reads the new input
        assert b.graph_status == {1: "captured", 2: "captured", 4: "captured"}
        assert [c.batch for c in trt.contexts] == [2, 1, 4]
        assert all(c.shape_changes == 1 for c in trt.contexts)  # a captured context never changes shape
        # all contexts share one scratch buffer
        assert len({c.memory for c in trt.contexts}) == 1
        # one warm-up and one captured enqueue per batch size; every call launches a graph
        assert [c.enqueues for c in trt.contexts] == [2, 2, 2] and cudart.launches == 7
        assert cudart.capture_modes == [1, 1, 1]  # thread-local capture
        assert len(cudart.execs) == 3 and cudart.graphs == set()  # graphs destroyed once instantiated
    assert_released(cudart)


def test_fake_cuda_graph_capture_failure(fakes, tmp_path, caplog):
    trt, cudart = fakes
    cudart.fail_capture = True
    with TrtBackend(write_engine(tmp_path), cuda_graph=True) as b:
        with pytest.raises(BackendError, match="CUDA graph capture failed for a batch of 2: cudaStreamEndCapture "
                                               "failed: cudaErrorStreamCaptureInvalidated.*cuda_graph='try'"):
            b.infer(test_images(2))
        assert b.graph_status == {}
    assert_released(cudart)
    with TrtBackend(write_engine(tmp_path), cuda_graph="try") as b, caplog.at_level(logging.WARNING, "maskrt.trt"):
        for seed in range(3):
            images = test_images(2, seed)
            assert_matches_reference(b.infer(images), images, exact=True)
        assert b.graph_status[2].startswith("failed: cudaStreamEndCapture failed")
        assert cudart.launches == 0
    assert sum("running this batch size without a graph" in r.message for r in caplog.records) == 1
    assert_released(cudart)


def test_fake_environment_mismatch(fakes, tmp_path):
    trt, cudart = fakes
    trt.env["value"] = Environment("10.8.0", "Other GPU", "9.0", plugin_versions())
    b = TrtBackend(write_engine(tmp_path))
    with pytest.raises(EngineMismatchError, match=r"TensorRT 10.3.0 \(engine\) vs 10.8.0 \(here\).*compute "
                                                  r"capability 8.7 \(engine\) vs 9.0.*maskrt build") as e:
        b.open()
    assert isinstance(e.value, EngineMismatch) and isinstance(e.value, BackendError) and not b.is_open
    assert cudart.live == {}  # refused before anything was allocated
    with TrtBackend(write_engine(tmp_path), check_environment=False) as b:
        assert_matches_reference(b.infer(test_images(1)), test_images(1), exact=True)
    assert_released(cudart)


def test_fake_device_that_does_not_exist(fakes, tmp_path):
    with pytest.raises(BackendError, match="CUDA device 1 requested but 1 device.*no fallback"):
        TrtBackend(write_engine(tmp_path), device=1).open()


def test_fake_engine_errors_release_everything(fakes, tmp_path):
    trt, cudart = fakes
    # bytes that do not match the sidecar's sha256 (same size)
    path = write_engine(tmp_path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="does not match its sidecar's sha256"):
        TrtBackend(path).open()
    # bytes TensorRT refuses (the sidecar matches them): the logger's error is in the message
    with pytest.raises(ModelLoadError, match="cannot deserialize the engine: .*magic tag mismatch"):
        TrtBackend(write_engine(tmp_path, data=b"not an engine")).open()
    # an engine that breaks the contract
    trt.table = _replace(good_table(), "classes", dtype="float32")
    with pytest.raises(ModelLoadError, match="'classes' is float32; the contract's is int32"):
        TrtBackend(write_engine(tmp_path)).open()
    trt.table = good_table()
    # a profile that is not the sidecar's batch range
    with pytest.raises(ModelLoadError, match=r"takes batches 1..4 but its sidecar says 1..8"):
        TrtBackend(write_engine(tmp_path, batch=(1, 2, 8))).open()
    assert_released(cudart)
    # out of memory half-way: what was allocated is freed
    cudart.fail_malloc_after = 3
    with pytest.raises(CudaError, match=r"cudaMalloc\(\d+\) for 'scores' failed: cudaErrorMemoryAllocation "
                                        r"\(out of memory\)"):
        TrtBackend(write_engine(tmp_path)).open()
    assert_released(cudart)


def test_fake_run_time_errors(fakes, tmp_path):
    trt, cudart = fakes
    with TrtBackend(write_engine(tmp_path)) as b:
        trt.fail_execute = True
        with pytest.raises(BackendError, match="execute_async_v3 failed"):
            b.infer(test_images(1))
        trt.fail_execute = False
        trt.data_dependent = True
        with pytest.raises(ContractError, match=r"engine's output 'boxes' has shape \[2, \?, 4\].*data-dependent"):
            b.infer(test_images(2))
        trt.data_dependent = False
        assert_matches_reference(b.infer(test_images(2)), test_images(2), exact=True)
    assert_released(cudart)


def _loaded_system_library() -> Path | None:
    """A shared library already mapped into this process (libm / libc), to dlopen for real."""
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return None
    for want in ("/libm.so.6", "/libc.so.6"):
        for line in lines:
            if line.endswith(want) and Path(line.split()[-1]).is_file():
                return Path(line.split()[-1])
    return None


def test_fake_plugin_library(fakes, tmp_path, monkeypatch):
    """An engine with plugins: the library is searched (the sidecar's name, next to the engine
    first), loaded through TensorRT's registry, and each plugin version must then be registered;
    a library whose plugins are all registered already is not loaded again."""
    from maskrt.runtime.plugin_table import load_plugin_table

    trt, cudart = fakes
    monkeypatch.delenv(trt_mod.ENV_PLUGINS, raising=False)
    monkeypatch.setattr(trt_lib, "default_plugin_search_dirs", lambda: [tmp_path / "nowhere"])
    ns = load_plugin_table()["namespace"]
    versions = plugin_versions()
    engine_dir = tmp_path / "eng"
    engine_dir.mkdir()
    path = write_engine(engine_dir, plugins=versions, plugin_library="libmaskrt_test_plugins.so")
    with pytest.raises(PluginLibraryError, match=r"libmaskrt_test_plugins.so not found \(looked in .*eng, .*nowhere"):
        TrtBackend(path).open()
    (engine_dir / "libmaskrt_test_plugins.so").write_bytes(b"not ELF")
    with pytest.raises(PluginLibraryError, match="cannot load plugin library .*libmaskrt_test_plugins.so"):
        TrtBackend(path).open()
    assert_released(cudart)
    assert trt.loaded == []
    # a real shared library (one this process has loaded already), given explicitly
    lib = _loaded_system_library()
    if lib is None:
        pytest.skip("no loaded libm/libc found in /proc/self/maps")
    first = sorted(versions)[0]
    trt.library_provides = [(n, v, ns) for n, v in versions.items() if n != first]
    with pytest.raises(PluginLibraryError, match=f"does not register {first} v{versions[first]} in namespace '{ns}'"):
        TrtBackend(path, plugins=lib).open()
    assert_released(cudart)
    trt.library_provides = [(n, v, ns) for n, v in versions.items()]
    with TrtBackend(path, plugins=lib) as b:
        assert b.plugin_library == lib
        assert_matches_reference(b.infer(test_images(1)), test_images(1), exact=True)
    assert b.plugin_library is None
    assert trt.loaded == [str(lib.resolve())] * 2
    with TrtBackend(path, plugins=lib) as b:  # every plugin registered: not loaded again
        assert b.plugin_library == lib
    assert len(trt.loaded) == 2
    assert_released(cudart)


def test_engine_io_table_reads_the_tensor_api(fakes):
    trt, _ = fakes
    table = good_table()
    table[5] = table[5]._replace(format="chw32")
    trt.table = table
    rows, profile = engine_io_table(trt, FakeEngine(trt))
    assert list(rows) == table and profile == PROFILE
    trt.table = good_table(2)
    rows, profile = engine_io_table(trt, FakeEngine(trt))
    assert list(rows) == good_table(2) and profile is None


def test_real_cuda_python_without_a_device(monkeypatch, tmp_path):
    """open() with cuda-python's real runtime module where it finds no GPU: the CUDA error of the
    first call reaches the caller by name, through check_cuda (nothing is allocated)."""
    cudart = trt_mod.import_cudart()
    if cudart is None:
        pytest.skip("cuda-python not installed")
    err = cudart.cudaGetDeviceCount()[0]
    if int(err) == 0:
        pytest.skip("a CUDA device is present: the TensorRT tests cover this path")
    monkeypatch.setattr(trt_mod, "_import_trt_and_cuda",
                        lambda kind="tensorrt": (TrtLib(kind, FakeTrt(FakeCudart()), "10.3.0"), cudart))
    monkeypatch.setattr(trt_lib._LoggerBox, "loggers", {})
    b = TrtBackend(write_engine(tmp_path))
    with pytest.raises(CudaError, match=f"cudaGetDeviceCount .*failed: {err.name}") as e:
        b.open()
    assert e.value.error_name == err.name and not b.is_open
    b.close()


# ============================================================================ real TensorRT (GPU)
def build_onnx(flavour: str):
    """The tiny contract graph of :func:`reference_outputs` with maskrt metadata; ``flavour``
    "ort" (for OrtBackend) or "trt" (for ``maskrt build``: no plugin nodes, ``maskrt.plugins`` {})."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def const(name, arr):
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(arr), name))

    k = np.arange(K, dtype=np.float32)
    nodes = [
        const("ax1", np.array([1], np.int64)),
        helper.make_node("Cast", ["images"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["x"], ["mean"], axes=[1, 2, 3], keepdims=0),  # [B]
        helper.make_node("ReduceMean", ["x"], ["ch"], axes=[1, 2], keepdims=0),  # [B, 3]
        const("nscale", np.array((K + 1) / 256, np.float32)),
        helper.make_node("Mul", ["mean", "nscale"], ["n0"]),
        helper.make_node("Floor", ["n0"], ["n1"]),
        helper.make_node("Cast", ["n1"], ["num_detections"], to=TensorProto.INT32),
        const("gidx", np.array([0, 1, 2, 0], np.int64)),
        helper.make_node("Gather", ["ch", "gidx"], ["g4"], axis=1),
        helper.make_node("Unsqueeze", ["g4", "ax1"], ["g4u"]),
        const("boxoff", np.arange(K * 4, dtype=np.float32).reshape(K, 4)),
        helper.make_node("Add", ["g4u", "boxoff"], ["boxes"]),
        helper.make_node("Unsqueeze", ["mean", "ax1"], ["mu"]),  # [B, 1]
        const("c255", np.array(255, np.float32)),
        helper.make_node("Div", ["mu", "c255"], ["mu1"]),
        const("soff", 0.1 * k),
        helper.make_node("Sub", ["mu1", "soff"], ["slog"]),
        helper.make_node("Sigmoid", ["slog"], ["scores"]),
        const("c64", np.array(64, np.float32)),
        helper.make_node("Div", ["mu", "c64"], ["c0"]),
        helper.make_node("Floor", ["c0"], ["c1"]),
        const("koff", k),
        helper.make_node("Add", ["c1", "koff"], ["c2"]),
        helper.make_node("Cast", ["c2"], ["classes"], to=TensorProto.INT32),
        helper.make_node("ReduceMean", ["x"], ["grey"], axes=[3], keepdims=0),  # [B, H, W]
        const("st", np.array([0, 0], np.int64)), const("en", np.array([M, M], np.int64)),
        const("sax", np.array([1, 2], np.int64)),
        helper.make_node("Slice", ["grey", "st", "en", "sax"], ["patch"]),
        helper.make_node("Unsqueeze", ["patch", "ax1"], ["pu"]),
        const("c128", np.array(128, np.float32)), const("c32", np.array(32, np.float32)),
        helper.make_node("Sub", ["pu", "c128"], ["p0"]),
        helper.make_node("Div", ["p0", "c32"], ["p1"]),
        const("moff", (0.25 * k).reshape(1, K, 1, 1)),
        helper.make_node("Add", ["p1", "moff"], ["p2"]),
        helper.make_node("Sigmoid", ["p2"], ["masks"]),
    ]
    b = "batch"
    outputs = [helper.make_tensor_value_info("num_detections", TensorProto.INT32, [b]),
               helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [b, K, 4]),
               helper.make_tensor_value_info("scores", TensorProto.FLOAT, [b, K]),
               helper.make_tensor_value_info("classes", TensorProto.INT32, [b, K]),
               helper.make_tensor_value_info("masks", TensorProto.FLOAT, [b, K, M, M])]
    graph = helper.make_graph(nodes, "tiny_trt", [helper.make_tensor_value_info("images", TensorProto.UINT8,
                                                                               [b, H, W, 3])], outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8,
                              producer_name="test_trt_backend")
    props = {"maskrt.model_config": CFG.to_json(), "maskrt.flavour": flavour, "maskrt.format_version": "1"}
    if flavour == "trt":
        props["maskrt.plugins"] = "{}"
    helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    return model


def test_build_onnx_matches_the_reference_in_onnxruntime(tmp_path):
    """The GPU tests' graph, checked on the CPU: ONNX Runtime runs it as the reference says."""
    pytest.importorskip("onnx")
    import onnx

    from maskrt.runtime.backends import OrtBackend

    path = tmp_path / "tiny.onnx"
    onnx.save(build_onnx("ort"), str(path))
    with OrtBackend(path, intra_op_threads=1) as b:
        for n in (1, 4):
            images = test_images(n, seed=n)
            assert_matches_reference(b.infer(images), images)


@pytest.fixture(scope="module")
def trt_engine(tmp_path_factory):
    """(engine path, ONNX "ort" path) of the tiny graph built fp32 for batches 1..4 on this GPU."""
    pytest.importorskip("tensorrt", reason="TensorRT not installed")
    if trt_mod.import_cudart() is None:
        pytest.skip("cuda-python not installed")
    from maskrt.runtime.engine_meta import current_environment

    if current_environment().compute_capability is None:
        pytest.skip("no CUDA device")
    import onnx

    from maskrt.export.build_engine import build_engine

    d = tmp_path_factory.mktemp("trt")
    onnx.save(build_onnx("trt"), str(d / "tiny_trt.onnx"))
    onnx.save(build_onnx("ort"), str(d / "tiny_ort.onnx"))
    res = build_engine(d / "tiny_trt.onnx", d / "tiny.engine", precision="fp32", batch=(1, 2, 4), workspace_mib=256,
                       use_cache=False)
    return res.engine_path, d / "tiny_ort.onnx"


@pytest.mark.trt
@pytest.mark.gpu
def test_trt_matches_ort_and_the_reference(trt_engine):
    from maskrt.runtime.backends import OrtBackend

    engine, onnx_path = trt_engine
    with TrtBackend(engine) as trt_b, OrtBackend(onnx_path, intra_op_threads=1) as ort_b:
        assert (trt_b.min_batch, trt_b.max_batch) == (1, 4)
        for n in (1, 3, 4, 2, 3):
            images = test_images(n, seed=n)
            got, want = trt_b.infer(images), ort_b.infer(images)
            assert_matches_reference(got, images)
            for name in ("num_detections", "classes"):
                np.testing.assert_array_equal(got[name], want[name], err_msg=name)
            for name in ("boxes", "scores", "masks"):
                np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.trt
@pytest.mark.gpu
@pytest.mark.parametrize("mode", [True, "try"])
def test_trt_cuda_graphs_replay_new_inputs(trt_engine, mode):
    engine, _ = trt_engine
    with TrtBackend(engine, cuda_graph=mode) as b:
        for n, seed in ((2, 0), (2, 1), (1, 2), (2, 3), (4, 4), (1, 5)):
            images = test_images(n, seed)
            assert_matches_reference(b.infer(images), images)
        assert b.graph_status == {1: "captured", 2: "captured", 4: "captured"}
    with b:  # reopen: new graphs
        assert_matches_reference(b.infer(test_images(3, 7)), test_images(3, 7))


@pytest.mark.trt
@pytest.mark.gpu
def test_trt_refuses_a_mismatched_or_damaged_engine(trt_engine, tmp_path):
    engine, _ = trt_engine
    meta = json.loads(Path(str(engine) + ".json").read_text())
    data = engine.read_bytes()
    # another TensorRT version in the sidecar: refused before deserialising, unless asked not to check
    copy = tmp_path / "other.engine"
    copy.write_bytes(data)
    (tmp_path / "other.engine.json").write_text(json.dumps({**meta, "tensorrt_version": "10.0.0.0"}))
    with pytest.raises(EngineMismatchError, match=r"TensorRT 10.0.0.0 \(engine\)"):
        TrtBackend(copy).open()
    with TrtBackend(copy, check_environment=False) as b:
        assert_matches_reference(b.infer(test_images(1)), test_images(1))
    # damaged bytes with a sidecar that matches them: TensorRT refuses them
    bad = bytearray(data)
    bad[: len(bad) // 2] = bytes(len(bad) // 2)
    copy.write_bytes(bytes(bad))
    (tmp_path / "other.engine.json").write_text(json.dumps(
        {**meta, "engine_sha256": hashlib.sha256(bytes(bad)).hexdigest()}))
    with pytest.raises(ModelLoadError, match="cannot deserialize the engine"):
        TrtBackend(copy).open()
