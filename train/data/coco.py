"""COCO-format instance-segmentation data set (boxes + masks), validated before training.

Conventions of the targets (``CocoInstances.__getitem__``):

* ``boxes``: float32 [N, 4] (x1, y1, x2, y2) in continuous pixel coordinates where pixel
  column ``j`` spans ``[j, j + 1)``: COCO ``[x, y, w, h]`` becomes ``[x, y, x + w, y + h]``,
  clipped to the image. A mask whose pixels span columns ``a..b`` has tight box ``x1 = a``,
  ``x2 = b + 1`` (what ``pycocotools.mask.toBbox`` gives). The annotation's own box is used,
  as torchvision and detectron2 do (for polygons it is the polygon's float extent, which can
  differ from the rasterised mask by under a pixel).
* ``labels``: int64 [N] in 1..K, contiguous, in increasing order of COCO category id
  (0 is background); ``class_names[label]`` names them, ``label_to_cat_id`` maps back.
* ``masks``: uint8 [N, H, W], 0/1.
* ``iscrowd``: int64 [N]; all zeros unless ``keep_crowd=True``.

What is checked when the data set is built (so that nothing fails hours into training):
malformed JSON and missing required keys raise ``ValueError`` naming the file; missing image
files raise ``ValueError`` with the count and the first few names; individual annotations that
cannot become a training target are skipped and counted per reason in ``skipped`` (one
warning line is logged). Polygons with fewer than 3 points are dropped from their instance and
the instance is skipped only when no polygon is left (detectron2's rule); pycocotools would
otherwise misread a 2-point polygon as a box or fail on it.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

log = logging.getLogger(__name__)

# Reasons an annotation is skipped (keys of ``CocoInstances.skipped``).
SKIP_UNKNOWN_CATEGORY = "unknown category id"
SKIP_UNKNOWN_IMAGE = "unknown image id"
SKIP_DUPLICATE_ID = "duplicate annotation id"
SKIP_FEW_POINTS = "polygon with < 3 points"
SKIP_EMPTY_SEGMENTATION = "empty segmentation"
SKIP_BAD_SEGMENTATION = "malformed segmentation"
SKIP_RLE_SIZE = "RLE size differs from image size"
SKIP_BAD_BOX = "zero-area or negative-size box"

_MAX_LISTED = 5  # missing image files named in the error message


class CocoInstances(torch.utils.data.Dataset):
    """Instance segmentation samples from a COCO annotation file.

    Args:
        ann_file: COCO instances JSON.
        image_dir: folder the images' ``file_name`` are relative to.
        transforms: optional callable ``(image, target, rng) -> (image, target)`` (see
            ``maskrt.train.data.transforms``), given a ``numpy.random.Generator`` seeded by
            ``(seed, epoch, index)`` so that augmentation is reproducible whatever the
            DataLoader's worker count or order.
        keep_crowd: keep ``iscrowd=1`` regions as targets (flagged in ``target["iscrowd"]``)
            instead of leaving them out.
        seed: seed of the per-sample augmentation generators.

    Attributes:
        coco: a ``pycocotools.coco.COCO`` of the *cleaned* annotations (skipped ones removed,
            crowd regions kept): safe to hand to ``COCOeval`` as ground truth.
        ids: image ids, one per sample, in file order (images without annotations included).
        class_names: ``("__background__", name of label 1, ...)``.
        label_to_cat_id, cat_id_to_label: label <-> COCO category id.
        skipped: ``{reason: number of annotations}`` left out as invalid.
        dropped_polygons: polygons with < 3 points removed from instances that were kept.
        num_crowd: crowd regions in the file (left out of targets unless ``keep_crowd``).
    """

    def __init__(
        self,
        ann_file: str | os.PathLike[str],
        image_dir: str | os.PathLike[str],
        transforms: Any = None,
        keep_crowd: bool = False,
        *,
        seed: int = 0,
    ) -> None:
        self.ann_file = Path(ann_file)
        self.image_dir = Path(image_dir)
        self.transforms = transforms
        self.keep_crowd = bool(keep_crowd)
        self.seed = int(seed)
        self.epoch = 0

        data = _load_json(self.ann_file)
        images, categories = _check_structure(data, self.ann_file)

        cat_ids = sorted(c["id"] for c in categories)
        names = {c["id"]: str(c["name"]) for c in categories}
        self.cat_id_to_label: dict[int, int] = {cid: i + 1 for i, cid in enumerate(cat_ids)}
        self.label_to_cat_id: dict[int, int] = {i + 1: cid for i, cid in enumerate(cat_ids)}
        self.class_names: tuple[str, ...] = ("__background__",) + tuple(names[c] for c in cat_ids)

        self._images = {img["id"]: img for img in images}
        self.ids: list[int] = [img["id"] for img in images]
        self._check_files(images)

        skipped: Counter[str] = Counter()
        self.dropped_polygons = 0
        self.num_crowd = 0
        clean: list[dict[str, Any]] = []
        seen_ann_ids: set[Any] = set()
        # Per image: (annotation, clipped xyxy box) of the instances that become targets.
        self._anns: dict[int, list[tuple[dict[str, Any], tuple[float, ...]]]] = {i: [] for i in self.ids}
        for ann in data["annotations"]:
            result = self._clean_annotation(ann, seen_ann_ids)
            if isinstance(result, str):
                skipped[result] += 1
                continue
            kept, box = result
            clean.append(kept)
            self.num_crowd += kept["iscrowd"]
            if self.keep_crowd or not kept["iscrowd"]:
                self._anns[kept["image_id"]].append((kept, box))
        self.skipped: dict[str, int] = dict(sorted(skipped.items()))

        cleaned = {k: v for k, v in data.items() if k != "annotations"}
        cleaned["annotations"] = clean
        self.coco = COCO()
        self.coco.dataset = cleaned
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            self.coco.createIndex()

        self._report()

    # ------------------------------------------------------------------ construction helpers
    def _check_files(self, images: list[dict[str, Any]]) -> None:
        missing = [img["file_name"] for img in images if not (self.image_dir / img["file_name"]).is_file()]
        if missing:
            first = ", ".join(missing[:_MAX_LISTED])
            more = f" (and {len(missing) - _MAX_LISTED} more)" if len(missing) > _MAX_LISTED else ""
            raise ValueError(
                f"{self.ann_file}: {len(missing)} of {len(images)} image file(s) missing under "
                f"{self.image_dir}: {first}{more}"
            )

    def _clean_annotation(
        self, ann: dict[str, Any], seen: set[Any]
    ) -> tuple[dict[str, Any], tuple[float, float, float, float]] | str:
        """(the annotation made safe to rasterise, its clipped xyxy box) or the skip reason."""
        if ann["id"] in seen:
            return SKIP_DUPLICATE_ID
        seen.add(ann["id"])
        if ann["category_id"] not in self.cat_id_to_label:
            return SKIP_UNKNOWN_CATEGORY
        img = self._images.get(ann["image_id"])
        if img is None:
            return SKIP_UNKNOWN_IMAGE
        h, w = img["height"], img["width"]

        seg = ann.get("segmentation")
        dropped_polygons = 0
        if seg is None or (isinstance(seg, list | dict) and len(seg) == 0):
            return SKIP_EMPTY_SEGMENTATION
        if isinstance(seg, list):
            polys = []
            for p in seg:
                if not isinstance(p, list) or not all(_is_finite_number(v) for v in p):
                    return SKIP_BAD_SEGMENTATION
                if len(p) < 6 or len(p) % 2:
                    dropped_polygons += 1
                    continue
                polys.append([float(v) for v in p])
            if not polys:
                return SKIP_FEW_POINTS
            rle = mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
            seg_out: Any = polys
        elif isinstance(seg, dict):
            size, counts = seg.get("size"), seg.get("counts")
            if (
                not isinstance(size, list | tuple)
                or len(size) != 2
                or not all(_is_finite_number(v) for v in size)
                or not isinstance(counts, list | str | bytes)
            ):
                return SKIP_BAD_SEGMENTATION
            if [size[0], size[1]] != [h, w]:
                return SKIP_RLE_SIZE
            # pycocotools decodes RLE into an uninitialised buffer of h*w bytes without checking
            # the runs: runs that do not add up to h*w give garbage or write past the buffer.
            if isinstance(counts, list):
                ok = all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts)
                runs = np.asarray(counts, np.int64) if ok else None
            else:
                runs = _runs_from_string(counts)
            if runs is None or int(runs.sum()) != h * w:
                return SKIP_BAD_SEGMENTATION
            if isinstance(counts, list):
                rle = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
            else:
                rle = {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
            seg_out = {"size": [h, w], "counts": counts}
        else:
            return SKIP_BAD_SEGMENTATION
        area = int(mask_utils.area(rle))
        if area == 0:
            return SKIP_EMPTY_SEGMENTATION

        bbox = ann.get("bbox")
        if bbox is None:
            bbox = [float(v) for v in mask_utils.toBbox(rle)]
        if not isinstance(bbox, list | tuple) or len(bbox) != 4 or not all(_is_finite_number(v) for v in bbox):
            return SKIP_BAD_BOX
        x, y, bw, bh = (float(v) for v in bbox)
        x1, y1 = min(max(x, 0.0), w), min(max(y, 0.0), h)
        x2, y2 = min(max(x + bw, 0.0), w), min(max(y + bh, 0.0), h)
        if bw <= 0 or bh <= 0 or x2 <= x1 or y2 <= y1:
            return SKIP_BAD_BOX

        self.dropped_polygons += dropped_polygons
        out = dict(ann)
        out["segmentation"] = seg_out
        out["bbox"] = [x, y, bw, bh]
        out["iscrowd"] = int(ann.get("iscrowd", 0) == 1)  # also catches True; "1" etc. are not crowd
        if not _is_finite_number(out.get("area")):
            out["area"] = float(area)  # COCOeval's area ranges read it
        return out, (x1, y1, x2, y2)

    def _report(self) -> None:
        n_skipped = sum(self.skipped.values())
        crowd = (
            f"{self.num_crowd} crowd region(s) {'kept' if self.keep_crowd else 'left out of targets'}"
            if self.num_crowd
            else ""
        )
        if n_skipped or self.dropped_polygons:
            reasons = ", ".join(f"{n} {r}" for r, n in self.skipped.items())
            parts = [f"skipped {n_skipped} annotation(s)" + (f" ({reasons})" if reasons else "")]
            if self.dropped_polygons:
                parts.append(f"dropped {self.dropped_polygons} polygon(s) with < 3 points from kept instances")
            if crowd:
                parts.append(crowd)
            log.warning("%s: %s", self.ann_file, "; ".join(parts))
        elif crowd:
            log.info("%s: %s", self.ann_file, crowd)

    # ------------------------------------------------------------------ Dataset API
    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_classes(self) -> int:
        """Classes including background (ModelConfig.num_classes)."""
        return len(self.class_names)

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation stream. Reaches DataLoader workers only when they are
        re-created each epoch (``persistent_workers=False``, the default)."""
        self.epoch = int(epoch)

    def image_info(self, index: int) -> dict[str, Any]:
        """The COCO ``images`` entry of sample ``index``."""
        return self._images[self.ids[index]]

    def load_image(self, index: int) -> np.ndarray:
        """Sample ``index``'s image as uint8 [H, W, 3] BGR (cv2.imread)."""
        info = self.image_info(index)
        path = self.image_dir / info["file_name"]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"{path}: cannot be read as an image")
        if image.shape[:2] != (info["height"], info["width"]):
            raise ValueError(
                f"{path}: image is {image.shape[0]}x{image.shape[1]} but {self.ann_file} says "
                f"{info['height']}x{info['width']}"
            )
        return image

    def load_target(self, index: int) -> dict[str, Any]:
        """Targets of sample ``index`` at the original size.

        Returns ``boxes`` float32 [N, 4], ``labels`` int64 [N], ``masks`` uint8 [N, H, W],
        ``iscrowd`` int64 [N], ``image_id`` int, ``orig_size`` (H, W).
        """
        info = self.image_info(index)
        h, w = info["height"], info["width"]
        anns = self._anns[info["id"]]
        boxes = np.array([box for _, box in anns], np.float32).reshape(-1, 4)
        labels = np.array([self.cat_id_to_label[a["category_id"]] for a, _ in anns], np.int64)
        iscrowd = np.array([a["iscrowd"] for a, _ in anns], np.int64)
        masks = np.zeros((len(anns), h, w), np.uint8)
        for i, (a, _) in enumerate(anns):
            masks[i] = _decode(a["segmentation"], h, w)
        return {
            "boxes": torch.from_numpy(boxes),
            "labels": torch.from_numpy(labels),
            "masks": torch.from_numpy(masks),
            "iscrowd": torch.from_numpy(iscrowd),
            "image_id": int(info["id"]),
            "orig_size": (h, w),
        }

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        """Returns (image uint8 [H, W, 3] BGR, target) — see :meth:`load_target`; with
        transforms, sizes are the transformed ones except ``orig_size``."""
        image = torch.from_numpy(self.load_image(index))
        target = self.load_target(index)
        if self.transforms is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            image, target = self.transforms(image, target, rng)
        return image, target


