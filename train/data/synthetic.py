"""A synthetic instance-segmentation data set of coloured shapes, written in COCO format.

Layout written under ``out_dir``::

    train/000000.png ...            BGR PNGs (cv2.imwrite)
    val/000000.png ...
    annotations/instances_train.json
    annotations/instances_val.json

What it exercises:

* six shape classes (circle, rectangle, triangle, ellipse, star, cross), rotated, with varied
  aspect ratios and random colours; category ids are NOT contiguous (1, 2, 3, 5, 7, 11) so a
  loader must remap them to labels 1..K;
* instance sizes log-uniform in ``sqrt(area)`` (the quantity FPN level assignment uses) from
  ``min_instance`` to ``max_instance`` pixels, so the instances spread over pyramid levels;
* occlusion: instances are painted in order and an instance's mask is what stays visible after
  the later ones are painted; some instances are deliberately placed over an earlier instance of
  the same class; instances left with a tiny visible area are dropped (and so is their paint,
  which keeps the images free of unlabelled objects);
* textured backgrounds (smoothed noise, gradients, stripes) and per-pixel sensor noise.

Everything is drawn from ``numpy.random.Generator`` streams seeded by ``(seed, split, index)``,
so the same arguments give byte-identical PNGs and JSON, and image ``i`` of a split does not
depend on how many images the split has.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from tqdm import tqdm

from maskrt.runtime.cli import renamed_option

# Non-contiguous on purpose (see module docstring).
CATEGORIES: tuple[tuple[int, str], ...] = (
    (1, "circle"),
    (2, "rectangle"),
    (3, "triangle"),
    (5, "ellipse"),
    (7, "star"),
    (11, "cross"),
)
SPLITS = ("train", "val")
FPN_LEVELS = (2, 3, 4, 5)

# An instance is dropped when less than this fraction of its painted pixels stays visible, or
# when fewer than max(MIN_VISIBLE_PIXELS, 0.15 * min_instance**2) pixels stay visible: such
# slivers are label noise rather than objects.
MIN_VISIBLE_FRACTION = 0.2
MIN_VISIBLE_PIXELS = 8
SAME_CLASS_OVERLAP_P = 0.3  # chance that an instance is placed over an earlier same-class one
INSIDE_P = 0.85  # chance that an instance that fits is placed wholly inside the image
_SUBPIXEL_SHIFT = 4  # cv2.fillPoly fixed-point bits: vertices keep 1/16 px precision


def fpn_level(area: float, canonical_size: float = 224.0, canonical_level: int = 4) -> int:
    """FPN level of an instance: ``floor(4 + log2(sqrt(area) / 224) + eps)`` clamped to [2, 5].

    The same rule (and epsilon placement) as the model's RoI level assignment
    (``maskrt.train.model.roi_align.assign_fpn_levels``, which needs torch), so the histogram says
    which pyramid level will see each instance.
    """
    lvl = math.floor(canonical_level + math.log2(max(math.sqrt(max(area, 0.0)), 1e-12) / canonical_size) + 1e-6)
    return int(min(max(lvl, FPN_LEVELS[0]), FPN_LEVELS[-1]))


# ---------------------------------------------------------------------------- shapes
def _unit_shape(kind: str, rng: np.random.Generator) -> np.ndarray:
    """Vertices of a shape centred on the origin, before scaling and rotation.

    Returns float64 [V, 2] (x, y), counter-clockwise, with an arbitrary scale (the caller
    rescales to the target area).
    """
    if kind in ("circle", "ellipse"):
        aspect = 1.0 if kind == "circle" else rng.uniform(0.3, 0.75)
        t = np.linspace(0.0, 2.0 * np.pi, 96, endpoint=False)
        return np.stack([np.cos(t), aspect * np.sin(t)], 1)
    if kind == "rectangle":
        h = rng.uniform(0.25, 1.0)
        return np.array([[-1.0, -h], [1.0, -h], [1.0, h], [-1.0, h]])
    if kind == "triangle":
        # Jittered angles and radii give varied (but never degenerate) triangles.
        t = np.deg2rad(90.0 + np.array([0.0, 120.0, 240.0]) + rng.uniform(-25.0, 25.0, 3))
        r = rng.uniform(0.7, 1.0, 3)
        return np.stack([r * np.cos(t), r * np.sin(t)], 1)
    if kind == "star":
        points = int(rng.integers(5, 7))
        inner = rng.uniform(0.38, 0.55)
        t = np.linspace(0.0, 2.0 * np.pi, 2 * points, endpoint=False)
        r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
        return np.stack([r * np.cos(t), r * np.sin(t)], 1)
    if kind == "cross":
        a = rng.uniform(0.25, 0.4)  # half arm thickness
        b = rng.uniform(0.7, 1.0)  # half length of the vertical arm
        return np.array(
            [[a, a], [1, a], [1, -a], [a, -a], [a, -b], [-a, -b],
             [-a, -a], [-1, -a], [-1, a], [-a, a], [-a, b], [a, b]], dtype=np.float64
        )
    raise ValueError(f"unknown shape kind {kind!r}")


def _polygon_area(pts: np.ndarray) -> float:
    """Shoelace area of a simple polygon. pts: float64 [V, 2]."""
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _shape_polygon(kind: str, size: float, angle: float, rng: np.random.Generator) -> np.ndarray:
    """The shape's vertices scaled so that its (unclipped) area is ``size**2``, then rotated.

    Returns float64 [V, 2] relative to the shape centre.
    """
    pts = _unit_shape(kind, rng)
    pts = pts * (size / math.sqrt(_polygon_area(pts)))
    c, s = math.cos(angle), math.sin(angle)
    return pts @ np.array([[c, s], [-s, c]])


def _fill(pts: np.ndarray, h: int, w: int) -> np.ndarray:
    """Rasterise a polygon (float64 [V, 2], image pixels) into a bool [H, W] mask (clipped)."""
    out = np.zeros((h, w), np.uint8)
    fixed = np.round(pts * (1 << _SUBPIXEL_SHIFT)).astype(np.int32)
    # LINE_8 (no anti-aliasing): the mask must be exactly the painted pixels.
    cv2.fillPoly(out, [fixed], 1, lineType=cv2.LINE_8, shift=_SUBPIXEL_SHIFT)
    return out.astype(bool)


# ---------------------------------------------------------------------------- colours/textures
def _hsv_to_bgr(h: float, s: float, v: float) -> np.ndarray:
    """One HSV colour (h in [0, 1), s, v in [0, 1]) as float32 [3] BGR on 0..255."""
    # Float input to cvtColor means H in degrees and S, V (and the BGR result) in [0, 1].
    px = np.array([[[h * 360.0, s, v]]], np.float32)
    return cv2.cvtColor(px, cv2.COLOR_HSV2BGR)[0, 0] * np.float32(255.0)


def _background_colour(rng: np.random.Generator) -> np.ndarray:
    """A muted colour (float32 [3] BGR): low saturation keeps objects distinguishable."""
    return _hsv_to_bgr(rng.uniform(0, 1), rng.uniform(0.0, 0.35), rng.uniform(0.2, 0.9))


def _object_colour(rng: np.random.Generator) -> np.ndarray:
    """A saturated colour (float32 [3] BGR)."""
    return _hsv_to_bgr(rng.uniform(0, 1), rng.uniform(0.45, 1.0), rng.uniform(0.35, 1.0))


def _linear_ramp(h: int, w: int, angle: float) -> np.ndarray:
    """float32 [H, W] in [0, 1] increasing along direction ``angle``."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = x * math.cos(angle) + y * math.sin(angle)
    lo, hi = float(r.min()), float(r.max())
    return (r - lo) / max(hi - lo, 1e-6)


