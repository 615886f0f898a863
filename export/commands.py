"""CLI commands of the export side: ``maskrt export`` and ``maskrt parity``."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from maskrt.runtime.cli import renamed_option
from maskrt.runtime.config import preset
from maskrt.runtime.model_meta import FLAVOURS, PRECISIONS


def _load_model(checkpoint: str | None, config: str | None, size: list[int] | None, seed: int = 0):
    """A MaskRCNN in eval mode from a checkpoint (default: the embedded one) or a preset with
    random weights; ``size`` (H, W) overrides the input size (multiples of 32)."""
    import torch

    from maskrt.train.demo import DEFAULT_CHECKPOINT
    from maskrt.train.model.checkpoint import load_checkpoint
    from maskrt.train.model.mask_rcnn import MaskRCNN

    if checkpoint and config:
        raise ValueError("give --checkpoint or --config, not both")
    if config:
        torch.manual_seed(seed)
        cfg = preset(config)
        if size:
            cfg = cfg.replace(input_size=tuple(size))
        model = MaskRCNN(cfg)
    else:
        model, _ = load_checkpoint(checkpoint or DEFAULT_CHECKPOINT)
        if size:
            cfg = model.cfg.replace(input_size=tuple(size))  # validates: multiples of 32
            model.cfg = cfg
            model.rpn.cfg = cfg
            model.roi_heads.cfg = cfg
    return model.eval()


def _size(text: str) -> int:
    v = int(text)
    if v <= 0 or v % 32:
        raise argparse.ArgumentTypeError(f"{v} is not a positive multiple of 32")
    return v


def add_export_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--checkpoint", default=None, help="maskrt checkpoint (.pt); default: the embedded one")
    p.add_argument("--config", default=None, help="export this preset with random weights instead")
    p.add_argument("--out", required=True, help="output .onnx file")
    p.add_argument("--flavour", choices=FLAVOURS, default="ort",
                   help="ort: standard ops for ONNX Runtime; trt: RoIAlign/NMS as maskrt TensorRT plugin nodes")
    p.add_argument("--size", type=_size, nargs=2, metavar=("H", "W"), default=None,
                   help="input size baked into the graph (multiples of 32); default: the config's")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp32; fp16: the dense network in float16 with float32 islands (pre-processing, anchors, "
                        "box decoding, RoIs, NMS, outputs); int8: Q/DQ on Conv/Gemm/MatMul, calibrated on --calib")
    p.add_argument("--calib", metavar="DIR", default=None,
                   help="int8: folder of calibration images (letterboxed like the runtime does)")
    p.add_argument("--calib-images", type=int, metavar="N", default=None,
                   help="int8: calibrate on at most the first N images (default 64)")
    p.add_argument("--calib-method", choices=("percentile", "minmax", "entropy"), default=None,
                   help="int8: onnxruntime.quantization calibration method (default percentile, 99.999 %%)")
    p.add_argument("--batch", type=int, default=1, metavar="N",
                   help="frames per inference of the check run after export (the graph's batch is dynamic)")
    p.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime vs PyTorch check run")
    return p


def run_export(args: argparse.Namespace) -> int:
    import time

    from maskrt.train.demo import demo_image

    from .onnx_export import export_model
    from .parity import compare_batches, onnx_runner, torch_runner

    if args.batch < 1:
        raise ValueError(f"--batch must be >= 1, got {args.batch}")
    if (args.precision == "int8") != (args.calib is not None):
        raise ValueError("--precision int8 needs --calib DIR (calibration images); --calib is for int8 only")
    if args.calib_images is not None and (args.precision != "int8" or args.calib_images < 1):
        raise ValueError("--calib-images N: a positive number, with --precision int8")
    t = time.perf_counter()
    model = _load_model(args.checkpoint, args.config, args.size)
    print(f"[export] loaded {model.cfg.name} (input {model.cfg.input_size[0]}x{model.cfg.input_size[1]}, "
          f"{model.cfg.num_classes} classes) in {time.perf_counter() - t:.1f} s")
    s = export_model(model, args.out, args.flavour, precision=args.precision, calib_dir=args.calib,
                     calib_images=args.calib_images, calib_method=args.calib_method,
                     progress=lambda m: print(f"[export] {m}"))
    if not args.no_check and args.precision != "fp32":
        # NOTE: reduced precision is not expected to match PyTorch's fp32 within the parity
        # tolerances; its loss is measured against the fp32 graph (docs/results.md, tests).
        print(f"[export] {args.precision}: check run skipped (compare with the fp32 graph: maskrt parity, "
              f"docs/results.md)")
    elif not args.no_check:
        t = time.perf_counter()
        images = np.stack([demo_image(i, model.cfg.input_size) for i in range(args.batch)])
        ref = torch_runner(model)(images)
        out = onnx_runner(s.path)(images)
        rows = compare_batches(ref, out, model.cfg.input_size)
        bad = [i for i, r in enumerate(rows) if not r.ok]
        print(f"[export] check run, batch {args.batch}: {sum(r.n_out for r in rows)} detections, "
              f"max box rel {max(r.max_box_rel for r in rows):.1e}, max score diff "
              f"{max(r.max_score_abs for r in rows):.1e} vs PyTorch ({time.perf_counter() - t:.1f} s)")
        if bad:
            raise RuntimeError(f"the exported graph disagrees with PyTorch on check image(s) {bad}")
    top = ", ".join(f"{k} {v}" for k, v in sorted(s.op_counts.items(), key=lambda kv: -kv[1])[:8])
    print(f"[export] done: {s.line()}\n[export] ops: {top}, ...")
    return 0


def add_parity_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--checkpoint", default=None, help="maskrt checkpoint (.pt); default: the embedded one")
    p.add_argument("--config", default=None, help="use this preset with random weights instead (e.g. r50)")
    p.add_argument("--size", type=_size, nargs=2, metavar=("H", "W"), default=None, help="input size override")
    p.add_argument("--images", type=int, default=8, help="generated synthetic images to compare on")
    p.add_argument("--data", default=None,
                   help="COCO-format data root (annotations/instances_val.json + val/) to compare COCO AP on")
    p.add_argument("--limit", type=int, default=None, help="only the first N images of --data")
    p.add_argument("--flavour", action="append", choices=FLAVOURS, default=None,
                   help="a graph flavour to compare; repeat for several (default: all of " + ", ".join(FLAVOURS) + ")")
    renamed_option(p, "--flavours", "--flavour F, once per flavour (--flavour ort --flavour trt)")
    p.add_argument("--batch", type=int, default=4, metavar="N", help="frames per inference of the batch check (4)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out-dir", default=None, metavar="DIR",
                   help="folder for the exported graphs (default: a temporary one)")
    renamed_option(p, "--out", "--out-dir DIR (parity writes a folder of graphs; the report is --json FILE)")
    p.add_argument("--json", default=None, help="write the report as JSON here")
    p.add_argument("--seed", type=int, default=0)
    return p


def run_parity(args: argparse.Namespace) -> int:
    from maskrt.train.demo import demo_image

    from .parity import format_report, write_json
    from .parity import run_parity as _run

    model = _load_model(args.checkpoint, args.config, args.size, args.seed)
    cfg = model.cfg
    images = np.stack([demo_image(args.seed + i, cfg.input_size) for i in range(args.images)])
    dataset = None
    if args.data:
        from maskrt.train.data.coco import CocoInstances

        root = Path(args.data)
        dataset = CocoInstances(root / "annotations" / "instances_val.json", root / "val")
        if args.limit:
            dataset.ids = dataset.ids[: args.limit]
    with tempfile.TemporaryDirectory() as tmp:
        rows = _run(model, images, args.out_dir or tmp,
                    flavours=list(dict.fromkeys(args.flavour or FLAVOURS)), threads=args.threads, batch=args.batch,
                    dataset=dataset, progress=lambda m: print(f"[parity] {m}"))
    print(format_report(rows))
    if args.json:
        write_json(rows, args.json, model=cfg.name, input_size=list(cfg.input_size), images=args.images,
                   data=args.data)
    failed = [r["backend"] for r in rows if not r["ok"]]
    if failed:
        print(f"[parity] FAILED: {', '.join(failed)}")
        return 1
    print("[parity] all backends agree with PyTorch eager")
    return 0
