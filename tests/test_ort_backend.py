"""OrtBackend and the shared backend interface (runtime/backends/).

The models are tiny contract-conformant ONNX graphs built here with onnx.helper: every output is a
deterministic function of the input pixels (per-image sums and means, a corner patch), mirrored in
float64 numpy by ``reference_outputs`` -- an independent reference for what the backend returns.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from maskrt.runtime.backends import (
    OUTPUT_NAMES,
    Backend,
    BackendError,
    ContractError,
    ModelLoadError,
    ModelNotFoundError,
    OrtBackend,
    validate_images,
    validate_outputs,
)
from maskrt.runtime.backends.onnx_file import read_onnx_file
from maskrt.runtime.config import ModelConfig

H, W = 64, 96
K = 5  # detections_per_img
M = 8  # mask_resolution = 2 * mask_roi_size
C = 4  # num_classes (with background)
CFG = ModelConfig(name="tiny-test", backbone="resnet18", norm="gn", num_classes=C, input_size=(H, W),
                  detections_per_img=K, mask_roi_size=M // 2)
TEST_OP = "MaskrtTestHalve"  # a custom op (onnxruntime-extensions Python op) standing in for a plugin
CONTRIB = "ai.onnx.contrib"


# ------------------------------------------------------------------------------ model builder
def _const(name: str, arr: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(arr), name))


def build_model(*, cfg: ModelConfig = CFG, flavour: str | None = "ort", metadata: dict | None = None,
                batch: int | str = "batch", input_name: str = "images", input_type: int = TensorProto.UINT8,
                input_hw: tuple = (H, W), drop_output: str | None = None, classes_type: int = TensorProto.INT32,
                graph_k: int = K, num_mod: int = K + 1, custom_op: str | None = None,
                custom_domain: str = CONTRIB, extra_node: onnx.NodeProto | None = None,
                fragile: bool = False) -> onnx.ModelProto:
    """A deployment graph: images uint8 [B, H, W, 3] ->
    num_detections = sum(pixels) mod num_mod; boxes[b, k, j] = mean(channel j % 3) + 4k + j;
    scores = sigmoid(mean / 255 - 0.1 k) (halved by ``custom_op`` when given);
    classes = (sum + k) mod (C - 1) + 1; masks = sigmoid((grey[:M, :M] - 128) / 32 + 0.25 k).
    ``fragile=True``: num_detections also adds table[sum // 1000] of a 4-entry zero table, so ONNX
    Runtime fails at run time (Gather index out of bounds) unless every image sums below 4000."""
    k, m = graph_k, 2 * cfg.mask_roi_size
    nodes = [
        _const("axes123", np.array([1, 2, 3], np.int64)), _const("ax1", np.array([1], np.int64)),
        helper.make_node("Cast", ["images"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["images"], ["xi"], to=TensorProto.INT32),
        helper.make_node("ReduceSum", ["xi", "axes123"], ["s"], keepdims=0),
        _const("nmod", np.array(num_mod, np.int32)),
        helper.make_node("Mod", ["s", "nmod"], ["num_detections" if not fragile else "num_raw"]),
        helper.make_node("ReduceMean", ["x"], ["ch"], axes=[1, 2], keepdims=0),
        _const("gidx", np.array([0, 1, 2, 0], np.int64)),
        helper.make_node("Gather", ["ch", "gidx"], ["g4"], axis=1),
        helper.make_node("Unsqueeze", ["g4", "ax1"], ["g4u"]),
        _const("boxoff", np.arange(k * 4, dtype=np.float32).reshape(k, 4)),
        helper.make_node("Add", ["g4u", "boxoff"], ["boxes"]),
        helper.make_node("ReduceMean", ["x"], ["mean"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Unsqueeze", ["mean", "ax1"], ["mu"]),
        _const("c255", np.array(255.0, np.float32)),
        helper.make_node("Div", ["mu", "c255"], ["mu1"]),
        _const("soff", (0.1 * np.arange(k)).astype(np.float32)),
        helper.make_node("Sub", ["mu1", "soff"], ["slog"]),
        helper.make_node("Sigmoid", ["slog"], ["scores_pre" if custom_op else "scores"]),
        helper.make_node("Unsqueeze", ["s", "ax1"], ["su"]),
        _const("karange", np.arange(k, dtype=np.int32)),
        helper.make_node("Add", ["su", "karange"], ["c0"]),
        _const("cmod", np.array(cfg.num_classes - 1, np.int32)),
        helper.make_node("Mod", ["c0", "cmod"], ["c1"]),
        _const("one", np.array(1, np.int32)),
        helper.make_node("Add", ["c1", "one"], ["classes_i32" if classes_type != TensorProto.INT32 else "classes"]),
        helper.make_node("ReduceMean", ["x"], ["grey"], axes=[3], keepdims=0),
        _const("st", np.array([0, 0], np.int64)), _const("en", np.array([m, m], np.int64)),
        _const("sax", np.array([1, 2], np.int64)),
        helper.make_node("Slice", ["grey", "st", "en", "sax"], ["patch"]),
        helper.make_node("Unsqueeze", ["patch", "ax1"], ["pu"]),
        _const("c128", np.array(128.0, np.float32)), _const("c32", np.array(32.0, np.float32)),
        helper.make_node("Sub", ["pu", "c128"], ["p0"]),
        helper.make_node("Div", ["p0", "c32"], ["p1"]),
        _const("moff", (0.25 * np.arange(k)).astype(np.float32).reshape(1, k, 1, 1)),
        helper.make_node("Add", ["p1", "moff"], ["p2"]),
        helper.make_node("Sigmoid", ["p2"], ["masks"]),
    ]
    if classes_type != TensorProto.INT32:
        nodes.append(helper.make_node("Cast", ["classes_i32"], ["classes"], to=classes_type))
    if custom_op:
        nodes.append(helper.make_node(custom_op, ["scores_pre"], ["scores"], domain=custom_domain))
    if extra_node is not None:
        nodes.append(extra_node)
    if fragile:
        nodes += [_const("c1000", np.array(1000, np.int32)), _const("table", np.zeros(4, np.int32)),
                  helper.make_node("Div", ["s", "c1000"], ["tidx"]),
                  helper.make_node("Gather", ["table", "tidx"], ["tval"]),
                  helper.make_node("Add", ["num_raw", "tval"], ["num_detections"])]
    b = batch
    outputs = [
        helper.make_tensor_value_info("num_detections", TensorProto.INT32, [b]),
        helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [b, k, 4]),
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, [b, k]),
        helper.make_tensor_value_info("classes", classes_type, [b, k]),
        helper.make_tensor_value_info("masks", TensorProto.FLOAT, [b, k, m, m]),
    ]
    outputs = [o for o in outputs if o.name != drop_output]
    x = helper.make_tensor_value_info("images", input_type, [b, *input_hw, 3])
    nodes[2].input[0] = nodes[3].input[0] = input_name
    x.name = input_name
    graph = helper.make_graph(nodes, "tiny_maskrt", [x], outputs)
    opsets = [helper.make_opsetid("", 17)]
    if custom_op:
        opsets.append(helper.make_opsetid(custom_domain, 1))
    model = helper.make_model(graph, opset_imports=opsets, ir_version=8, producer_name="test_ort_backend")
    props = {}
    if flavour is not None:
        props = {"maskrt.model_config": cfg.to_json(), "maskrt.flavour": flavour, "maskrt.format_version": "1"}
        if flavour == "trt":
            props["maskrt.plugins"] = json.dumps({TEST_OP: "1"})
    for key, value in (metadata or {}).items():
        if value is None:
            props.pop(key, None)
        else:
            props[key] = value
    helper.set_model_props(model, props)
    return model


def save(model: onnx.ModelProto, path) -> str:
    onnx.save(model, str(path))
    return str(path)


def reference_outputs(images: np.ndarray, *, num_mod: int = K + 1, halve: bool = False) -> dict[str, np.ndarray]:
    """float64 numpy mirror of build_model's graph; images uint8 [B, H, W, 3]."""
    x = images.astype(np.float64)
    s = images.astype(np.int64).sum(axis=(1, 2, 3))
    ch = x.mean(axis=(1, 2))
    boxes = ch[:, [0, 1, 2, 0]][:, None, :] + np.arange(K * 4).reshape(K, 4)
    scores = 1 / (1 + np.exp(-(x.mean(axis=(1, 2, 3))[:, None] / 255 - 0.1 * np.arange(K))))
    if halve:
        scores = scores * 0.5
    classes = (s[:, None] + np.arange(K)) % (C - 1) + 1
    grey = x.mean(axis=3)[:, :M, :M]
    masks = 1 / (1 + np.exp(-((grey[:, None] - 128) / 32 + 0.25 * np.arange(K)[None, :, None, None])))
    return {"num_detections": s % num_mod, "boxes": boxes, "scores": scores, "classes": classes, "masks": masks}


def assert_matches_reference(out: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> None:
    assert list(out) == list(OUTPUT_NAMES)
    for name in ("num_detections", "classes"):
        np.testing.assert_array_equal(out[name], ref[name], err_msg=name)
    for name in ("boxes", "scores", "masks"):
        np.testing.assert_allclose(out[name], ref[name], rtol=1e-5, atol=1e-4, err_msg=name)


def random_images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, H, W, 3), dtype=np.uint8)


