"""Paths inside artefacts stay where they belong (docs/threat_model.md):

* ONNX external data stays inside the model's folder (runtime/backends/onnx_file.py): a model whose
  tensors name a data file elsewhere -- an absolute path, ``..`` out of the folder, a symlink that
  leads out -- is refused by read_onnx_file, so by every backend, before ONNX Runtime opens it;
* an engine sidecar's ``plugin_library`` is a bare file name (runtime/engine_meta.py), never a path
  to a library elsewhere that TrtBackend would dlopen.
"""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from maskrt.runtime.backends.base import ModelLoadError
from maskrt.runtime.backends.onnx_file import read_onnx_file
from maskrt.runtime.backends.ort import OrtBackend
from maskrt.runtime.config import ModelConfig
from maskrt.runtime.engine_meta import EngineMeta, EngineMetaError


def external_tensor(name: str, location: str) -> TensorProto:
    t = TensorProto()
    t.name = name
    t.data_type = TensorProto.FLOAT
    t.dims.extend([4])
    t.data_location = TensorProto.EXTERNAL
    entry = t.external_data.add()
    entry.key, entry.value = "location", location
    return t


def write_model(path, location: str, where: str = "initializer") -> None:
    """Y = X + W with W's four floats in the file ``location`` (relative to the model's folder).
    where: "initializer", "constant" (a Constant node's value attribute) or "subgraph" (the
    Constant inside an If branch)."""
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [4])
    if where == "initializer":
        graph = helper.make_graph([helper.make_node("Add", ["X", "W"], ["Y"])], "g", [x], [y],
                                  initializer=[external_tensor("W", location)])
    elif where == "constant":
        const = helper.make_node("Constant", [], ["W"], value=external_tensor("W", location))
        graph = helper.make_graph([const, helper.make_node("Add", ["X", "W"], ["Y"])], "g", [x], [y])
    else:
        branch = helper.make_graph([helper.make_node("Constant", [], ["W"], value=external_tensor("W", location))],
                                   "branch", [], [helper.make_tensor_value_info("W", TensorProto.FLOAT, [4])])
        cond = helper.make_node("Constant", [], ["c"], value=helper.make_tensor("c", TensorProto.BOOL, [], [True]))
        node_if = helper.make_node("If", ["c"], ["W"], then_branch=branch, else_branch=branch)
        graph = helper.make_graph([cond, node_if, helper.make_node("Add", ["X", "W"], ["Y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    path.write_bytes(model.SerializeToString())


@pytest.fixture
def folders(tmp_path):
    model_dir, other = tmp_path / "model", tmp_path / "other"
    (model_dir / "data").mkdir(parents=True)
    other.mkdir()
    for f in (model_dir / "w.bin", model_dir / "data" / "w.bin", other / "w.bin"):
        np.arange(4, dtype=np.float32).tofile(f)
    os.symlink(other / "w.bin", model_dir / "link_out.bin")
    os.symlink(model_dir / "w.bin", model_dir / "link_in.bin")
    return model_dir, other


@pytest.mark.parametrize("location", ["w.bin", "data/w.bin", "data/../w.bin", "./w.bin", "link_in.bin"])
def test_locations_inside_the_folder_are_accepted(folders, location):
    model_dir, _ = folders
    path = model_dir / "m.onnx"
    write_model(path, location)
    info = read_onnx_file(path)
    assert info.external_data == (("W", location),)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])  # and ORT reads it
    np.testing.assert_array_equal(session.run(None, {"X": np.ones(4, np.float32)})[0], np.arange(4) + 1)


@pytest.mark.parametrize("where", ["initializer", "constant", "subgraph"])
@pytest.mark.parametrize("location,match", [
    ("../other/w.bin", "outside the model's folder"),
    ("data/../../other/w.bin", "outside the model's folder"),
    ("link_out.bin", "outside the model's folder"),
    ("ABSOLUTE", "an absolute path"),
    ("/etc/passwd", "an absolute path"),
    ("..", "outside the model's folder"),
    (".", "outside the model's folder"),
    ("", "not a file name"),
])
def test_locations_outside_the_folder_are_refused(folders, where, location, match):
    model_dir, other = folders
    if location == "ABSOLUTE":
        location = str(other / "w.bin")
    path = model_dir / "m.onnx"
    write_model(path, location, where)
    with pytest.raises(ModelLoadError, match=match):
        read_onnx_file(path)
    # Every backend reads the file with read_onnx_file first: refused before any session exists.
    with pytest.raises(ModelLoadError, match=match):
        OrtBackend(path)


def test_models_without_external_data_have_none(tmp_path):
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [4])
    w = helper.make_tensor("W", TensorProto.FLOAT, [4], [1, 2, 3, 4])
    graph = helper.make_graph([helper.make_node("Add", ["X", "W"], ["Y"])], "g", [x], [y], initializer=[w])
    path = tmp_path / "m.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                       ir_version=10).SerializeToString())
    assert read_onnx_file(path).external_data == ()


# ============================================================================ engine sidecar
def sidecar(plugin_library):
    return dict(
        format="maskrt.engine", format_version=1, model_config=ModelConfig().to_dict(), tensorrt_version="10.3.0",
        gpu_name="Fake GPU", compute_capability="8.7", plugins={"MaskrtRpnNMS": "1"}, plugin_library=plugin_library,
        onnx_sha256="a" * 64, precision="fp32", batch=[1, 2, 4], workspace_mib=256, engine_sha256="b" * 64,
        engine_size=10, created_at="2026-01-01T00:00:00+00:00", maskrt_version="0.1.0",
    )


def test_sidecar_plugin_library_is_a_bare_file_name():
    assert EngineMeta.from_dict(sidecar("libmaskrt_trt_plugins.so")).plugin_library == "libmaskrt_trt_plugins.so"


@pytest.mark.parametrize("name", ["/tmp/evil.so", "../../evil.so", "lib/evil.so", "..", ".", "C:\\evil.dll",
                                  "evil\0.so", "plugins\\evil.so"])
def test_sidecar_plugin_library_paths_are_refused(name):
    with pytest.raises(EngineMetaError, match="plugin_library.*bare file name"):
        EngineMeta.from_dict(sidecar(name))
