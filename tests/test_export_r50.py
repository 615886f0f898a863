"""Parity of both exported flavours with PyTorch eager for a randomly initialised R50-FPN at
the torchvision size 800x1344 (the heavy configuration; ~1 min on 2 cores)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maskrt.export.onnx_export import export_model
from maskrt.export.parity import batch_equals_singles, compare_batches, onnx_runner, torch_runner
from maskrt.runtime.config import preset
from maskrt.train.demo import demo_image
from maskrt.train.model.mask_rcnn import MaskRCNN

native = pytest.importorskip("maskrt._native")
HAS_PLUGIN_KERNELS = all(hasattr(native, f) for f in ("pyramid_roi_align", "rpn_nms", "detection_nms"))

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def r50():
    torch.manual_seed(0)
    torch.set_num_threads(2)
    cfg = preset("r50")
    assert cfg.input_size == (800, 1344)
    return MaskRCNN(cfg).eval()


@pytest.fixture(scope="module")
def images(r50):
    return np.stack([demo_image(7 + i, r50.cfg.input_size) for i in range(2)])


@pytest.fixture(scope="module")
def reference(r50, images):
    return torch_runner(r50)(images)


@pytest.mark.parametrize("flavour", ["ort", "trt"])
def test_r50_800x1344_parity_and_batching(r50, images, reference, tmp_path, flavour):
    if flavour == "trt" and not HAS_PLUGIN_KERNELS:
        pytest.skip("native plugin CPU kernels not built")
    path = tmp_path / f"r50_{flavour}.onnx"
    export_model(r50, path, flavour)
    run = onnx_runner(path)
    out = run(images)
    # Random heads still produce detections here (scores above 0.05), so this compares real work.
    assert reference["num_detections"].min() > 0
    for i, r in enumerate(compare_batches(reference, out, r50.cfg.input_size)):
        assert r.ok, f"image {i}: {r}"
    for i, r in enumerate(batch_equals_singles(run, images, r50.cfg.input_size, batched=out)):
        assert r.ok, f"batch vs single, image {i}: {r}"
