"""The `maskrt` command line.

Errors are one readable line on stderr and a non-zero exit; ``--debug`` shows the traceback.
Commands that need training-side packages (torch) import them only when they run, so the
runtime-only install still answers ``maskrt --help``.
"""

from __future__ import annotations

import argparse
import importlib
import sys


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the whole chain on the embedded default: checkpoint -> ONNX -> ONNX Runtime -> "
                                    "video pipeline -> annotated video + latency summary")
    p.add_argument("--config", default=None, help="run this preset with random weights instead")
    p.add_argument("--checkpoint", default=None, help="a maskrt checkpoint (.pt); default: the embedded one")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated clip and of random weights")
    p.add_argument("--top", type=int, default=5, help="detections of the first frame to print")
    p.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    p.add_argument("--frames", type=int, default=60, help="frames in the generated clip (default 60)")
    p.add_argument("--frame-size", type=int, nargs=2, default=(300, 400), metavar=("H", "W"),
                   help="frame size of the generated clip (default 300 400)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for PyTorch and ONNX Runtime (default 2)")
    p.add_argument("--min-score", type=float, default=0.3,
                   help="leave detections scoring below this out of the video and JSON lines (default 0.3)")

    def run(args) -> int:
        from maskrt.export.demo import run_demo

        return run_demo(config=args.config, checkpoint=args.checkpoint, seed=args.seed, top=args.top,
                        out_dir=args.out, frames=args.frames, frame_size=tuple(args.frame_size), threads=args.threads,
                        min_score=args.min_score)

    p.set_defaults(func=run)


def _add_lazy(parser: argparse.ArgumentParser, module: str, name: str) -> None:
    """Wire a training-side command: ``module`` provides ``add_<name>_arguments(parser)`` and
    ``run_<name>(args) -> int``. On a runtime-only install (no torch/pycocotools) the command still
    parses and says which extra it needs."""
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        missing = str(e)

        def run(args) -> int:
            raise RuntimeError(f"`maskrt {args.command}` needs the training extras: pip install 'maskrt[train]' "
                               f"({missing})")
    else:
        getattr(mod, f"add_{name}_arguments")(parser)
        run = getattr(mod, f"run_{name}")
    parser.set_defaults(func=run)


def _add_training_side(sub) -> None:
    data = sub.add_parser("data", help="data sets")
    dsub = data.add_subparsers(dest="data_command", required=True)
    _add_lazy(dsub.add_parser("synth", help="generate the synthetic COCO-format instance set"),
              "maskrt.train.data.synthetic", "synth")
    _add_lazy(dsub.add_parser("clip", help="generate a synthetic video clip with ground truth (COCO + MOT, track ids)"),
              "maskrt.train.data.clips", "clip")
    _add_lazy(sub.add_parser("train", help="train Mask R-CNN on a COCO-format data set (torchrun for several "
                                           "processes)"), "maskrt.train.trainer", "train")
    _add_lazy(sub.add_parser("eval", help="COCO bbox/segm AP of a checkpoint on a COCO-format data set"),
              "maskrt.train.evaluate", "eval")
    _add_lazy(sub.add_parser("export", help="export a checkpoint to ONNX (ort: standard ops; trt: maskrt plugin "
                                            "nodes for TensorRT)"), "maskrt.export.commands", "export")
    _add_lazy(sub.add_parser("parity", help="compare PyTorch eager with the exported graphs (detections, masks, "
                                            "COCO AP, batching)"), "maskrt.export.commands", "parity")
    _add_lazy(sub.add_parser("build", help="build a TensorRT engine (+ sidecar JSON) from a trt-flavour ONNX model"),
              "maskrt.export.build_engine", "build")


def _add_runtime_side(sub) -> None:
    _add_lazy(sub.add_parser("infer", help="detections (JSON with RLE masks) + overlay PNG for an image or a folder"),
              "maskrt.runtime.video_cli", "infer")
    _add_lazy(sub.add_parser("video", help="segment a video file, camera, stream or image folder in real time"),
              "maskrt.runtime.video_cli", "video")
    _add_lazy(sub.add_parser("track-eval", help="MOTA / IDF1 / ID switches of tracked JSON lines against MOT ground "
                                                 "truth (motmetrics, mask-IoU matching)"),
              "maskrt.runtime.tracking.evaluate", "track_eval")
    _add_lazy(sub.add_parser("bench", help="latency benchmark: per-stage p50/p90/p99, FPS, FLOP cost model, plots"),
              "maskrt.runtime.bench", "bench")
    _add_lazy(sub.add_parser("serve", help="Triton model repository for a model (--start: serve it on the bundled "
                                           "tritonserver)"), "maskrt.runtime.serving.cli", "serve")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maskrt", description="Mask R-CNN: train, export, deploy, stream.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_demo(sub)
    _add_training_side(sub)
    _add_runtime_side(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_parser(build_parser(), argv)


def run_parser(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parses ``argv`` and runs the chosen command's ``func``: errors are one line on stderr and
    exit 1 (``--debug``: the traceback), Ctrl-C exits 130. Shared by every ``maskrt`` entry point."""
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"maskrt {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one readable line unless --debug
        if args.debug:
            raise
        msg = str(e).strip() or type(e).__name__
        print(f"maskrt {args.command}: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
