"""``maskrt video`` and ``maskrt infer``: the video pipeline and per-image inference on the command line.

    maskrt video --model m.onnx --source clip.mp4 --jsonl out.jsonl --save out.mp4
    maskrt video --model m.onnx --source 0 --show                 # camera 0, live status line
    maskrt video --model m.onnx --source rtsp://cam/stream --jsonl cam.jsonl
    maskrt infer --model m.onnx photos/ --out-dir results/           # <stem>.json + <stem>.png per image

``runtime/cli.py`` wires them: ``add_video_arguments(parser)`` / ``run_video(args)`` and
``add_infer_arguments(parser)`` / ``run_infer(args)``. This module also runs on its own
(``python -m maskrt.runtime.video_cli video ...``). Errors are raised (the CLI prints one line);
runtime-only imports (no torch, no onnx) unless the model is a ``.pt`` checkpoint.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

from maskrt.runtime.cli import renamed_option

__all__ = ["add_infer_arguments", "add_video_arguments", "main", "run_infer", "run_video"]


# ====================================================================== shared
def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return v


def _add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="M",
                   help="deployment model: .onnx (ONNX Runtime), .engine/.plan (TensorRT) or .pt (PyTorch checkpoint)")
    p.add_argument("--batch", type=_positive_int, default=1, metavar="N", help="frames per inference (default 1)")
    p.add_argument("--threads", type=_positive_int, default=None, metavar="T",
                   help="CPU threads inside inference (ONNX Runtime intra-op / torch threads; default: the library's)")
    p.add_argument("--providers", default="cpu", metavar="P[,P]",
                   help="ONNX Runtime execution providers in priority order (cpu, cuda, tensorrt, ...; default cpu)")
    p.add_argument("--alpha", type=_fraction, default=0.5, help="mask opacity in overlays (default 0.5)")
    p.add_argument("--no-boxes", action="store_true", help="overlays without boxes and labels")
    p.add_argument("--min-score", type=_fraction, default=0.0,
                   help="keep detections scoring at least this (on top of the model's threshold; default: all)")
    p.add_argument("--mask-threshold", type=_fraction, default=0.5,
                   help="mask probability above which a pixel is in the mask (overlay and RLE; default 0.5)")


def _open_predictor(args: argparse.Namespace):
    """Predictor.open with the options that apply to the model's backend."""
    from maskrt.runtime.predictor import CHECKPOINT_SUFFIXES, ONNX_SUFFIXES, Predictor

    suffix = Path(args.model).suffix.lower()
    kwargs: dict[str, Any] = {}
    if suffix in ONNX_SUFFIXES:
        kwargs["providers"] = [p.strip() for p in args.providers.split(",") if p.strip()]
        if args.threads:
            kwargs["intra_op_threads"] = args.threads
    elif suffix in CHECKPOINT_SUFFIXES:
        if args.threads:
            kwargs["threads"] = args.threads
    return Predictor.open(args.model, **kwargs)


class _Console:
    """stderr messages and the live one-line status. The status line is rewritten in place with a
    carriage return; a message first clears it and goes on its own line. Thread-safe (sources
    report reconnects from the capture thread)."""

    def __init__(self, prog: str, stream: TextIO, status: bool) -> None:
        self.prog, self.stream, self.status_enabled = prog, stream, status
        self._width = 0
        self._lock = threading.Lock()

    def status(self, text: str) -> None:
        if not self.status_enabled:
            return
        with self._lock:
            self.stream.write("\r" + text.ljust(self._width))
            self.stream.flush()
            self._width = len(text)

    def message(self, text: str) -> None:
        with self._lock:
            self._clear()
            self.stream.write(f"{self.prog}: {text}\n")
            self.stream.flush()

    def end_status(self) -> None:
        with self._lock:
            if self._width:
                self.stream.write("\n")
                self.stream.flush()
                self._width = 0

    def _clear(self) -> None:
        if self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self._width = 0


class _ConsoleHandler(logging.Handler):
    """Routes the pipeline's log warnings (logger ``maskrt.video``) through the console."""

    def __init__(self, console: _Console) -> None:
        super().__init__(logging.WARNING)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = "warning: " if record.levelno >= logging.WARNING else ""
            self.console.message(level + record.getMessage())
        except Exception:  # never let logging break the run
            self.handleError(record)


