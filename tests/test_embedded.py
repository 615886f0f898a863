"""The embedded default checkpoint: small, loads safely, and has actually learned the synthetic set."""

import pytest

from maskrt.train.data.coco import CocoInstances
from maskrt.train.data.synthetic import generate
from maskrt.train.demo import DEFAULT_CHECKPOINT
from maskrt.train.evaluate import evaluate_model
from maskrt.train.model.checkpoint import load_checkpoint

MAX_BYTES = 20 * 1024 * 1024

# What the committed checkpoint scores on the 16 unseen images below (seed 2024), measured when it
# was committed with
#   maskrt data synth --out-dir data/unseen2024 --train 0 --val 16 --seed 2024
#   maskrt eval --checkpoint maskrt/assets/default.pt --data data/unseen2024
# Replace these four numbers (and nothing else) when the default checkpoint changes.
MEASURED = {
    "bbox": {"AP": 0.4160, "AP50": 0.6027},
    "segm": {"AP": 0.3789, "AP50": 0.5534},
}
# The floors sit this far below what was measured: the evaluation is deterministic, so the margin
# absorbs only floating-point differences between machines and libraries, and a regression of a
# few points of AP (a random model scores ~0 here) fails.
MARGIN = 0.05


def test_embedded_checkpoint_is_small_and_carries_its_config():
    assert DEFAULT_CHECKPOINT.is_file(), f"{DEFAULT_CHECKPOINT} is missing"
    assert DEFAULT_CHECKPOINT.stat().st_size <= MAX_BYTES
    _, payload = load_checkpoint(DEFAULT_CHECKPOINT)  # weights_only=True inside
    cfg = payload["config"]
    # NOTE: the preset's config name was maskrcnn_mobilenet_v3_small_fpn before it was renamed
    # (runtime/config.py); a checkpoint keeps the name it was trained under.
    assert cfg.name in ("maskrcnn_mobilenet_v3_large_fpn_lite", "maskrcnn_mobilenet_v3_small_fpn")
    assert cfg.backbone == "mobilenet_v3_large"
    assert cfg.names[1:] == ("circle", "rectangle", "triangle", "ellipse", "star", "cross")


@pytest.fixture(scope="module")
def fresh_val_set(tmp_path_factory):
    # A seed the training set never used: images the checkpoint has not seen.
    out = tmp_path_factory.mktemp("unseen")
    generate(out, 0, 16, seed=2024, progress=False)
    return CocoInstances(out / "annotations" / "instances_val.json", out / "val")


@pytest.fixture(scope="module")
def metrics(fresh_val_set):
    model, _ = load_checkpoint(DEFAULT_CHECKPOINT)
    return evaluate_model(model, fresh_val_set, progress=False)


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_embedded_checkpoint_detects_unseen_synthetic_shapes(metrics, iou_type):
    for name, measured in MEASURED[iou_type].items():
        got = metrics[iou_type][name]
        assert got >= measured - MARGIN, (f"{iou_type} {name} {got:.4f} is below the floor {measured - MARGIN:.4f} "
                                          f"(measured {measured:.4f} when the checkpoint was committed)")
