"""`maskrt build`: engine sidecar, compatibility check, engine cache, ONNX metadata validation,
letterbox, calibration input, plugin library search -- and, where TensorRT is installed, real
fp32/fp16 builds of a tiny model (``@pytest.mark.trt``; they skip themselves elsewhere).

The models here are tiny graphs made with onnx.helper that honour the deployment contract
(uint8 ``images`` [B, H, W, 3] in, the five contract outputs) and carry the metadata the
exporter writes; ONNX Runtime runs them once to show they are valid graphs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from maskrt.export import build_engine as be
from maskrt.export import calibration
from maskrt.runtime import engine_meta as em
from maskrt.runtime.config import maskrcnn_resnet18_fpn_small
from maskrt.runtime.letterbox import letterbox, letterbox_size
from maskrt.runtime.plugin_table import PluginTableError, load_plugin_table, plugin_versions

CFG = maskrcnn_resnet18_fpn_small().replace(input_size=(64, 96))
TABLE = load_plugin_table()
VERSIONS = plugin_versions(TABLE)


# ============================================================================ helpers
def tiny_model(*, flavour: str | None = "trt", config=CFG, plugins: dict | None = None, batch: int | str = "batch",
               input_hw: tuple[int, int] | None = None, drop: tuple[str, ...] = (), fmt: str | None = "1",
               plugin_nodes: tuple[tuple[str, str], ...] = (), precision: str | None = None) -> onnx.ModelProto:
    """A valid contract graph: every output is a function of the mean pixel of each image.

    images uint8 [B, H, W, 3] -> num_detections int32 [B], boxes float32 [B, K, 4], scores float32
    [B, K], classes int32 [B, K], masks float32 [B, K, M, M]. ``plugin_nodes``: (op_type,
    plugin_version) nodes in the maskrt domain added unconnected (metadata tests only).
    ``precision`` "fp16": the mean is taken in float16 (Cast in, Cast out); "int8": the pixels
    pass a QuantizeLinear/DequantizeLinear pair first; both recorded in the metadata."""
    h, w = input_hw or config.input_size
    k, m = config.detections_per_img, config.mask_resolution
    i64 = lambda name, vals: helper.make_tensor(name, TensorProto.INT64, [len(vals)], vals)  # noqa: E731
    inits = [i64("s_b", [-1]), i64("s_b1", [-1, 1]), i64("s_b11", [-1, 1, 1]), i64("s_b111", [-1, 1, 1, 1]),
             i64("e_box", [1, k, 4]), i64("e_score", [1, k]), i64("e_mask", [1, k, m, m])]
    nodes = [helper.make_node("Cast", ["images"], ["x"], to=TensorProto.FLOAT)]
    if precision == "fp16":
        nodes += [helper.make_node("Cast", ["x"], ["x16"], to=TensorProto.FLOAT16),
                  helper.make_node("ReduceMean", ["x16"], ["mean16"], axes=[1, 2, 3], keepdims=1),
                  helper.make_node("Cast", ["mean16"], ["mean"], to=TensorProto.FLOAT)]
    elif precision == "int8":
        inits += [helper.make_tensor("q_scale", TensorProto.FLOAT, [], [2.0]),
                  helper.make_tensor("q_zero", TensorProto.INT8, [], [0])]
        nodes += [helper.make_node("QuantizeLinear", ["x", "q_scale", "q_zero"], ["xq"]),
                  helper.make_node("DequantizeLinear", ["xq", "q_scale", "q_zero"], ["xdq"]),
                  helper.make_node("ReduceMean", ["xdq"], ["mean"], axes=[1, 2, 3], keepdims=1)]
    else:
        nodes += [helper.make_node("ReduceMean", ["x"], ["mean"], axes=[1, 2, 3], keepdims=1)]  # [B, 1, 1, 1]
    nodes += [
        helper.make_node("Reshape", ["mean", "s_b"], ["m_b"]),
        helper.make_node("Cast", ["m_b"], ["num_detections"], to=TensorProto.INT32),
        helper.make_node("Reshape", ["mean", "s_b11"], ["m_b11"]),
        helper.make_node("Expand", ["m_b11", "e_box"], ["boxes"]),
        helper.make_node("Reshape", ["mean", "s_b1"], ["m_b1"]),
        helper.make_node("Expand", ["m_b1", "e_score"], ["scores"]),
        helper.make_node("Cast", ["scores"], ["classes"], to=TensorProto.INT32),
        helper.make_node("Reshape", ["mean", "s_b111"], ["m_b111"]),
        helper.make_node("Expand", ["m_b111", "e_mask"], ["masks"]),
    ]
    for i, (op, version) in enumerate(plugin_nodes):
        nodes.append(helper.make_node(op, ["x"], [f"plugin_out_{i}"], name=f"plugin_{i}", domain=TABLE["onnx_domain"],
                                      plugin_version=version, plugin_namespace=TABLE["namespace"]))
    b = batch
    outputs = [helper.make_tensor_value_info("num_detections", TensorProto.INT32, [b]),
               helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [b, k, 4]),
               helper.make_tensor_value_info("scores", TensorProto.FLOAT, [b, k]),
               helper.make_tensor_value_info("classes", TensorProto.INT32, [b, k]),
               helper.make_tensor_value_info("masks", TensorProto.FLOAT, [b, k, m, m])]
    outputs = [o for o in outputs if o.name not in drop]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("images", TensorProto.UINT8,
                                                                           [b, h, w, 3])], outputs, inits)
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(TABLE["onnx_domain"], 1)] if plugin_nodes else [])
    model = helper.make_model(graph, opset_imports=opsets, producer_name="maskrt-test")
    model.ir_version = 8
    meta = {}
    if fmt is not None:
        meta[be.META_FORMAT] = fmt
    if flavour is not None:
        meta[be.META_FLAVOUR] = flavour
    if "config" not in drop:
        meta[be.META_CONFIG] = config.to_json()
    if flavour == "trt" and "plugins" not in drop:
        meta[be.META_PLUGINS] = json.dumps(plugins if plugins is not None else {}, sort_keys=True)
    if precision is not None:
        meta[be.META_PRECISION] = precision
    if precision == "int8":
        meta[be.META_CALIBRATION] = json.dumps({"sha256": "d" * 64, "images": 4, "method": "minmax"})
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model


def save(model: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


def make_meta(engine: bytes = b"engine bytes", **changes) -> em.EngineMeta:
    fields = dict(
        model_config=CFG.to_dict(), tensorrt_version="10.3.0.30", gpu_name="Orin", compute_capability="8.7",
        plugins=dict(VERSIONS), plugin_library="libmaskrt_trt_plugins.so", onnx_sha256="a" * 64, precision="fp16",
        batch=(1, 2, 4), workspace_mib=2048, engine_sha256=hashlib.sha256(engine).hexdigest(),
        engine_size=len(engine), created_at="2026-01-01T00:00:00+00:00", maskrt_version="0.1.0",
    )
    fields.update(changes)
    return em.EngineMeta(**fields)


def env_like(meta: em.EngineMeta, **changes) -> em.Environment:
    d = dict(tensorrt_version=meta.tensorrt_version, gpu_name=meta.gpu_name,
             compute_capability=meta.compute_capability, plugins=dict(meta.plugins))
    d.update(changes)
    return em.Environment(**d)


# ============================================================================ dependency direction
def test_runtime_side_imports_neither_torch_nor_onnx():
    """The sidecar/letterbox/plugin-table modules are runtime side; the builder must import on a
    Jetson without PyTorch (it imports onnx only when it reads a model)."""
    import subprocess

    code = ("import sys, maskrt.runtime.engine_meta, maskrt.runtime.letterbox, maskrt.runtime.plugin_table, "
            "maskrt.export.build_engine; print(sorted(m for m in ('torch', 'onnx', 'tensorrt') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


# ============================================================================ the test model itself
def test_tiny_model_is_a_valid_contract_graph():
    """The helper's graph is valid ONNX and gives the contract's dtypes and shapes (so the
    TensorRT tests below build a sound graph)."""
    model = tiny_model()
    onnx.checker.check_model(model, full_check=True)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    images = np.full((2, *CFG.input_size, 3), 7, np.uint8)
    images[1] = 9
    out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"images": images}), strict=True))
    k, m = CFG.detections_per_img, CFG.mask_resolution
    assert out["num_detections"].dtype == np.int32 and out["num_detections"].tolist() == [7, 9]
    assert out["boxes"].shape == (2, k, 4) and out["boxes"].dtype == np.float32
    assert out["scores"].shape == (2, k) and out["classes"].dtype == np.int32
    assert out["masks"].shape == (2, k, m, m) and float(out["masks"][1, 3, 5, 7]) == 9.0


# ============================================================================ sidecar
def test_sidecar_round_trip(tmp_path):
    engine = tmp_path / "m.engine"
    meta = make_meta(precision="int8", calibration={"sha256": "c" * 64, "source": "images", "batch_size": 2,
                                                    "max_batches": 8})
    side = em.write_engine_meta(meta, engine)
    assert side == tmp_path / "m.engine.json" == em.sidecar_path(engine)
    assert [p.name for p in tmp_path.iterdir()] == ["m.engine.json"]  # no temporary file left
    d = json.loads(side.read_text())
    assert d["format"] == "maskrt.engine" and d["format_version"] == 2 and d["batch"] == [1, 2, 4]
    assert d["compute_capability"] == "8.7" and d["plugins"] == VERSIONS
    assert d["runtime"] == "tensorrt" and d["compute_capabilities"] == ["8.7"]
    back = em.read_engine_meta(engine)
    assert back == meta
    assert em.read_engine_meta(side) == meta  # the sidecar path itself works too
    assert back.config == CFG


@pytest.mark.parametrize(("content", "match"), [
    ("{ not json", "not valid JSON"),
    ('{"format": "maskrt.engine", "format_version": 1', "not valid JSON"),  # truncated
    ("[1, 2, 3]", "not a maskrt engine sidecar"),
    ('{"name": "something else"}', "not a maskrt engine sidecar"),
])
def test_sidecar_corrupt_or_foreign(tmp_path, content, match):
    (tmp_path / "m.engine.json").write_text(content)
    with pytest.raises(em.EngineMetaError, match=match) as info:
        em.read_engine_meta(tmp_path / "m.engine")
    assert "m.engine.json" in str(info.value)


def test_sidecar_missing_and_invalid_fields(tmp_path):
    engine = tmp_path / "m.engine"
    with pytest.raises(em.EngineMetaError, match="sidecar not found"):
        em.read_engine_meta(engine)
    good = make_meta().to_dict()

    def check(d, match):
        (tmp_path / "m.engine.json").write_text(json.dumps(d))
        with pytest.raises(em.EngineMetaError, match=match):
            em.read_engine_meta(engine)

    check({k: v for k, v in good.items() if k != "tensorrt_version"}, r"missing field\(s\) \['tensorrt_version'\]")
    check({**good, "colour": "red"}, r"unknown field\(s\) \['colour'\]")
    check({**good, "format_version": 3}, "newer than this maskrt reads")
    check({**good, "runtime": "onnxruntime"}, "runtime")
    check({**good, "gpu_name": None}, "gpu_name")  # TensorRT engines name their build GPU
    check({**good, "compute_capabilities": ["8.7", "9.0"]}, "build GPU's compute capability only")
    check({**good, "runtime": "rtx", "compute_capabilities": []}, "compute_capabilities")
    check({**good, "format_version": 1, "runtime": "rtx"}, "format_version 1 sidecars are TensorRT engines")
    check({**good, "batch": [4, 2, 1]}, "min <= opt <= max")
    check({**good, "batch": "1 2 4"}, "wrong type")
    check({**good, "compute_capability": "sm_87"}, "compute_capability")
    check({**good, "onnx_sha256": "xyz"}, "onnx_sha256")
    check({**good, "precision": "fp64"}, "precision")
    check({**good, "precision": "int8"}, "calibration")  # int8 without calibration
    check({**good, "plugin_library": None}, "plugin_library")  # plugins but no library
    check({**good, "model_config": {**good["model_config"], "num_classes": 1}}, "model_config")
    check({**good, "model_config": {**good["model_config"], "no_such_field": 1}}, "model_config")
    check({**good, "workspace_mib": 0}, "workspace_mib")
    # a model without plugins has no library: valid
    ok = {**good, "plugins": {}, "plugin_library": None}
    (tmp_path / "m.engine.json").write_text(json.dumps(ok))
    assert em.read_engine_meta(engine).plugin_library is None
    # a version-1 sidecar (before `runtime`) is a TensorRT engine for its build GPU
    v1 = {k: v for k, v in good.items() if k not in ("runtime", "compute_capabilities")}
    (tmp_path / "m.engine.json").write_text(json.dumps({**v1, "format_version": 1}))
    old = em.read_engine_meta(engine)
    assert old.runtime == "tensorrt" and old.compute_capabilities == ("8.7",)
    # TensorRT-RTX CPU-only builds have no build GPU, only targets
    rtx = {**good, "runtime": "rtx", "gpu_name": None, "compute_capability": None,
           "compute_capabilities": ["8.6", "8.9"]}
    (tmp_path / "m.engine.json").write_text(json.dumps(rtx))
    assert em.read_engine_meta(engine).compute_capabilities == ("8.6", "8.9")


# ============================================================================ compatibility
def test_check_compatible_accepts_the_same_environment_and_unknowns():
    meta = make_meta()
    em.check_compatible(meta, env_like(meta))
    em.check_compatible(meta, em.Environment())  # nothing known: nothing to compare


@pytest.mark.parametrize(("change", "expected"), [
    ({"tensorrt_version": "10.7.0.23"}, "TensorRT 10.3.0.30 (engine) vs 10.7.0.23 (here)"),
    ({"compute_capability": "8.9"}, "compute capability 8.7 (engine) vs 8.9 (here)"),
    ({"gpu_name": "NVIDIA L4"}, "GPU 'Orin' (engine) vs 'NVIDIA L4' (here)"),
    ({"plugins": {**VERSIONS, "MaskrtRpnNMS": "2"}}, "plugin MaskrtRpnNMS v1 (engine) vs v2 (here)"),
    ({"plugins": {k: v for k, v in VERSIONS.items() if k != "MaskrtDetectionNMS"}},
     "plugin MaskrtDetectionNMS v1 (engine) is not in this install's plugin table"),
])
def test_check_compatible_names_each_mismatch(change, expected):
    meta = make_meta()
    with pytest.raises(em.EngineMismatch) as info:
        em.check_compatible(meta, env_like(meta, **change))
    msg = str(info.value)
    assert expected in msg and "maskrt build" in msg and "\n" not in msg
    assert msg.count(" vs ") + msg.count("is not in") == 1  # exactly the one difference


def test_check_compatible_lists_every_difference():
    meta = make_meta()
    env = env_like(meta, tensorrt_version="10.8.0.1", compute_capability="7.2", gpu_name="Xavier",
                   plugins={**VERSIONS, "MaskrtPyramidRoIAlign": "3"})
    with pytest.raises(em.EngineMismatch) as info:
        em.check_compatible(meta, env)
    parts = str(info.value).split(": ", 1)[1].split("; ")
    assert len(parts) == 4
    assert any("TensorRT" in p for p in parts) and any("compute capability" in p for p in parts)
    assert any("GPU" in p for p in parts) and any("MaskrtPyramidRoIAlign v1 (engine) vs v3" in p for p in parts)


def test_current_environment_without_tensorrt(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` raises ImportError
    env = em.current_environment(plugins={"X": "1"})
    assert env.tensorrt_version is None and env.plugins == {"X": "1"}
    assert em.current_environment().plugins == VERSIONS


# ============================================================================ cache key
def test_cache_key_changes_with_every_input():
    base = dict(onnx_sha256="a" * 64, precision="fp16", batch=(1, 2, 4), tensorrt_version="10.3.0.30",
                compute_capability="8.7", plugins=dict(VERSIONS), gpu_name="Orin", workspace_mib=1024)
    key = em.cache_key(**base)
    assert len(key) == 64 and key == em.cache_key(**base)
    assert key == em.cache_key(**{**base, "plugins": dict(reversed(list(VERSIONS.items())))})  # order-free
    variants = [
        {"onnx_sha256": "b" * 64}, {"precision": "fp32"}, {"batch": (1, 1, 4)}, {"batch": (1, 2, 8)},
        {"tensorrt_version": "10.3.0.31"}, {"compute_capability": "8.6"}, {"gpu_name": "Orin Nano"},
        {"workspace_mib": 2048}, {"plugins": {**VERSIONS, "MaskrtRpnNMS": "2"}}, {"plugins": {}},
        {"precision": "int8", "calibration_sha256": "c" * 64},
    ]
    keys = {em.cache_key(**{**base, **v}) for v in variants}
    assert len(keys) == len(variants) and key not in keys
    int8 = {**base, "precision": "int8"}
    assert em.cache_key(**int8, calibration_sha256="c" * 64) != em.cache_key(**int8, calibration_sha256="d" * 64)
    with pytest.raises(ValueError, match="calibration_sha256"):
        em.cache_key(**int8)
    with pytest.raises(ValueError, match="calibration_sha256"):
        em.cache_key(**base, calibration_sha256="c" * 64)
    with pytest.raises(ValueError, match="batch"):
        em.cache_key(**{**base, "batch": (2, 1, 4)})
    with pytest.raises(ValueError, match="compute_capability"):
        em.cache_key(**{**base, "compute_capability": "87"})


def test_engine_cache_dir_and_entries(tmp_path, monkeypatch):
    monkeypatch.setenv(em.ENV_ENGINE_CACHE, str(tmp_path / "c"))
    assert em.engine_cache_dir() == tmp_path / "c"
    monkeypatch.delenv(em.ENV_ENGINE_CACHE)
    assert em.engine_cache_dir() == Path.home() / ".cache" / "maskrt" / "engines"

    cache = be.EngineCache(tmp_path / "cache")
    assert cache.lookup("k" * 64) is None
    data = b"\x01serialized engine\x00" * 10
    meta = make_meta(data)
    cache.store("k" * 64, data, meta)
    assert cache.lookup("k" * 64) == (data, meta)
    # a corrupted engine (size kept, bytes changed) is not used
    cache.path("k" * 64).write_bytes(b"\x02" + data[1:])
    assert cache.lookup("k" * 64) is None
    # nor one whose sidecar is broken
    cache.store("k" * 64, data, meta)
    em.sidecar_path(cache.path("k" * 64)).write_text("{")
    assert cache.lookup("k" * 64) is None


# ============================================================================ ONNX metadata
def test_read_onnx_model_accepts_a_trt_export(tmp_path):
    p = save(tiny_model(plugins=VERSIONS, plugin_nodes=(("MaskrtRpnNMS", "1"),)), tmp_path / "m.onnx")
    info = be.read_onnx_model(p)
    assert info.config == CFG and info.flavour == "trt" and info.plugins == VERSIONS
    assert info.sha256 == hashlib.sha256(p.read_bytes()).hexdigest() and info.batch_dim is None
    assert be.read_onnx_model(save(tiny_model(batch=2), tmp_path / "b2.onnx")).batch_dim == 2


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"flavour": "ort"}, r"'ort' flavour.*maskrt export --flavour trt"),
    ({"flavour": "tflite"}, r"flavour 'tflite'.*--flavour trt"),
    ({"drop": ("config",)}, "has no maskrt.model_config metadata"),
    ({"drop": ("plugins",)}, "has no maskrt.plugins metadata"),
    ({"fmt": "2"}, "format version '2'"),
    ({"fmt": None, "flavour": None, "drop": ("config",)}, "has no maskrt metadata"),
    ({"plugins": {**VERSIONS, "MaskrtRpnNMS": "2"}}, r"MaskrtRpnNMS v2, this maskrt's plugin table has v1"),
    ({"plugins": {"MaskrtFancyOp": "1"}}, "MaskrtFancyOp v1, which this maskrt's plugin table does not have"),
    ({"plugin_nodes": (("MaskrtRpnNMS", "1"),)}, "which the maskrt.plugins metadata does not list"),
    ({"plugins": VERSIONS, "plugin_nodes": (("MaskrtRpnNMS", "7"),)}, "plugin_version '7'"),
    ({"input_hw": (64, 64)}, r"must be uint8 \[B, 64, 96, 3\]"),
    ({"drop": ("masks",)}, r"missing contract output\(s\) \['masks'\]"),
])
def test_read_onnx_model_refuses(tmp_path, kwargs, match):
    p = save(tiny_model(**kwargs), tmp_path / "m.onnx")
    with pytest.raises(be.OnnxModelError, match=match):
        be.read_onnx_model(p)


def test_read_onnx_model_refuses_broken_files(tmp_path):
    data = tiny_model().SerializeToString()
    (tmp_path / "half.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(be.OnnxModelError, match=r"half.onnx: not a readable ONNX model \(truncated or corrupt"):
        be.read_onnx_model(tmp_path / "half.onnx")
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(be.OnnxModelError, match="empty file"):
        be.read_onnx_model(tmp_path / "empty.onnx")
    (tmp_path / "text.onnx").write_text("hello, I am not a model")
    with pytest.raises(be.OnnxModelError, match="text.onnx"):
        be.read_onnx_model(tmp_path / "text.onnx")
    with pytest.raises(be.OnnxModelError, match="no such ONNX file"):
        be.read_onnx_model(tmp_path / "missing.onnx")


# ============================================================================ the command without TensorRT
def _build_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="maskrt build")
    be.add_build_arguments(parser)
    return parser.parse_args(list(argv))


def test_build_without_tensorrt_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # TensorRT absent, whatever this machine has
    onnx_path = save(tiny_model(), tmp_path / "m.onnx")
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", None)
    args = _build_args("--onnx", str(onnx_path), "--out", str(tmp_path / "m.engine"),
                       "--batch-range", "1", "2", "4")
    with pytest.raises(be.TensorRTUnavailable) as info:
        be.run_build(args)
    assert str(info.value).startswith("TensorRT is not installed: pip install 'maskrt[trt]' on a machine with an "
                                      "NVIDIA GPU")
    assert not (tmp_path / "m.engine").exists() and not (tmp_path / "m.engine.json").exists()
    # the model is validated before TensorRT is needed: a wrong flavour is reported as such
    ort_path = save(tiny_model(flavour="ort"), tmp_path / "ort.onnx")
    with pytest.raises(be.OnnxModelError, match="--flavour trt"):
        be.run_build(_build_args("--onnx", str(ort_path), "--out", str(tmp_path / "o.engine")))


def test_maskrt_build_command_exits_nonzero_with_one_line(tmp_path, monkeypatch, capsys):
    from maskrt.runtime import cli

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "build" not in sub.choices:
        pytest.skip("runtime/cli.py does not wire `maskrt build` yet")
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", None)
    onnx_path = save(tiny_model(), tmp_path / "m.onnx")
    rc = cli.main(["build", "--onnx", str(onnx_path), "--out", str(tmp_path / "m.engine")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert err[-1].startswith("maskrt build: error: TensorRT is not installed: pip install 'maskrt[trt]'")
    assert not any("Traceback" in line for line in err)


def test_build_argument_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", None)
    onnx_path = save(tiny_model(batch=1), tmp_path / "m.onnx")
    out = str(tmp_path / "m.engine")
    # strongly typed: the graph's precision decides; a flag that disagrees names the export to run
    for flag in ("--int8", "--fp16"):
        with pytest.raises(be.OnnxModelError) as info:
            be.run_build(_build_args("--onnx", str(onnx_path), "--out", out, flag))
        msg = str(info.value)
        assert f"the graph is fp32 but {flag} asks for {flag[2:]}" in msg and "\n" not in msg
        assert f"maskrt export --flavour trt --precision {flag[2:]}" in msg
    assert not Path(out).exists()
    with pytest.raises(ValueError, match="min <= opt <= max"):
        be.run_build(_build_args("--onnx", str(onnx_path), "--out", out, "--batch-range", "4", "2", "8"))
    with pytest.raises(SystemExit):  # the old name: one line naming the new one
        _build_args("--onnx", str(onnx_path), "--out", out, "--batch", "1", "2", "4")
    assert capsys.readouterr().err.splitlines() == [
        "maskrt build: error: --batch was renamed: use --batch-range MIN OPT MAX (--batch N is frames per inference)"]
    with pytest.raises(ValueError, match="TensorRT-RTX targets"):
        be.run_build(_build_args("--onnx", str(onnx_path), "--out", out, "--compute-capability", "9.0"))
    with pytest.raises(ValueError, match="for --runtime rtx"):
        be.run_build(_build_args("--onnx", str(onnx_path), "--out", out, "--runtime", "tensorrt",
                                 "--compute-capability", "8.6"))
    with pytest.raises(ValueError, match="workspace"):
        be.run_build(_build_args("--onnx", str(onnx_path), "--out", out, "--workspace", "0"))
    with pytest.raises(ValueError, match="sidecar"):
        be.run_build(_build_args("--onnx", str(onnx_path), "--out", out + ".json"))
    with pytest.raises(ValueError, match=r"fixed batch of 1: use --batch-range 1 1 1"):
        be.run_build(_build_args("--onnx", str(onnx_path), "--out", out, "--batch-range", "1", "2", "4"))
    with pytest.raises(SystemExit):  # argparse: --fp16 and --int8 exclude each other
        _build_args("--onnx", str(onnx_path), "--out", out, "--fp16", "--int8")


# ============================================================================ plugin library search
def test_find_plugin_library(tmp_path, monkeypatch):
    monkeypatch.delenv(be.ENV_PLUGINS, raising=False)
    lib = tmp_path / "b" / be.PLUGIN_LIBRARY_NAME
    lib.parent.mkdir()
    lib.write_bytes(b"\x7fELF")
    assert be.find_plugin_library(lib) == lib
    with pytest.raises(be.PluginLibraryError, match="missing.so.*: no such file"):
        be.find_plugin_library(tmp_path / "missing.so")
    assert be.find_plugin_library(search_dirs=[tmp_path / "a", tmp_path / "b"]) == lib
    with pytest.raises(be.PluginLibraryError, match="not found .*maskrt_trt_plugins.*MASKRT_TRT_PLUGINS"):
        be.find_plugin_library(search_dirs=[tmp_path / "a"])
    monkeypatch.setenv(be.ENV_PLUGINS, str(lib))
    assert be.find_plugin_library(search_dirs=[]) == lib
    monkeypatch.setenv(be.ENV_PLUGINS, str(tmp_path / "gone.so"))
    with pytest.raises(be.PluginLibraryError, match=r"\$MASKRT_TRT_PLUGINS=.*gone.so: no such file"):
        be.find_plugin_library()
    from maskrt.runtime.backends.trt import default_plugin_search_dirs

    dirs = default_plugin_search_dirs()
    repo = Path(__file__).resolve().parents[1]
    assert repo / "build" / "plugins" / "tensorrt" in dirs  # a source checkout searches its CMake build folder


def test_plugin_table_loader(tmp_path, monkeypatch):
    assert TABLE["namespace"] == "maskrt" and set(VERSIONS) == {
        "MaskrtPyramidRoIAlign", "MaskrtRpnNMS", "MaskrtDetectionNMS"}
    bad = tmp_path / "t.json"
    bad.write_text('{"namespace": "maskrt", "onnx_domain": "maskrt", "plugins": [{"name": "A", "version": 1}]}')
    with pytest.raises(PluginTableError, match="plugin A: 'version' must be a non-empty string"):
        load_plugin_table(bad)
    bad.write_text("{")
    with pytest.raises(PluginTableError, match="not valid JSON"):
        load_plugin_table(bad)
    monkeypatch.setenv("MASKRT_PLUGIN_TABLE", str(tmp_path / "nope.json"))
    with pytest.raises(PluginTableError, match="MASKRT_PLUGIN_TABLE"):
        load_plugin_table()


# ============================================================================ letterbox
def _letterbox_reference(image: np.ndarray, size: tuple[int, int], upscale: bool = False) -> np.ndarray:
    """The rule written out with cv2 alone: fit, INTER_LINEAR, black border at bottom/right."""
    h, w = image.shape[:2]
    in_h, in_w = size
    if not upscale and h <= in_h and w <= in_w:
        resized = image
    else:
        s = min(in_h / h, in_w / w)
        nh, nw = int(np.clip(round(h * s), 1, in_h)), int(np.clip(round(w * s), 1, in_w))
        resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return cv2.copyMakeBorder(resized, 0, in_h - resized.shape[0], 0, in_w - resized.shape[1],
                              cv2.BORDER_CONSTANT, value=(0, 0, 0))


@pytest.mark.parametrize(("hw", "upscale"), [((100, 200), False), ((300, 90), False), ((64, 96), False),
                                              ((40, 50), False), ((40, 50), True), ((1, 500), False),
                                              ((17, 23), True), ((129, 191), False), ((155, 333), False),
                                              ((300, 115), False), ((21, 46), True)])
def test_letterbox_matches_cv2(hw, upscale):
    rng = np.random.default_rng(hw[0] * 1000 + hw[1])
    image = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
    got = letterbox(image, (64, 96), upscale=upscale)
    want = _letterbox_reference(image, (64, 96), upscale)
    assert got.image.dtype == np.uint8 and got.image.shape == (64, 96, 3)
    np.testing.assert_array_equal(got.image, want)
    nh, nw = got.resized
    assert got.scale == (nw / hw[1], nh / hw[0]) and got.pad == (0.0, 0.0)


def test_letterbox_known_geometry_and_out_buffer():
    # 100 x 200 into 64 x 96: s = min(0.64, 0.48) = 0.48 -> 48 x 96, padded with 16 black rows
    image = np.full((100, 200, 3), (10, 20, 30), np.uint8)
    batch = np.full((2, 64, 96, 3), 255, np.uint8)
    r = letterbox(image, (64, 96), out=batch[1])
    assert np.shares_memory(r.image, batch[1])
    assert r.resized == (48, 96) and r.scale == (0.48, 0.48)
    assert (batch[1, :48] == (10, 20, 30)).all() and (batch[1, 48:] == 0).all()
    assert (batch[0] == 255).all()  # the other row is untouched
    assert letterbox_size(40, 50, (64, 96)) == (40, 50)  # fits: not enlarged
    assert letterbox_size(40, 50, (64, 96), upscale=True) == (64, 80)


def test_letterbox_agrees_with_the_evaluation_path():
    """maskrt eval feeds models with fit_to_input + pad_to_size; calibration must see the same."""
    evaluate = pytest.importorskip("maskrt.train.evaluate")
    rng = np.random.default_rng(5)
    for hw in ((100, 200), (333, 77), (20, 30), (155, 333), (300, 115)):
        image = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
        fitted, scale = evaluate.fit_to_input(image, (64, 96))
        r = letterbox(image, (64, 96))
        np.testing.assert_array_equal(r.image, evaluate.pad_to_size(fitted, (64, 96)))
        assert r.scale == scale


def test_letterbox_validates_its_arguments():
    img = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(ValueError, match="image: expected uint8"):
        letterbox(img.astype(np.float32), (32, 32))
    with pytest.raises(ValueError, match="image: expected uint8"):
        letterbox(img[..., 0], (32, 32))
    with pytest.raises(ValueError, match="input_size"):
        letterbox(img, (0, 32))
    with pytest.raises(ValueError, match="out: expected uint8 \\[32, 32, 3\\]"):
        letterbox(img, (32, 32), out=np.zeros((32, 31, 3), np.uint8))
    with pytest.raises(ValueError, match="empty"):
        letterbox(np.zeros((0, 5, 3), np.uint8), (32, 32))


# ============================================================================ calibration input
def _write_images(folder: Path, n: int, seed: int = 0) -> list[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        img = rng.integers(0, 256, (50 + 10 * i, 120, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f"img_{i}.png"), img)
        images.append(img)
    return images


def test_calibration_images_batches_and_warnings(tmp_path, caplog):
    folder = tmp_path / "calib"
    images = _write_images(folder, 5)
    (folder / "notes.txt").write_text("not an image")
    (folder / "img_2b.jpg").write_bytes(b"\xff\xd8 garbage, not a JPEG")  # sorts between img_2 and img_3
    with caplog.at_level(logging.WARNING, logger="maskrt.build"):
        src = calibration.CalibrationImages(folder, (64, 96), batch_size=2, max_batches=10)
        batches = list(src.batches())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("notes.txt" in w and "not images" in w for w in warnings)
    assert any("img_2b.jpg" in w and "not a readable image" in w for w in warnings)
    assert len(batches) == 2  # 5 readable images -> 2 full batches, the fifth dropped
    for b in batches:
        assert b.dtype == np.uint8 and b.shape == (2, 64, 96, 3) and b.flags.c_contiguous
    # PNG is lossless: each slot is the letterbox of the original pixels, in name order
    for i in range(4):
        np.testing.assert_array_equal(batches[i // 2][i % 2], letterbox(images[i], (64, 96)).image)
    assert len(list(calibration.CalibrationImages(folder, (64, 96), batch_size=1, max_batches=3).batches())) == 3


def test_calibration_images_errors(tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        calibration.CalibrationImages(tmp_path / "missing", (64, 96))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no images"):
        calibration.CalibrationImages(tmp_path / "empty", (64, 96))
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="has no images"):
        calibration.CalibrationImages(tmp_path / "text", (64, 96))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="fewer readable images than one batch"):
        list(calibration.CalibrationImages(tmp_path / "broken", (64, 96)).batches())
    _write_images(tmp_path / "one", 1)
    with pytest.raises(ValueError, match="fewer readable images than one batch \\(2\\)"):
        list(calibration.CalibrationImages(tmp_path / "one", (64, 96), batch_size=2).batches())
    with pytest.raises(ValueError, match="batch_size"):
        calibration.CalibrationImages(tmp_path / "one", (64, 96), batch_size=0)


def test_calibration_hash_follows_the_images(tmp_path):
    folder = tmp_path / "calib"
    _write_images(folder, 3)
    h = calibration.CalibrationImages(folder, (64, 96)).sha256()
    assert h == calibration.CalibrationImages(folder, (64, 96)).sha256()
    assert h != calibration.CalibrationImages(folder, (64, 96), batch_size=2).sha256()
    assert h != calibration.CalibrationImages(folder, (64, 96), max_batches=5).sha256()
    assert h != calibration.CalibrationImages(folder, (96, 96)).sha256()
    img = cv2.imread(str(folder / "img_1.png"))
    img[0, 0] ^= 1
    cv2.imwrite(str(folder / "img_1.png"), img)
    assert calibration.CalibrationImages(folder, (64, 96)).sha256() != h


# ============================================================================ TensorRT (skips without it)
@pytest.fixture
def trt_gpu():
    from maskrt.runtime.trt_lib import installed_runtime

    lib = installed_runtime("tensorrt")
    if lib is None:
        pytest.skip("TensorRT 10/11 not installed")
    env = em.current_environment()
    if env.compute_capability is None:
        pytest.skip("no CUDA GPU found (cuda-python / nvidia-smi)")
    return lib.trt


@pytest.mark.trt
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_trt_build_tiny_model(trt_gpu, tmp_path, precision):
    """TensorRT 10 and 11 alike: strongly typed, the precision is the graph's."""
    trt = trt_gpu
    onnx_path = save(tiny_model(precision=precision), tmp_path / "m.onnx")
    lines: list[str] = []
    res = be.build_engine(onnx_path, tmp_path / "m.engine", batch=(1, 2, 4), workspace_mib=256, runtime="tensorrt",
                          timing_cache=tmp_path / "timing.cache", cache_dir=tmp_path / "cache", progress=lines.append)
    assert not res.cached and res.engine_path.is_file() and (tmp_path / "timing.cache").is_file()
    meta = em.read_engine_meta(res.engine_path)
    assert meta == res.meta and meta.precision == precision and meta.batch == (1, 2, 4)
    assert meta.tensorrt_version == trt.__version__ and meta.plugins == {} and meta.plugin_library is None
    assert meta.engine_sha256 == em.file_sha256(res.engine_path)
    em.check_compatible(meta, em.current_environment())
    assert any(line.startswith("parse ONNX") for line in lines)
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(res.engine_path.read_bytes())
    assert engine is not None
    names = {engine.get_tensor_name(i) for i in range(engine.num_io_tensors)}
    assert names == {"images", *be.OUTPUT_NAMES}
    assert tuple(engine.get_tensor_profile_shape("images", 0)[2]) == (4, *CFG.input_size, 3)
    # the same build again comes from the engine cache, byte for byte
    again = be.build_engine(onnx_path, tmp_path / "m2.engine", batch=(1, 2, 4), runtime="tensorrt",
                            workspace_mib=256, cache_dir=tmp_path / "cache")
    assert again.cached and (tmp_path / "m2.engine").read_bytes() == res.engine_path.read_bytes()


