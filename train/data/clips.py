"""Synthetic video clips of moving shapes with known identities, and their ground truth.

A clip is a world (a textured background, ``world_width`` wide) with objects drawn exactly as the
training images' shapes (:mod:`maskrt.train.data.synthetic`'s polygons, colours, shading and
sensor noise), seen through a camera window of ``frame_size``. Two kinds:

* ``"moving"`` (static camera): scripted events plus random wanderers that bounce off the frame
  border:

  - an *occlusion*: a large circle in front sweeps across a small object, which is wholly hidden
    for a few frames (its annotation disappears while it is hidden, then comes back with the same
    ``track_id``);
  - a *crossing*: two objects move towards each other on the same row and pass (one in front);
  - a *re-entry*: an object leaves the frame by the right edge, is wholly outside for a few
    frames, and comes back (same ``track_id``).

* ``"pan"``: static objects in a world twice as wide as the frame and a camera sweeping right
  then back (a triangle wave): objects leave and re-enter by the frame edges. This is the clip
  ``maskrt demo`` runs.

Written beside ``clip.mp4`` (:func:`write_clip`):

* ``clip.gt.json``: COCO instances, one image per frame (``id`` = frame index + 1, plus
  ``frame_index``), annotations with ``bbox`` [x, y, w, h], ``segmentation`` (compressed RLE of
  the *visible* mask), ``category_id`` (synthetic.py's ids), ``iscrowd`` 0, ``area`` and
  ``track_id`` (int >= 1, one per object for the whole clip); ``info.events`` names the track
  ids of the scripted events;
* ``clip.gt.txt``: MOT-challenge lines ``frame,id,x,y,w,h,1,class,1`` (1-based frames).

NOTE: an object is annotated in a frame under synthetic.py's rule for its training labels: at
least ``max(MIN_VISIBLE_PIXELS, 0.15 * min_instance**2)`` visible pixels and at least
``MIN_VISIBLE_FRACTION`` of its in-frame footprint visible. Below that it is still painted (a
video cannot drop paint), so a sliver can be seen but is not ground truth.

NOTE: MOT ``x, y`` are the COCO bbox's (0-based pixel edges), not MOT's usual 1-based corner.

Every frame is a function of ``(seed, frame index)`` alone: the same arguments give the same
frames and byte-identical ground-truth files.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from tqdm import tqdm

# NOTE: the shapes, colours and shading come from the training set's renderer on purpose (one
# home for how an object looks): these are its internal helpers, not copies.
from .synthetic import (
    CATEGORIES,
    MIN_VISIBLE_FRACTION,
    MIN_VISIBLE_PIXELS,
    _background,
    _fill,
    _linear_ramp,
    _object_colour,
    _shape_polygon,
    _write_json,
)

KINDS = ("moving", "pan")
_NAMES = tuple(name for _, name in CATEGORIES)
_CAT_ID = {name: cid for cid, name in CATEGORIES}


@dataclass(frozen=True)
class Track:
    """One object of a clip, in world coordinates.

    ``polygon`` float64 [V, 2] is the shape around its centre at angle 0 (already scaled);
    ``centres`` float64 [F, 2] (x, y) and ``angles`` float64 [F] are its pose per frame; objects
    are painted in increasing ``depth`` (a larger depth is in front).
    """

    track_id: int
    category_id: int
    polygon: np.ndarray
    colour: np.ndarray
    shade_angle: float
    shade_amplitude: float
    depth: int
    centres: np.ndarray
    angles: np.ndarray

    def radius(self) -> float:
        return float(np.sqrt((self.polygon**2).sum(1)).max())

    def outline(self, frame: int, camera: np.ndarray) -> np.ndarray:
        """Vertices float64 [V, 2] in the camera frame's pixels at ``frame``."""
        a = float(self.angles[frame])
        c, s = math.cos(a), math.sin(a)
        return self.polygon @ np.array([[c, s], [-s, c]]) + (self.centres[frame] - camera[frame])


@dataclass(frozen=True)
class FrameTruth:
    """What one rendered frame shows: ``image`` uint8 [H, W, 3] BGR, ``owner`` int32 [H, W] (the
    track id painted last at each pixel, 0 for background) and the annotated instances as
    ``(track_id, category_id, visible mask bool [H, W])`` in track-id order."""

    image: np.ndarray
    owner: np.ndarray
    instances: list[tuple[int, int, np.ndarray]]