def collate(batch: list[tuple[torch.Tensor, dict[str, Any]]]) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """DataLoader ``collate_fn`` for images of different sizes: (list of images, list of targets)."""
    images, targets = zip(*batch, strict=True) if batch else ((), ())
    return list(images), list(targets)


# ---------------------------------------------------------------------------- helpers
def _is_finite_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _decode(seg: Any, h: int, w: int) -> np.ndarray:
    """A cleaned segmentation (polygons or RLE) as uint8 [H, W] 0/1.

    Run lengths are expanded here rather than by ``pycocotools.mask.decode``, whose array
    hand-off is deprecated under NumPy 2 (a DeprecationWarning on every call as of pycocotools
    2.0.11); pycocotools still rasterises the polygons.
    """
    if isinstance(seg, list):
        runs = _runs_from_string(mask_utils.merge(mask_utils.frPyObjects(seg, h, w))["counts"])
    elif isinstance(seg["counts"], list):
        runs = np.asarray(seg["counts"], np.int64)
    else:
        runs = _runs_from_string(seg["counts"])
    assert runs is not None and int(runs.sum()) == h * w  # checked at construction
    return _runs_to_mask(runs, h, w)


def _runs_to_mask(runs: np.ndarray, h: int, w: int) -> np.ndarray:
    """COCO run lengths (int64 [M], alternating 0s and 1s, starting with 0s, column-major) as
    a uint8 [H, W] mask."""
    values = (np.arange(runs.size) % 2).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(values, runs).reshape(w, h).T)