@pytest.mark.trt
def test_trt_build_reports_a_missing_plugin_library(trt_gpu, tmp_path, monkeypatch):
    monkeypatch.setenv(be.ENV_PLUGINS, str(tmp_path / "nowhere" / be.PLUGIN_LIBRARY_NAME))
    onnx_path = save(tiny_model(plugins=VERSIONS), tmp_path / "m.onnx")
    with pytest.raises(be.PluginLibraryError, match="MASKRT_TRT_PLUGINS"):
        be.build_engine(onnx_path, tmp_path / "m.engine", runtime="tensorrt", use_cache=False)


# ============================================================================ TensorRT-RTX: real builds on the CPU
@pytest.fixture
def rtx():
    """TensorRT-RTX (the dev extra installs it): its builder works without a GPU."""
    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX not installed (pip install 'maskrt[rtx]')")
    from maskrt.runtime.trt_lib import import_tensorrt

    return import_tensorrt("rtx")


def test_rtx_import_makes_the_unversioned_library_name(rtx):
    """The parser dlopens libtensorrt_rtx.so; the wheel ships .so.1: trt_lib links it (once)."""
    import tensorrt_rtx_libs

    from maskrt.runtime.trt_lib import ensure_rtx_library_name

    folder = Path(tensorrt_rtx_libs.__file__).parent
    link = folder / "libtensorrt_rtx.so"
    assert link.exists() and link.resolve() == (folder / "libtensorrt_rtx.so.1").resolve()
    assert ensure_rtx_library_name(rtx.trt) == link  # idempotent


