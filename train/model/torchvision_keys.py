"""torchvision ``maskrcnn_resnet50_fpn`` state-dict keys, and a converter to maskrt's names.

maskrt names ARE the legacy torchvision names: the ones in the downloadable COCO checkpoint
``maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth`` (saved before torchvision 0.13). Torchvision >= 0.13
wraps some convs in ``Conv2dNormActivation`` (an ``nn.Sequential``: conv at index 0) and bumps the
modules' ``_version`` to 2; its ``_load_from_state_dict`` hooks upgrade old names to new on load:

* ``ops/feature_pyramid_network.py``: ``{prefix}{inner_blocks|layer_blocks}.{i}.{weight|bias}``
  -> ``...{i}.0.{weight|bias}``;
* ``models/detection/rpn.py`` (``RPNHead``, ``conv`` is a Sequential of ``conv_depth``
  Conv2dNormActivation): ``{prefix}conv.{weight|bias}`` -> ``{prefix}conv.0.0.{weight|bias}``;
* ``models/detection/mask_rcnn.py`` (``MaskRCNNHeads`` is a Sequential of Conv2dNormActivation):
  ``{prefix}mask_fcn{i+1}.{weight|bias}`` -> ``{prefix}{i}.0.{weight|bias}``.

Everything else (ResNet body, ``box_head.fc6/fc7``, ``box_predictor``, ``mask_predictor``) kept
its name. :data:`TORCHVISION_KEY_MAPPING` is the inverse of those three upgrades and is both the
documentation and the implementation of :func:`convert_torchvision_state_dict`.

This module needs no torchvision (and must not import it).
"""

from __future__ import annotations

import functools
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

__all__ = [
    "TORCHVISION_KEY_MAPPING",
    "KeyRename",
    "convert_torchvision_state_dict",
    "torchvision_maskrcnn_keys",
]


@functools.cache
def _compile(pattern: str) -> re.Pattern[str]:
    pat = re.escape(pattern).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{p\}", r"(?P<p>weight|bias)")
    return re.compile(f"^{pat}$")


@dataclass(frozen=True)
class KeyRename:
    """One rename rule: a new-torchvision key pattern -> the legacy (= maskrt) key pattern.

    ``{i}`` is a non-negative integer index, ``{p}`` is ``weight`` or ``bias``; the legacy index is
    ``i + index_offset`` (the old mask head counted from 1).
    """

    new: str
    legacy: str
    index_offset: int = 0
    source: str = ""

    def regex(self) -> re.Pattern[str]:
        """The compiled pattern matching ``new`` (cached)."""
        return _compile(self.new)

    def apply(self, key: str) -> str | None:
        """The legacy name of ``key`` if this rule matches it, else None."""
        m = self.regex().match(key)
        if m is None:
            return None
        groups = m.groupdict()
        fields: dict[str, Any] = {"p": groups["p"]}
        if "i" in groups:
            fields["i"] = int(groups["i"]) + self.index_offset
        return self.legacy.format(**fields)


#: New torchvision (>= 0.13) state-dict name pattern -> legacy / maskrt name.
#: (Checked against torchvision's ``_load_from_state_dict`` version-upgrade code.)
TORCHVISION_KEY_MAPPING: tuple[KeyRename, ...] = (
    KeyRename(
        "backbone.fpn.inner_blocks.{i}.0.{p}",
        "backbone.fpn.inner_blocks.{i}.{p}",
        source="FeaturePyramidNetwork (ops/feature_pyramid_network.py), Conv2dNormActivation wrap",
    ),
    KeyRename(
        "backbone.fpn.layer_blocks.{i}.0.{p}",
        "backbone.fpn.layer_blocks.{i}.{p}",
        source="FeaturePyramidNetwork (ops/feature_pyramid_network.py), Conv2dNormActivation wrap",
    ),
    KeyRename(
        "rpn.head.conv.0.0.{p}",
        "rpn.head.conv.{p}",
        source="RPNHead (models/detection/rpn.py): conv = Sequential(Conv2dNormActivation), conv_depth=1",
    ),
    KeyRename(
        "roi_heads.mask_head.{i}.0.{p}",
        "roi_heads.mask_head.mask_fcn{i}.{p}",
        index_offset=1,
        source="MaskRCNNHeads (models/detection/mask_rcnn.py): Sequential of Conv2dNormActivation",
    ),
)

_DROP_SUFFIX = "num_batches_tracked"
_DDP_PREFIX = "module."


def _resnet50_body_keys(prefix: str) -> list[tuple[str, tuple[int, ...]]]:
    """torchvision resnet50 trunk (no fc) with FrozenBatchNorm2d buffers, in module order."""
    out: list[tuple[str, tuple[int, ...]]] = []

    def conv(name: str, cout: int, cin: int, k: int) -> None:
        out.append((f"{prefix}{name}.weight", (cout, cin, k, k)))

    def bn(name: str, c: int) -> None:
        # FrozenBatchNorm2d registers exactly these four buffers, in this order.
        for b in ("weight", "bias", "running_mean", "running_var"):
            out.append((f"{prefix}{name}.{b}", (c,)))

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    inplanes = 64
    for li, (planes, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3), strict=True), start=1):
        for bi in range(blocks):
            p = f"layer{li}.{bi}"
            conv(f"{p}.conv1", planes, inplanes, 1)
            bn(f"{p}.bn1", planes)
            conv(f"{p}.conv2", planes, planes, 3)
            bn(f"{p}.bn2", planes)
            conv(f"{p}.conv3", planes * 4, planes, 1)
            bn(f"{p}.bn3", planes * 4)
            if bi == 0:  # stride 2 (layers 2-4) or channel change (layer1): projection shortcut
                conv(f"{p}.downsample.0", planes * 4, inplanes, 1)
                bn(f"{p}.downsample.1", planes * 4)
            inplanes = planes * 4
    return out


