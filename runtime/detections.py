"""``Detections``: one frame's results in original-image coordinates."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from maskrt.runtime import postprocess


@dataclass
class Detections:
    """Detections of one frame, in the original image's pixel coordinates.

    boxes: float32 [N, 4] (x1, y1, x2, y2), clipped to the image; scores: float32 [N], descending;
    class_ids: int32 [N] in [1, num_classes); masks: float32 [N, M, M] low-resolution
    probabilities of each detection's class, relative to its box (paste them with
    :meth:`bitmaps`, :meth:`label_map` or :meth:`rle`); image_size: (H, W) of the original image;
    names: the class names of the model (index = class id, 0 = background); track_ids: int64 [N]
    from a tracker (``maskrt.runtime.tracking``; -1 = on no confirmed track) or None (not tracked).
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    masks: np.ndarray
    image_size: tuple[int, int]
    names: Sequence[str] = field(default_factory=tuple)
    track_ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.scores)
        if self.boxes.shape != (n, 4) or self.class_ids.shape != (n,) or self.masks.shape[0] != n:
            raise ValueError(f"inconsistent detections: boxes {self.boxes.shape}, scores {self.scores.shape}, "
                             f"class_ids {self.class_ids.shape}, masks {self.masks.shape}")
        if self.track_ids is not None and np.shape(self.track_ids) != (n,):
            raise ValueError(f"inconsistent detections: track_ids {np.shape(self.track_ids)} for {n} detections")

    def select(self, index: np.ndarray) -> Detections:
        """The detections at ``index`` (a bool mask or integer indices), every field kept."""
        t = None if self.track_ids is None else self.track_ids[index]
        return Detections(self.boxes[index], self.scores[index], self.class_ids[index], self.masks[index],
                          self.image_size, self.names, t)

    def with_track_ids(self, track_ids: np.ndarray) -> Detections:
        """The same detections carrying ``track_ids`` (int [N])."""
        return Detections(self.boxes, self.scores, self.class_ids, self.masks, self.image_size, self.names,
                          np.asarray(track_ids, np.int64).reshape(-1))

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @property
    def class_names(self) -> list[str]:
        """Name of each detection's class (``class_<id>`` where the model has no names)."""
        return [self.names[c] if 0 <= c < len(self.names) else f"class_{c}" for c in self.class_ids.tolist()]

    def bitmaps(self, threshold: float = 0.5) -> np.ndarray:
        """Full-resolution masks: bool [N, H, W] (torchvision paste, pixel on when prob > threshold)."""
        return postprocess.paste_masks(self.masks, self.boxes, self.image_size, threshold)

    def rle(self, threshold: float = 0.5) -> list[dict[str, Any]]:
        """COCO compressed RLE of each full-resolution mask."""
        return postprocess.masks_to_rle(self.bitmaps(threshold))

    def to_json(self, threshold: float = 0.5, with_masks: bool = True) -> dict[str, Any]:
        """A JSON-ready dict: boxes, scores, classes, names, ``track_ids`` (when tracked) and
        (optionally) RLE masks."""
        out: dict[str, Any] = {
            "image_size": list(self.image_size),
            "boxes": np.round(self.boxes.astype(np.float64), 2).tolist(),
            "scores": np.round(self.scores.astype(np.float64), 5).tolist(),
            "classes": self.class_ids.tolist(),
            "names": self.class_names,
        }
        if self.track_ids is not None:
            out["track_ids"] = [int(v) for v in self.track_ids]
        if with_masks:
            out["masks"] = [{"size": r["size"], "counts": r["counts"].decode("ascii")
                             if isinstance(r["counts"], bytes) else r["counts"]} for r in self.rle(threshold)]
        return out

    @classmethod
    def empty(cls, image_size: tuple[int, int], mask_resolution: int, names: Sequence[str] = ()) -> Detections:
        m = mask_resolution
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32),
                   np.zeros((0, m, m), np.float32), tuple(image_size), tuple(names))