@pytest.mark.trt
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_rtx_builds_strongly_typed_engines_on_the_cpu(rtx, tmp_path, precision):
    """A real strongly typed build of the plugin-free contract graph at each precision: the
    profile, the sidecar (runtime, targets, calibration), the cache; the precision is the graph's."""
    onnx_path = save(tiny_model(precision=precision), tmp_path / "m.onnx")
    flag = None if precision == "fp32" else precision
    lines: list[str] = []
    res = be.build_engine(onnx_path, tmp_path / "m.engine", precision=flag, batch=(1, 2, 4), workspace_mib=64,
                          runtime="rtx", compute_capabilities=["86", "sm_89"], cache_dir=tmp_path / "cache",
                          progress=lines.append)
    assert not res.cached and res.engine_path.stat().st_size == res.meta.engine_size > 0
    meta = em.read_engine_meta(res.engine_path)
    assert meta == res.meta and meta.runtime == "rtx" and meta.tensorrt_version == rtx.version
    assert meta.precision == precision and meta.batch == (1, 2, 4) and meta.compute_capabilities == ("8.6", "8.9")
    assert meta.plugins == {} and meta.plugin_library is None
    assert (meta.calibration is not None) == (precision == "int8")
    assert meta.engine_sha256 == em.file_sha256(res.engine_path)
    assert any(line.startswith("parse ONNX") and "strongly typed" in line for line in lines)
    # running the engine needs a GPU; the plan names the contract's tensors
    data = res.engine_path.read_bytes()
    for name in ("images", *be.OUTPUT_NAMES):
        assert name.encode() in data
    again = be.build_engine(onnx_path, tmp_path / "m2.engine", precision=flag, batch=(1, 2, 4), workspace_mib=64,
                            runtime="rtx", compute_capabilities=["8.9", "8.6"], cache_dir=tmp_path / "cache")
    assert again.cached and (tmp_path / "m2.engine").read_bytes() == data
    other = be.build_engine(onnx_path, tmp_path / "m3.engine", precision=flag, batch=(1, 2, 4), workspace_mib=64,
                            runtime="rtx", compute_capabilities=["8.6"], cache_dir=tmp_path / "cache")
    assert not other.cached and other.meta.compute_capabilities == ("8.6",)