def torchvision_maskrcnn_keys(num_classes: int = 91) -> dict[str, tuple[int, ...]]:
    """Every key and shape of torchvision's ``maskrcnn_resnet50_fpn`` COCO checkpoint (legacy
    names, the downloadable ``.pth``), in the checkpoint's order.

    Args:
        num_classes: classes including background (91 for the COCO checkpoint).

    Returns:
        dict key -> shape tuple. 307 entries; backbone.body BN entries are FrozenBatchNorm2d
        buffers (weight/bias/running_mean/running_var, no num_batches_tracked).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (background + 1), got {num_classes}")
    c = 256  # FPN / head channels
    a = 3  # anchors per location: 1 size per level x 3 aspect ratios
    keys: list[tuple[str, tuple[int, ...]]] = _resnet50_body_keys("backbone.body.")
    for i, cin in enumerate((256, 512, 1024, 2048)):
        keys.append((f"backbone.fpn.inner_blocks.{i}.weight", (c, cin, 1, 1)))
        keys.append((f"backbone.fpn.inner_blocks.{i}.bias", (c,)))
    for i in range(4):
        keys.append((f"backbone.fpn.layer_blocks.{i}.weight", (c, c, 3, 3)))
        keys.append((f"backbone.fpn.layer_blocks.{i}.bias", (c,)))
    keys += [
        ("rpn.head.conv.weight", (c, c, 3, 3)),
        ("rpn.head.conv.bias", (c,)),
        ("rpn.head.cls_logits.weight", (a, c, 1, 1)),
        ("rpn.head.cls_logits.bias", (a,)),
        ("rpn.head.bbox_pred.weight", (a * 4, c, 1, 1)),
        ("rpn.head.bbox_pred.bias", (a * 4,)),
        ("roi_heads.box_head.fc6.weight", (1024, c * 7 * 7)),
        ("roi_heads.box_head.fc6.bias", (1024,)),
        ("roi_heads.box_head.fc7.weight", (1024, 1024)),
        ("roi_heads.box_head.fc7.bias", (1024,)),
        ("roi_heads.box_predictor.cls_score.weight", (num_classes, 1024)),
        ("roi_heads.box_predictor.cls_score.bias", (num_classes,)),
        ("roi_heads.box_predictor.bbox_pred.weight", (num_classes * 4, 1024)),
        ("roi_heads.box_predictor.bbox_pred.bias", (num_classes * 4,)),
    ]
    for i in range(1, 5):
        keys.append((f"roi_heads.mask_head.mask_fcn{i}.weight", (c, c, 3, 3)))
        keys.append((f"roi_heads.mask_head.mask_fcn{i}.bias", (c,)))
    keys += [
        # ConvTranspose2d weight layout is [in, out, kH, kW].
        ("roi_heads.mask_predictor.conv5_mask.weight", (c, c, 2, 2)),
        ("roi_heads.mask_predictor.conv5_mask.bias", (c,)),
        ("roi_heads.mask_predictor.mask_fcn_logits.weight", (num_classes, c, 1, 1)),
        ("roi_heads.mask_predictor.mask_fcn_logits.bias", (num_classes,)),
    ]
    return dict(keys)


def _legacy_name(key: str) -> str:
    for rule in TORCHVISION_KEY_MAPPING:
        new = rule.apply(key)
        if new is not None:
            return new
    return key


def convert_torchvision_state_dict(sd: Mapping[str, Any]) -> OrderedDict[str, Tensor]:
    """Rename a torchvision Mask R-CNN state dict (legacy or >= 0.13 names) to maskrt's names.

    * a leading ``module.`` (DistributedDataParallel) is stripped;
    * ``*num_batches_tracked`` entries are dropped (maskrt's frozen BN has none; torchvision
      drops them too);
    * names matching :data:`TORCHVISION_KEY_MAPPING` are renamed to the legacy names; legacy
      names pass unchanged;
    * any other key is left untouched, so a strict ``load_state_dict`` reports it;
    * a checkpoint of torchvision's reference training scripts (``{"model": state_dict, ...}``)
      is unwrapped to its ``"model"`` entry.

    Args:
        sd: key -> tensor, e.g. ``torch.load(path, weights_only=True)``.

    Returns:
        OrderedDict legacy key -> the same tensor objects (not copied), input order kept.

    Raises:
        ValueError: if two input keys map to the same output key (e.g. a dict mixing the old and
            the new name of one tensor).
    """
    if "model" in sd and isinstance(sd["model"], Mapping) and not any(k.endswith(".weight") for k in sd):
        sd = sd["model"]
    out: OrderedDict[str, Tensor] = OrderedDict()
    origin: dict[str, str] = {}
    for key, value in sd.items():
        k = key[len(_DDP_PREFIX):] if key.startswith(_DDP_PREFIX) else key
        if k.rsplit(".", 1)[-1] == _DROP_SUFFIX:
            continue
        k = _legacy_name(k)
        if k in out:
            raise ValueError(
                f"convert_torchvision_state_dict: {origin[k]!r} and {key!r} both map to {k!r}"
            )
        out[k] = value
        origin[k] = key
    return out
