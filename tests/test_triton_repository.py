"""Triton model repositories written by ``maskrt serve`` (runtime/serving/repository.py), checked
statically: each ``config.pbtxt`` parses as protobuf text into Triton's own ``ModelConfig``
(tritonclient's ``model_config_pb2``, strict: an unknown field fails) and names the deployment
contract's I/O with Triton's data types, mapped independently from the ONNX graph's dtypes by
tritonclient's ``np_to_triton_dtype``, and the contract's per-item dims.

The tensorrt_plan repository is written for an engine file we cannot build here (TensorRT and a
GPU are absent): the engine bytes and the plugin library are placeholders with a valid sidecar;
the check is that the repository has Triton's documented layout, the plan and the library byte for
byte, and a config whose I/O, batching and metadata match the sidecar. Triton never loads it here.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc", reason="needs tritonclient[grpc] (the serve extra)")

from google.protobuf import text_format  # noqa: E402  (tritonclient[grpc] brings protobuf)
from tritonclient.grpc import model_config_pb2 as pb  # noqa: E402
from tritonclient.utils import np_to_triton_dtype  # noqa: E402

from maskrt.runtime.backends.onnx_file import read_onnx_file  # noqa: E402
from maskrt.runtime.backends.ort import OrtBackend  # noqa: E402
from maskrt.runtime.config import ModelConfig  # noqa: E402
from maskrt.runtime.engine_meta import EngineMeta, file_sha256, write_engine_meta  # noqa: E402
from maskrt.runtime.plugin_table import plugin_versions  # noqa: E402
from maskrt.runtime.serving.repository import RepositoryError, write_python_model, write_tensorrt_model  # noqa: E402


def _parse(path) -> pb.ModelConfig:
    return text_format.Parse(path.read_text(), pb.ModelConfig())  # strict: unknown fields raise


def _check_contract(mc: pb.ModelConfig, onnx_path, cfg: ModelConfig) -> None:
    """Names, Triton dtypes (from the ONNX graph's numpy dtypes) and per-item dims of the contract."""
    info = read_onnx_file(onnx_path)
    h, w = cfg.input_size
    k, m = cfg.detections_per_img, cfg.mask_resolution
    want_dims = {"images": [h, w, 3], "num_detections": [1], "boxes": [k, 4], "scores": [k], "classes": [k],
                 "masks": [k, m, m]}
    graph = {t.name: t for t in (*info.inputs, *info.outputs)}
    assert [t.name for t in mc.input] == ["images"]
    assert [t.name for t in mc.output] == ["num_detections", "boxes", "scores", "classes", "masks"]
    for t in (*mc.input, *mc.output):
        want = "TYPE_" + np_to_triton_dtype(np.dtype(graph[t.name].dtype))
        assert pb.DataType.Name(t.data_type) == want, t.name
        assert list(t.dims) == want_dims[t.name], t.name
        # the graph's own per-item shape (batch axis dropped) is the config's, but for the scalar count
        assert list(graph[t.name].shape[1:]) == (want_dims[t.name] if t.name != "num_detections" else [])


def test_python_backend_repository(onnx_model, tmp_path):
    cfg = OrtBackend(onnx_model).config
    model_dir = write_python_model(onnx_model, tmp_path, name="seg", max_batch=6, preferred=[2, 4],
                                   queue_delay_us=500, instances=2, threads=1)
    mc = _parse(model_dir / "config.pbtxt")
    assert (mc.name, mc.backend, mc.platform, mc.max_batch_size) == ("seg", "python", "", 6)
    _check_contract(mc, onnx_model, cfg)
    assert not mc.output[0].HasField("reshape")  # the Python model itself returns [B, 1]
    assert list(mc.dynamic_batching.preferred_batch_size) == [2, 4]
    assert mc.dynamic_batching.max_queue_delay_microseconds == 500
    assert [(g.count, pb.ModelInstanceGroup.Kind.Name(g.kind)) for g in mc.instance_group] == [(2, "KIND_CPU")]
    params = {k: v.string_value for k, v in mc.parameters.items()}
    assert ModelConfig.from_json(params["maskrt.model_config"]) == cfg
    assert (params["maskrt.flavour"], params["maskrt.format_version"], params["maskrt.intra_op_threads"]) == (
        "ort", "1", "1")
    assert all(isinstance(d, str) for d in json.loads(params["maskrt.site_dirs"]))
    assert (model_dir / "1" / "model.onnx").read_bytes() == onnx_model.read_bytes()
    assert "class TritonPythonModel" in (model_dir / "1" / "model.py").read_text()
    # a second write refuses to replace the model unless asked
    with pytest.raises(RepositoryError, match="already exists"):
        write_python_model(onnx_model, tmp_path, name="seg")
    with pytest.raises(RepositoryError, match="outside 1..4"):
        write_python_model(onnx_model, tmp_path, name="other", max_batch=4, preferred=[8])
    with pytest.raises(RepositoryError, match="model name"):
        write_python_model(onnx_model, tmp_path, name="../up")


def _fake_engine(tmp_path, cfg: ModelConfig, batch=(1, 4, 8), plugins=True, runtime="tensorrt"):
    """A placeholder engine file with a valid sidecar, and a placeholder plugin library beside it."""
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"placeholder engine: not a TensorRT plan" + bytes(range(256)))
    lib = tmp_path / "libmaskrt_trt_plugins.so"
    lib.write_bytes(b"\x7fELF placeholder plugin library")
    gpu = {"gpu_name": "NVIDIA L4", "compute_capability": "8.9"} if runtime == "tensorrt" else {
        "gpu_name": None, "compute_capability": None, "compute_capabilities": ("8.9",)}
    meta = EngineMeta(model_config=cfg.to_dict(), tensorrt_version="10.3.0", runtime=runtime, **gpu,
                      plugins=plugin_versions() if plugins else {},
                      plugin_library=lib.name if plugins else None, onnx_sha256="0" * 64, precision="fp16",
                      batch=batch, workspace_mib=1024, engine_sha256=file_sha256(engine),
                      engine_size=engine.stat().st_size, created_at=datetime.now(timezone.utc).isoformat(),
                      maskrt_version="0.1.0")
    write_engine_meta(meta, engine)
    return engine, lib, meta


