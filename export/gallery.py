"""A contact sheet a person can look at: frames of the annotated video beside their ground truth.

``contact_sheet`` picks ``n`` frames spread evenly over a clip, reads each from the annotated
video (what the pipeline drew) and from the input clip (on which the ground truth is drawn the
same way: masks alpha-blended in the class colour of ``runtime/video/overlay.py``, outlines, and
``name #track`` labels), and lays the pairs out on a grid: one PNG. ``maskrt demo`` writes it as
``out/demo/gallery.png``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from maskrt.runtime.video.overlay import class_colour

_HEADER = 22  # px of caption above each panel


def read_frames(video: str | os.PathLike[str], indices: Sequence[int]) -> dict[int, np.ndarray]:
    """Frames ``indices`` (0-based) of a video file as uint8 [H, W, 3] BGR, read in one pass."""
    want = set(int(i) for i in indices)
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise OSError(f"cannot open {video}")
    out: dict[int, np.ndarray] = {}
    i = 0
    try:
        while len(out) < len(want):
            ok, frame = cap.read()
            if not ok:
                break
            if i in want:
                out[i] = frame
            i += 1
    finally:
        cap.release()
    if len(out) < len(want):
        raise ValueError(f"{video} has {i} frames; frames {sorted(want - set(out))} are missing")
    return out


def draw_ground_truth(image: np.ndarray, annotations: Sequence[Mapping[str, Any]], labels: Mapping[int, int],
                      names: Sequence[str], alpha: float = 0.5) -> np.ndarray:
    """``image`` (uint8 [H, W, 3] BGR) with COCO annotations drawn on a copy: ``labels`` maps a
    category id to the model's class id (for the colour), ``names`` are the model's class names."""
    out = image.copy()
    h, w = out.shape[:2]
    thick = max(1, round(min(h, w) / 320))
    for a in annotations:
        m = mask_utils.decode({"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()})
        cls = labels[int(a["category_id"])]
        colour = np.array(class_colour(cls), np.float32)
        sel = m.astype(bool)
        out[sel] = np.clip(out[sel] * (1.0 - alpha) + colour * alpha + 0.5, 0, 255).astype(np.uint8)
        contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, tuple(int(v) for v in colour), thick)
    for a in annotations:  # labels last, over every mask
        x, y, _, _ = (int(v) for v in a["bbox"])
        text = f"{names[labels[int(a['category_id'])]]} #{a.get('track_id', a['id'])}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.35, 1)
        ty = y - 2 if y - th - base - 2 >= 0 else y + th + 2
        colour = tuple(int(v) for v in class_colour(labels[int(a["category_id"])]))
        cv2.rectangle(out, (x, ty - th - 2), (x + tw + 2, ty + base - 1), colour, -1)
        cv2.putText(out, text, (x + 1, ty - 1), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def _captioned(image: np.ndarray, text: str) -> np.ndarray:
    h, w = image.shape[:2]
    panel = np.full((h + _HEADER, w, 3), 255, np.uint8)
    panel[_HEADER:] = image
    cv2.putText(panel, text, (4, _HEADER - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return panel


def contact_sheet(annotated: str | os.PathLike[str], clip: str | os.PathLike[str], gt: Mapping[str, Any],
                  names: Sequence[str], out: str | os.PathLike[str], *, n: int = 6, columns: int = 2,
                  width: int | None = None, predicted: Mapping[int, int] | None = None) -> Path:
    """Write a PNG of ``n`` frames (evenly spread over the clip): each the annotated frame, then
    the same frame of ``clip`` with the ground truth ``gt`` (a ``clip.gt.json`` dict) drawn, laid
    out ``columns`` pairs per row. ``width``: scale the sheet to this many pixels wide.
    ``predicted``: detections per frame index, shown in the captions. Returns ``out``."""
    frames = len(gt["images"])
    if frames < 1 or n < 1:
        raise ValueError(f"need at least one frame and n >= 1 (got {frames} frames, n={n})")
    by_name = {str(nm): i for i, nm in enumerate(names)}
    labels = {int(c["id"]): by_name[c["name"]] for c in gt["categories"] if c["name"] in by_name}
    picks = sorted({int(round(v)) for v in np.linspace(0, frames - 1, min(n, frames))})
    image_of = {img["frame_index"]: img["id"] for img in gt["images"]}
    anns: dict[int, list[Mapping[str, Any]]] = {}
    for a in gt["annotations"]:
        anns.setdefault(int(a["image_id"]), []).append(a)
    pred, raw = read_frames(annotated, picks), read_frames(clip, picks)
    pairs = []
    for i in picks:
        truth = anns.get(image_of[i], [])
        shown = "" if predicted is None else f" ({predicted.get(i, 0)})"
        p = _captioned(pred[i], f"frame {i}: model{shown}")
        g = _captioned(draw_ground_truth(raw[i], truth, labels, names), f"frame {i}: ground truth ({len(truth)})")
        gap = np.full((p.shape[0], 4, 3), 255, np.uint8)
        pairs.append(np.concatenate([p, gap, g], 1))
    ph, pw = pairs[0].shape[:2]
    rows = []
    for r in range(0, len(pairs), columns):
        row = pairs[r:r + columns]
        row += [np.full((ph, pw, 3), 255, np.uint8)] * (columns - len(row))
        sep = np.full((ph, 12, 3), 255, np.uint8)
        rows.append(np.concatenate([x for pair in row for x in (pair, sep)][:-1], 1))
    sheet = np.concatenate([x for row in rows for x in (row, np.full((8, row.shape[1], 3), 255, np.uint8))][:-1], 0)
    if width is not None and width < sheet.shape[1]:
        s = width / sheet.shape[1]
        sheet = cv2.resize(sheet, (width, max(1, round(sheet.shape[0] * s))), interpolation=cv2.INTER_AREA)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), sheet):
        raise OSError(f"cv2.imwrite failed for {path}")
    return path
