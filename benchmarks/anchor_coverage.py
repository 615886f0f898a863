"""How well a set of anchor sizes covers a data set's boxes: the best anchor IoU of every box.

The RPN labels an anchor positive at IoU >= 0.7 with a box (plus, for each box, its best anchors
whatever their IoU), so a box whose best anchor IoU is low is learnt from one poorly fitting
anchor only. This prints, per box size (sqrt of the box area), the fraction of boxes whose best
anchor reaches 0.7 / 0.5 and the median best IoU, for each anchor-size set given.

    .venv/bin/python -m maskrt.benchmarks.anchor_coverage --ann data/synth/annotations/instances_train.json \\
        --sizes 32,64,128,256,512 --sizes 16,32,64,128,256

Anchors are the model's own (``maskrt.train.model.anchors.grid_anchors``, the preset's aspect
ratios and FPN strides 4..64) at the model input size; boxes are the COCO ``bbox`` of images at
that size (the synthetic set's images are the input size, so no resize).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from maskrt.runtime.config import preset
from maskrt.train.model.anchors import grid_anchors
from maskrt.train.model.nms import box_iou

BINS = (0, 16, 32, 64, 128, 10_000)


def best_anchor_iou(boxes: np.ndarray, sizes: tuple[int, ...], image_size: tuple[int, int],
                    aspect_ratios: tuple[float, ...], chunk: int = 512) -> np.ndarray:
    """float64 [N]: the best IoU of each box (float [N, 4] x1, y1, x2, y2) with any anchor."""
    h, w = image_size
    feats = [(h // s, w // s) for s in (4, 8, 16, 32, 64)]
    anchors = torch.cat(grid_anchors(feats, (h, w), tuple(float(s) for s in sizes), aspect_ratios,
                                     dtype=torch.float64))
    b = torch.as_tensor(boxes, dtype=torch.float64)
    out = [box_iou(b[i:i + chunk], anchors).max(1).values for i in range(0, len(b), chunk)]
    return torch.cat(out).numpy() if out else np.zeros(0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ann", required=True, help="COCO instances JSON")
    ap.add_argument("--sizes", action="append", required=True, help="five anchor sizes P2..P6, comma-separated")
    ap.add_argument("--config", default="mnv3-small", help="preset for the input size and aspect ratios")
    args = ap.parse_args(argv)
    cfg = preset(args.config)
    anns = [a for a in json.load(open(args.ann, encoding="utf-8"))["annotations"] if not a.get("iscrowd")]
    xywh = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
    side = np.sqrt(xywh[:, 2] * xywh[:, 3])
    print(f"{len(boxes)} boxes from {args.ann}; input {cfg.input_size[0]}x{cfg.input_size[1]}, "
          f"aspect ratios {cfg.anchor_aspect_ratios}")
    print("| anchors | box side (px) | boxes | best IoU >= 0.7 | >= 0.5 | median best IoU |")
    print("|---|---|---|---|---|---|")
    for spec in args.sizes:
        sizes = tuple(int(v) for v in spec.split(","))
        if len(sizes) != 5:
            print(f"--sizes {spec!r}: need five sizes", file=sys.stderr)
            return 2
        best = best_anchor_iou(boxes, sizes, cfg.input_size, cfg.anchor_aspect_ratios)
        for lo, hi in [*zip(BINS[:-1], BINS[1:], strict=True), (0, BINS[-1])]:
            sel = (side >= lo) & (side < hi)
            label = "all" if (lo, hi) == (0, BINS[-1]) else f"{lo}-{hi}" if hi < BINS[-1] else f">= {lo}"
            if sel.any():
                b = best[sel]
                print(f"| {spec} | {label} | {int(sel.sum())} | {np.mean(b >= 0.7):.2f} | {np.mean(b >= 0.5):.2f} | "
                      f"{np.median(b):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
