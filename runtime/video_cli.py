"""``maskrt video`` and ``maskrt infer``: the video pipeline and per-image inference on the command line.

    maskrt video --model m.onnx --source clip.mp4 --jsonl out.jsonl --save out.mp4
    maskrt video --model m.onnx --source 0 --show                 # camera 0, live status line
    maskrt video --model m.onnx --source rtsp://cam/stream --jsonl cam.jsonl
    maskrt video --model m.onnx --source 0 --source rtsp://user:pw@cam2/stream --batch 2 --jsonl out.jsonl
                                                                  # two cameras, one batched pipeline:
                                                                  # out_0.jsonl, out_1.jsonl
    maskrt infer --model m.onnx photos/ --out-dir results/        # <stem>.json + <stem>.png per image

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
from collections.abc import Callable
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


def _open_predictor(args: argparse.Namespace, on_event: Callable[[str], None] | None = None):
    """Predictor.open with the options that apply to the model's backend; ``on_event`` gets a
    remote (Triton) backend's loss / reconnect messages (the console, like a camera's)."""
    from maskrt.runtime.predictor import CHECKPOINT_SUFFIXES, ONNX_SUFFIXES, Predictor

    kwargs: dict[str, Any] = {}
    if "://" in str(args.model):
        from maskrt.runtime.backends.triton import is_triton_url

        if is_triton_url(str(args.model)) and on_event is not None:
            kwargs["on_event"] = on_event
        return Predictor.open(args.model, **kwargs)
    suffix = Path(args.model).suffix.lower()
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
        self._lines = 0
        self._lock = threading.Lock()

    def status(self, text: str) -> None:
        """One line rewritten with a carriage return; several lines (one per stream) rewritten
        in place with ANSI cursor movement."""
        if not self.status_enabled:
            return
        with self._lock:
            lines = text.split("\n")
            if len(lines) == 1 and self._lines <= 1:
                self.stream.write("\r" + text.ljust(self._width))
            else:
                up = f"\x1b[{self._lines - 1}F" if self._lines > 1 else "\r"
                self.stream.write(up + "\n".join(line + "\x1b[K" for line in lines))
            self.stream.flush()
            self._width = max(len(line) for line in lines)
            self._lines = len(lines)

    def message(self, text: str) -> None:
        with self._lock:
            self._clear()
            self.stream.write(f"{self.prog}: {text}\n")
            self.stream.flush()

    def end_status(self) -> None:
        with self._lock:
            if self._width or self._lines:
                self.stream.write("\n")
                self.stream.flush()
                self._width = self._lines = 0

    def _clear(self) -> None:
        if self._lines > 1:
            self.stream.write(f"\x1b[{self._lines - 1}F\x1b[J")
        elif self._width:
            self.stream.write("\r" + " " * self._width + "\r")
        self._width = self._lines = 0


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


def _run_with_status(pipe, console: _Console):
    """``pipe.run`` with the live status line; on a PipelineError the stats so far are printed
    before it propagates."""
    from maskrt.runtime.video import PipelineError

    try:
        stats = pipe.run(status=lambda s: console.status(s.status_line()), status_interval_s=0.5)
    except PipelineError as e:
        console.end_status()
        if e.stats is not None:
            print(e.stats.table(), flush=True)
        raise
    console.end_status()
    return stats


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
    parser.add_argument("--source", action="append", default=[], metavar="S",
                        help="video file, image folder, camera index (0), stream URL (rtsp://, http://, ...) or "
                             "GStreamer pipeline ('... ! appsink'); repeat it for several streams through one "
                             "batched pipeline (--batch frames of different streams per inference)")
    parser.add_argument("--sources", default=None, metavar="FILE",
                        help="a text file of sources, one per line (lines starting with '#' are comments), after "
                             "any --source")
    parser.add_argument("--jsonl", default=None, metavar="F",
                        help="write one JSON line per frame (frame, timestamp, boxes, scores, classes, names, "
                             "track_ids, RLE masks); with several streams F_<i> per stream ('{stream}' in F: "
                             "replaced by the stream's number)")
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
                        help="live status line on stderr, one per stream (auto: when stderr is a terminal)")
    add_tracker_arguments(parser)
    parser.set_defaults(func=run_video)


def add_tracker_arguments(parser: argparse.ArgumentParser) -> None:
    """``--track/--no-track`` and the tracker's parameters (``maskrt.runtime.tracking.TrackerConfig``)."""
    from maskrt.runtime.tracking.config import TrackerConfig  # standard library only: scipy loads when tracking runs

    d = TrackerConfig()
    g = parser.add_argument_group("tracking", "stable instance ids across frames (ByteTrack-style: mask IoU + box "
                                              "IoU + class, constant-velocity Kalman); track_ids in the JSON lines, "
                                              "a colour per id in the overlay")
    g.add_argument("--track", action=argparse.BooleanOptionalAction, default=True,
                   help="track instances (default: on; --no-track: per-frame detections only)")
    g.add_argument("--track-high-score", type=float, default=d.high_score, metavar="S",
                   help=f"detections scoring at least S are matched first (default {d.high_score})")
    g.add_argument("--track-low-score", type=float, default=d.low_score, metavar="S",
                   help=f"detections below S are ignored; between it and the high score they only continue "
                        f"tracks (default {d.low_score})")
    g.add_argument("--track-new-score", type=float, default=d.new_track_score, metavar="S",
                   help=f"an unmatched detection starts a track when it scores at least S (default "
                        f"{d.new_track_score})")
    g.add_argument("--track-match-iou", type=float, default=d.match_iou, metavar="X",
                   help=f"minimum similarity of a match (default {d.match_iou})")
    g.add_argument("--track-mask-weight", type=float, default=d.mask_weight, metavar="W",
                   help=f"share of mask IoU in the similarity, 0 = boxes only (default {d.mask_weight})")
    g.add_argument("--track-min-hits", type=int, default=d.min_hits, metavar="N",
                   help=f"matches before a track gets an id (default {d.min_hits})")
    g.add_argument("--track-max-lost", type=int, default=d.max_lost, metavar="N",
                   help=f"frames a track survives unseen (occlusion) before it is removed (default {d.max_lost})")


