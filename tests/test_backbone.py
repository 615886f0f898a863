"""Backbones, FPN and the torchvision key list / converter (CPU, small inputs)."""

from __future__ import annotations

import math
import re
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from maskrt.runtime.config import ModelConfig
from maskrt.train.model.backbone import (
    FrozenBatchNorm2d,
    MobileNetV3LargeBody,
    ResNetBody,
    build_backbone,
    gn_groups,
    norm_layer,
    set_frozen_bn_eps,
)
from maskrt.train.model.fpn import FeaturePyramidNetwork
from maskrt.train.model.torchvision_keys import (
    TORCHVISION_KEY_MAPPING,
    convert_torchvision_state_dict,
    torchvision_maskrcnn_keys,
)

H, W = 64, 96
LEVELS = ("0", "1", "2", "3", "pool")
STRIDES = (4, 8, 16, 32, 64)


def _shapes(sd: dict[str, torch.Tensor], prefix: str = "") -> dict[str, tuple[int, ...]]:
    return {prefix + k: tuple(v.shape) for k, v in sd.items()}


# ------------------------------------------------------------------------------ outputs per config


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50", "resnet101", "mobilenet_v3_large"])
@pytest.mark.parametrize("norm", ["frozen_bn", "bn", "gn"])
def test_output_levels_strides_channels(backbone: str, norm: str) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(backbone=backbone, norm=norm, fpn_channels=32)
    m = build_backbone(cfg)
    assert m.out_channels == 32
    assert isinstance(m.body, nn.Module) and isinstance(m.fpn, nn.Module)
    m.train(norm == "bn")  # exercise BatchNorm in training mode too
    out = m(torch.randn(2, 3, H, W))
    assert isinstance(out, OrderedDict)
    assert tuple(out) == LEVELS
    for (name, t), s in zip(out.items(), STRIDES, strict=True):
        assert t.dtype == torch.float32, name
        # P6 ('pool') is ceil(P5 / 2): 96 / 64 -> 2 (W is a multiple of 32, not of 64)
        assert tuple(t.shape) == (2, 32, -(-H // s), -(-W // s)), name
        assert torch.isfinite(t).all(), name


def test_body_channels() -> None:
    expect = {
        "resnet18": [64, 128, 256, 512],
        "resnet50": [256, 512, 1024, 2048],
        "resnet101": [256, 512, 1024, 2048],
    }
    x = torch.randn(1, 3, H, W)
    for name, chans in expect.items():
        body = ResNetBody(name)
        assert body.out_channels_list == chans
        feats = body(x)
        assert [f.shape[1] for f in feats.values()] == chans
        assert [f.shape[-2:] for f in feats.values()] == [(H // s, W // s) for s in STRIDES[:4]]
    mb = MobileNetV3LargeBody()
    assert mb.out_channels_list == [24, 40, 112, 960]
    feats = mb(x)
    assert [f.shape[1] for f in feats.values()] == [24, 40, 112, 960]
    assert [f.shape[-2:] for f in feats.values()] == [(H // s, W // s) for s in STRIDES[:4]]


def test_parameter_counts_match_torchvision_classifiers_without_head() -> None:
    # torchvision's published num_params minus the classifier head (fc / classifier), with
    # trainable BatchNorm so that norm weights count as parameters.
    published = {
        "resnet18": 11_689_512 - (512 * 1000 + 1000),
        "resnet50": 25_557_032 - (2048 * 1000 + 1000),
        "resnet101": 44_549_160 - (2048 * 1000 + 1000),
    }
    for name, n in published.items():
        assert sum(p.numel() for p in ResNetBody(name, "bn").parameters()) == n, name
    mnv3_classifier = (960 * 1280 + 1280) + (1280 * 1000 + 1000)
    assert sum(p.numel() for p in MobileNetV3LargeBody("bn").parameters()) == 5_483_032 - mnv3_classifier


def test_backward_through_gn_backbone() -> None:
    cfg = ModelConfig(backbone="resnet18", norm="gn", fpn_channels=16, trainable_backbone_layers=5)
    m = build_backbone(cfg)
    out = m(torch.randn(1, 3, H, W))
    sum(t.mean() for t in out.values()).backward()
    assert all(p.grad is not None for p in m.parameters())


# ---------------------------------------------------------------------------- torchvision key names


def test_resnet50_fpn_keys_equal_torchvision_checkpoint() -> None:
    ours = _shapes(build_backbone(ModelConfig()).state_dict(), "backbone.")
    tv = {k: v for k, v in torchvision_maskrcnn_keys().items() if k.startswith("backbone.")}
    missing = sorted(set(tv) - set(ours))
    unexpected = sorted(set(ours) - set(tv))
    assert not missing and not unexpected, (missing[:10], unexpected[:10])
    wrong = {k: (ours[k], tv[k]) for k in tv if ours[k] != tv[k]}
    assert not wrong, wrong
    # Spot-check names straight from torchvision's resnet / FPN (independent of the generator).
    for k, s in {
        "backbone.body.conv1.weight": (64, 3, 7, 7),
        "backbone.body.bn1.running_var": (64,),
        "backbone.body.layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "backbone.body.layer2.0.conv2.weight": (128, 128, 3, 3),
        "backbone.body.layer3.5.bn3.running_mean": (1024,),
        "backbone.body.layer4.2.conv3.weight": (2048, 512, 1, 1),
        "backbone.fpn.inner_blocks.3.weight": (256, 2048, 1, 1),
        "backbone.fpn.layer_blocks.0.bias": (256,),
    }.items():
        assert ours[k] == s, k
    assert not any("num_batches_tracked" in k or k.startswith("backbone.body.fc") for k in ours)


def test_torchvision_key_list_totals() -> None:
    keys = torchvision_maskrcnn_keys()
    assert len(keys) == 307
    body_norm = [k for k in keys if re.match(r"backbone\.body\..*(bn\d|downsample\.1)\.", k)]
    assert len(body_norm) == 212  # FrozenBatchNorm2d buffers: 53 norms x 4
    n_params = sum(math.prod(s) for k, s in keys.items() if k not in set(body_norm))
    assert n_params == 44_401_393  # torchvision's published num_params for maskrcnn_resnet50_fpn
    k5 = torchvision_maskrcnn_keys(num_classes=5)
    assert k5["roi_heads.box_predictor.cls_score.weight"] == (5, 1024)
    assert k5["roi_heads.box_predictor.bbox_pred.weight"] == (20, 1024)
    assert k5["roi_heads.mask_predictor.mask_fcn_logits.weight"] == (5, 256, 1, 1)
    for k in ("rpn.head.conv.weight", "roi_heads.mask_head.mask_fcn4.bias", "roi_heads.box_head.fc6.weight"):
        assert k in keys


def test_mobilenet_keys_follow_torchvision_features_naming() -> None:
    sd = _shapes(MobileNetV3LargeBody("bn").state_dict())
    for k, s in {
        "features.0.0.weight": (16, 3, 3, 3),
        "features.0.1.running_var": (16,),
        "features.1.block.0.0.weight": (16, 1, 3, 3),  # first block has no expansion conv
        "features.1.block.1.0.weight": (16, 16, 1, 1),
        "features.2.block.0.0.weight": (64, 16, 1, 1),
        "features.4.block.1.0.weight": (72, 1, 5, 5),
        "features.4.block.2.fc1.weight": (24, 72, 1, 1),
        "features.4.block.2.fc2.bias": (72,),
        "features.4.block.3.1.weight": (40,),
        "features.13.block.1.0.weight": (672, 1, 5, 5),
        "features.15.block.2.fc1.weight": (240, 960, 1, 1),
        "features.16.0.weight": (960, 160, 1, 1),
        "features.16.1.num_batches_tracked": (),
    }.items():
        assert sd.get(k) == s, k
    assert not any(k.startswith(("classifier", "avgpool")) for k in sd)


def test_imagenet_style_checkpoint_loads_into_frozen_bn_body() -> None:
    # An nn.BatchNorm2d checkpoint (with num_batches_tracked) + fc loads into the frozen body.
    src = ResNetBody("resnet18", "bn").state_dict()
    src["fc.weight"] = torch.zeros(1000, 512)
    src["fc.bias"] = torch.zeros(1000)
    dst = ResNetBody("resnet18", "frozen_bn")
    res = dst.load_state_dict(src, strict=False)
    assert res.missing_keys == []
    assert sorted(res.unexpected_keys) == ["fc.bias", "fc.weight"]
    del src["fc.weight"], src["fc.bias"]
    dst.load_state_dict(src, strict=True)


# ----------------------------------------------------------------------------------------- FPN


def _reference_fpn(
    feats: list[torch.Tensor], sd: dict[str, torch.Tensor], exact_2x: bool
) -> list[torch.Tensor]:
    """Straight re-computation of torchvision's FPN from the legacy-named weights."""
    n = len(feats)
    lat = [
        F.conv2d(f, sd[f"inner_blocks.{i}.weight"], sd[f"inner_blocks.{i}.bias"]) for i, f in enumerate(feats)
    ]
    merged = [None] * n
    merged[-1] = lat[-1]
    for i in range(n - 2, -1, -1):
        up = merged[i + 1]
        if exact_2x:  # nearest 2x == repeat every pixel twice in both directions
            up = up.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
        else:
            up = F.interpolate(up, size=lat[i].shape[-2:], mode="nearest")
        merged[i] = lat[i] + up
    outs = [
        F.conv2d(m, sd[f"layer_blocks.{i}.weight"], sd[f"layer_blocks.{i}.bias"], padding=1)
        for i, m in enumerate(merged)
    ]
    outs.append(outs[-1][:, :, ::2, ::2])  # max_pool2d(k=1, s=2) picks every other pixel
    return outs


@pytest.mark.parametrize(
    "sizes,exact",
    [([(16, 24), (8, 12), (4, 6), (2, 3)], True), ([(15, 23), (8, 12), (3, 6), (2, 3)], False)],
)
def test_fpn_matches_reference(sizes: list[tuple[int, int]], exact: bool) -> None:
    torch.manual_seed(1)
    chans = [8, 16, 24, 32]
    fpn = FeaturePyramidNetwork(chans, 12)
    sd = fpn.state_dict()
    assert sorted(sd) == sorted(
        f"{b}.{i}.{p}" for b in ("inner_blocks", "layer_blocks") for i in range(4) for p in ("weight", "bias")
    )
    # torchvision init: biases 0, kaiming_uniform(a=1) -> U(-sqrt(3/fan_in), sqrt(3/fan_in)).
    for i, c in enumerate(chans):
        assert torch.all(sd[f"inner_blocks.{i}.bias"] == 0)
        assert sd[f"inner_blocks.{i}.weight"].abs().max() <= math.sqrt(3 / c)
        assert sd[f"layer_blocks.{i}.weight"].abs().max() <= math.sqrt(3 / (12 * 9))
    with torch.no_grad():  # non-zero biases so that they are checked too
        for p in fpn.parameters():
            if p.dim() == 1:
                p.normal_()
    sd = fpn.state_dict()
    feats = [torch.randn(2, c, *s) for c, s in zip(chans, sizes, strict=True)]
    out = fpn(OrderedDict((f"c{i}", f) for i, f in enumerate(feats)))
    assert list(out) == ["c0", "c1", "c2", "c3", "pool"]
    ref = _reference_fpn(feats, sd, exact)
    for got, want in zip(out.values(), ref, strict=True):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # a plain list works too, named '0'..'3'
    assert list(fpn(feats)) == ["0", "1", "2", "3", "pool"]


def test_fpn_with_group_norm() -> None:
    torch.manual_seed(2)
    fpn = FeaturePyramidNetwork([8, 16], 32, norm="gn")
    sd = fpn.state_dict()
    assert "inner_blocks.0.weight" not in sd and "inner_blocks.0.0.bias" not in sd  # no conv bias
    assert isinstance(fpn.inner_blocks[0][1], nn.GroupNorm) and fpn.inner_blocks[0][1].num_groups == 32
    with torch.no_grad():
        for p in fpn.parameters():
            if p.dim() == 1:
                p.normal_()
    feats = [torch.randn(2, 8, 8, 8), torch.randn(2, 16, 4, 4)]
    out = fpn(feats)

    def cn(x: torch.Tensor, blk: str, i: int, pad: int) -> torch.Tensor:
        y = F.conv2d(x, sd[f"{blk}.{i}.0.weight"], padding=pad)
        return F.group_norm(y, 32, sd[f"{blk}.{i}.1.weight"], sd[f"{blk}.{i}.1.bias"], eps=1e-5)

    l1 = cn(feats[1], "inner_blocks", 1, 0)
    l0 = cn(feats[0], "inner_blocks", 0, 0) + l1.repeat_interleave(2, 2).repeat_interleave(2, 3)
    p1 = cn(l1, "layer_blocks", 1, 1)
    torch.testing.assert_close(out["0"], cn(l0, "layer_blocks", 0, 1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["1"], p1, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["pool"], p1[:, :, ::2, ::2])


def test_fpn_norm_matches_backbone_norm() -> None:
    assert "fpn.inner_blocks.0.weight" in build_backbone(ModelConfig()).state_dict()
    gn = build_backbone(ModelConfig(backbone="resnet18", norm="gn", fpn_channels=64))
    assert isinstance(gn.fpn.layer_blocks[0][1], nn.GroupNorm)


# -------------------------------------------------------------------------------------- freezing


@pytest.mark.parametrize("n", range(6))
def test_resnet_freezing_follows_torchvision(n: int) -> None:
    # frozen_bn (norms have no parameters) and gn (norms have parameters, bn1 rule visible).
    for norm, backbone in (("frozen_bn", "resnet50"), ("gn", "resnet18")):
        cfg = ModelConfig(backbone=backbone, norm=norm, trainable_backbone_layers=n, fpn_channels=16)
        m = build_backbone(cfg)
        # torchvision: ["layer4", "layer3", "layer2", "layer1", "conv1"][:n], plus "bn1" when n == 5
        trainable_top = [set(), {"layer4"}, {"layer4", "layer3"}, {"layer4", "layer3", "layer2"},
                         {"layer4", "layer3", "layer2", "layer1"},
                         {"layer4", "layer3", "layer2", "layer1", "conv1", "bn1"}][n]
        for name, p in m.body.named_parameters():
            assert p.requires_grad == (name.split(".")[0] in trainable_top), (norm, n, name)
        assert all(p.requires_grad for p in m.fpn.parameters())
    if n == 4:  # the stem stays frozen until n == 5, norm included
        assert not m.body.conv1.weight.requires_grad and not m.body.bn1.weight.requires_grad
        assert m.body.layer1[0].bn1.weight.requires_grad
    if n == 5:
        assert m.body.bn1.weight.requires_grad


@pytest.mark.parametrize("n", range(6))
def test_mobilenet_freezing_by_stage(n: int) -> None:
    m = build_backbone(ModelConfig(backbone="mobilenet_v3_large", norm="gn", trainable_backbone_layers=n))
    # Output stride of each features[i], measured (independent of the stage table).
    strides: list[int] = []
    x = torch.zeros(1, 3, 64, 64)
    for mod in m.body.features:
        x = mod(x)
        strides.append(64 // x.shape[-1])
    # Stages = strides 2, 4, 8, 16, 32; the last n train: stride >= 2 ** (6 - n).
    for i, mod in enumerate(m.body.features):
        want = n > 0 and strides[i] >= 2 ** (6 - n)
        assert all(p.requires_grad == want for p in mod.parameters()), (n, i, strides[i])


# ------------------------------------------------------------------------------ FrozenBatchNorm2d


def test_frozen_bn_equals_eval_batchnorm() -> None:
    torch.manual_seed(3)
    c = 7
    bn = nn.BatchNorm2d(c, eps=1e-5)
    with torch.no_grad():
        bn.weight.normal_()
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.2, 3.0)
    bn.num_batches_tracked.fill_(17)
    bn.eval()
    fbn = FrozenBatchNorm2d(c)
    fbn.load_state_dict(bn.state_dict(), strict=True)  # num_batches_tracked is ignored
    assert "num_batches_tracked" not in fbn.state_dict()
    assert sorted(fbn.state_dict()) == ["bias", "running_mean", "running_var", "weight"]
    assert list(fbn.parameters()) == []
    x = torch.randn(3, c, 5, 6)
    torch.testing.assert_close(fbn(x), bn(x), rtol=1e-5, atol=1e-6)
    # eps is honoured (torchvision's COCO weights need eps=0)
    model = nn.Sequential(fbn, nn.Conv2d(c, c, 1), FrozenBatchNorm2d(c))
    assert set_frozen_bn_eps(model, 0.0) == 2
    bn.eps = 0.0
    torch.testing.assert_close(fbn(x), bn(x), rtol=1e-5, atol=1e-6)


def test_norm_layer_helper() -> None:
    assert isinstance(norm_layer("frozen_bn", 8), FrozenBatchNorm2d)
    assert isinstance(norm_layer("bn", 8), nn.BatchNorm2d)
    g = norm_layer("gn", 200)
    assert isinstance(g, nn.GroupNorm) and g.num_groups == 25
    chans = (256, 64, 16, 24, 40, 72, 184, 960, 7)
    assert [gn_groups(c) for c in chans] == [32, 32, 16, 24, 20, 24, 23, 32, 7]
    with pytest.raises(ValueError):
        norm_layer("ln", 8)


# ----------------------------------------------------------------------------------- converter


def _to_new_style(key: str) -> str:
    """torchvision >= 0.13 name of a legacy key (written independently of the module's table)."""
    m = re.fullmatch(r"backbone\.fpn\.(inner|layer)_blocks\.(\d+)\.(weight|bias)", key)
    if m:
        return f"backbone.fpn.{m[1]}_blocks.{m[2]}.0.{m[3]}"
    m = re.fullmatch(r"rpn\.head\.conv\.(weight|bias)", key)
    if m:
        return f"rpn.head.conv.0.0.{m[1]}"
    m = re.fullmatch(r"roi_heads\.mask_head\.mask_fcn(\d)\.(weight|bias)", key)
    if m:
        return f"roi_heads.mask_head.{int(m[1]) - 1}.0.{m[2]}"
    return key


def test_converter_new_style_round_trip() -> None:
    legacy = torchvision_maskrcnn_keys()
    new: dict[str, torch.Tensor] = {}
    for k, s in legacy.items():
        new[_to_new_style(k)] = torch.empty(s)
        if k.endswith(".running_var"):  # a model built with nn.BatchNorm2d also has these
            new[k.replace("running_var", "num_batches_tracked")] = torch.tensor(0)
    # the renamed keys really are the torchvision >= 0.13 names
    for k in ("backbone.fpn.inner_blocks.0.0.weight", "backbone.fpn.layer_blocks.3.0.bias",
              "rpn.head.conv.0.0.weight", "roi_heads.mask_head.0.0.weight", "roi_heads.mask_head.3.0.bias"):
        assert k in new
    assert sum(k != _to_new_style(k) for k in legacy) == 8 + 8 + 2 + 8
    for sd in (new, {"module." + k: v for k, v in new.items()}):
        out = convert_torchvision_state_dict(sd)
        assert list(out) == list(legacy)  # names and order
        assert {k: tuple(v.shape) for k, v in out.items()} == legacy
    # tensors are passed through, not copied
    t = new["rpn.head.conv.0.0.weight"]
    assert convert_torchvision_state_dict(new)["rpn.head.conv.weight"] is t


def test_converter_legacy_passthrough_unknown_kept_and_collisions() -> None:
    legacy = {k: torch.empty(s) for k, s in torchvision_maskrcnn_keys(num_classes=3).items()}
    assert list(convert_torchvision_state_dict(legacy)) == list(legacy)
    odd = {"rpn.head.conv.1.0.weight": torch.zeros(1), "something.num_batches_tracked": torch.tensor(1),
           "module.roi_heads.box_head.0.0.weight": torch.zeros(1)}
    assert list(convert_torchvision_state_dict(odd)) == [
        "rpn.head.conv.1.0.weight",
        "roi_heads.box_head.0.0.weight",
    ]
    with pytest.raises(ValueError, match="both map to"):
        convert_torchvision_state_dict(
            {"rpn.head.conv.weight": torch.zeros(1), "rpn.head.conv.0.0.weight": torch.zeros(1)}
        )
    wrapped = {"model": {"module.backbone.fpn.inner_blocks.0.0.bias": torch.zeros(2)}, "epoch": 3}
    assert list(convert_torchvision_state_dict(wrapped)) == ["backbone.fpn.inner_blocks.0.bias"]


def test_mapping_table_is_documented_and_invertible() -> None:
    assert len(TORCHVISION_KEY_MAPPING) == 4
    for rule in TORCHVISION_KEY_MAPPING:
        new = rule.new.replace("{i}", "1").replace("{p}", "weight")
        assert rule.apply(new) == _to_new_style_inverse(new)


def _to_new_style_inverse(new: str) -> str:
    legacy = torchvision_maskrcnn_keys()
    matches = [k for k in legacy if _to_new_style(k) == new]
    assert len(matches) == 1, new
    return matches[0]


def test_converted_checkpoint_loads_strictly_into_backbone() -> None:
    torch.manual_seed(4)
    sd = {_to_new_style(k): torch.randn(s) for k, s in torchvision_maskrcnn_keys().items()}
    conv = convert_torchvision_state_dict(sd)
    bb = {k[len("backbone."):]: v for k, v in conv.items() if k.startswith("backbone.")}
    m = build_backbone(ModelConfig())
    m.load_state_dict(bb, strict=True)
    assert torch.equal(m.fpn.inner_blocks[2].weight, sd["backbone.fpn.inner_blocks.2.0.weight"])
    assert torch.equal(m.body.layer3[1].bn2.running_var, sd["backbone.body.layer3.1.bn2.running_var"])