def test_rtx_refuses_a_precision_the_graph_does_not_have(rtx, tmp_path):
    onnx_path = save(tiny_model(precision="fp16"), tmp_path / "m.onnx")
    with pytest.raises(be.OnnxModelError, match=r"the graph is fp16 but --int8 asks for int8.*--precision int8 "
                                                r"--calib DIR"):
        be.build_engine(onnx_path, tmp_path / "m.engine", precision="int8", runtime="rtx", use_cache=False)
    assert not (tmp_path / "m.engine").exists()


def test_rtx_parser_errors_name_the_node(rtx, tmp_path):
    model = tiny_model()
    model.graph.node[1].op_type = "NoSuchOp"  # the ReduceMean
    onnx_path = save(model, tmp_path / "m.onnx")
    with pytest.raises(be.EngineBuildError, match=r"ONNX parser failed on \d+ error\(s\): node 1 .*NoSuchOp"):
        be.build_engine(onnx_path, tmp_path / "m.engine", runtime="rtx", use_cache=False)


def test_engine_of_the_other_runtime_is_refused_naming_it():
    meta = make_meta(runtime="rtx", gpu_name=None, compute_capability=None, compute_capabilities=("8.6", "8.9"))
    with pytest.raises(em.EngineMismatch, match="built with TensorRT-RTX and runs only with it, not with TensorRT"):
        em.check_compatible(meta, em.Environment("10.3.0", "Orin", "8.7", dict(VERSIONS), "tensorrt"))
    em.check_compatible(meta, em.Environment(meta.tensorrt_version, "RTX 4090", "8.9", dict(VERSIONS), "rtx"))
    with pytest.raises(em.EngineMismatch, match=r"compute capability one of 8.6, 8.9 \(engine\) vs 12.0"):
        em.check_compatible(meta, em.Environment(meta.tensorrt_version, "RTX 5090", "12.0", dict(VERSIONS), "rtx"))