def _route_logging(console: _Console) -> tuple[logging.Logger, logging.Handler, bool]:
    logger = logging.getLogger("maskrt.video")
    handler = _ConsoleHandler(console)
    logger.addHandler(handler)
    propagate = logger.propagate
    logger.propagate = False
    return logger, handler, propagate


# ====================================================================== maskrt video
def add_video_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``maskrt video`` (and ``func=run_video``)."""
    parser.description = ("Run the model on a video file, image folder, camera, stream or GStreamer pipeline: capture, "
                          "preprocess, inference, postprocess and output run as threads. Live sources keep the newest "
                          "frame (and count drops); files go through frame by frame. Prints a live status line and a "
                          "per-stage latency summary.")
    parser.epilog = ("Exit status: 0 at the end of the stream, on Ctrl-C, or when a file stops decoding early (a "
                     "warning says where; the outputs hold the frames before it); 1 on errors, including a live "
                     "source that did not come back after its reconnect attempts.")
    _add_model_arguments(parser)
    parser.add_argument("--source", required=True, metavar="S",
                        help="video file, image folder, camera index (0), stream URL (rtsp://, http://, ...) or "
                             "GStreamer pipeline ('... ! appsink')")
    parser.add_argument("--jsonl", default=None, metavar="F",
                        help="write one JSON line per frame (frame, timestamp, boxes, scores, classes, names, "
                             "RLE masks)")
    parser.add_argument("--save", default=None, metavar="F", help="write the annotated video (.mp4, .avi, .mkv)")
    parser.add_argument("--save-fps", type=float, default=None, metavar="FPS",
                        help="frame rate of --save (default: the source's)")
    parser.add_argument("--show", action="store_true", help="show the annotated frames in a window ('q' stops)")
    parser.add_argument("--out-dir", default=None, metavar="D", help="write annotated frames as PNG images into D")
    parser.add_argument("--max-frames", type=_positive_int, default=None, metavar="N",
                        help="stop after reading N frames from the source")
    parser.add_argument("--queue-size", type=_positive_int, default=4, metavar="N",
                        help="capacity of the queues between stages for files (live sources use 1; default 4)")
    parser.add_argument("--realtime", action="store_true",
                        help="read a video file at its frame rate and treat it as live (drops frames like a camera)")
    parser.add_argument("--reconnect-attempts", type=_positive_int, default=10, metavar="N",
                        help="live sources: reopen attempts after the stream is lost (default 10)")
    parser.add_argument("--reconnect-timeout", type=float, default=60.0, metavar="S",
                        help="live sources: give up reconnecting after S seconds (default 60)")
    parser.add_argument("--status", choices=("auto", "on", "off"), default="auto",
                        help="live status line on stderr (auto: when stderr is a terminal)")
    parser.set_defaults(func=run_video)


def run_video(args: argparse.Namespace) -> int:
    """``maskrt video``: returns the exit status (see the epilog); raises on errors."""
    from maskrt.runtime.video import (
        ImageFolderSink,
        JsonlSink,
        PipelineError,
        VideoFileSink,
        VideoPipeline,
        WindowSink,
        open_source,
    )

    prog = "maskrt video"
    status_on = args.status == "on" or (args.status == "auto" and sys.stderr.isatty())
    console = _Console(prog, sys.stderr, status_on)
    if not (args.reconnect_timeout > 0):
        raise ValueError(f"--reconnect-timeout must be positive, got {args.reconnect_timeout}")

    # Outputs are checked (folders exist, codecs known) before the model loads.
    sinks = []
    if args.jsonl:
        sinks.append(JsonlSink(args.jsonl))
    if args.save:
        sinks.append(VideoFileSink(args.save, fps=args.save_fps))
    if args.out_dir:
        sinks.append(ImageFolderSink(args.out_dir))
    if args.show:
        sinks.append(WindowSink(f"maskrt: {args.source}"))
    if not sinks:
        console.message("no output chosen (--jsonl, --save, --out-dir, --show): measuring only")
    source = open_source(args.source, realtime=args.realtime, on_event=console.message,
                         max_attempts=args.reconnect_attempts, max_reconnect_s=args.reconnect_timeout)

    logger, handler, propagate = _route_logging(console)
    try:
        source.open()  # a wrong camera index / URL / file fails here, before the model loads
        with _open_predictor(args) as predictor:
            pipe = VideoPipeline(source, predictor, sinks, batch=args.batch, queue_size=args.queue_size,
                                 max_frames=args.max_frames, min_score=args.min_score, overlay_alpha=args.alpha,
                                 draw_boxes=not args.no_boxes,
                                 draw_labels=not args.no_boxes, mask_threshold=args.mask_threshold)
            try:
                stats = pipe.run(status=lambda s: console.status(s.status_line()), status_interval_s=0.5)
            except PipelineError as e:
                console.end_status()
                if e.stats is not None:
                    print(e.stats.table(), flush=True)
                raise
            console.end_status()
    finally:
        source.close()
        logger.removeHandler(handler)
        logger.propagate = propagate

    print(f"source: {stats.source} ({'live' if stats.live else 'file'}); model: {args.model}; batch {args.batch}")
    print(stats.table(), flush=True)
    outputs = [f"{k} {v}" for k, v in (("jsonl", args.jsonl), ("video", args.save), ("images", args.out_dir)) if v]
    if outputs:
        print("wrote: " + ", ".join(outputs))
    if stats.source_failed:
        if source.live:
            raise RuntimeError(f"{stats.end_reason} (the outputs hold the {stats.frames_out} frames processed)")
        console.message(f"warning: {stats.end_reason} (the outputs hold the {stats.frames_out} frames before it)")
    return 0


# ====================================================================== maskrt infer
def add_infer_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``maskrt infer`` (and ``func=run_infer``)."""
    parser.description = ("Run the model on one image or every image of a folder: per image, <stem>.json (boxes, "
                          "scores, classes, names, COCO RLE masks in original pixels) and <stem>.png (the overlay).")
    _add_model_arguments(parser)
    parser.add_argument("input", metavar="IMAGE|DIR", help="an image file, or a folder of images (non-images skipped)")
    parser.add_argument("--out-dir", required=True, metavar="DIR", help="output folder (created)")
    renamed_option(parser, "--out", "--out-dir DIR (infer writes a folder)")
    parser.add_argument("--no-overlay", action="store_true", help="write only the JSON files")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_infer)


