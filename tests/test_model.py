"""The PyTorch Mask R-CNN: anchors, box coding, train/eval contracts, bad input, checkpoints."""

import math

import pytest
import torch

from maskrt.runtime.config import ModelConfig, preset
from maskrt.train.model.anchors import base_anchors, grid_anchors
from maskrt.train.model.box_ops import BoxCoder
from maskrt.train.model.checkpoint import (
    load_checkpoint,
    load_state_dict_strict,
    read_checkpoint,
    save_checkpoint,
)
from maskrt.train.model.mask_rcnn import LOSS_NAMES, OUTPUT_NAMES, MaskRCNN


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return MaskRCNN(preset("r18-small"))


def _target(h, w, boxes, labels):
    masks = torch.zeros(len(boxes), h, w, dtype=torch.uint8)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        masks[i, int(y1) : int(y2), int(x1) : int(x2)] = 1
    return {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels), "masks": masks}


# ----------------------------------------------------------------------------- anchors / coder
def test_base_anchors_match_torchvision_values():
    # torchvision's AnchorGenerator gives these for size 32, ratios (0.5, 1, 2).
    expected = torch.tensor([[-23.0, -11.0, 23.0, 11.0], [-16.0, -16.0, 16.0, 16.0], [-11.0, -23.0, 11.0, 23.0]])
    assert torch.equal(base_anchors(32, (0.5, 1.0, 2.0)), expected)


def test_grid_anchor_layout_is_y_x_anchor():
    sizes = (32, 64, 128, 256, 512)
    feats = [(8, 12), (4, 6), (2, 3), (1, 2), (1, 1)]
    anchors = grid_anchors(feats, (32, 48), sizes, (0.5, 1.0, 2.0))
    for (fh, fw), a, size in zip(feats, anchors, sizes, strict=True):
        assert a.shape == (fh * fw * 3, 4)
        stride_y, stride_x = 32 // fh, 48 // fw
        y, x, k = fh - 1, fw - 1, 1  # last location, square anchor
        box = a[(y * fw + x) * 3 + k]
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        assert (float(cx), float(cy)) == (x * stride_x, y * stride_y)
        assert float(box[2] - box[0]) == size


def test_box_coder_round_trip():
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(50, 2, generator=g) * 100
    ref = torch.cat([ref, ref + 1 + torch.rand(50, 2, generator=g) * 50], 1)
    gt = torch.rand(50, 2, generator=g) * 100
    gt = torch.cat([gt, gt + 1 + torch.rand(50, 2, generator=g) * 50], 1)
    for weights in [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)]:
        coder = BoxCoder(weights)
        dec = coder.decode(coder.encode(gt, ref), ref)[:, 0]
        torch.testing.assert_close(dec, gt, atol=1e-3, rtol=1e-5)


def test_box_coder_clamps_huge_deltas():
    coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
    out = coder.decode(torch.tensor([[0.0, 0.0, 100.0, 100.0]]), torch.tensor([[0.0, 0.0, 10.0, 10.0]]))
    assert torch.isfinite(out).all()
    assert math.isclose(float(out[0, 0, 2] - out[0, 0, 0]), 10 * 1000 / 16, rel_tol=1e-5)


# ----------------------------------------------------------------------------- train / eval
def test_train_mode_losses_finite_and_backpropagate(small_model):
    model = small_model.train()
    imgs = [torch.randint(0, 256, (200, 256, 3), dtype=torch.uint8),
            torch.randint(0, 256, (160, 190, 3), dtype=torch.uint8)]
    targets = [_target(200, 256, [[20, 10, 90, 60], [30, 50, 100, 150]], [1, 3]),
               _target(160, 190, [], [])]  # an image with no objects trains as background
    targets[1]["boxes"] = torch.zeros((0, 4))
    targets[1]["labels"] = torch.zeros((0,), dtype=torch.int64)
    model.zero_grad()
    losses = model(imgs, targets)
    assert set(losses) == set(LOSS_NAMES)
    for name, v in losses.items():
        assert v.dim() == 0 and torch.isfinite(v), name
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.roi_heads.mask_predictor.mask_fcn_logits.weight.grad.abs().sum() > 0
    assert model.rpn.head.cls_logits.weight.grad.abs().sum() > 0


