"""``maskrt bench``: the arguments and the command. Values are parsed here (not by argparse types)
so that every bad value is a one-line error."""

from __future__ import annotations

import argparse
from typing import Any

from maskrt.runtime.cli import renamed_option

from .options import DEFAULT_FRAME_SIZE, BenchError, BenchOptions

__all__ = ["add_bench_arguments", "options_from_args", "run_bench"]


def _int_list(text: str, what: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise BenchError(f"{what} must be a comma-separated list of integers, got {text!r}") from None
    return vals


def _int(text: Any, what: str) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        raise BenchError(f"{what} must be an integer, got {text!r}") from None


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``maskrt bench``. Values are parsed in :func:`run_bench` so that every bad
    value is a one-line error."""
    parser.description = ("Latency benchmark: end-to-end and per-stage p50/p90/p99, FPS, peak memory, the FLOP cost "
                          "model against this machine's GEMM rate; JSON + markdown + PNG plots.")
    parser.add_argument("--model", default=None, help="a .onnx graph, a .pt checkpoint, a TensorRT engine, or a preset "
                                                      "name (random weights); default: the embedded checkpoint")
    parser.add_argument("--backend", default="ort", help="ort | trt | torch (default ort)")
    parser.add_argument("--batches", default=None, metavar="B[,B]",
                        help="batch sizes (frames per inference) to measure, comma-separated (default 1)")
    parser.add_argument("--batch", default=None, metavar="N", help="one batch size: the same as --batches N")
    parser.add_argument("--size", nargs=2, default=None, metavar=("H", "W"), help="model input size (re-exports a "
                                                                                "checkpoint; multiples of 32)")
    parser.add_argument("--precision", default="fp32", help="fp32 | fp16 | int8 (fp16/int8: TensorRT engines)")
    parser.add_argument("--iters", default="20", help="timed iterations per batch size (default 20)")
    parser.add_argument("--warmup", default="3", help="untimed warm-up iterations (default 3)")
    parser.add_argument("--threads", default="2", help="CPU threads for the backend, OpenCV and the GEMM probe (2)")
    parser.add_argument("--detections", default=None, metavar="K",
                        help="worst case: score threshold 0 and K detections per image (re-exports a checkpoint)")
    parser.add_argument("--compare", action="store_true", help="also run PyTorch eager on the same weights and inputs")
    parser.add_argument("--frame-size", nargs=2, default=list(DEFAULT_FRAME_SIZE), metavar=("H", "W"),
                        help="size of the generated camera frames (default 720 1280)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda (ORT CUDA provider / torch CUDA)")
    parser.add_argument("--profile-runs", default="3", help="profiled ONNX Runtime runs for the inner stages (3)")
    parser.add_argument("--pipeline-frames", default=None, help="frames through the video pipeline per batch size "
                                                                "(default iters x batch; 0: skip)")
    parser.add_argument("--name", default=None, help="result name (default <model>_<backend>_<H>x<W>)")
    parser.add_argument("--out-dir", default=None, metavar="DIR",
                        help="output folder (default benchmarks/results/<name>)")
    renamed_option(parser, "--out", "--out-dir DIR (bench writes a folder)")
    parser.add_argument("--no-plots", action="store_true", help="JSON and markdown only")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_bench)


def options_from_args(args: argparse.Namespace) -> BenchOptions:
    """Parsed command-line arguments -> :class:`BenchOptions` (BenchError for bad values)."""
    size = None if args.size is None else tuple(_int(v, "--size") for v in args.size)
    if args.batch is not None and args.batches is not None:
        raise BenchError("give --batches B[,B] or --batch N, not both")
    if args.batch is not None and "," in str(args.batch):
        raise BenchError(f"--batch N is one batch size (frames per inference); a list is --batches {args.batch}")
    batches = _int_list(args.batches, "--batches") if args.batches is not None else \
        (_int(args.batch, "--batch"),) if args.batch is not None else (1,)
    opts = BenchOptions(
        model=args.model, backend=args.backend, batches=batches, size=size,
        precision=args.precision, iters=_int(args.iters, "--iters"), warmup=_int(args.warmup, "--warmup"),
        threads=_int(args.threads, "--threads"),
        detections=None if args.detections is None else _int(args.detections, "--detections"),
        out_dir=args.out_dir, compare=args.compare, frame_size=tuple(_int(v, "--frame-size") for v in args.frame_size),
        device=args.device, profile_runs=_int(args.profile_runs, "--profile-runs"),
        pipeline_frames=None if args.pipeline_frames is None else _int(args.pipeline_frames, "--pipeline-frames"),
        name=args.name, progress=not args.no_progress, plots=not args.no_plots)
    opts.check()
    return opts


def run_bench(args: argparse.Namespace) -> int:
    """``maskrt bench``: runs, writes the results, prints the markdown table."""
    from .report import markdown_report
    from .run import run_benchmark

    opts = options_from_args(args)
    r = run_benchmark(opts)
    print(markdown_report(r))
    print(f"wrote {r['out_dir']}/bench.json, bench.md" + (", *.png" if opts.plots else ""))
    return 0