@pytest.fixture
def model_path(tmp_path):
    return save(build_model(), tmp_path / "tiny.onnx")


@pytest.fixture
def backend(model_path):
    with OrtBackend(model_path, intra_op_threads=1) as b:
        yield b


# ------------------------------------------------------------------------------ lifecycle
def test_lifecycle_open_infer_close(model_path):
    b = OrtBackend(model_path, intra_op_threads=1)
    assert isinstance(b, Backend) and b.name == "ort"
    # Everything from the file is known before open.
    assert not b.is_open
    assert b.config == CFG and b.input_size == (H, W) and b.flavour == "ort"
    assert (b.min_batch, b.max_batch, b.max_detections, b.mask_resolution) == (1, None, K, M)
    with pytest.raises(BackendError, match="not open"):
        b.infer(random_images(1))
    with pytest.raises(BackendError, match="not open"):
        _ = b.session
    assert b.open() is b and b.is_open
    with pytest.raises(BackendError, match="already open"):
        b.open()
    out = b.infer(random_images(2))
    assert_matches_reference(out, reference_outputs(random_images(2)))
    b.close()
    assert not b.is_open
    with pytest.raises(BackendError, match="not open"):
        b.infer(random_images(1))
    b.close()  # closing twice is fine
    b.open()  # and a closed backend reopens
    assert_matches_reference(b.infer(random_images(1, seed=3)), reference_outputs(random_images(1, seed=3)))
    b.close()