def test_eval_returns_padded_contract(small_model):
    model = small_model.eval()
    cfg = model.cfg
    with torch.no_grad():
        out = model(torch.randint(0, 256, (2, 320, 320, 3), dtype=torch.uint8))
    assert tuple(out) == OUTPUT_NAMES
    k, m = cfg.detections_per_img, cfg.mask_resolution
    assert out["num_detections"].dtype == torch.int32 and out["num_detections"].shape == (2,)
    assert out["boxes"].shape == (2, k, 4) and out["boxes"].dtype == torch.float32
    assert out["scores"].shape == (2, k) and out["classes"].shape == (2, k) and out["classes"].dtype == torch.int32
    assert out["masks"].shape == (2, k, m, m)
    for i in range(2):
        n = int(out["num_detections"][i])
        assert 0 < n <= k  # an untrained model still scores above 0.05 somewhere
        s = out["scores"][i, :n]
        assert torch.all(s[:-1] >= s[1:]) and torch.all(s > cfg.box_score_thresh)
        assert torch.all(out["classes"][i, :n] >= 1) and torch.all(out["classes"][i, :n] < cfg.num_classes)
        b = out["boxes"][i, :n]
        assert torch.all(b[:, :2] >= 0) and torch.all(b[:, 2] <= 320) and torch.all(b[:, 3] <= 320)
        masks = out["masks"][i, :n]
        assert torch.all((masks >= 0) & (masks <= 1))
        for key in ("boxes", "scores", "classes", "masks"):
            assert torch.all(out[key][i, n:] == 0), key


def test_zero_detections_is_a_normal_result():
    torch.manual_seed(0)
    model = MaskRCNN(preset("r18-small").replace(box_score_thresh=1.0)).eval()
    with torch.no_grad():
        out = model(torch.zeros((1, 64, 96, 3), dtype=torch.uint8))
    assert out["num_detections"].tolist() == [0]
    assert out["boxes"].shape == (1, model.cfg.detections_per_img, 4) and torch.all(out["boxes"] == 0)
    assert torch.all(out["masks"] == 0)


def test_batch_equals_single_runs_and_mixed_sizes(small_model):
    model = small_model.eval()
    g = torch.Generator().manual_seed(3)
    imgs = torch.randint(0, 256, (3, 128, 160, 3), dtype=torch.uint8, generator=g)
    with torch.no_grad():
        batched = model(imgs)
        singles = [model(imgs[i : i + 1]) for i in range(3)]
        for i in range(3):
            for key in OUTPUT_NAMES:
                torch.testing.assert_close(batched[key][i], singles[i][key][0], atol=1e-4, rtol=1e-4)
        mixed = model([imgs[0], imgs[1, :100, :130]])
    n = int(mixed["num_detections"][1])
    assert torch.all(mixed["boxes"][1, :n, 2] <= 130) and torch.all(mixed["boxes"][1, :n, 3] <= 100)


@pytest.mark.parametrize(
    "images,match",
    [
        (torch.zeros((1, 32, 32, 3), dtype=torch.int64), "dtype"),
        (torch.zeros((1, 32, 32, 4), dtype=torch.uint8), "3 channels"),
        (torch.zeros((1, 32, 32, 1), dtype=torch.uint8), "3 channels"),
        (torch.zeros((0, 32, 32, 3), dtype=torch.uint8), "empty batch"),
        ([], "empty batch"),
        (torch.full((1, 32, 32, 3), float("nan")), "NaN"),
        (torch.zeros((32, 32, 3), dtype=torch.uint8), r"\[B, H, W, 3\]"),
        ([torch.zeros((0, 32, 3), dtype=torch.uint8)], "empty image"),
        ("image.png", "expected a tensor"),
    ],
)
def test_bad_input_raises_clear_value_error(small_model, images, match):
    with pytest.raises(ValueError, match=match):
        small_model.eval()(images)


def test_bad_targets_raise_before_any_work(small_model):
    model = small_model.train()
    img = [torch.zeros((64, 64, 3), dtype=torch.uint8)]
    t = _target(64, 64, [[10, 10, 10, 30]], [1])  # zero width
    with pytest.raises(ValueError, match="degenerate box"):
        model(img, [t])
    t = _target(64, 64, [[10, 10, 20, 30]], [99])
    with pytest.raises(ValueError, match="class ids"):
        model(img, [t])
    with pytest.raises(ValueError, match="targets are required"):
        model(img)