# ============================================================================ the full graph with our plugins (headers)
@pytest.fixture(scope="module")
def plugin_library():
    """The plugin library built against TensorRT headers (plugins/tensorrt/README.md); CI has no
    headers, so these tests skip there."""
    try:
        return be.find_plugin_library()
    except be.PluginLibraryError:
        pytest.skip("no libmaskrt_trt_plugins.so (build it with TensorRT_ROOT at the TensorRT OSS headers: "
                    "plugins/tensorrt/README.md)")


@pytest.fixture(scope="module")
def default_trt_fp32(tmp_path_factory, plugin_library):
    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX not installed")
    from maskrt.export.onnx_export import export_model
    from maskrt.train.demo import DEFAULT_CHECKPOINT
    from maskrt.train.model.checkpoint import load_checkpoint

    model, _ = load_checkpoint(DEFAULT_CHECKPOINT)
    path = tmp_path_factory.mktemp("trt") / "default_trt_fp32.onnx"
    export_model(model.eval(), path, "trt")
    return path


@pytest.mark.slow
@pytest.mark.trt
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_rtx_builds_the_default_trt_graph_with_our_plugins(precision, plugin_library, default_trt_fp32, tmp_path):
    """Parse, strongly typed build and serialization of the default checkpoint's trt graph with
    the plugin library, on the CPU (~15 s per build + the export)."""
    import cv2

    from maskrt.export.onnx_export import export_model
    from maskrt.train.demo import DEFAULT_CHECKPOINT, demo_image
    from maskrt.train.model.checkpoint import load_checkpoint

    path = default_trt_fp32
    if precision != "fp32":
        model, _ = load_checkpoint(DEFAULT_CHECKPOINT)
        kw = {}
        if precision == "int8":
            calib = tmp_path / "calib"
            calib.mkdir()
            for i in range(2):
                cv2.imwrite(str(calib / f"{i}.png"), demo_image(50 + i, model.cfg.input_size))
            kw = {"calib_dir": calib, "calib_cache_dir": tmp_path / "cc"}
        path = tmp_path / f"default_trt_{precision}.onnx"
        export_model(model.eval(), path, "trt", precision=precision, **kw)
    res = be.build_engine(path, tmp_path / "m.engine", runtime="rtx", batch=(1, 1, 2), plugins=plugin_library,
                          use_cache=False)
    meta = res.meta
    assert meta.precision == precision and meta.runtime == "rtx" and meta.plugin_library == plugin_library.name
    assert meta.plugins == VERSIONS and meta.engine_size > 1 << 20