def _runs_from_string(counts: str | bytes) -> np.ndarray | None:
    """Run lengths (int64 [M]) of a pycocotools compressed RLE string, or None if malformed.

    A vectorised transcription of pycocotools' ``rleFrString``: each run is a little-endian
    sequence of 5-bit groups in chars ``48 + g`` (bit 0x20 = more groups follow, bit 0x10 of the
    last group = negative), and runs after the second are stored as differences to the run two
    places before (``m > 2``).
    """
    try:
        raw = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
    except UnicodeEncodeError:
        return None
    c = np.frombuffer(raw, np.uint8).astype(np.int64) - 48
    if c.size == 0:
        return np.zeros(0, np.int64)
    if c.min() < 0 or c.max() > 63 or c[-1] & 0x20:
        return None
    last = (c & 0x20) == 0
    run_id = np.concatenate([[0], np.cumsum(last)[:-1]])
    start = np.concatenate([[0], np.flatnonzero(last)[:-1] + 1])
    k = np.arange(c.size) - start[run_id]  # group index within its run
    if k.max() > 11:  # pycocotools' runs fit in 64 bits; longer ones are corrupt
        return None
    x = np.zeros(int(last.sum()), np.int64)
    np.add.at(x, run_id, (c & 0x1F) << (5 * k))
    ends = np.flatnonzero(last)
    negative = (c[ends] & 0x10) != 0
    x[negative] -= np.left_shift(1, 5 * (k[ends][negative] + 1))
    runs = x.copy()
    # runs[m] += runs[m - 2] for m > 2: running sums over the odd indices from 1 and the even
    # indices from 2 (runs[0] stands alone).
    runs[1::2] = np.cumsum(x[1::2])
    runs[2::2] = np.cumsum(x[2::2])
    return None if (runs < 0).any() else runs