def run_infer(args: argparse.Namespace) -> int:
    """``maskrt infer``: returns 0 when every image was processed, 1 when some could not be read."""
    from maskrt.runtime.video import ImageFolderSource, PerImageSink, VideoPipeline
    from maskrt.runtime.video.sinks import output_stems

    prog = "maskrt infer"
    console = _Console(prog, sys.stderr, False)
    path = Path(args.input)
    if path.is_dir():
        source = ImageFolderSource(path, on_event=console.message)
    elif path.is_file():
        source = ImageFolderSource([path], on_event=console.message)
    else:
        raise FileNotFoundError(f"{path}: no such image or folder")
    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out}: exists and is not a folder")

    logger, handler, propagate = _route_logging(console)
    try:
        source.open()  # lists the images (and raises for a folder without any) before the model loads
        stems = output_stems([p.name for p in source.paths])
        with _open_predictor(args) as predictor:
            from tqdm import tqdm

            bar = tqdm(total=len(source.paths), unit="img", desc=prog, file=sys.stderr,
                       disable=args.no_progress or len(source.paths) == 1)
            try:
                sink = PerImageSink(out, stems, overlay=not args.no_overlay, on_written=lambda r: bar.update(1))
                pipe = VideoPipeline(source, predictor, [sink], batch=args.batch, min_score=args.min_score,
                                     overlay_alpha=args.alpha,
                                     draw_boxes=not args.no_boxes, draw_labels=not args.no_boxes,
                                     mask_threshold=args.mask_threshold)
                stats = pipe.run()
            finally:
                bar.close()
    finally:
        source.close()
        logger.removeHandler(handler)
        logger.propagate = propagate

    what = "JSON" if args.no_overlay else "JSON + PNG"
    print(f"{len(sink.written)} image(s) -> {out} ({what} each); {stats.fps:.1f} images/s; "
          f"infer {stats.stages['infer'].mean:.1f} ms per image")
    if source.unreadable:
        console.message(f"could not read {len(source.unreadable)} image(s): {', '.join(source.unreadable[:5])}")
        return 1
    return 0


# ====================================================================== standalone
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maskrt", description="maskrt video and infer commands")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)
    add_video_arguments(sub.add_parser("video", help="run the model on a video, camera, stream or image folder"))
    add_infer_arguments(sub.add_parser("infer", help="run the model on an image or a folder of images"))
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m maskrt.runtime.video_cli {video,infer} ...`` (the same as ``maskrt video|infer``)."""
    from maskrt.runtime.cli import run_parser

    return run_parser(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