def tracker_config(args: argparse.Namespace):
    """The TrackerConfig of the parsed arguments, or None with --no-track (ValueError for bad values)."""
    if not args.track:
        return None
    from maskrt.runtime.tracking.config import TrackerConfig

    return TrackerConfig(high_score=args.track_high_score, low_score=args.track_low_score,
                         new_track_score=args.track_new_score, match_iou=args.track_match_iou,
                         mask_weight=args.track_mask_weight, min_hits=args.track_min_hits,
                         max_lost=args.track_max_lost)


def _source_specs(args: argparse.Namespace) -> list[str]:
    specs = list(args.source)
    if args.sources:
        path = Path(args.sources)
        if not path.is_file():
            raise FileNotFoundError(f"--sources {path}: no such file")
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):  # NOTE: whole-line comments only: '#' may be part of a URL
                specs.append(line)
    if not specs:
        raise ValueError("no source: give --source (repeatable) or --sources FILE")
    return specs


def per_stream_path(path: str, index: int, count: int) -> str:
    """The output of stream ``index`` of ``count``: ``path`` itself for one stream, ``{stream}``
    replaced when present, else ``<stem>_<index><suffix>``."""
    if "{stream}" in path:
        return path.replace("{stream}", str(index))
    if count == 1:
        return path
    p = Path(path)
    return str(p.with_name(f"{p.stem}_{index}{p.suffix}"))


