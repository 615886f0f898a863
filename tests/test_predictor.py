"""Predictor: backend chosen by artefact, frames of any size in, Detections in original coordinates."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from maskrt.runtime.backends.base import ModelLoadError
from maskrt.runtime.detections import Detections
from maskrt.runtime.predictor import Predictor, open_backend
from maskrt.train.demo import DEFAULT_CHECKPOINT, demo_image


def test_backend_is_chosen_by_suffix(onnx_model, tmp_path):
    assert open_backend(onnx_model).name == "ort"
    assert open_backend(DEFAULT_CHECKPOINT).name == "torch"
    with pytest.raises(ValueError, match="unknown model type"):
        open_backend(tmp_path / "model.tflite")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="not a loadable checkpoint"):
        open_backend(bad)


def test_frame_of_other_size_maps_back_to_original_coordinates(onnx_model):
    scene = demo_image(21, (240, 400))  # smaller than 320x320 in height, wider: letterboxed down
    frame = cv2.resize(scene, (800, 480), interpolation=cv2.INTER_LINEAR)
    with Predictor.open(onnx_model, intra_op_threads=2) as p:
        dets = p.predict(frame)
        # Independent path: cv2 fit + zero pad, the backend, then divide by the resize ratio.
        s = min(320 / 480, 320 / 800)
        nh, nw = round(480 * s), round(800 * s)
        canvas = np.zeros((1, 320, 320, 3), np.uint8)
        canvas[0, :nh, :nw] = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_LINEAR)
        raw = p.backend.infer(canvas)
    n = int(raw["num_detections"][0])
    assert isinstance(dets, Detections) and len(dets) == n > 0
    expect = raw["boxes"][0, :n] / np.array([nw / 800, nh / 480, nw / 800, nh / 480])
    expect = np.clip(expect, 0, [800, 480, 800, 480])
    np.testing.assert_allclose(dets.boxes, expect, rtol=1e-5, atol=1e-3)
    assert dets.image_size == (480, 800)
    assert dets.bitmaps().shape == (n, 480, 800)
    assert dets.class_names[0] in p.config.names


def test_batch_list_and_single_agree_and_backends_agree(onnx_model):
    frames = [demo_image(30 + i, (320, 320)) for i in range(3)]
    with Predictor.open(onnx_model) as p:
        batch = p.predict(np.stack(frames))
        singles = [p.predict(f) for f in frames]
    with Predictor.open(DEFAULT_CHECKPOINT) as t:
        eager = t.predict(frames)
    for a, b, c in zip(batch, singles, eager, strict=True):
        assert len(a) == len(b) == len(c)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
        np.testing.assert_allclose(a.boxes, c.boxes, atol=1e-2)
        np.testing.assert_array_equal(a.class_ids, c.class_ids)


def test_zero_detections_and_json(zero_detection_model):
    with Predictor.open(zero_detection_model[1]) as p:
        d = p.predict(np.full((100, 150, 3), 127, np.uint8))
    assert len(d) == 0 and d.bitmaps().shape == (0, 100, 150)
    j = d.to_json()
    assert j["boxes"] == [] and j["masks"] == [] and j["image_size"] == [100, 150]


def test_bad_frames_are_rejected_clearly(onnx_model):
    with Predictor.open(onnx_model) as p:
        with pytest.raises(ValueError, match="uint8"):
            p.predict(np.zeros((10, 10, 3), np.float32))
        with pytest.raises(ValueError, match=r"\[h, w, 3\]"):
            p.predict(np.zeros((10, 10, 2), np.uint8))  # (greyscale [10, 10] is converted: test_bad_input)
        with pytest.raises(ValueError, match="empty"):
            p.predict(np.zeros((0, 10, 3), np.uint8))
        with pytest.raises(ValueError, match="no frames"):
            p.predict([])


def test_prepare_letterboxes_natively_bit_exact_to_the_reference(predictor):
    """prepare's default path (the native core) gives the OpenCV reference's bytes, on frames the
    native core reads in place (a crop) and ones prepare must pack first (flipped, channel-reversed,
    every other column)."""
    rng = np.random.default_rng(5)
    base = rng.integers(0, 256, (300, 500, 3), dtype=np.uint8)
    frames = [base, base[7:250, 11:400], base[::-1], base[:, :, ::-1], base[:, ::2], base[:100, :90]]
    native = Predictor(predictor.backend)
    reference = Predictor(predictor.backend, native=False)
    assert native.native and not reference.native
    a, infos_a = native.prepare(frames)
    b, infos_b = reference.prepare(frames)
    assert a.dtype == np.uint8 and np.array_equal(a, b) and infos_a == infos_b


def test_native_prepare_without_the_core_fails_clearly(predictor, monkeypatch):
    from maskrt.runtime import native_core

    monkeypatch.setattr(native_core, "_core", None)
    with pytest.raises(native_core.NativeCoreUnavailableError, match="maskrt._core is not available"):
        Predictor(predictor.backend)
    Predictor(predictor.backend, native=False).prepare([np.zeros((10, 10, 3), np.uint8)])  # the explicit choice
