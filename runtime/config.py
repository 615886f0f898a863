"""ModelConfig: everything a consumer of a maskrt artefact needs to know, in one dataclass.

It travels inside every artefact (checkpoint, ONNX ``metadata_props``, engine sidecar JSON) as
JSON, so no consumer guesses a preprocessing step. This module imports neither torch nor onnx.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

BACKBONES = ("resnet18", "resnet50", "resnet101", "mobilenet_v3_large")
NORMS = ("frozen_bn", "gn", "bn")
CHANNEL_ORDERS = ("RGB", "BGR")
SIZE_DIVISIBLE = 32  # the coarsest FPN level before P6 has stride 32


class JsonConfig:
    """JSON I/O shared by the frozen config dataclasses (ModelConfig, the trainer's TrainConfig):
    tuples become lists, unknown fields and invalid JSON are refused with a clear ValueError.
    Subclasses implement ``_validate``, which runs on every construction."""

    def __post_init__(self) -> None:
        # Accept lists (from JSON) and store tuples so the config stays hashable/frozen.
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, list):
                object.__setattr__(self, f.name, tuple(v))
        self._validate()

    def _validate(self) -> None:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        if not isinstance(d, dict):
            raise ValueError(f"{cls.__name__} must be a JSON object, got {type(d).__name__}")
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}")
        return cls(**d)

    @classmethod
    def from_json(cls, text: str):
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{cls.__name__}: invalid JSON ({e})") from None
        return cls.from_dict(d)

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class ModelConfig(JsonConfig):
    """Mask R-CNN hyper-parameters and deployment contract.

    Defaults are torchvision's ``maskrcnn_resnet50_fpn`` (COCO, 91 classes with background),
    so its state dicts load and give the same detections.

    NOTE: ``num_classes`` counts the background class at index 0 (torchvision convention);
    predicted class ids are in ``[1, num_classes)``.
    NOTE: ``pixel_mean``/``pixel_std`` are on the 0..255 scale and in ``channel_order``, the
    order the network expects. The deployment input is always uint8 BGR; the graph converts.
    """

    name: str = "maskrcnn_resnet50_fpn"
    # backbone + FPN
    backbone: str = "resnet50"
    norm: str = "frozen_bn"
    trainable_backbone_layers: int = 3
    fpn_channels: int = 256
    # NOTE: torchvision's COCO Mask R-CNN weights were trained with frozen BatchNorm without eps
    # (its builder overwrites eps with 0 after loading); None keeps the backbone's own default.
    frozen_bn_eps: float | None = 0.0
    # classes
    num_classes: int = 91
    class_names: tuple[str, ...] = ()
    # input
    input_size: tuple[int, int] = (800, 1344)
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    channel_order: str = "RGB"
    # anchors: one size per pyramid level P2..P6, the same aspect ratios on each level
    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)
    anchor_aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    # RPN
    rpn_pre_nms_top_n_train: int = 2000  # per level
    rpn_pre_nms_top_n_test: int = 1000  # per level
    rpn_post_nms_top_n_train: int = 2000  # per image, after NMS within each level
    rpn_post_nms_top_n_test: int = 1000  # per image, after NMS within each level
    rpn_nms_thresh: float = 0.7
    rpn_score_thresh: float = 0.0
    rpn_min_size: float = 1e-3
    rpn_fg_iou_thresh: float = 0.7
    rpn_bg_iou_thresh: float = 0.3
    rpn_batch_size_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    # RoIAlign (both heads)
    roi_align_aligned: bool = False
    roi_align_sampling_ratio: int = 2  # 0 = adaptive: ceil(roi_size / output_size)
    box_roi_size: int = 7
    mask_roi_size: int = 14
    # box head
    box_representation_size: int = 1024
    box_fg_iou_thresh: float = 0.5
    box_bg_iou_thresh: float = 0.5
    box_batch_size_per_image: int = 512
    box_positive_fraction: float = 0.25
    bbox_reg_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    detections_per_img: int = 100
    # mask head
    mask_head_channels: int = 256
    mask_head_convs: int = 4

    extra: dict[str, Any] = field(default_factory=dict)  # free-form provenance (not semantics)

    # ------------------------------------------------------------------ validation
    def _validate(self) -> None:
        def bad(name: str, why: str) -> None:
            raise ValueError(f"ModelConfig.{name}: {why} (got {getattr(self, name)!r})")

        if self.backbone not in BACKBONES:
            bad("backbone", f"must be one of {BACKBONES}")
        if self.norm not in NORMS:
            bad("norm", f"must be one of {NORMS}")
        if self.channel_order not in CHANNEL_ORDERS:
            bad("channel_order", f"must be one of {CHANNEL_ORDERS}")
        if not 0 <= self.trainable_backbone_layers <= 5:
            bad("trainable_backbone_layers", "must be in [0, 5]")
        if self.num_classes < 2:
            bad("num_classes", "must be >= 2 (background + at least one class)")
        if self.class_names and len(self.class_names) != self.num_classes:
            bad("class_names", f"must have num_classes={self.num_classes} entries (index 0 = background)")
        if len(self.input_size) != 2 or any(
            int(s) != s or s <= 0 or s % SIZE_DIVISIBLE for s in self.input_size
        ):
            bad("input_size", f"must be (H, W), positive multiples of {SIZE_DIVISIBLE}")
        for name in ("pixel_mean", "pixel_std"):
            v = getattr(self, name)
            if len(v) != 3 or not all(math.isfinite(x) for x in v):
                bad(name, "must be 3 finite numbers")
        if any(s <= 0 for s in self.pixel_std):
            bad("pixel_std", "must be positive")
        if len(self.anchor_sizes) != 5:
            bad("anchor_sizes", "must have one size per level P2..P6 (5 values)")
        if not self.anchor_aspect_ratios or any(r <= 0 for r in self.anchor_aspect_ratios):
            bad("anchor_aspect_ratios", "must be positive")
        for name in ("rpn_nms_thresh", "box_nms_thresh", "rpn_fg_iou_thresh", "rpn_bg_iou_thresh",
                     "box_fg_iou_thresh", "box_bg_iou_thresh", "rpn_positive_fraction",
                     "box_positive_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                bad(name, "must be in [0, 1]")
        if self.roi_align_sampling_ratio < 0:
            bad("roi_align_sampling_ratio", "must be >= 0 (0 = adaptive)")
        for name in ("box_roi_size", "mask_roi_size", "detections_per_img", "fpn_channels",
                     "box_representation_size", "mask_head_channels", "rpn_pre_nms_top_n_train",
                     "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_train", "rpn_post_nms_top_n_test",
                     "rpn_batch_size_per_image", "box_batch_size_per_image"):
            if int(getattr(self, name)) <= 0:
                bad(name, "must be positive")
        if len(self.bbox_reg_weights) != 4 or any(w <= 0 for w in self.bbox_reg_weights):
            bad("bbox_reg_weights", "must be 4 positive numbers")

    # ------------------------------------------------------------------ derived
    @property
    def mask_resolution(self) -> int:
        """M of the ``masks`` output [B, K, M, M]: the mask head upsamples its RoI by 2."""
        return 2 * self.mask_roi_size

    @property
    def names(self) -> tuple[str, ...]:
        """Class names including background at index 0."""
        if self.class_names:
            return self.class_names
        return ("__background__",) + tuple(f"class_{i}" for i in range(1, self.num_classes))


# ---------------------------------------------------------------------- presets
def maskrcnn_resnet50_fpn() -> ModelConfig:
    """torchvision's ``maskrcnn_resnet50_fpn`` (COCO, 91 classes incl. background)."""
    return ModelConfig()


def maskrcnn_resnet18_fpn_small(num_classes: int = 6, class_names: tuple[str, ...] = ()) -> ModelConfig:
    """A light CPU/edge model: ResNet-18-FPN with 64 FPN channels, smaller heads, GroupNorm."""
    return ModelConfig(
        name="maskrcnn_resnet18_fpn_small",
        backbone="resnet18",
        norm="gn",
        trainable_backbone_layers=5,
        fpn_channels=64,
        num_classes=num_classes,
        class_names=class_names,
        input_size=(320, 320),
        rpn_pre_nms_top_n_train=600,
        rpn_pre_nms_top_n_test=300,
        rpn_post_nms_top_n_train=300,
        rpn_post_nms_top_n_test=200,
        box_batch_size_per_image=128,
        box_representation_size=256,
        mask_head_channels=64,
        detections_per_img=50,
        roi_align_aligned=True,
        roi_align_sampling_ratio=2,
    )


def maskrcnn_mobilenet_v3_large_fpn(num_classes: int = 91) -> ModelConfig:
    """MobileNetV3-Large-FPN for edge devices (P2..P6 like the ResNet variants)."""
    return ModelConfig(
        name="maskrcnn_mobilenet_v3_large_fpn",
        backbone="mobilenet_v3_large",
        norm="frozen_bn",
        frozen_bn_eps=None,
        trainable_backbone_layers=3,
        num_classes=num_classes,
    )


def maskrcnn_mobilenet_v3_large_fpn_lite(num_classes: int = 6, class_names: tuple[str, ...] = ()) -> ModelConfig:
    """The embedded default's architecture: MobileNetV3-**Large**-FPN with 64 FPN channels,
    GroupNorm and the small heads of ``r18-small`` (about 4.3 M parameters, < 20 MB), for CPU
    training and the demo.

    NOTE: this preset was called ``mnv3-small`` (config name ``maskrcnn_mobilenet_v3_small_fpn``,
    the name stored in the committed ``maskrt/assets/default.pt``); "small" meant the heads, not
    MobileNetV3-Small. The old preset name still works, with a deprecation line."""
    return maskrcnn_resnet18_fpn_small(num_classes, class_names).replace(
        name="maskrcnn_mobilenet_v3_large_fpn_lite", backbone="mobilenet_v3_large", frozen_bn_eps=None,
    )


PRESETS = {
    "r50": maskrcnn_resnet50_fpn,
    "r18-small": maskrcnn_resnet18_fpn_small,
    "mnv3": maskrcnn_mobilenet_v3_large_fpn,
    "mnv3-lite": maskrcnn_mobilenet_v3_large_fpn_lite,
}
# Old preset names -> current ones (each use prints one deprecation line).
PRESET_ALIASES = {"mnv3-small": "mnv3-lite"}


def preset(name: str) -> ModelConfig:
    """The ModelConfig of preset ``name`` (:data:`PRESETS`; the old names of :data:`PRESET_ALIASES`
    still work and warn once per call with a ``FutureWarning``, which Python shows by default)."""
    if name in PRESET_ALIASES:
        new = PRESET_ALIASES[name]
        warnings.warn(f"preset {name!r} is deprecated (its body is MobileNetV3-Large): use {new!r}", FutureWarning,
                      stacklevel=2)
        name = new
    if name not in PRESETS:
        raise ValueError(f"unknown config {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()