def test_context_manager_closes_on_error(model_path):
    b = OrtBackend(model_path, intra_op_threads=1)
    with b as opened:
        assert opened is b and b.is_open
        assert b.infer(random_images(1))["boxes"].shape == (1, K, 4)
    assert not b.is_open
    with pytest.raises(KeyError), b:
        raise KeyError("boom")
    assert not b.is_open
    with pytest.raises(BackendError, match="not open"):
        b.infer(random_images(1))


# ------------------------------------------------------------------------------ outputs
@pytest.mark.parametrize("io_binding", [True, False])
def test_outputs_follow_contract_and_reference(model_path, io_binding):
    images = random_images(3, seed=1)
    with OrtBackend(model_path, io_binding=io_binding, intra_op_threads=1) as b:
        out = b.infer(images)
    expect = {"num_detections": (np.int32, (3,)), "boxes": (np.float32, (3, K, 4)), "scores": (np.float32, (3, K)),
              "classes": (np.int32, (3, K)), "masks": (np.float32, (3, K, M, M))}
    for name, (dtype, shape) in expect.items():
        assert out[name].dtype == dtype and out[name].shape == shape, name
    assert_matches_reference(out, reference_outputs(images))


def test_io_binding_and_run_give_identical_outputs(model_path):
    images = random_images(4, seed=2)
    with OrtBackend(model_path, io_binding=True, intra_op_threads=1) as a, \
            OrtBackend(model_path, io_binding=False, intra_op_threads=1) as b:
        assert a.io_binding and not b.io_binding
        oa, ob = a.infer(images), b.infer(images)
    for name in OUTPUT_NAMES:
        assert oa[name].dtype == ob[name].dtype
        np.testing.assert_array_equal(oa[name], ob[name], err_msg=name)


def test_batch_of_three_equals_three_single_calls(backend):
    images = random_images(3, seed=4)
    batched = backend.infer(images)
    singles = [backend.infer(images[i:i + 1]) for i in range(3)]
    for name in OUTPUT_NAMES:
        stacked = np.concatenate([s[name] for s in singles])
        if name in ("num_detections", "classes"):
            np.testing.assert_array_equal(batched[name], stacked, err_msg=name)
        else:
            np.testing.assert_allclose(batched[name], stacked, rtol=1e-6, atol=1e-6, err_msg=name)


def test_infer_from_several_threads(backend):
    from concurrent.futures import ThreadPoolExecutor

    batches = [random_images(2, seed=20 + i) for i in range(8)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(backend.infer, batches))
    for images, out in zip(batches, results, strict=True):
        assert_matches_reference(out, reference_outputs(images))


def test_outputs_are_owned_by_the_caller(backend):
    images = random_images(1, seed=5)
    first = backend.infer(images)
    kept = {k: v.copy() for k, v in first.items()}
    backend.infer(random_images(1, seed=6))
    for name in OUTPUT_NAMES:
        np.testing.assert_array_equal(first[name], kept[name])


