"""Feature Pyramid Network with torchvision's semantics and (legacy) parameter names.

Semantics to match exactly (torchvision ``ops.FeaturePyramidNetwork`` + ``LastLevelMaxPool``):

* lateral ``inner_blocks[i]``: 1x1 conv ``C_i -> out_channels`` on every input level;
* top-down path, coarsest level first: ``last = inner[-1](C_last)``, then for each finer level
  ``last = inner[i](C_i) + F.interpolate(last, size=inner[i](C_i).shape[-2:], mode="nearest")``;
* output ``layer_blocks[i]``: 3x3 conv (padding 1) on each merged map ``-> P_i``;
* extra level ``'pool'``: ``F.max_pool2d(P_last, kernel_size=1, stride=2, padding=0)``, i.e. P5
  subsampled at every other pixel (no learned weights), shape ``ceil(H/2) x ceil(W/2)``;
* init: ``kaiming_uniform_(weight, a=1)``, bias 0, on every conv.

Parameter names with ``norm=None`` are the LEGACY torchvision names
``inner_blocks.{i}.weight/bias`` and ``layer_blocks.{i}.weight/bias``: that is what the
downloadable COCO checkpoint ``maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth`` holds. Torchvision >= 0.13
wraps each conv in ``Conv2dNormActivation`` (``inner_blocks.{i}.0.weight``) and upgrades the old
names on load; :mod:`maskrt.train.model.torchvision_keys` does the same renaming in the other
direction, so our modules only ever see the legacy names.

With a norm (GroupNorm for training from scratch), each block is ``nn.Sequential(conv without
bias, norm)``, giving ``inner_blocks.{i}.0.weight`` + ``inner_blocks.{i}.1.weight/bias`` — the
same layout as torchvision's ``maskrcnn_resnet50_fpn_v2`` FPN.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

NormSpec = str | Callable[[int], nn.Module] | None


class LastLevelMaxPool(nn.Module):
    """Adds P6 ('pool') as a stride-2 subsampling of the last FPN output (no parameters)."""

    def forward(self, last: Tensor) -> Tensor:
        """``last``: float [B, C, H, W] (P5) -> float [B, C, ceil(H/2), ceil(W/2)] (P6).

        ``max_pool2d`` with kernel 1 is a pure strided pick; kept as max_pool2d (not slicing) so the
        exported graph has the same op as torchvision's.
        """
        return F.max_pool2d(last, kernel_size=1, stride=2, padding=0)


def _make_norm(norm: NormSpec, channels: int) -> nn.Module:
    if callable(norm) and not isinstance(norm, str):
        return norm(channels)
    # Imported here, not at module level: backbone.py imports this module, and the norm helper
    # lives there (one definition of "gn"/"bn"/"frozen_bn" for the whole model).
    from .backbone import norm_layer

    return norm_layer(str(norm), channels)


class FeaturePyramidNetwork(nn.Module):
    """FPN over ``len(in_channels_list)`` input levels, plus the 'pool' level.

    Args:
        in_channels_list: channels of each input level, finest (highest resolution) first.
        out_channels: channels of every output level.
        norm: ``None`` (torchvision v1: conv with bias, legacy names), a kind accepted by
            :func:`maskrt.train.model.backbone.norm_layer` ("gn", "bn", "frozen_bn"), or a callable
            ``channels -> nn.Module``. With a norm the convs have no bias.
        extra_pool: append the 'pool' level (LastLevelMaxPool), as torchvision's Mask R-CNN does.
    """

    def __init__(
        self,
        in_channels_list: Sequence[int],
        out_channels: int,
        norm: NormSpec = None,
        extra_pool: bool = True,
    ) -> None:
        super().__init__()
        if not in_channels_list:
            raise ValueError("FeaturePyramidNetwork: in_channels_list must not be empty")
        if any(int(c) <= 0 for c in in_channels_list) or out_channels <= 0:
            raise ValueError(
                f"FeaturePyramidNetwork: channels must be positive "
                f"(in={list(in_channels_list)}, out={out_channels})"
            )
        self.in_channels_list = [int(c) for c in in_channels_list]
        self.out_channels = int(out_channels)
        self.inner_blocks = nn.ModuleList()
        self.layer_blocks = nn.ModuleList()
        for c in self.in_channels_list:
            if norm is None:
                # Bare convs: their state-dict names are exactly the legacy torchvision ones.
                inner: nn.Module = nn.Conv2d(c, out_channels, kernel_size=1)
                layer: nn.Module = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
            else:
                # A bias before a normalisation is redundant (the norm's shift absorbs it).
                inner = nn.Sequential(
                    nn.Conv2d(c, out_channels, kernel_size=1, bias=False), _make_norm(norm, out_channels)
                )
                layer = nn.Sequential(
                    nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
                    _make_norm(norm, out_channels),
                )
            self.inner_blocks.append(inner)
            self.layer_blocks.append(layer)

        # torchvision's init; norms keep their own defaults (weight 1, bias 0).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)

        self.extra_blocks = LastLevelMaxPool() if extra_pool else None

    def forward(self, x: Mapping[str, Tensor] | Sequence[Tensor]) -> OrderedDict[str, Tensor]:
        """Run the FPN.

        Args:
            x: the input levels, finest first, as an ordered mapping name -> float [B, C_i, H_i, W_i]
                (names are kept) or a sequence (named '0', '1', ...). ``C_i`` must equal
                ``in_channels_list[i]``. Sizes need not be exact multiples of each other: the
                top-down map is resized to the lateral's size with nearest neighbour.

        Returns:
            OrderedDict name -> float [B, out_channels, H_i, W_i], finest first, followed by
            ``'pool'`` -> [B, out_channels, ceil(H_last/2), ceil(W_last/2)] when ``extra_pool``.
            Same dtype/device as the inputs.
        """
        if isinstance(x, Mapping):
            names = list(x.keys())
            feats = list(x.values())
        else:
            feats = list(x)
            names = [str(i) for i in range(len(feats))]
        if len(feats) != len(self.inner_blocks):
            raise ValueError(
                f"FeaturePyramidNetwork: expected {len(self.inner_blocks)} levels, got {len(feats)}"
            )

        last_inner = self.inner_blocks[-1](feats[-1])
        results = [self.layer_blocks[-1](last_inner)]
        for idx in range(len(feats) - 2, -1, -1):
            lateral = self.inner_blocks[idx](feats[idx])
            # size= (not scale_factor=2) so odd sizes work exactly as in torchvision.
            top_down = F.interpolate(last_inner, size=lateral.shape[-2:], mode="nearest")
            last_inner = lateral + top_down
            results.insert(0, self.layer_blocks[idx](last_inner))

        out: OrderedDict[str, Tensor] = OrderedDict(zip(names, results, strict=True))
        if self.extra_blocks is not None:
            out["pool"] = self.extra_blocks(results[-1])
        return out