# ----------------------------------------------------------------------------- config / checkpoints
def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="input_size"):
        ModelConfig(input_size=(800, 1333))
    with pytest.raises(ValueError, match="backbone"):
        ModelConfig(backbone="vgg16")
    with pytest.raises(ValueError, match="unknown field"):
        ModelConfig.from_dict({"num_clases": 3})
    cfg = preset("r18-small")
    assert ModelConfig.from_json(cfg.to_json()) == cfg


def test_checkpoint_round_trip(tmp_path, small_model):
    path = tmp_path / "ckpt" / "model.pt"
    save_checkpoint(path, small_model, iteration=7)
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temp file left behind
    model, payload = load_checkpoint(path)
    assert payload["config"] == small_model.cfg and payload["iteration"] == 7
    ref = small_model.state_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(v, ref[k]), k
    x = torch.randint(0, 256, (1, 96, 128, 3), dtype=torch.uint8)
    with torch.no_grad():
        a, b = small_model.eval()(x), model(x)
    for key in OUTPUT_NAMES:
        assert torch.equal(a[key], b[key])


def test_bad_checkpoints_are_refused(tmp_path, small_model):
    good = tmp_path / "good.pt"
    save_checkpoint(good, small_model)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a loadable checkpoint"):
        read_checkpoint(truncated)
    with pytest.raises(ValueError, match="no such checkpoint"):
        read_checkpoint(tmp_path / "missing.pt")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(1)}, other)
    with pytest.raises(ValueError, match="not a maskrt checkpoint"):
        read_checkpoint(other)


def test_strict_load_lists_missing_unexpected_and_mismatched(small_model):
    state = dict(small_model.state_dict())
    state.pop("rpn.head.conv.weight")
    state["roi_heads.extra.weight"] = torch.zeros(1)
    state["roi_heads.box_predictor.cls_score.bias"] = torch.zeros(3)
    with pytest.raises(ValueError) as e:
        load_state_dict_strict(MaskRCNN(small_model.cfg), state)
    msg = str(e.value)
    assert "missing keys (1): rpn.head.conv.weight" in msg
    assert "unexpected keys (1): roi_heads.extra.weight" in msg
    assert "roi_heads.box_predictor.cls_score.bias: expected (6,), got (3,)" in msg


def test_torchvision_state_dict_loads_strictly_into_r50_fpn():
    """A state dict in torchvision's checkpoint format, built from the documented key list, loads
    strictly into the R50-FPN model, and so does the same dict with recent torchvision names."""
    from maskrt.train.model.checkpoint import load_torchvision_weights
    from maskrt.train.model.torchvision_keys import torchvision_maskrcnn_keys

    keys = torchvision_maskrcnn_keys(91)
    g = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(shape, generator=g) for k, shape in keys.items()}
    model = MaskRCNN(ModelConfig())
    load_torchvision_weights(model, sd)
    assert torch.equal(model.state_dict()["roi_heads.mask_head.mask_fcn3.weight"],
                       sd["roi_heads.mask_head.mask_fcn3.weight"])
    # recent torchvision (>= 0.13) names for the same tensors, plus DDP prefix and BN counters
    renamed = {}
    for k, v in sd.items():
        k = k.replace("fpn.inner_blocks.0.", "fpn.inner_blocks.0.0.").replace("rpn.head.conv.", "rpn.head.conv.0.0.")
        k = k.replace("mask_head.mask_fcn1.", "mask_head.0.0.")
        renamed["module." + k] = v
    renamed["module.backbone.body.bn1.num_batches_tracked"] = torch.tensor(0)
    load_torchvision_weights(MaskRCNN(ModelConfig()), renamed)
    broken = dict(sd)
    broken.pop("roi_heads.box_predictor.cls_score.weight")
    broken["roi_heads.box_predictor.cls_score.extra"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"missing keys \(1\): roi_heads.box_predictor.cls_score.weight"):
        load_torchvision_weights(MaskRCNN(ModelConfig()), broken)
    # COCO weights were trained without a frozen-BN eps; the default config reproduces that
    assert all(m.eps == 0.0 for m in model.modules() if type(m).__name__ == "FrozenBatchNorm2d")