@pytest.mark.parametrize("io_binding", [True, False])
def test_run_time_failure_is_a_backend_error(tmp_path, io_binding):
    path = save(build_model(fragile=True), tmp_path / "fragile.onnx")
    with OrtBackend(path, io_binding=io_binding) as b:
        with pytest.raises(BackendError, match="ONNX Runtime failed on a batch of 3") as err:
            b.infer(random_images(3))
        assert err.value.__cause__ is not None and "\n" not in str(err.value)
        dark = np.zeros((2, H, W, 3), np.uint8)
        assert_matches_reference(b.infer(dark), reference_outputs(dark))  # the session is still usable


def test_graph_breaking_the_contract_at_run_time_is_caught(tmp_path):
    # num_detections = sum mod (K + 5) exceeds K for some images: validate_outputs must refuse it.
    path = save(build_model(num_mod=K + 5), tmp_path / "m.onnx")
    images = random_images(16, seed=7)
    assert (reference_outputs(images, num_mod=K + 5)["num_detections"] > K).any()
    with OrtBackend(path) as b, pytest.raises(ContractError, match=r"num_detections must be in \[0, 5\]"):
        b.infer(images)


# ------------------------------------------------------------------------------ input validation
def _bad_inputs():
    good = random_images(2)
    return [
        pytest.param(good.tolist(), ["numpy"], id="list"),
        pytest.param(list(good), ["numpy", "np.stack"], id="list-of-frames"),
        pytest.param(good.astype(np.float32), ["uint8", "float32", "letterbox"], id="float32"),
        pytest.param(good.astype(np.int32), ["uint8", "int32"], id="int32"),
        pytest.param(good[0], ["4-D", "batch axis"], id="single-image-3d"),
        pytest.param(good[..., 0], ["4-D"], id="3d-no-channels"),
        pytest.param(good[None], ["4-D", "5-D"], id="5d"),
        pytest.param(good[..., :1], ["3 BGR channels", "greyscale"], id="greyscale"),
        pytest.param(np.concatenate([good, good[..., :1]], axis=-1), ["3 BGR channels", "alpha"], id="rgba"),
        pytest.param(np.zeros((2, 3, H, W), np.uint8), ["3 BGR channels", "channels-first"], id="nchw"),
        pytest.param(np.zeros((2, 480, 640, 3), np.uint8), ["480x640", "64x96", "letterbox"], id="wrong-size"),
        pytest.param(np.zeros((2, W, H, 3), np.uint8), ["96x64", "64x96"], id="transposed-size"),
        pytest.param(np.zeros((0, H, W, 3), np.uint8), ["empty batch"], id="empty"),
    ]


@pytest.mark.parametrize("images,words", _bad_inputs())
def test_bad_input_raises_value_error_naming_the_problem(backend, monkeypatch, images, words):
    calls = []
    monkeypatch.setattr(backend, "_infer", lambda x: calls.append(x))
    with pytest.raises(ValueError) as err:
        backend.infer(images)
    msg = str(err.value)
    for w in words:
        assert w in msg, (w, msg)
    assert not calls, "validation must happen before the graph runs"


def test_non_contiguous_batch_is_made_contiguous(backend):
    base = random_images(2, seed=8)
    flipped = base[:, :, ::-1]  # a view: not C-contiguous
    assert not flipped.flags.c_contiguous
    out = backend.infer(flipped)
    assert_matches_reference(out, reference_outputs(np.ascontiguousarray(flipped)))
    strided = np.zeros((4, H, W, 3), np.uint8)
    strided[::2] = base
    assert_matches_reference(backend.infer(strided[::2]), reference_outputs(base))


def test_validate_images_returns_contiguous_input_without_copy():
    x = random_images(2)
    assert validate_images(x, (H, W)) is x
    y = validate_images(x[:, ::-1], (H, W))
    assert y.flags.c_contiguous and np.array_equal(y, x[:, ::-1])
    with pytest.raises(ValueError, match="exactly 2"):
        validate_images(x[:1], (H, W), min_batch=2, max_batch=2)
    with pytest.raises(ValueError, match=r"1\.\.4"):
        validate_images(random_images(5), (H, W), max_batch=4)


def test_fixed_batch_graph(tmp_path):
    path = save(build_model(batch=2), tmp_path / "b2.onnx")
    with OrtBackend(path) as b:
        assert (b.min_batch, b.max_batch) == (2, 2)
        assert_matches_reference(b.infer(random_images(2)), reference_outputs(random_images(2)))
        with pytest.raises(ValueError, match="exactly 2"):
            b.infer(random_images(3))


