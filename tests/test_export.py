"""ONNX export (both flavours) and parity with PyTorch eager on the CPU.

The trt flavour runs in ONNX Runtime with its plugin nodes executed by our native CPU kernels
(export/plugin_ops.py), which proves the plugin graph is wired right without a GPU.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from maskrt.export.graph_checks import TensorRTCompatibilityError, check_trt_ops
from maskrt.export.onnx_export import (
    META_CONFIG,
    META_FLAVOUR,
    META_FORMAT,
    META_PLUGINS,
    export_model,
    load_plugin_table,
    read_metadata,
)
from maskrt.export.parity import batch_equals_singles, compare_batches, onnx_runner, torch_runner
from maskrt.runtime.cli import main as cli_main
from maskrt.runtime.config import ModelConfig
from maskrt.train.demo import DEFAULT_CHECKPOINT, demo_image
from maskrt.train.model.checkpoint import load_checkpoint
from maskrt.train.model.mask_rcnn import OUTPUT_NAMES

native = pytest.importorskip("maskrt._native")
HAS_PLUGIN_KERNELS = all(hasattr(native, f) for f in ("pyramid_roi_align", "rpn_nms", "detection_nms"))
needs_kernels = pytest.mark.skipif(not HAS_PLUGIN_KERNELS, reason="native plugin CPU kernels not built")


@pytest.fixture(scope="module")
def default_model():
    torch.set_num_threads(2)
    model, _ = load_checkpoint(DEFAULT_CHECKPOINT)
    return model.eval()


@pytest.fixture(scope="module")
def exported(default_model, onnx_model, tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    paths = {"ort": onnx_model}  # the session's export of the same checkpoint (conftest.py)
    paths["trt"] = d / "trt.onnx"
    export_model(default_model, paths["trt"], "trt")
    return paths


@pytest.fixture(scope="module")
def images(default_model):
    return np.stack([demo_image(100 + i, default_model.cfg.input_size) for i in range(8)])


def _assert_parity(rows):
    for i, r in enumerate(rows):
        assert r.ok, f"image {i}: {r}"


# ------------------------------------------------------------------------- the graph itself
@pytest.mark.parametrize("flavour", ["ort", "trt"])
def test_graph_contract_and_metadata(exported, default_model, flavour):
    m = onnx.load(str(exported[flavour]))
    onnx.checker.check_model(m, full_check=True)
    cfg = default_model.cfg
    meta = read_metadata(m)
    assert ModelConfig.from_json(meta[META_CONFIG]) == cfg
    assert meta[META_FLAVOUR] == flavour and meta[META_FORMAT] == "1"
    assert max(i.version for i in m.opset_import if i.domain in ("", "ai.onnx")) >= 17
    (inp,) = m.graph.input
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert inp.name == "images" and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert dims == ["batch", *cfg.input_size, 3]
    assert tuple(o.name for o in m.graph.output) == OUTPUT_NAMES
    types = {o.name: o.type.tensor_type.elem_type for o in m.graph.output}
    assert types["num_detections"] == types["classes"] == onnx.TensorProto.INT32
    ops = {n.op_type for n in m.graph.node}
    table = load_plugin_table()
    plugin_names = {p["name"] for p in table["plugins"]}
    if flavour == "ort":
        assert not ops & plugin_names and {"RoiAlign", "NonMaxSuppression", "TopK"} <= ops
        assert all(n.domain in ("", "ai.onnx") for n in m.graph.node)
    else:
        assert plugin_names <= ops and not {"RoiAlign", "NonMaxSuppression"} & ops
        assert json.loads(meta[META_PLUGINS]) == {p["name"]: p["version"] for p in table["plugins"]}
        check_trt_ops(m, table)


def test_trt_op_check_rejects_what_the_parser_cannot_take(exported):
    table = load_plugin_table()
    m = onnx.load(str(exported["trt"]))
    bad = onnx.ModelProto()
    bad.CopyFrom(m)
    bad.graph.node.append(onnx.helper.make_node("Unique", ["images"], ["u"], name="u"))
    with pytest.raises(TensorRTCompatibilityError, match="Unique"):
        check_trt_ops(bad, table)
    bad.CopyFrom(m)
    node = next(n for n in bad.graph.node if n.op_type == "MaskrtRpnNMS")
    for a in node.attribute:
        if a.name == "plugin_version":
            a.s = b"99"
    with pytest.raises(TensorRTCompatibilityError, match="plugin_version"):
        check_trt_ops(bad, table)
    ort_graph = onnx.load(str(exported["ort"]))
    with pytest.raises(TensorRTCompatibilityError, match="must use the maskrt plugin"):
        check_trt_ops(ort_graph, table)


def test_export_rejects_bad_flavour_and_size(default_model, tmp_path):
    with pytest.raises(ValueError, match="flavour"):
        export_model(default_model, tmp_path / "x.onnx", "tensorflow")
    with pytest.raises(ValueError, match="input_size"):
        default_model.cfg.replace(input_size=(300, 320))


# ------------------------------------------------------------------------- parity
def test_ort_graph_matches_eager(default_model, exported, images):
    ref = torch_runner(default_model)(images)
    out = onnx_runner(exported["ort"])(images)
    assert ref["num_detections"].sum() > 0
    _assert_parity(compare_batches(ref, out, default_model.cfg.input_size))
    # Rows past the count are padding: zeros in every output.
    for i, n in enumerate(out["num_detections"]):
        for k in ("boxes", "scores", "classes", "masks"):
            assert not out[k][i, n:].any()


@needs_kernels
def test_trt_graph_on_cpu_plugins_matches_eager(default_model, exported, images):
    ref = torch_runner(default_model)(images)
    out = onnx_runner(exported["trt"])(images)
    _assert_parity(compare_batches(ref, out, default_model.cfg.input_size))


@pytest.mark.parametrize("flavour", ["ort", pytest.param("trt", marks=needs_kernels)])
def test_batch_of_four_equals_four_singles(exported, default_model, images, flavour):
    _assert_parity(batch_equals_singles(onnx_runner(exported[flavour]), images[:4], default_model.cfg.input_size))


@pytest.mark.parametrize("flavour", ["ort", pytest.param("trt", marks=needs_kernels)])
def test_zero_detections_is_a_normal_result(default_model, zero_detection_model, tmp_path, flavour):
    cfg = default_model.cfg
    model, path = zero_detection_model
    if flavour != "ort":
        path = tmp_path / f"{flavour}.onnx"
        export_model(model, path, flavour)
    imgs = np.stack([np.full((*cfg.input_size, 3), 127, np.uint8), demo_image(3, cfg.input_size)])
    ref = torch_runner(model)(imgs)
    out = onnx_runner(path)(imgs)
    assert ref["num_detections"].tolist() == out["num_detections"].tolist() == [0, 0]
    for k in OUTPUT_NAMES[1:]:
        assert out[k].shape == ref[k].shape and not out[k].any()


def test_cli_export_prints_steps_and_checks_against_pytorch(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert cli_main(["export", "--out", str(out), "--batch", "2"]) == 0
    text = capsys.readouterr().out
    assert "check run, batch 2" in text and "nodes" in text and out.is_file()


def test_cli_export_bad_checkpoint_is_one_clear_line(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(DEFAULT_CHECKPOINT.read_bytes()[:1000])
    assert cli_main(["export", "--checkpoint", str(bad), "--out", str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a loadable checkpoint" in err[0]
    assert not (tmp_path / "m.onnx").exists()


def test_cli_export_checkpoint_without_config(tmp_path, capsys):
    payload = torch.load(DEFAULT_CHECKPOINT, weights_only=True)
    payload.pop("config")
    bad = tmp_path / "noconfig.pt"
    torch.save(payload, bad)
    assert cli_main(["export", "--checkpoint", str(bad), "--out", str(tmp_path / "m.onnx")]) == 1
    assert "no model config" in capsys.readouterr().err


def test_cli_export_inconsistent_config(tmp_path, capsys):
    payload = torch.load(DEFAULT_CHECKPOINT, weights_only=True)
    cfg = json.loads(payload["config"])
    cfg["box_representation_size"] = 512  # the checkpoint's box head is wider
    payload["config"] = json.dumps(cfg)
    bad = tmp_path / "inconsistent.pt"
    torch.save(payload, bad)
    assert cli_main(["export", "--checkpoint", str(bad), "--out", str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err
    assert "does not match the model" in err and "fc6" in err


def test_cli_export_size_must_be_multiple_of_32(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(["export", "--out", str(tmp_path / "m.onnx"), "--size", "300", "320"])
    assert e.value.code == 2
    assert "not a positive multiple of 32" in capsys.readouterr().err


def test_export_at_another_size(tmp_path):
    out = tmp_path / "m.onnx"
    assert cli_main(["export", "--out", str(out), "--size", "256", "384", "--no-check"]) == 0
    m = onnx.load(str(out))
    dims = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim[1:]]
    assert dims == [256, 384, 3]
    assert ModelConfig.from_json(read_metadata(m)[META_CONFIG]).input_size == (256, 384)


def test_paste_tie_is_compared_in_the_reference_box():
    """Two boxes 1e-4 px apart whose expanded corner straddles an integer paste one pixel apart;
    parity compares such a pair in the reference's integer box and keeps the shift in the raw IoU.
    A real mask difference is still caught."""
    from maskrt.export.parity import compare_image
    from maskrt.runtime.postprocess import expand_boxes_int

    m = 28

    def box(y1: float) -> np.ndarray:
        return np.array([[175.5, y1, 215.3, 185.85]], np.float32)

    # Bisect y1 to the value where the expanded, truncated y1 steps from 139 to 140.
    lo, hi = 141.0, 142.5
    assert expand_boxes_int(box(lo), m)[0, 1] == 139 and expand_boxes_int(box(hi), m)[0, 1] >= 140
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if expand_boxes_int(box(mid), m)[0, 1] == 139 else (lo, mid)
    a, b = box(lo - 2e-5), box(lo + 8e-5)  # 1e-4 px apart, on either side of the step
    assert (expand_boxes_int(a, m) != expand_boxes_int(b, m)).any()
    yy, xx = np.mgrid[0:m, 0:m]
    blob = (1.0 / (1.0 + np.exp(((yy - 13.5) ** 2 + (xx - 13.5) ** 2 - 80.0) / 4.0))).astype(np.float32)

    def contract(box, mask):
        return {"num_detections": np.array([1], np.int32), "boxes": box[None], "scores": np.array([[0.9]], np.float32),
                "classes": np.array([[1]], np.int32), "masks": mask[None, None]}

    p = compare_image(contract(a, blob), contract(b, blob), 0, (320, 320))
    assert p.paste_ties == 1 and p.min_mask_iou == 1.0 and p.min_mask_iou_raw < 0.99 and p.ok
    shrunk = np.where(blob > 0.5, blob * 0.9, blob).astype(np.float32)  # a real difference of the mask itself
    shrunk[:, 14:] = 0.0
    p = compare_image(contract(a, blob), contract(b, shrunk), 0, (320, 320))
    assert p.min_mask_iou < 0.99 and not p.ok
