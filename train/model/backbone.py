"""Backbones (ResNet-18/50/101, MobileNetV3-Large) + FPN, with torchvision-compatible names.

Parameter names match torchvision exactly, so its checkpoints load without renaming:

* ResNet body: ``conv1``, ``bn1``, ``layer1..layer4`` with
  ``.{i}.conv1/bn1/conv2/bn2[/conv3/bn3]/downsample.0/downsample.1`` (torchvision "v1.5": the
  stride of a Bottleneck sits on its 3x3 conv). No ``fc``/``avgpool``: torchvision's detection
  body (``IntermediateLayerGetter``) drops them too, so ImageNet checkpoints load with
  ``strict=False`` (unexpected ``fc.*``) and detection checkpoints load strictly.
* MobileNetV3-Large body: ``features.{i}`` exactly as ``torchvision.models.mobilenet_v3_large``
  (``features.{i}.block.{j}.{0|1}`` conv/norm, ``...block.{j}.fc1/fc2`` for squeeze-excitation),
  so an ImageNet classification checkpoint loads with ``strict=False`` (unexpected
  ``classifier.*``).

Mounted as ``model.backbone``, the full keys are ``backbone.body.*`` and ``backbone.fpn.*``, the
names in torchvision's ``maskrcnn_resnet50_fpn`` COCO checkpoint (see ``torchvision_keys.py``).

Output of :class:`BackboneWithFPN`: OrderedDict ``'0','1','2','3','pool'`` = P2..P6 at strides
4, 8, 16, 32, 64, each ``[B, cfg.fpn_channels, H/s, W/s]`` for H, W multiples of 32 (for 'pool'
``ceil(H/64) x ceil(W/64)``: it subsamples P5, so e.g. W=96 gives 2 columns).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from maskrt.runtime.config import ModelConfig

from .fpn import FeaturePyramidNetwork

__all__ = [
    "BackboneWithFPN",
    "FrozenBatchNorm2d",
    "MobileNetV3LargeBody",
    "ResNetBody",
    "build_backbone",
    "freeze_backbone_layers",
    "gn_groups",
    "norm_layer",
    "set_frozen_bn_eps",
]

# ---------------------------------------------------------------------------------- normalisation


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters (torchvision ``FrozenBatchNorm2d``).

    Everything is a buffer (``weight``, ``bias``, ``running_mean``, ``running_var``), so nothing
    is trained and the state-dict names equal nn.BatchNorm2d's. ``num_batches_tracked`` (present in
    checkpoints saved from nn.BatchNorm2d, e.g. ImageNet classifiers) is dropped on load.

    NOTE: torchvision's COCO ``maskrcnn_resnet50_fpn`` weights were trained with ``eps=0``;
    torchvision sets it back to 0 after loading them (``overwrite_eps``). Use
    :func:`set_frozen_bn_eps` (model, 0.0) for bit-level parity with torchvision's detections.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(
        self,
        state_dict: dict,
        prefix: str,
        local_metadata: dict,
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # A frozen BN has no batch counter; ignore the one an nn.BatchNorm2d checkpoint carries
        # instead of reporting it as unexpected under strict loading.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def forward(self, x: Tensor) -> Tensor:
        """``x``: float [B, C, H, W] -> same shape: ``(x - mean) / sqrt(var + eps) * weight + bias``.

        Folded into one scale and one shift (as torchvision does) so it costs a single
        multiply-add and exports as Mul+Add.
        """
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def gn_groups(channels: int, max_groups: int = 32) -> int:
    """Number of GroupNorm groups: 32, or the largest count <= 32 that divides ``channels``."""
    for g in range(min(max_groups, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


def norm_layer(kind: str, channels: int, eps: float | None = None) -> nn.Module:
    """A 2-d normalisation over ``channels`` channels.

    Args:
        kind: "frozen_bn" (:class:`FrozenBatchNorm2d`, for fine-tuning from pretrained weights),
            "bn" (``nn.BatchNorm2d``, needs sizeable per-device batches) or "gn" (``nn.GroupNorm``
            with :func:`gn_groups` groups, for training from scratch with small batches).
        channels: number of channels C of the [B, C, H, W] input.
        eps: numerical epsilon; ``None`` = 1e-5 (torchvision's default for all three).
    """
    e = 1e-5 if eps is None else float(eps)
    if kind == "frozen_bn":
        return FrozenBatchNorm2d(channels, eps=e)
    if kind == "bn":
        return nn.BatchNorm2d(channels, eps=e)
    if kind == "gn":
        return nn.GroupNorm(gn_groups(channels), channels, eps=e)
    raise ValueError(f"norm_layer: unknown kind {kind!r} (expected 'frozen_bn', 'bn' or 'gn')")


def set_frozen_bn_eps(module: nn.Module, eps: float) -> int:
    """Set ``eps`` of every :class:`FrozenBatchNorm2d` in ``module``; returns how many were set.

    torchvision does this with eps=0.0 after loading the legacy COCO Mask R-CNN weights, which were
    trained before FrozenBatchNorm2d had an epsilon; keeping 1e-5 shifts outputs slightly.
    """
    n = 0
    for m in module.modules():
        if isinstance(m, FrozenBatchNorm2d):
            m.eps = float(eps)
            n += 1
    return n


def _init_norm(m: nn.Module) -> None:
    if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


# ------------------------------------------------------------------------------------------ ResNet


class BasicBlock(nn.Module):
    """ResNet-18/34 block: 3x3 (stride) -> 3x3, identity or 1x1 projection shortcut."""

    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None, norm: str
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm_layer(norm, planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = norm_layer(norm, planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        """``x``: float [B, inplanes, H, W] -> float [B, planes, H/stride, W/stride]."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """ResNet-50/101 block, torchvision v1.5: 1x1 -> 3x3 (stride here) -> 1x1 (x4 channels)."""

    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None, norm: str
    ) -> None:
        super().__init__()
        width = planes  # groups=1, base_width=64: no ResNeXt/wide variants here
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = norm_layer(norm, width)
        # v1.5 puts the stride on the 3x3 conv (v1 had it on the first 1x1): what torchvision's
        # and hence the COCO checkpoint's weights were trained with.
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = norm_layer(norm, width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = norm_layer(norm, planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        """``x``: float [B, inplanes, H, W] -> float [B, 4*planes, H/stride, W/stride]."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


_RESNET_SPECS: dict[str, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
}


class ResNetBody(nn.Module):
    """ResNet trunk returning C2..C5 (outputs of layer1..layer4, strides 4, 8, 16, 32).

    Attributes:
        out_channels_list: channels of C2..C5 (64,128,256,512 for ResNet-18; 256..2048 for 50/101).
    """

    def __init__(self, name: str, norm: str = "frozen_bn") -> None:
        super().__init__()
        if name not in _RESNET_SPECS:
            raise ValueError(f"ResNetBody: unknown ResNet {name!r}; choose one of {sorted(_RESNET_SPECS)}")
        block, layers = _RESNET_SPECS[name]
        self.name = name
        self.norm = norm
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(norm, 64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0], stride=1)
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.out_channels_list = [64 * block.expansion * 2**i for i in range(4)]

        # torchvision's ResNet init (zero_init_residual=False); FrozenBN buffers are already 1/0.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            _init_norm(m)

    def _make_layer(
        self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int, stride: int
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            # 1x1 projection shortcut; names downsample.0 (conv) / downsample.1 (norm).
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                norm_layer(self.norm, planes * block.expansion),
            )
        mods = [block(self.inplanes, planes, stride, downsample, self.norm)]
        self.inplanes = planes * block.expansion
        mods += [block(self.inplanes, planes, 1, None, self.norm) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        """``x``: float32 [B, 3, H, W] (normalised image) -> OrderedDict '0'..'3' = C2..C5,
        float [B, out_channels_list[i], H/2^(i+2), W/2^(i+2)] (sizes rounded up for odd inputs)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out: OrderedDict[str, Tensor] = OrderedDict()
        for i, layer in enumerate((self.layer1, self.layer2, self.layer3, self.layer4)):
            x = layer(x)
            out[str(i)] = x
        return out


# ----------------------------------------------------------------------------------- MobileNetV3


def _make_divisible(v: float, divisor: int = 8) -> int:
    """Round ``v`` to the nearest multiple of ``divisor`` (never below ``divisor``, never more than
    10% below ``v``): MobileNet's channel rounding, needed for the SE squeeze widths."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvNormAct(nn.Sequential):
    """conv (no bias) -> norm -> optional activation; named ``0``/``1``/``2`` like torchvision's
    ``Conv2dNormActivation`` so MobileNet checkpoints load."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        stride: int,
        norm: str,
        act: type[nn.Module] | None,
        groups: int = 1,
        eps: float | None = None,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride=stride, padding=(kernel - 1) // 2, groups=groups, bias=False),
            norm_layer(norm, cout, eps=eps),
        ]
        if act is not None:
            layers.append(act(inplace=True))
        super().__init__(*layers)
        self.out_channels = cout


class SqueezeExcitation(nn.Module):
    """Channel attention: x * hardsigmoid(fc2(relu(fc1(avgpool(x))))); fc1/fc2 are 1x1 convs
    with bias (torchvision names ``fc1``, ``fc2``)."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.activation = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.scale_activation = nn.Hardsigmoid(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        """``x``: float [B, C, H, W] -> same shape, each channel scaled by a gate in [0, 1]."""
        s = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return x * s


@dataclass(frozen=True)
class _IRConfig:
    cin: int
    kernel: int
    expanded: int
    cout: int
    use_se: bool
    use_hs: bool  # hardswish (else ReLU)
    stride: int


# MobileNetV3-Large, table 1 of the paper (torchvision's ``_mobilenet_v3_conf``, width 1.0, no
# dilation): input, kernel, expanded, output, SE, hardswish, stride.
_MNV3_LARGE = tuple(
    _IRConfig(*row)
    for row in (
        (16, 3, 16, 16, False, False, 1),  # features.1   stride 2
        (16, 3, 64, 24, False, False, 2),  # features.2   stride 4
        (24, 3, 72, 24, False, False, 1),  # features.3   stride 4  -> C2
        (24, 5, 72, 40, True, False, 2),  # features.4   stride 8
        (40, 5, 120, 40, True, False, 1),  # features.5
        (40, 5, 120, 40, True, False, 1),  # features.6   stride 8  -> C3
        (40, 3, 240, 80, False, True, 2),  # features.7   stride 16
        (80, 3, 200, 80, False, True, 1),  # features.8
        (80, 3, 184, 80, False, True, 1),  # features.9
        (80, 3, 184, 80, False, True, 1),  # features.10
        (80, 3, 480, 112, True, True, 1),  # features.11
        (112, 3, 672, 112, True, True, 1),  # features.12  stride 16 -> C4
        (112, 5, 672, 160, True, True, 2),  # features.13  stride 32
        (160, 5, 960, 160, True, True, 1),  # features.14
        (160, 5, 960, 160, True, True, 1),  # features.15
    )
)


class InvertedResidual(nn.Module):
    """MobileNetV3 block: [1x1 expand] -> kxk depthwise (stride) -> [SE] -> 1x1 project (linear),
    residual when stride 1 and cin == cout. Submodules ``block.{j}`` as in torchvision."""

    def __init__(self, cnf: _IRConfig, norm: str, eps: float | None) -> None:
        super().__init__()
        act = nn.Hardswish if cnf.use_hs else nn.ReLU
        layers: list[nn.Module] = []
        if cnf.expanded != cnf.cin:
            layers.append(ConvNormAct(cnf.cin, cnf.expanded, 1, 1, norm, act, eps=eps))
        layers.append(
            ConvNormAct(
                cnf.expanded, cnf.expanded, cnf.kernel, cnf.stride, norm, act, groups=cnf.expanded, eps=eps
            )
        )
        if cnf.use_se:
            layers.append(SqueezeExcitation(cnf.expanded, _make_divisible(cnf.expanded // 4, 8)))
        layers.append(ConvNormAct(cnf.expanded, cnf.cout, 1, 1, norm, None, eps=eps))
        self.block = nn.Sequential(*layers)
        self.use_res_connect = cnf.stride == 1 and cnf.cin == cnf.cout
        self.out_channels = cnf.cout
        self._is_cn = cnf.stride > 1  # torchvision's marker of a stage's first (strided) block

    def forward(self, x: Tensor) -> Tensor:
        """``x``: float [B, cin, H, W] -> float [B, cout, H/stride, W/stride]."""
        out = self.block(x)
        return out + x if self.use_res_connect else out


class MobileNetV3LargeBody(nn.Module):
    """MobileNetV3-Large trunk (``features.0`` .. ``features.16``) returning four levels.

    Feature maps fed to the FPN (the LAST block at each resolution, i.e. the deepest features
    before the next stride-2 block):

    ====== ============== ======== ========
    level  module output  stride   channels
    ====== ============== ======== ========
    '0'    features.3     4        24
    '1'    features.6     8        40
    '2'    features.12    16       112
    '3'    features.16    32       960  (the final 1x1 conv + hardswish)
    ====== ============== ======== ========

    NOTE: torchvision's own ``fasterrcnn_mobilenet_v3_large_fpn`` instead feeds only two maps to
    its FPN, features.13 and features.16, BOTH at stride 32 (plus 'pool'); we need P2..P5 at
    strides 4..32 like the ResNet variants, so its detection FPN/head weights do not apply here.

    Norm epsilon: 1e-3 for "bn"/"frozen_bn", the value torchvision's ImageNet MobileNetV3 weights
    were trained with (torchvision uses ``BatchNorm2d(eps=0.001, momentum=0.01)``); "bn" also
    uses momentum 0.01.
    """

    # Stage boundaries (first features index of each resolution): stem (stride 2), then strides
    # 4, 8, 16, 32. Used by freeze_backbone_layers: trainable_layers=n trains the last n stages.
    STAGE_STARTS = (0, 2, 4, 7, 13)
    RETURN_INDICES = (3, 6, 12, 16)

    def __init__(self, norm: str = "frozen_bn") -> None:
        super().__init__()
        eps = 1e-3 if norm in ("bn", "frozen_bn") else None
        layers: list[nn.Module] = [ConvNormAct(3, 16, 3, 2, norm, nn.Hardswish, eps=eps)]
        layers += [InvertedResidual(c, norm, eps) for c in _MNV3_LARGE]
        last_in = _MNV3_LARGE[-1].cout
        layers.append(ConvNormAct(last_in, 6 * last_in, 1, 1, norm, nn.Hardswish, eps=eps))
        self.features = nn.Sequential(*layers)
        if norm == "bn":
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.momentum = 0.01
        self.out_channels_list = [self._channels_of(i) for i in self.RETURN_INDICES]

        # torchvision's MobileNetV3 init.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            _init_norm(m)

    def _channels_of(self, idx: int) -> int:
        return int(self.features[idx].out_channels)

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        """``x``: float32 [B, 3, H, W] (normalised image) -> OrderedDict '0'..'3', float
        [B, (24, 40, 112, 960)[i], H/2^(i+2), W/2^(i+2)] (see the class docstring)."""
        out: OrderedDict[str, Tensor] = OrderedDict()
        names = {idx: str(i) for i, idx in enumerate(self.RETURN_INDICES)}
        for idx, mod in enumerate(self.features):
            x = mod(x)
            if idx in names:
                out[names[idx]] = x
        return out


# ------------------------------------------------------------------------------- backbone + FPN


class BackboneWithFPN(nn.Module):
    """``body`` (C2..C5) followed by ``fpn`` (P2..P6); ``out_channels`` = FPN channels.

    Submodule names ``body``/``fpn`` give the torchvision keys ``backbone.body.*``,
    ``backbone.fpn.*`` when mounted as ``model.backbone``.
    """

    def __init__(self, body: ResNetBody | MobileNetV3LargeBody, fpn: FeaturePyramidNetwork) -> None:
        super().__init__()
        self.body = body
        self.fpn = fpn
        self.out_channels = fpn.out_channels

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        """Compute the feature pyramid.

        Args:
            x: float32 [B, 3, H, W], the normalised image batch; H and W multiples of 32 (other
                sizes run, but then levels are not exact halvings of each other).

        Returns:
            OrderedDict '0','1','2','3','pool' = P2..P6, float32
            [B, out_channels, H/s, W/s] for strides s = 4, 8, 16, 32, and
            [B, out_channels, ceil(H/64), ceil(W/64)] for 'pool' (P5 subsampled by 2).
        """
        return self.fpn(self.body(x))


def freeze_backbone_layers(body: nn.Module, trainable_layers: int) -> None:
    """Set ``requires_grad=False`` on the body parameters outside the last ``trainable_layers``
    stages (0..5), as torchvision's ``resnet_fpn_backbone(trainable_layers=n)``.

    ResNet: layers_to_train = ["layer4", "layer3", "layer2", "layer1", "conv1"][:n], plus "bn1"
    when n == 5; a parameter stays trainable iff its name starts with one of those. (With
    FrozenBatchNorm2d the norms have no parameters at all; with "bn"/"gn" the norms of frozen
    layers are frozen too. nn.BatchNorm2d running statistics still update in train mode — same as
    torchvision.)

    MobileNetV3: the five stages of :attr:`MobileNetV3LargeBody.STAGE_STARTS` (stem, strides 4, 8,
    16, 32); n trains the last n, so 5 = everything like ResNet's 5. NOTE: torchvision's
    ``_mobilenet_extractor`` counts six stages (its last one is the final 1x1 conv alone), so its
    n corresponds to our n - 1 (its default 3 = our 2); ours keeps "5 = all" as in ModelConfig.
    """
    n = int(trainable_layers)
    if not 0 <= n <= 5:
        raise ValueError(f"trainable_layers must be in [0, 5], got {trainable_layers}")
    if isinstance(body, MobileNetV3LargeBody):
        starts = body.STAGE_STARTS
        first_trainable = len(body.features) if n == 0 else starts[len(starts) - n]
        for idx, mod in enumerate(body.features):
            if idx < first_trainable:
                for p in mod.parameters():
                    p.requires_grad_(False)
        return
    layers_to_train = ["layer4", "layer3", "layer2", "layer1", "conv1"][:n]
    if n == 5:
        layers_to_train.append("bn1")
    for name, p in body.named_parameters():
        if not any(name.startswith(layer) for layer in layers_to_train):
            p.requires_grad_(False)


def build_backbone(cfg: ModelConfig) -> BackboneWithFPN:
    """Build body + FPN for ``cfg.backbone`` / ``cfg.norm`` / ``cfg.fpn_channels``, freezing per
    ``cfg.trainable_backbone_layers``.

    The FPN has no norm for ``norm="frozen_bn"`` (torchvision v1 layout, legacy names, loads the
    COCO checkpoint); for "gn"/"bn" its convs are followed by the same kind of norm (torchvision's
    v2 recipe uses BatchNorm in the FPN; GroupNorm for small-batch training from scratch).

    The returned module's parameters are float32 on the CPU, freshly initialised (load weights
    afterwards, e.g. with ``maskrt.train.model.checkpoint.load_torchvision_weights``).
    """
    if cfg.backbone == "mobilenet_v3_large":
        body: ResNetBody | MobileNetV3LargeBody = MobileNetV3LargeBody(cfg.norm)
    elif cfg.backbone in _RESNET_SPECS:
        body = ResNetBody(cfg.backbone, cfg.norm)
    else:
        raise ValueError(f"build_backbone: unsupported backbone {cfg.backbone!r}")
    freeze_backbone_layers(body, cfg.trainable_backbone_layers)
    fpn_norm = None if cfg.norm == "frozen_bn" else cfg.norm
    fpn = FeaturePyramidNetwork(body.out_channels_list, cfg.fpn_channels, norm=fpn_norm)
    return BackboneWithFPN(body, fpn)