# ------------------------------------------------------------------------------ output validation
def _good_outputs(b: int = 2) -> dict[str, np.ndarray]:
    return {"num_detections": np.array([0, K], np.int32)[:b], "boxes": np.zeros((b, K, 4), np.float32),
            "scores": np.zeros((b, K), np.float32), "classes": np.zeros((b, K), np.int32),
            "masks": np.zeros((b, K, M, M), np.float32)}


def test_validate_outputs_accepts_the_contract_and_orders_it():
    outs = dict(reversed(list(_good_outputs().items())))
    checked = validate_outputs(outs, batch=2, max_detections=K, mask_resolution=M)
    assert list(checked) == list(OUTPUT_NAMES)


@pytest.mark.parametrize("change,words", [
    (lambda o: o.pop("masks"), ["missing ['masks']"]),
    (lambda o: o.update(extra=np.zeros(2)), ["unexpected ['extra']"]),
    (lambda o: o.update(num_detections=o["num_detections"].astype(np.int64)), ["num_detections", "int32", "int64"]),
    (lambda o: o.update(classes=o["classes"].astype(np.float32)), ["classes", "int32"]),
    (lambda o: o.update(boxes=o["boxes"].astype(np.float64)), ["boxes", "float32"]),
    (lambda o: o.update(boxes=np.zeros((2, K, 5), np.float32)), ["boxes", "(2, 5, 4)"]),
    (lambda o: o.update(scores=np.zeros((3, K), np.float32)), ["scores", "(2, 5)"]),
    (lambda o: o.update(masks=np.zeros((2, K, M + 1, M + 1), np.float32)), ["masks", "(2, 5, 8, 8)"]),
    (lambda o: o.update(scores=[[0.0] * K] * 2), ["scores", "numpy"]),
    (lambda o: o.update(num_detections=np.array([0, K + 1], np.int32)), ["num_detections", "[0, 5]"]),
    (lambda o: o.update(num_detections=np.array([-1, 0], np.int32)), ["num_detections", "[0, 5]"]),
])
def test_validate_outputs_refuses_contract_violations(change, words):
    outs = _good_outputs()
    change(outs)
    with pytest.raises(ContractError) as err:
        validate_outputs(outs, batch=2, max_detections=K, mask_resolution=M)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


# ------------------------------------------------------------------------------ model file problems
def test_missing_file(tmp_path):
    path = tmp_path / "nope.onnx"
    with pytest.raises(ModelNotFoundError, match="does not exist") as err:
        OrtBackend(path)
    assert str(path) in str(err.value)
    assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, ModelLoadError)


@pytest.mark.parametrize("fraction", [0.5, 0.1, 0.9, -1])
def test_truncated_file(tmp_path, model_path, fraction):
    data = open(model_path, "rb").read()
    cut = len(data) - 1 if fraction == -1 else int(len(data) * fraction)
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[:cut])
    with pytest.raises(ModelLoadError) as err:
        OrtBackend(path)
    msg = str(err.value)
    assert str(path) in msg and "truncated" in msg and "\n" not in msg


@pytest.mark.parametrize("content,words", [
    (b"", ["empty"]),
    (b"this is not an onnx model at all\n" * 4, ["not a valid ONNX model"]),
    (bytes(range(256)) * 8, ["not a valid ONNX model"]),
])
def test_garbage_file(tmp_path, content, words):
    path = tmp_path / "junk.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError) as err:
        OrtBackend(path)
    assert str(path) in str(err.value)
    for w in words:
        assert w in str(err.value)


def test_onnx_runtime_load_error_is_a_model_load_error(tmp_path):
    # Well-formed protobuf with valid metadata and I/O, but a node ONNX Runtime does not know:
    # the checks before the session pass, ONNX Runtime's own error is re-raised with the path.
    bogus = helper.make_node("NoSuchOpAnywhere", ["boxes"], ["unused"])
    path = save(build_model(extra_node=bogus), tmp_path / "bogus.onnx")
    b = OrtBackend(path)
    with pytest.raises(ModelLoadError) as err:
        b.open()
    msg = str(err.value)
    assert str(path) in msg and "ONNX Runtime cannot load" in msg and "NoSuchOpAnywhere" in msg
    assert "\n" not in msg and err.value.__cause__ is not None
    assert not b.is_open