@dataclass
class Clip:
    """A generated clip: call :meth:`render` for a frame; :func:`write_clip` writes all of them."""

    kind: str
    seed: int
    frame_size: tuple[int, int]
    fps: float
    background: np.ndarray  # float32 [H, world_width, 3]
    camera: np.ndarray  # float64 [F, 2]: the frame's top-left corner in the world, integers
    tracks: list[Track]
    min_instance: float = 8.0
    events: dict[str, list[int]] = field(default_factory=dict)

    @property
    def frames(self) -> int:
        return int(self.camera.shape[0])

    def render(self, index: int, without: tuple[int, ...] = ()) -> FrameTruth:
        """Frame ``index`` (0-based). ``without``: track ids left out of the scene (the tests use it
        to show that a hidden object changes no pixel)."""
        if not 0 <= index < self.frames:
            raise IndexError(f"frame {index} outside 0..{self.frames - 1}")
        h, w = self.frame_size
        x0, y0 = (int(v) for v in self.camera[index])
        img = self.background[y0:y0 + h, x0:x0 + w].copy()
        owner = np.zeros((h, w), np.int32)
        full: dict[int, np.ndarray] = {}
        for t in sorted(self.tracks, key=lambda t: (t.depth, t.track_id)):
            if t.track_id in without:
                continue
            m = _fill(t.outline(index, self.camera), h, w)
            ys, xs = np.nonzero(m)
            if ys.size == 0:
                continue
            full[t.track_id] = m
            owner[m] = t.track_id
            by0, by1, bx0, bx1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
            # Shading across the object (as synthetic.py), fixed per object so it moves with it.
            ramp = _linear_ramp(int(by1 - by0), int(bx1 - bx0), t.shade_angle)
            tex = t.colour[None, None, :] + ((ramp - 0.5) * t.shade_amplitude)[..., None]
            sel = m[by0:by1, bx0:bx1]
            img[by0:by1, bx0:bx1][sel] = tex[sel]
        noise_rng = np.random.default_rng([int(self.seed), 8, int(index)])
        img += noise_rng.standard_normal((h, w, 3), dtype=np.float32) * np.float32(4.0)
        image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        min_pixels = max(MIN_VISIBLE_PIXELS, 0.15 * self.min_instance**2)
        cat = {t.track_id: t.category_id for t in self.tracks}
        instances = []
        for tid in sorted(full):
            vis = owner == tid
            a = int(vis.sum())
            if a >= min_pixels and a >= MIN_VISIBLE_FRACTION * int(full[tid].sum()):
                instances.append((tid, cat[tid], vis))
        return FrameTruth(image, owner, instances)


# ---------------------------------------------------------------------------- scene building
class _Builder:
    def __init__(self, rng: np.random.Generator, frames: int):
        self.rng, self.frames, self.tracks = rng, frames, []

    def add(self, kind: str, size: float, centres: np.ndarray, depth: int, spin: float = 0.0) -> int:
        rng = self.rng
        tid = len(self.tracks) + 1
        angle0 = rng.uniform(0.0, 2.0 * np.pi)
        self.tracks.append(Track(
            track_id=tid, category_id=_CAT_ID[kind], polygon=_shape_polygon(kind, size, 0.0, rng),
            colour=_object_colour(rng), shade_angle=float(rng.uniform(0.0, 2.0 * np.pi)),
            shade_amplitude=float(rng.uniform(0.0, 60.0)), depth=depth, centres=centres,
            angles=angle0 + spin * np.arange(self.frames, dtype=np.float64)))
        return tid

    def kind(self) -> str:
        return _NAMES[int(self.rng.integers(len(_NAMES)))]


def _line(p0: tuple[float, float], p1: tuple[float, float], frames: int) -> np.ndarray:
    """Centres float64 [F, 2] moving at constant speed from p0 (frame 0) to p1 (last frame)."""
    t = np.linspace(0.0, 1.0, frames)[:, None]
    return np.asarray(p0, np.float64) * (1.0 - t) + np.asarray(p1, np.float64) * t


def _bounce(p: np.ndarray, v: np.ndarray, lo: np.ndarray, hi: np.ndarray, frames: int) -> np.ndarray:
    """Centres float64 [F, 2] of a point moving at velocity v, reflected off the box [lo, hi]."""
    span = np.maximum(hi - lo, 1e-6)
    u = (p - lo)[None, :] + v[None, :] * np.arange(frames, dtype=np.float64)[:, None]
    u = np.mod(u, 2.0 * span)
    return lo + np.where(u > span, 2.0 * span - u, u)


