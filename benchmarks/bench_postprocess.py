"""CPU pre- and post-processing per frame: the native core (maskrt._core) vs the numpy/OpenCV
references and a torchvision-style per-mask paste in torch.

Per frame of 640x480, 1280x720 and 1920x1080 (random BGR), letterboxed into the model input
(default 384 x 640, H x W), with 0, 10 and 100 detections: M = 28 mask probabilities shaped like
a mask head's output (a soft ellipse through a sigmoid, with low-frequency noise: about half of
each box is foreground) and boxes of realistic sizes (sqrt(area) log-uniform from 2% to 35% of
sqrt(frame area), aspect 1/2..2, inside the frame: for 100 boxes the summed box area is about twice
the frame's, a crowded scene).

  native     letterbox                  native_core.letterbox into a preallocated batch row
             paste_to_rle               pasted masks straight to COCO RLE (no full bitmaps)
             label_map                  one uint16 [H, W] label image
             paste_masks                bool [K, H, W] bitmaps
             rle_encode                 COCO RLE of those bitmaps
             pre+post (rle)             letterbox + paste_to_rle        <- the runtime's path
             pre+post (label map)       letterbox + paste_label_map
  reference  letterbox                  runtime/letterbox.letterbox (cv2.resize)
             paste_masks                runtime/postprocess.paste_masks (cv2 float32 resize per mask)
             masks_to_rle               runtime/postprocess.masks_to_rle (pycocotools)
             pre+post (rle)             letterbox + paste_masks + masks_to_rle
  torch      paste_masks                torchvision's paste_masks_in_image transcribed (expand
                                        masks/boxes, F.interpolate per mask, > 0.5)

Two threads everywhere: native threads=2, cv2.setNumThreads(2), torch.set_num_threads(2). Each
measurement: 3 warm-up calls, then --repeats (>= 20) timed calls; median and p99 (numpy
percentile, linear; with 30 repeats p99 is close to the maximum). Each configuration is checked
once: native paste == reference paste except at pixels within 1e-5 of the threshold, native RLE
== pycocotools' RLE of the native bitmaps, native letterbox == reference letterbox (bit-exact).

    .venv/bin/python -m maskrt.benchmarks.bench_postprocess [--repeats 30] [--input-size 384 640]
        [--no-torch] [--out benchmarks/results/postprocess_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import cv2
import numpy as np

from maskrt.benchmarks.timing import timeit
from maskrt.runtime import letterbox as ref_letterbox
from maskrt.runtime import native_core as nc
from maskrt.runtime import postprocess

THREADS = 2
M = 28
FRAMES = [(480, 640), (720, 1280), (1080, 1920)]
DETECTIONS = [0, 10, 100]


def make_masks(rng: np.random.Generator, k: int, m: int = M) -> np.ndarray:
    """float32 [k, m, m] mask-head-like probabilities: a soft ellipse (sigmoid of its signed
    distance) plus smooth noise; roughly half of the box above 0.5."""
    yy, xx = (np.mgrid[0:m, 0:m] + 0.5) / m
    out = np.empty((k, m, m), np.float32)
    for i in range(k):
        cy, cx = rng.uniform(0.4, 0.6, 2)
        ry, rx = rng.uniform(0.3, 0.5, 2)
        d = 1.0 - np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
        noise = cv2.resize(rng.normal(0, 1, (4, 4)).astype(np.float32), (m, m), interpolation=cv2.INTER_CUBIC)
        out[i] = 1.0 / (1.0 + np.exp(-(8.0 * d + 0.8 * noise)))
    return out


def make_boxes(rng: np.random.Generator, k: int, h: int, w: int) -> np.ndarray:
    """float32 [k, 4] boxes inside the frame: sqrt(box area) log-uniform in [2%, 35%] of
    sqrt(frame area) (COCO-like: many small, few large), aspect ratio log-uniform in [1/2, 2]."""
    side = np.exp(rng.uniform(np.log(0.02), np.log(0.35), k)) * np.sqrt(h * w)
    ar = np.exp(rng.uniform(np.log(0.5), np.log(2.0), k))
    bw = np.minimum(side * np.sqrt(ar), 0.95 * w)
    bh = np.minimum(side / np.sqrt(ar), 0.95 * h)
    x1 = rng.uniform(0, 1, k) * (w - bw)
    y1 = rng.uniform(0, 1, k) * (h - bh)
    return np.stack([x1, y1, x1 + bw, y1 + bh], 1).astype(np.float32)


def torch_paste_masks(masks, boxes, image_size, torch, F):
    """torchvision.models.detection.roi_heads.paste_masks_in_image (padding=1) + ``> 0.5``,
    transcribed: expand_masks, expand_boxes, then one F.interpolate per mask."""
    m = masks.shape[-1]
    scale = float(m + 2) / m
    padded = F.pad(masks[:, None], (1, 1, 1, 1))
    w_half = (boxes[:, 2] - boxes[:, 0]) * 0.5 * scale
    h_half = (boxes[:, 3] - boxes[:, 1]) * 0.5 * scale
    x_c = (boxes[:, 2] + boxes[:, 0]) * 0.5
    y_c = (boxes[:, 3] + boxes[:, 1]) * 0.5
    ibox = torch.stack([x_c - w_half, y_c - h_half, x_c + w_half, y_c + h_half], 1).to(torch.int64)
    im_h, im_w = image_size
    res = []
    for mask, box in zip(padded, ibox.tolist(), strict=True):
        w = max(box[2] - box[0] + 1, 1)
        h = max(box[3] - box[1] + 1, 1)
        mk = F.interpolate(mask[None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        im_mask = torch.zeros((im_h, im_w), dtype=mk.dtype)
        x_0, x_1 = max(box[0], 0), min(box[2] + 1, im_w)
        y_0, y_1 = max(box[1], 0), min(box[3] + 1, im_h)
        im_mask[y_0:y_1, x_0:x_1] = mk[(y_0 - box[1]):(y_1 - box[1]), (x_0 - box[0]):(x_1 - box[0])]
        res.append(im_mask)
    out = torch.stack(res) if res else masks.new_empty((0, im_h, im_w))
    return out > 0.5


def check(frame, input_size, masks, boxes, size) -> None:
    """The compared implementations agree on this configuration (else the timings mean nothing)."""
    got = nc.letterbox(frame, input_size, threads=THREADS)
    want = ref_letterbox.letterbox(frame, input_size)
    assert np.array_equal(got.image, want.image) and got.scale == want.scale
    bm = nc.paste_masks(masks, boxes, size, threads=THREADS)
    ref = postprocess.paste_masks(masks, boxes, size)
    assert (bm != ref).sum() <= max(4, bm.size // 100000), "native and reference paste differ"
    if len(masks):
        from pycocotools import mask as mask_utils

        coco = mask_utils.encode(np.asfortranarray(bm.transpose(1, 2, 0).astype(np.uint8)))
        fused = nc.paste_to_rle(masks, boxes, size, threads=THREADS)
        assert [r["counts"] for r in fused] == [r["counts"] for r in coco], "RLE differs from pycocotools"


def bench_config(rng, size, k, input_size, repeats, torch_mods) -> tuple[dict, float]:
    """Timings of every stage for one frame size and detection count, and the summed box area
    over the frame area."""
    h, w = size
    frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    masks, boxes = make_masks(rng, k), make_boxes(rng, k, h, w)
    check(frame, input_size, masks, boxes, size)
    area_fraction = float(((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).sum() / (h * w))
    batch = np.empty((1, *input_size, 3), np.uint8)
    t = THREADS
    res: dict[str, dict] = {}

    def pre_post_rle():
        nc.letterbox(frame, out=batch[0], threads=t)
        nc.paste_to_rle(masks, boxes, size, threads=t)

    def pre_post_label():
        nc.letterbox(frame, out=batch[0], threads=t)
        nc.paste_label_map(masks, boxes, size, threads=t)

    bitmaps = nc.paste_masks(masks, boxes, size, threads=t)
    res["native/letterbox"] = timeit(lambda: nc.letterbox(frame, out=batch[0], threads=t), repeats)
    res["native/paste_to_rle"] = timeit(lambda: nc.paste_to_rle(masks, boxes, size, threads=t), repeats)
    res["native/label_map"] = timeit(lambda: nc.paste_label_map(masks, boxes, size, threads=t), repeats)
    res["native/paste_masks"] = timeit(lambda: nc.paste_masks(masks, boxes, size, threads=t), repeats)
    res["native/rle_encode"] = timeit(lambda: nc.rle_encode(bitmaps, threads=t), repeats)
    res["native/pre+post (rle)"] = timeit(pre_post_rle, repeats)
    res["native/pre+post (label map)"] = timeit(pre_post_label, repeats)

    def ref_pre_post():
        ref_letterbox.letterbox(frame, input_size, out=batch[0])
        bm = postprocess.paste_masks(masks, boxes, size)
        if k:
            postprocess.masks_to_rle(bm)

    res["reference/letterbox"] = timeit(lambda: ref_letterbox.letterbox(frame, input_size, out=batch[0]), repeats)
    res["reference/paste_masks"] = timeit(lambda: postprocess.paste_masks(masks, boxes, size), repeats)
    if k:
        res["reference/masks_to_rle"] = timeit(lambda: postprocess.masks_to_rle(bitmaps), repeats)
    res["reference/pre+post (rle)"] = timeit(ref_pre_post, repeats)
    if torch_mods is not None:
        torch, F = torch_mods
        tm, tb = torch.from_numpy(masks), torch.from_numpy(boxes)
        with torch.inference_mode():
            got = torch_paste_masks(tm, tb, size, torch, F).numpy()
            assert (got != bitmaps).sum() <= max(4, got.size // 10000), "torch paste differs"
            res["torch/paste_masks"] = timeit(lambda: torch_paste_masks(tm, tb, size, torch, F), repeats)
    return res, area_fraction


def fmt(r: dict | None) -> str:
    return "-" if r is None else f"{r['median_ms']:.2f} / {r['p99_ms']:.2f}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--input-size", type=int, nargs=2, default=(384, 640), metavar=("H", "W"))
    ap.add_argument("--no-torch", action="store_true", help="skip the torch per-mask paste")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "postprocess_cpu.json"))
    args = ap.parse_args(argv)
    if args.repeats < 20:
        ap.error("--repeats must be >= 20")
    if not nc.NATIVE_AVAILABLE:
        raise SystemExit("maskrt._core is not built: run `make install`")
    cv2.setNumThreads(THREADS)
    torch_mods = None
    if not args.no_torch:
        try:
            import torch
            import torch.nn.functional as F

            torch.set_num_threads(THREADS)
            torch_mods = (torch, F)
        except ImportError:
            print("torch not installed: skipping the torch paste")
    input_size = tuple(args.input_size)
    rng = np.random.default_rng(0)
    rows = []
    for size in FRAMES:
        for k in DETECTIONS:
            res, area_fraction = bench_config(rng, size, k, input_size, args.repeats, torch_mods)
            rows.append({"frame": f"{size[1]}x{size[0]}", "height": size[0], "width": size[1], "detections": k,
                         "box_area_sum_over_frame_area": round(area_fraction, 3), "results": res})
            print(f"{size[1]}x{size[0]} K={k:3d}: native pre+post (rle) {fmt(res['native/pre+post (rle)'])} ms, "
                  f"reference {fmt(res['reference/pre+post (rle)'])} ms", flush=True)

    try:
        load = os.getloadavg()
    except OSError:
        load = None
    result = {
        "benchmark": "bench_postprocess",
        "threads": THREADS,
        "input_size": list(input_size),
        "mask_resolution": M,
        "repeats": args.repeats,
        "warmup": 3,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "loadavg_at_end": load, "python": platform.python_version(), "numpy": np.__version__,
                    "opencv": cv2.__version__, "torch": torch_mods[0].__version__ if torch_mods else None},
        "configs": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    cols = ["native/letterbox", "native/paste_to_rle", "native/label_map", "native/paste_masks",
            "native/rle_encode", "native/pre+post (rle)", "native/pre+post (label map)", "reference/letterbox",
            "reference/paste_masks", "reference/masks_to_rle", "reference/pre+post (rle)", "torch/paste_masks"]
    print(f"\nms per frame, median / p99, {THREADS} threads, input {input_size[0]}x{input_size[1]}, "
          f"{args.repeats} repeats\n")
    print("| frame | K | " + " | ".join(cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for r in rows:
        print(f"| {r['frame']} | {r['detections']} | " + " | ".join(fmt(r["results"].get(c)) for c in cols) + " |")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