@pytest.mark.parametrize("metadata,words", [
    ({"maskrt.model_config": None, "maskrt.flavour": None, "maskrt.format_version": None},
     ["not a maskrt deployment graph", "maskrt.model_config", "no metadata"]),
    ({"maskrt.model_config": None}, ["no 'maskrt.model_config'"]),
    ({"maskrt.model_config": "{not json"}, ["invalid 'maskrt.model_config'"]),
    ({"maskrt.model_config": json.dumps({"num_classes": 1})}, ["invalid 'maskrt.model_config'", "num_classes"]),
    ({"maskrt.format_version": "2"}, ["format version", "'2'"]),
    ({"maskrt.format_version": None}, ["maskrt.format_version"]),
    ({"maskrt.flavour": "tensorrt"}, ["maskrt.flavour", "tensorrt"]),
    ({"maskrt.flavour": None}, ["maskrt.flavour"]),
    ({"maskrt.plugins": json.dumps({"X": "1"})}, ["flavour 'ort'", "plugins"]),
])
def test_bad_metadata(tmp_path, metadata, words):
    path = save(build_model(metadata=metadata), tmp_path / "meta.onnx")
    with pytest.raises(ModelLoadError) as err:
        OrtBackend(path)
    assert str(path) in str(err.value)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_foreign_metadata_is_listed(tmp_path):
    path = save(build_model(flavour=None, metadata={"author": "someone"}), tmp_path / "foreign.onnx")
    with pytest.raises(ModelLoadError, match=r"not a maskrt deployment graph.*\['author'\]"):
        OrtBackend(path)


@pytest.mark.parametrize("kwargs,words", [
    ({"input_type": TensorProto.FLOAT}, ["'images' is float32", "uint8"]),
    ({"input_name": "input"}, ["['input']", "'images'"]),
    ({"input_hw": (64, 64)}, ["64x64", "input_size 64x96"]),
    ({"input_hw": ("h", "w")}, ["dynamic height/width"]),
    ({"drop_output": "masks"}, ["lack ['masks']"]),
    ({"classes_type": TensorProto.INT64}, ["'classes' is int64", "int32"]),
    ({"graph_k": K + 1}, ["'boxes' dim 1 is 6", "detections_per_img"]),
])
def test_graph_io_must_match_contract(tmp_path, kwargs, words):
    path = save(build_model(**kwargs), tmp_path / "io.onnx")
    with pytest.raises(ModelLoadError) as err:
        OrtBackend(path)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_file_replaced_between_construction_and_open(tmp_path):
    path = tmp_path / "m.onnx"
    save(build_model(), path)
    b = OrtBackend(path)
    save(build_model(cfg=CFG.replace(name="another")), path)
    with pytest.raises(ModelLoadError, match="metadata changed"):
        b.open()


def test_metadata_matches_onnx_runtime(backend, model_path):
    meta = backend.session.get_modelmeta().custom_metadata_map
    assert backend.metadata == dict(meta)
    assert backend.model_metadata.config == CFG and backend.model_metadata.plugins == {}


# ------------------------------------------------------------------------------ the file reader
def test_onnx_file_reader_agrees_with_onnx(tmp_path):
    """read_onnx_file (protobuf wire format, no onnx import) against onnx.load on a model with
    weights (raw_data initializers), an old-style initializer listed as a graph input, a custom
    domain node and named/fixed/unknown dims."""
    model = build_model(batch="n", custom_op=TEST_OP, flavour="trt")
    w = numpy_helper.from_array(np.arange(1000, dtype=np.float32), "weight")
    model.graph.initializer.append(w)
    model.graph.input.append(helper.make_tensor_value_info("weight", TensorProto.FLOAT, [1000]))
    model.graph.output.append(helper.make_tensor_value_info("ch", TensorProto.FLOAT, [None, -1]))
    path = save(model, tmp_path / "r.onnx")
    info = read_onnx_file(path)
    ref = onnx.load(path)
    assert info.ir_version == ref.ir_version and info.producer == ref.producer_name
    assert info.metadata == {p.key: p.value for p in ref.metadata_props}
    assert info.opsets == {o.domain: o.version for o in ref.opset_import}
    assert [i.name for i in info.inputs] == ["images"]  # "weight" is an initializer
    assert info.inputs[0].dtype == "uint8" and info.inputs[0].shape == ("n", H, W, 3)
    assert [o.name for o in info.outputs] == [o.name for o in ref.graph.output]
    assert info.outputs[-1].shape == (None, -1)
    assert {o.name: o.dtype for o in info.outputs}["classes"] == "int32"
    assert info.node_ops == {(n.domain, n.op_type) for n in ref.graph.node}
    assert info.custom_ops == {(CONTRIB, TEST_OP)}


# ------------------------------------------------------------------------------ flavours / custom ops
@pytest.fixture
def test_plugin_table(tmp_path, monkeypatch):
    """A plugin table holding the test op, so trt-flavour checks pass for it."""
    table = {"namespace": "maskrt", "onnx_domain": "maskrt", "plugins": [{"name": TEST_OP, "version": "1"}]}
    path = tmp_path / "plugin_table.json"
    path.write_text(json.dumps(table))
    monkeypatch.setenv("MASKRT_PLUGIN_TABLE", str(path))
    return path