def _load_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ValueError(f"{path}: annotation file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: malformed JSON ({e})") from None


def _check_structure(data: Any, path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Raise ValueError (naming ``path``) unless ``data`` has the COCO instances structure."""

    def fail(why: str) -> None:
        raise ValueError(f"{path}: {why}")

    if not isinstance(data, dict):
        fail(f"top level must be a JSON object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            fail(f"missing required key {key!r}")
        if not isinstance(data[key], list):
            fail(f"{key!r} must be a list, got {type(data[key]).__name__}")

    def check_entries(key: str, required: dict[str, tuple[type, ...]]) -> None:
        for i, entry in enumerate(data[key]):
            if not isinstance(entry, dict):
                fail(f"{key}[{i}] must be an object")
            for field, types in required.items():
                if field not in entry:
                    fail(f"{key}[{i}] is missing required key {field!r}")
                v = entry[field]
                if not isinstance(v, types) or isinstance(v, bool):
                    fail(f"{key}[{i}].{field} has type {type(v).__name__}")

    check_entries("images", {"id": (int,), "file_name": (str,), "height": (int,), "width": (int,)})
    check_entries("categories", {"id": (int,), "name": (str,)})
    check_entries("annotations", {"id": (int, str), "image_id": (int,), "category_id": (int,)})

    images, categories = data["images"], data["categories"]
    if not categories:
        fail("'categories' is empty")
    for key, entries in (("images", images), ("categories", categories)):
        dup = sorted(i for i, n in Counter(e["id"] for e in entries).items() if n > 1)
        if dup:
            fail(f"duplicate {key} id(s) {dup[:_MAX_LISTED]}")
    for i, img in enumerate(images):
        if img["height"] <= 0 or img["width"] <= 0:
            fail(f"images[{i}] has non-positive size {img['height']}x{img['width']}")
    return images, categories