def _background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A textured background: float32 [H, W, 3] BGR on 0..255."""
    c0, c1 = _background_colour(rng), _background_colour(rng)
    if rng.uniform() < 0.5:
        # Smoothed noise: low-resolution random field upsampled with a smooth kernel.
        cell = rng.uniform(6.0, 48.0)
        gh, gw = max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)
        field = rng.uniform(0.0, 1.0, (gh, gw)).astype(np.float32)
        t = np.clip(cv2.resize(field, (w, h), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)
    else:
        t = _linear_ramp(h, w, rng.uniform(0.0, 2.0 * np.pi))
    img = c0[None, None, :] * (1.0 - t[..., None]) + c1[None, None, :] * t[..., None]
    if rng.uniform() < 0.5:
        period = rng.uniform(4.0, 40.0)
        phase = _linear_ramp(h, w, rng.uniform(0.0, np.pi)) * math.hypot(h, w) / period
        stripes = 0.5 + 0.5 * np.sin(2.0 * np.pi * phase)
        alpha = rng.uniform(0.15, 0.5)
        c2 = _background_colour(rng)
        a = (alpha * stripes)[..., None]
        img = img * (1.0 - a) + c2[None, None, :] * a
    return img.astype(np.float32)


# ---------------------------------------------------------------------------- one image
def _render_image(
    h: int,
    w: int,
    rng: np.random.Generator,
    min_instance: float,
    max_instance: float,
    max_instances: int,
    min_instances: int = 1,
) -> tuple[np.ndarray, list[tuple[int, np.ndarray]], int]:
    """Draw one image.

    Returns (image uint8 [H, W, 3] BGR, [(category_id, visible mask bool [H, W]), ...] in paint
    order, number of instances dropped for being (nearly) hidden).
    """
    kinds = [name for _, name in CATEGORIES]
    n = int(rng.integers(min_instances, max_instances + 1))
    log_sizes = rng.uniform(math.log(min_instance), math.log(max_instance), n)
    # Mostly large-to-small (big objects behind small ones, so few small ones vanish), with
    # noise in the order so that small objects are sometimes occluded too.
    order = np.argsort(-(log_sizes + rng.normal(0.0, 0.7, n)), kind="stable")

    placed: list[tuple[int, float, float, float]] = []  # (class index, cx, cy, size)
    full_masks: list[np.ndarray] = []
    classes: list[int] = []
    for idx in order:
        size = float(math.exp(log_sizes[idx]))
        if placed and rng.uniform() < SAME_CLASS_OVERLAP_P:
            cls, pcx, pcy, psize = placed[int(rng.integers(len(placed)))]
            d = 0.5 * (psize + size) * rng.uniform(0.3, 0.8)
            phi = rng.uniform(0.0, 2.0 * np.pi)
            cx = float(np.clip(pcx + d * math.cos(phi), 0, w - 1))
            cy = float(np.clip(pcy + d * math.sin(phi), 0, h - 1))
            pts = _shape_polygon(kinds[cls], size, rng.uniform(0.0, 2.0 * np.pi), rng)
        else:
            cls = int(rng.integers(len(kinds)))
            pts = _shape_polygon(kinds[cls], size, rng.uniform(0.0, 2.0 * np.pi), rng)
            r = float(np.sqrt((pts**2).sum(1)).max())
            inside = 2.0 * r < min(h, w) and rng.uniform() < INSIDE_P
            lo_x, hi_x = (r, w - r) if inside else (0.0, float(w))
            lo_y, hi_y = (r, h - r) if inside else (0.0, float(h))
            cx, cy = float(rng.uniform(lo_x, hi_x)), float(rng.uniform(lo_y, hi_y))
        placed.append((cls, cx, cy, size))
        full_masks.append(_fill(pts + np.array([cx, cy]), h, w))
        classes.append(cls)

    def visible_of(keep: list[int]) -> list[np.ndarray]:
        owner = np.full((h, w), -1, np.int32)
        for k in keep:
            owner[full_masks[k]] = k
        return [owner == k for k in keep]

    min_pixels = max(MIN_VISIBLE_PIXELS, 0.15 * min_instance**2)
    candidates = list(range(len(full_masks)))
    visible = visible_of(candidates)
    keep = [
        k
        for k, vis in zip(candidates, visible, strict=True)
        if (a := int(vis.sum())) >= min_pixels and a >= MIN_VISIBLE_FRACTION * int(full_masks[k].sum())
    ]
    # Removing instances only gives pixels back to the ones below, so one recomputation is final.
    visible = visible_of(keep) if len(keep) != len(candidates) else visible

    img = _background(h, w, rng)
    for k, vis in zip(keep, visible, strict=True):
        ys, xs = np.nonzero(full_masks[k])
        if ys.size == 0:
            continue
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        # Shading across the object, so that same-colour neighbours still show an edge.
        ramp = _linear_ramp(int(y1 - y0), int(x1 - x0), rng.uniform(0.0, 2.0 * np.pi))
        shade = (ramp - 0.5) * rng.uniform(0.0, 60.0)
        tex = _object_colour(rng)[None, None, :] + shade[..., None]
        sel = vis[y0:y1, x0:x1]
        img[y0:y1, x0:x1][sel] = tex[sel]
    img += rng.standard_normal((h, w, 3), dtype=np.float32) * np.float32(rng.uniform(2.0, 8.0))
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    instances = [(CATEGORIES[classes[k]][0], v) for k, v in zip(keep, visible, strict=True)]
    return image, instances, len(candidates) - len(keep)


def render_scene(size: tuple[int, int], seed: int = 0, max_instances: int = 8,
                 max_size: float | None = None, min_instances: int = 1) -> np.ndarray:
    """One synthetic scene like the data set's (for demos): uint8 [H, W, 3] BGR, with
    min_instances..max_instances instances whose sizes are log-uniform from 8 px to ``max_size``
    (default 0.9 × the shorter side, as the data set)."""
    h, w = size
    rng = np.random.default_rng([int(seed), 99])
    image, _, _ = _render_image(h, w, rng, 8.0, max_size or 0.9 * min(h, w), max_instances, min_instances)
    return image


def _annotation(ann_id: int, image_id: int, cat_id: int, mask: np.ndarray) -> dict[str, Any]:
    """COCO annotation for a visible mask (bool [H, W]): compressed RLE, area and tight bbox."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    area = int(mask_utils.area(rle))
    bbox = [float(v) for v in mask_utils.toBbox(rle)]
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": cat_id,
        "segmentation": {"size": [int(rle["size"][0]), int(rle["size"][1])],
                         "counts": rle["counts"].decode("ascii")},
        "area": area,
        "bbox": bbox,
        "iscrowd": 0,
    }


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    # Write-then-rename: an interrupted run never leaves a truncated annotation file behind.
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, separators=(",", ":")), encoding="utf-8")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------- public API
def generate(
    out_dir: str | os.PathLike[str],
    n_train: int,
    n_val: int,
    seed: int = 0,
    image_size: tuple[int, int] = (320, 320),
    min_instance: float = 8,
    max_instance: float = 300,
    max_instances: int = 8,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the synthetic data set under ``out_dir`` (see the module docstring for the layout).

    Args:
        out_dir: destination folder (created; files of the same names are overwritten).
        n_train, n_val: number of images per split (0 allowed).
        seed: determines every byte written.
        image_size: (H, W) of every image.
        min_instance, max_instance: range of ``sqrt(area)`` in pixels of an unclipped,
            unoccluded instance (sampled log-uniformly). Instances larger than the image are
            clipped by its border.
        max_instances: instances per image are uniform in [1, max_instances] before dropping
            the (nearly) hidden ones.
        progress: show a tqdm progress bar.

    Returns a summary: ``{"out_dir", "seed", "image_size", "categories": {id: name},
    "splits": {split: {"images", "instances", "dropped_hidden", "per_class": {name: n},
    "fpn_levels": {2..5: n}, "ann_file", "image_dir"}}, "per_class", "fpn_levels", "instances"}``
    where FPN levels use the visible area (:func:`fpn_level`).
    """
    h, w = (int(v) for v in image_size)
    if n_train < 0 or n_val < 0:
        raise ValueError(f"image counts must be >= 0 (got train={n_train}, val={n_val})")
    if h <= 0 or w <= 0:
        raise ValueError(f"image_size must be positive (H, W) (got {image_size})")
    if not 1 <= min_instance <= max_instance:
        raise ValueError(f"need 1 <= min_instance <= max_instance (got {min_instance}, {max_instance})")
    if max_instances < 1:
        raise ValueError(f"max_instances must be >= 1 (got {max_instances})")

    root = Path(out_dir)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    names = {cid: name for cid, name in CATEGORIES}
    categories = [{"id": cid, "name": name, "supercategory": "shape"} for cid, name in CATEGORIES]
    summary: dict[str, Any] = {
        "out_dir": str(root),
        "seed": int(seed),
        "image_size": (h, w),
        "categories": dict(names),
        "splits": {},
    }
    bar = tqdm(total=n_train + n_val, desc="synth", unit="img", disable=not progress)
    for split_index, (split, count) in enumerate(zip(SPLITS, (n_train, n_val), strict=True)):
        image_dir = root / split
        image_dir.mkdir(parents=True, exist_ok=True)
        images: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        per_class = {name: 0 for _, name in CATEGORIES}
        levels = dict.fromkeys(FPN_LEVELS, 0)
        dropped = 0
        for i in range(count):
            rng = np.random.default_rng([int(seed), split_index, i])
            image, instances, n_dropped = _render_image(h, w, rng, min_instance, max_instance, max_instances)
            dropped += n_dropped
            file_name = f"{i:06d}.png"
            if not cv2.imwrite(str(image_dir / file_name), image):
                raise OSError(f"cv2.imwrite failed for {image_dir / file_name}")
            image_id = i + 1
            images.append({"id": image_id, "file_name": file_name, "height": h, "width": w})
            for cat_id, mask in instances:
                ann = _annotation(len(annotations) + 1, image_id, cat_id, mask)
                annotations.append(ann)
                per_class[names[cat_id]] += 1
                levels[fpn_level(ann["area"])] += 1
            bar.update(1)
        ann_file = root / "annotations" / f"instances_{split}.json"
        _write_json(
            ann_file,
            {
                "info": {"description": "maskrt synthetic shapes", "version": "1", "seed": int(seed),
                         "split": split},
                "licenses": [],
                "images": images,
                "annotations": annotations,
                "categories": categories,
            },
        )
        summary["splits"][split] = {
            "images": count,
            "instances": len(annotations),
            "dropped_hidden": dropped,
            "per_class": per_class,
            "fpn_levels": levels,
            "ann_file": str(ann_file),
            "image_dir": str(image_dir),
        }
    bar.close()
    splits = summary["splits"].values()
    summary["per_class"] = {name: sum(s["per_class"][name] for s in splits) for _, name in CATEGORIES}
    summary["fpn_levels"] = {lvl: sum(s["fpn_levels"][lvl] for s in splits) for lvl in FPN_LEVELS}
    summary["instances"] = sum(s["instances"] for s in splits)
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """A few human-readable lines for a :func:`generate` summary."""
    lines = [f"wrote {summary['out_dir']} (seed {summary['seed']}, images {summary['image_size'][0]}x"
             f"{summary['image_size'][1]})"]
    for split, s in summary["splits"].items():
        lines.append(f"  {split}: {s['images']} images, {s['instances']} instances "
                     f"({s['dropped_hidden']} hidden ones dropped) -> {s['ann_file']}")
    lines.append("  per class: " + ", ".join(f"{k} {v}" for k, v in summary["per_class"].items()))
    lines.append("  FPN levels (visible area): " + ", ".join(f"P{k} {v}" for k, v in summary["fpn_levels"].items()))
    return "\n".join(lines)


# ---------------------------------------------------------------------------- CLI hooks
def add_synth_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``maskrt data synth`` options to ``parser`` (returned for chaining)."""
    parser.add_argument("--out-dir", required=True, metavar="DIR", help="output folder")
    renamed_option(parser, "--out", "--out-dir DIR (data synth writes a folder)")
    parser.add_argument("--train", type=int, default=200, help="training images (default 200)")
    parser.add_argument("--val", type=int, default=50, help="validation images (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--image-size", type=int, nargs=2, default=(320, 320), metavar=("H", "W"),
                        help="image height and width (default 320 320)")
    parser.add_argument("--min-instance", type=float, default=8.0,
                        help="smallest instance, sqrt(area) in px (default 8)")
    parser.add_argument("--max-instance", type=float, default=300.0,
                        help="largest instance, sqrt(area) in px (default 300)")
    parser.add_argument("--max-instances", type=int, default=8, help="instances per image at most (default 8)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def run_synth(args: argparse.Namespace) -> int:
    """Run ``maskrt data synth`` from parsed arguments; returns the process exit code."""
    try:
        summary = generate(
            args.out_dir,
            args.train,
            args.val,
            seed=args.seed,
            image_size=tuple(args.image_size),
            min_instance=args.min_instance,
            max_instance=args.max_instance,
            max_instances=args.max_instances,
            progress=not args.no_progress,
        )
    except (ValueError, OSError) as e:
        print(f"maskrt data synth: error: {e}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 0