@pytest.fixture(scope="module")
def ortx_library():
    """Registers TEST_OP (scores * 0.5) as an onnxruntime-extensions Python op; returns the library path."""
    ortx = pytest.importorskip("onnxruntime_extensions")

    # NOTE: an exception raised inside an onnxruntime-extensions Python op aborts the process, so
    # run-time failures are provoked with standard ops (test_run_time_failure_is_a_backend_error).
    def halve(x):
        return x * np.float32(0.5)

    ortx.onnx_op(op_type=TEST_OP, inputs=[ortx.PyCustomOpDef.dt_float], outputs=[ortx.PyCustomOpDef.dt_float])(halve)
    return ortx.get_library_path()


def test_trt_flavour_without_custom_ops_is_refused_before_loading(tmp_path, monkeypatch, test_plugin_table):
    path = save(build_model(flavour="trt", custom_op=TEST_OP), tmp_path / "trt.onnx")
    monkeypatch.setattr(ort, "InferenceSession", lambda *a, **k: pytest.fail("no session may be created"))
    with pytest.raises(ModelLoadError) as err:
        OrtBackend(path)
    msg = str(err.value)
    for w in ("'trt' flavour", TEST_OP, "register_custom_ops", "custom_op_library", "'ort' flavour"):
        assert w in msg, (w, msg)


def test_trt_flavour_runs_with_registered_ops(tmp_path, test_plugin_table, ortx_library):
    path = save(build_model(flavour="trt", custom_op=TEST_OP), tmp_path / "trt.onnx")
    seen = []

    def register(so):
        assert isinstance(so, ort.SessionOptions)
        assert so.intra_op_num_threads == 1  # the backend's settings are applied first
        seen.append(so)
        so.register_custom_ops_library(ortx_library)

    images = random_images(2, seed=9)
    with OrtBackend(path, register_custom_ops=register, intra_op_threads=1) as b:
        assert b.flavour == "trt" and b.model_metadata.plugins == {TEST_OP: "1"}
        out = b.infer(images)
    assert len(seen) == 1
    assert_matches_reference(out, reference_outputs(images, halve=True))
    with OrtBackend(path, custom_op_library=ortx_library) as b:
        assert_matches_reference(b.infer(images), reference_outputs(images, halve=True))


def test_trt_flavour_checks_plugins_against_the_table(tmp_path, test_plugin_table, ortx_library):
    path = save(build_model(flavour="trt", custom_op=TEST_OP, metadata={"maskrt.plugins": json.dumps({TEST_OP: "2"})}),
                tmp_path / "v2.onnx")
    with pytest.raises(ModelLoadError, match=f"{TEST_OP} version 2.*has version 1"):
        OrtBackend(path, custom_op_library=ortx_library)
    path = save(build_model(flavour="trt", custom_op=TEST_OP, metadata={"maskrt.plugins": json.dumps({"Other": "1"})}),
                tmp_path / "unlisted.onnx")
    with pytest.raises(ModelLoadError, match=f"nodes \\['{TEST_OP}'\\] are not among the plugins"):
        OrtBackend(path, custom_op_library=ortx_library)
    path = save(build_model(flavour="trt", metadata={"maskrt.plugins": None}), tmp_path / "noplugins.onnx")
    with pytest.raises(ModelLoadError, match="no 'maskrt.plugins'"):
        OrtBackend(path, custom_op_library=ortx_library)


def test_ort_flavour_with_custom_nodes_needs_registration(tmp_path):
    path = save(build_model(flavour="ort", custom_op=TEST_OP), tmp_path / "x.onnx")
    with pytest.raises(ModelLoadError, match=f"non-standard domains \\({CONTRIB}::{TEST_OP}\\)"):
        OrtBackend(path)


def test_custom_op_library_must_exist(model_path, tmp_path):
    with pytest.raises(ValueError, match="custom_op_library .*does not exist"):
        OrtBackend(model_path, custom_op_library=tmp_path / "libnope.so")
    junk = tmp_path / "libjunk.so"
    junk.write_bytes(b"not a shared library")
    b = OrtBackend(model_path, custom_op_library=junk)
    with pytest.raises(ValueError, match="libjunk.so: ONNX Runtime cannot load it"):
        b.open()