def test_tensorrt_plan_repository_structure(onnx_model, tmp_path):
    cfg = OrtBackend(onnx_model).config
    engine, lib, meta = _fake_engine(tmp_path, cfg)
    repo = tmp_path / "repo"
    model_dir = write_tensorrt_model(engine, repo, preferred=[4, 8], instances=2, gpus=[0])
    mc = _parse(model_dir / "config.pbtxt")
    assert (mc.name, mc.platform, mc.backend, mc.max_batch_size) == ("maskrt", "tensorrt_plan", "", 8)
    assert mc.default_model_filename == "model.plan"
    _check_contract(mc, onnx_model, cfg)
    # the engine's num_detections is [B]: published as [1] per item through an empty reshape
    count = mc.output[0]
    assert count.name == "num_detections" and count.HasField("reshape") and list(count.reshape.shape) == []
    assert all(not o.HasField("reshape") for o in mc.output[1:])
    assert list(mc.dynamic_batching.preferred_batch_size) == [4, 8]
    assert [(g.count, pb.ModelInstanceGroup.Kind.Name(g.kind), list(g.gpus)) for g in mc.instance_group] == [
        (2, "KIND_GPU", [0])]
    params = {k: v.string_value for k, v in mc.parameters.items()}
    assert ModelConfig.from_json(params["maskrt.model_config"]) == cfg
    assert params["maskrt.flavour"] == "trt" and json.loads(params["maskrt.plugins"]) == plugin_versions()
    # Triton's layout: <model>/config.pbtxt, <model>/<version>/model.plan; our plugin library beside
    assert (model_dir / "1" / "model.plan").read_bytes() == engine.read_bytes()
    assert json.loads((model_dir / "1" / "model.plan.json").read_text())["engine_sha256"] == meta.engine_sha256
    assert (repo / "plugins" / lib.name).read_bytes() == lib.read_bytes()
    readme = (repo / "README.md").read_text()
    assert f'--backend-config=tensorrt,plugins="$PWD/plugins/{lib.name}"' in readme
    assert f"LD_PRELOAD=$PWD/plugins/{lib.name}" in readme


def test_tensorrt_plan_repository_refusals(onnx_model, tmp_path):
    cfg = OrtBackend(onnx_model).config
    engine, lib, _ = _fake_engine(tmp_path, cfg, runtime="rtx")
    with pytest.raises(RepositoryError, match="runs TensorRT engines only"):
        write_tensorrt_model(engine, tmp_path / "r0")
    engine, lib, _ = _fake_engine(tmp_path, cfg, batch=(2, 4, 8))
    with pytest.raises(RepositoryError, match="profile starts at 2"):
        write_tensorrt_model(engine, tmp_path / "r1")
    engine, lib, _ = _fake_engine(tmp_path, cfg)
    with pytest.raises(RepositoryError, match="above the engine's profile maximum 8"):
        write_tensorrt_model(engine, tmp_path / "r2", max_batch=16)
    lib.unlink()
    with pytest.raises(RepositoryError, match="plugin library libmaskrt_trt_plugins.so not found"):
        write_tensorrt_model(engine, tmp_path / "r3")
    engine.write_bytes(engine.read_bytes() + b"x")  # no longer the engine the sidecar describes
    with pytest.raises(RepositoryError, match="sha256 differs"):
        write_tensorrt_model(engine, tmp_path / "r4")