@pytest.mark.trt
@pytest.mark.parametrize(("attribute", "change", "message"), [
    ("iou_threshold", 2.0, "MaskrtRpnNMS (layer 'rpn/MaskrtRpnNMS_node_69', build): iou_threshold must be in [0, 1]"),
    ("level_sizes", 1, "getOutputShapes: boxes has N = 25575 anchors but sum(level_sizes) = 25576"),
])
def test_rtx_plugin_build_time_errors_are_reported(attribute, change, message, plugin_library, default_trt_fp32,
                                                  tmp_path, capfd):
    """Our plugins' createPlugin / getOutputShapes errors: the build fails naming the node, and the
    plugin's own message reaches the user. NOTE: TensorRT-RTX 1.7's logger finder returns null
    during parsing, so the message comes on stderr, not through TensorRT's logger (see
    plugins/tensorrt/README.md)."""
    model = onnx.load(str(default_trt_fp32))
    node = next(n for n in model.graph.node if n.op_type == "MaskrtRpnNMS")
    attr = next(a for a in node.attribute if a.name == attribute)
    if attribute == "level_sizes":
        attr.ints[0] += change
    else:
        attr.f = change
    bad = save(model, tmp_path / "bad.onnx")
    with pytest.raises(be.EngineBuildError, match=r"ONNX parser failed .*MaskrtRpnNMS_node_69.*\(MaskrtRpnNMS\)"):
        be.build_engine(bad, tmp_path / "bad.engine", runtime="rtx", plugins=plugin_library, use_cache=False)
    assert message in capfd.readouterr().err
    assert not (tmp_path / "bad.engine").exists()