# ------------------------------------------------------------------------------ providers
def test_unknown_provider_lists_available(model_path):
    with pytest.raises(ValueError) as err:
        OrtBackend(model_path, providers=["FooExecutionProvider"])
    msg = str(err.value)
    assert "FooExecutionProvider" in msg and "available" in msg
    for p in ort.get_available_providers():
        assert p in msg


def test_unavailable_provider_is_refused_before_any_session(model_path, monkeypatch):
    missing = next((p for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider", "OpenVINOExecutionProvider")
                    if p not in ort.get_available_providers()), None)
    if missing is None:
        pytest.skip("every candidate provider is available here")
    created = []
    monkeypatch.setattr(ort, "InferenceSession", lambda *a, **k: created.append(a))
    with pytest.raises(ValueError, match=f"{missing}.*not available.*available: "):
        OrtBackend(model_path, providers=[missing, "CPUExecutionProvider"])
    assert not created


def test_provider_dropped_by_onnx_runtime_is_refused(model_path, monkeypatch):
    # The real fallback: asked for a provider it cannot enable, ONNX Runtime warns and runs on the
    # CPU. Make the pre-check believe CUDA exists so the real session falls back; open must raise.
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA is really available here")
    real = ort.get_available_providers()
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", *real])
    b = OrtBackend(model_path, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ONNX Runtime's own "not in available provider names"
        with pytest.raises(BackendError, match=r"did not enable \['CUDAExecutionProvider'\].*fall back"):
            b.open()
    assert not b.is_open


def test_provider_forms(model_path, monkeypatch):
    assert OrtBackend(model_path, providers="cpu").requested_providers == ["CPUExecutionProvider"]
    real, seen = ort.InferenceSession, []

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    with OrtBackend(model_path, providers=[("CPUExecutionProvider", {"use_arena": 0})]) as b:
        assert b.providers == ["CPUExecutionProvider"]
    assert seen[0]["providers"] == ["CPUExecutionProvider"] and seen[0]["provider_options"] == [{"use_arena": "0"}]
    with pytest.raises(ValueError, match="at least one"):
        OrtBackend(model_path, providers=[])
    with pytest.raises(ValueError, match="listed twice"):
        OrtBackend(model_path, providers=["cpu", "CPUExecutionProvider"])
    with pytest.raises(ValueError, match="name or"):
        OrtBackend(model_path, providers=[3])


# ------------------------------------------------------------------------------ session settings
def test_thread_and_optimization_settings_reach_the_session(model_path):
    with OrtBackend(model_path, intra_op_threads=1, inter_op_threads=2, optimization_level="basic") as b:
        so = b.session.get_session_options()
        assert so.intra_op_num_threads == 1
        assert so.inter_op_num_threads == 2
        assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    with OrtBackend(model_path, intra_op_threads=2, optimization_level="disable") as b:
        so = b.session.get_session_options()
        assert so.intra_op_num_threads == 2
        assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    with OrtBackend(model_path) as b:
        assert b.session.get_session_options().graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL


def test_user_session_options_are_kept_and_prepared_once(model_path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    calls = []
    b = OrtBackend(model_path, session_options=so, register_custom_ops=calls.append)
    for _ in range(2):  # reopen: custom ops are registered on the caller's options only once
        with b:
            got = b.session.get_session_options()
            assert got.intra_op_num_threads == 1
            assert got.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    assert calls == [so]
    fresh = []
    b = OrtBackend(model_path, register_custom_ops=fresh.append)
    for _ in range(2):  # fresh options per open: registered each time
        with b:
            pass
    assert len(fresh) == 2 and fresh[0] is not fresh[1]


@pytest.mark.parametrize("kwargs,match", [
    ({"intra_op_threads": 0}, "intra_op_threads must be a positive int"),
    ({"intra_op_threads": -1}, "intra_op_threads"),
    ({"inter_op_threads": 1.5}, "inter_op_threads"),
    ({"intra_op_threads": True}, "intra_op_threads"),
    ({"optimization_level": "max"}, "optimization_level must be one of"),
    ({"io_binding": "yes"}, "io_binding must be a bool"),
    ({"session_options": {"threads": 1}}, "session_options must be an onnxruntime.SessionOptions"),
    ({"register_custom_ops": "lib.so"}, "register_custom_ops must be a callable"),
])
def test_bad_arguments(model_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        OrtBackend(model_path, **kwargs)


# ------------------------------------------------------------------------------ dependencies
def test_runtime_backend_imports_neither_torch_nor_onnx():
    code = ("import sys; import maskrt.runtime.backends.ort as m; "
            "assert m.OrtBackend; bad = [k for k in ('torch', 'onnx') if k in sys.modules]; "
            "print(','.join(bad) or 'clean')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "clean"