def _moving_scene(b: _Builder, h: int, w: int, extra: int) -> dict[str, list[int]]:
    rng, f = b.rng, b.frames
    s = min(h, w)
    # Occlusion: a small object near the middle, a large circle in front sweeping over it. The
    # circle's radius exceeds the object's by a margin, so for a few frames nothing of it shows.
    small = b.kind()
    cy = rng.uniform(0.35, 0.65) * h
    cx = rng.uniform(0.4, 0.6) * w
    hidden = b.add(small, 0.09 * s, _line((cx, cy), (cx + 0.02 * w, cy), f), depth=8, spin=0.01)
    big_r = 0.3 * s
    occluder = b.add("circle", big_r * math.sqrt(math.pi), _line((cx - 1.2 * w, cy + 0.02 * h),
                                                                  (cx + 1.2 * w, cy - 0.02 * h), f), depth=9)
    # Crossing: two objects on one row moving towards each other, passing at mid-clip.
    ry = rng.uniform(0.12, 0.25) * h
    left = b.add(b.kind(), 0.14 * s, _line((0.1 * w, ry), (0.9 * w, ry + 0.03 * h), f), depth=3, spin=0.02)
    right = b.add(b.kind(), 0.12 * s, _line((0.9 * w, ry + 0.03 * h), (0.1 * w, ry), f), depth=4, spin=-0.02)
    # Re-entry: out by the right edge at mid-clip (wholly outside for a few frames), then back.
    size = 0.12 * s
    probe = b.add(b.kind(), size, np.zeros((f, 2)), depth=10)  # in front of the occluder
    r = b.tracks[probe - 1].radius()
    apex, t = w + r + 0.12 * w, np.abs(np.arange(f, dtype=np.float64) - (f - 1) / 2.0)
    speed = (apex - 0.55 * w) / max((f - 1) / 2.0, 1.0)
    xs = apex - speed * t
    ys = 0.82 * h - 0.05 * h * np.cos(np.pi * t / max(f, 1))
    b.tracks[probe - 1] = replace(b.tracks[probe - 1], centres=np.stack([xs, ys], 1))
    # Wanderers: random sizes (log-uniform as the training set), bouncing inside the frame.
    for _ in range(extra):
        size = float(math.exp(rng.uniform(math.log(12.0), math.log(0.3 * s))))
        kind = b.kind()
        lo, hi = np.array([0.0, 0.0]), np.array([float(w), float(h)])
        p = rng.uniform(lo, hi)
        speed = rng.uniform(1.0, 4.0)
        phi = rng.uniform(0.0, 2.0 * np.pi)
        b.add(kind, size, _bounce(p, speed * np.array([math.cos(phi), math.sin(phi)]), lo, hi, f),
              depth=int(rng.integers(0, 8)), spin=float(rng.uniform(-0.05, 0.05)))
    return {"occluded": [hidden], "occluder": [occluder], "crossing": [left, right], "reentering": [probe]}


def _pan_scene(b: _Builder, h: int, world_w: int, n: int) -> None:
    rng, f = b.rng, b.frames
    # Instances sized as in the training images of a model at this frame height, and as many per
    # frame (the world is two frames wide) as in those images.
    log_sizes = rng.uniform(math.log(8.0), math.log(0.5 * h), n)
    for depth, idx in enumerate(np.argsort(-log_sizes, kind="stable")):
        size = float(math.exp(log_sizes[idx]))
        kind = b.kind()
        cx, cy = rng.uniform(0.0, world_w), rng.uniform(0.0, h)
        b.add(kind, size, np.tile([[cx, cy]], (f, 1)), depth=depth)


def make_clip(kind: str = "moving", *, frames: int = 60, frame_size: tuple[int, int] = (300, 400),
              seed: int = 0, fps: float = 25.0, objects: int | None = None) -> Clip:
    """Build a clip (nothing rendered yet). ``objects``: the random wanderers of a ``"moving"``
    clip (default 6, besides the 5 scripted objects) or the objects of a ``"pan"`` world
    (default 24)."""
    if kind not in KINDS:
        raise ValueError(f"unknown clip kind {kind!r} (choose from {', '.join(KINDS)})")
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    h, w = (int(v) for v in frame_size)
    if min(h, w) < 32:
        raise ValueError(f"frame_size must be at least 32 x 32, got {frame_size}")
    rng = np.random.default_rng([int(seed), 7, KINDS.index(kind)])
    b = _Builder(rng, frames)
    camera = np.zeros((frames, 2), np.float64)
    if kind == "moving":
        world_w = w
        events = _moving_scene(b, h, w, 6 if objects is None else int(objects))
    else:
        world_w = 2 * w
        _pan_scene(b, h, world_w, 24 if objects is None else int(objects))
        # A triangle wave over the clip: the camera sweeps right by one frame width, then back, so
        # objects leave by one edge and come back by it under the same track id.
        t = np.arange(frames, dtype=np.float64) / max(frames - 1, 1)
        camera[:, 0] = np.round(w * (1.0 - np.abs(1.0 - 2.0 * t)))
        events = {}
    background = _background(h, world_w, rng)
    return Clip(kind, int(seed), (h, w), float(fps), background, camera, b.tracks, events=events)


# ---------------------------------------------------------------------------- files
def gt_paths(video: str | os.PathLike[str]) -> tuple[Path, Path]:
    """The ground-truth files beside a clip: ``clip.mp4`` -> (``clip.gt.json``, ``clip.gt.txt``)."""
    p = Path(video)
    return p.with_suffix(".gt.json"), p.with_suffix(".gt.txt")