def run_video(args: argparse.Namespace) -> int:
    """``maskrt video``: returns the exit status (see the epilog); raises on errors."""
    from maskrt.runtime.video import (
        ImageFolderSink,
        JsonlSink,
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
    specs = _source_specs(args)
    track = tracker_config(args)  # bad tracker parameters fail here, before anything opens
    if len(specs) > 1:
        return _run_streams(args, specs, track, console)
    args.source = specs[0]

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
        with _open_predictor(args, console.message) as predictor:
            pipe = VideoPipeline(source, predictor, sinks, batch=args.batch, queue_size=args.queue_size,
                                 max_frames=args.max_frames, min_score=args.min_score, overlay_alpha=args.alpha,
                                 draw_boxes=not args.no_boxes,
                                 draw_labels=not args.no_boxes, mask_threshold=args.mask_threshold,
                                 tracker=None if track is None else _new_tracker(track))
            stats = _run_with_status(pipe, console)
    finally:
        source.close()
        logger.removeHandler(handler)
        logger.propagate = propagate

    print(f"source: {stats.source} ({'live' if stats.live else 'file'}); model: {args.model}; batch {args.batch}; "
          f"tracking {'on' if track else 'off'}")
    print(stats.table(), flush=True)
    outputs = [f"{k} {v}" for k, v in (("jsonl", args.jsonl), ("video", args.save), ("images", args.out_dir)) if v]
    if outputs:
        print("wrote: " + ", ".join(outputs))
    if stats.source_failed:
        if source.live:
            raise RuntimeError(f"{stats.end_reason} (the outputs hold the {stats.frames_out} frames processed)")
        console.message(f"warning: {stats.end_reason} (the outputs hold the {stats.frames_out} frames before it)")
    return 0


def _new_tracker(config):
    from maskrt.runtime.tracking import Tracker

    return Tracker(config)


def _run_streams(args: argparse.Namespace, specs: list[str], track, console: _Console) -> int:
    """``maskrt video`` with several sources: one MultiStreamPipeline, outputs per stream."""
    from maskrt.runtime.video import (
        ImageFolderSink,
        JsonlSink,
        MultiStreamPipeline,
        VideoFileSink,
        open_source,
    )

    n = len(specs)
    if args.show:
        # NOTE: each stream's sinks run in that stream's own thread; HighGUI windows driven from
        # several threads at once are not safe (GTK/Qt), so refuse rather than crash.
        raise ValueError("--show takes one source; with several, write --save / --out-dir per stream instead")
    sinks: list[list] = []
    outputs: list[list[str]] = []
    for i in range(n):
        group, wrote = [], []
        if args.jsonl:
            group.append(JsonlSink(per_stream_path(args.jsonl, i, n)))
            wrote.append(f"jsonl {per_stream_path(args.jsonl, i, n)}")
        if args.save:
            group.append(VideoFileSink(per_stream_path(args.save, i, n), fps=args.save_fps))
            wrote.append(f"video {per_stream_path(args.save, i, n)}")
        if args.out_dir:
            folder = str(Path(args.out_dir) / f"stream_{i}")
            group.append(ImageFolderSink(folder))
            wrote.append(f"images {folder}")
        sinks.append(group)
        outputs.append(wrote)
    if not any(sinks):
        console.message("no output chosen (--jsonl, --save, --out-dir): measuring only")
    sources = [open_source(spec, realtime=args.realtime, on_event=console.message,
                           max_attempts=args.reconnect_attempts, max_reconnect_s=args.reconnect_timeout)
               for spec in specs]

    def on_end(i: int, name: str, why: str, failed: bool) -> None:
        console.message(f"stream {i} ({name}) ended: {why}" + ("; the other streams go on" if failed else ""))

    logger, handler, propagate = _route_logging(console)
    try:
        for src in sources:
            src.open()  # every source is checked before the model loads
        with _open_predictor(args, console.message) as predictor:
            trackers = None if track is None else [_new_tracker(track) for _ in specs]
            pipe = MultiStreamPipeline(sources, predictor, sinks, batch=args.batch, queue_size=args.queue_size,
                                       max_frames=args.max_frames, trackers=trackers, min_score=args.min_score,
                                       overlay_alpha=args.alpha, draw_boxes=not args.no_boxes,
                                       draw_labels=not args.no_boxes, mask_threshold=args.mask_threshold,
                                       on_stream_end=on_end)
            stats = _run_with_status(pipe, console)
    finally:
        for src in sources:
            src.close()
        logger.removeHandler(handler)
        logger.propagate = propagate

    print(f"{n} streams; model: {args.model}; batch {args.batch}; tracking {'on' if track else 'off'}")
    print(stats.table(), flush=True)
    for i, wrote in enumerate(outputs):
        if wrote:
            print(f"wrote [{i}]: " + ", ".join(wrote))
    lost = [s for s in stats.streams if s.failed and s.live]
    if lost:
        console.message("live stream(s) lost: " + "; ".join(f"[{s.index}] {s.end_reason}" for s in lost))
        return 1
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
        with _open_predictor(args, console.message) as predictor:
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