def _coco_annotation(ann_id: int, image_id: int, track_id: int, cat_id: int, mask: np.ndarray) -> dict[str, Any]:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {
        "id": ann_id, "image_id": image_id, "category_id": int(cat_id),
        "segmentation": {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")},
        "area": int(mask_utils.area(rle)), "bbox": [float(v) for v in mask_utils.toBbox(rle)],
        "iscrowd": 0, "track_id": int(track_id),
    }


@dataclass(frozen=True)
class ClipFiles:
    video: Path
    gt_json: Path
    gt_txt: Path
    frames: int
    annotations: int
    tracks: int


def write_clip(path: str | os.PathLike[str], kind: str = "moving", *, frames: int = 60,
               frame_size: tuple[int, int] = (300, 400), seed: int = 0, fps: float = 25.0,
               objects: int | None = None, progress: bool = False) -> ClipFiles:
    """Write ``path`` (an MP4, mp4v) and its ground truth beside it (see the module docstring)."""
    clip = make_clip(kind, frames=frames, frame_size=frame_size, seed=seed, fps=fps, objects=objects)
    video = Path(path)
    video.parent.mkdir(parents=True, exist_ok=True)
    h, w = clip.frame_size
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), clip.fps, (w, h))
    if not writer.isOpened():
        raise OSError(f"cannot write {video}: this OpenCV build has no mp4v encoder")
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    mot: list[str] = []
    seen: set[int] = set()
    try:
        for i in tqdm(range(clip.frames), desc="clip", unit="frame", disable=not progress):
            truth = clip.render(i)
            writer.write(truth.image)
            images.append({"id": i + 1, "frame_index": i, "file_name": f"{video.name}#{i}", "height": h, "width": w})
            for tid, cat, mask in truth.instances:
                ann = _coco_annotation(len(annotations) + 1, i + 1, tid, cat, mask)
                annotations.append(ann)
                seen.add(tid)
                x, y, bw, bh = ann["bbox"]
                mot.append(f"{i + 1},{tid},{x:g},{y:g},{bw:g},{bh:g},1,{cat},1")
    finally:
        writer.release()
    gt_json, gt_txt = gt_paths(video)
    _write_json(gt_json, {
        "info": {"description": f"maskrt synthetic clip ({clip.kind})", "version": "1", "seed": clip.seed,
                 "kind": clip.kind, "fps": clip.fps, "frames": clip.frames, "video": video.name,
                 "events": clip.events},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": cid, "name": name, "supercategory": "shape"} for cid, name in CATEGORIES],
    })
    tmp = gt_txt.with_suffix(".txt.tmp")
    tmp.write_text("".join(line + "\n" for line in mot), encoding="utf-8")
    os.replace(tmp, gt_txt)
    return ClipFiles(video, gt_json, gt_txt, clip.frames, len(annotations), len(seen))


def load_gt(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The COCO dict of a ``clip.gt.json`` (or of the clip beside which it lies)."""
    p = Path(path)
    if p.suffix != ".json":
        p = gt_paths(p)[0]
    return json.loads(p.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------- CLI hooks
def add_clip_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``maskrt data clip`` options to ``parser`` (returned for chaining)."""
    parser.add_argument("--out", required=True, help="the clip to write (.mp4); its ground truth goes beside it")
    parser.add_argument("--kind", choices=KINDS, default="moving",
                        help="moving: scripted occlusion, crossing, exit and re-entry, wanderers; pan: a camera "
                             "sweeping over a static scene (default moving)")
    parser.add_argument("--frames", type=int, default=60, help="frames (default 60)")
    parser.add_argument("--frame-size", type=int, nargs=2, default=(300, 400), metavar=("H", "W"),
                        help="frame height and width (default 300 400)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--fps", type=float, default=25.0, help="frame rate written in the video (default 25)")
    parser.add_argument("--objects", type=int, default=None,
                        help="random wanderers of a moving clip (default 6) or objects of a pan (default 24)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def run_clip(args: argparse.Namespace) -> int:
    """Run ``maskrt data clip`` from parsed arguments; returns the process exit code."""
    if Path(args.out).suffix.lower() != ".mp4":
        print(f"maskrt data clip: error: --out must name an .mp4 file, got {args.out!r}", file=sys.stderr)
        return 2
    try:
        files = write_clip(args.out, args.kind, frames=args.frames, frame_size=tuple(args.frame_size), seed=args.seed,
                           fps=args.fps, objects=args.objects, progress=not args.no_progress)
    except (ValueError, OSError) as e:
        print(f"maskrt data clip: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {files.video} ({files.frames} frames, {files.tracks} tracks, {files.annotations} annotations), "
          f"{files.gt_json}, {files.gt_txt}")
    return 0
