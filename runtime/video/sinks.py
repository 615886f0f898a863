"""Where the pipeline's results go: annotated video, a window, JSON lines, image folders.

A :class:`Sink` gets ``open(info)`` once before the first frame, ``write(result)`` per frame in
source order (from the pipeline's sink thread), and ``close()`` once at the end, also after an
error or Ctrl-C, so what was written stays valid. A sink says what it needs in ``needs``
(``"overlay"``: the annotated frame; ``"record"``: the JSON record); the pipeline's postprocess
thread computes those once per frame for all sinks.

Imports numpy and OpenCV only.
"""

from __future__ import annotations

import abc
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import cv2
import numpy as np

from maskrt.runtime.detections import Detections

from .overlay import draw_detections
from .sources import Frame

__all__ = [
    "FrameResult",
    "ImageFolderSink",
    "JsonlSink",
    "PerImageSink",
    "Sink",
    "StreamInfo",
    "VideoFileSink",
    "WindowSink",
    "frame_record",
]

log = logging.getLogger("maskrt.video")


@dataclass(frozen=True)
class OverlayOptions:
    """How annotated frames are drawn (see :func:`maskrt.runtime.video.overlay.draw_detections`)."""

    alpha: float = 0.5
    draw_boxes: bool = True
    draw_labels: bool = True
    mask_threshold: float = 0.5


def frame_record(frame: Frame, dets: Detections, mask_threshold: float = 0.5, with_masks: bool = True, *,
                 native: bool = True) -> dict:
    """The JSON record of one frame: ``frame`` (index), ``timestamp``, ``file`` (image folders),
    then what :meth:`Detections.to_json` gives: ``image_size`` [H, W], ``boxes`` [[x1, y1, x2, y2]]
    in original pixels, ``scores``, ``classes``, ``names``, ``masks`` (COCO compressed RLE of the
    full-resolution bitmaps, ``counts`` as an ASCII string: ``pycocotools.mask.decode`` reads it
    after ``counts.encode()``).

    NOTE: the RLE comes from the native core's ``paste_to_rle`` (the same bitmaps as
    ``Detections.bitmaps()`` up to probabilities within ~1e-6 of the threshold, the same RLE as
    pycocotools; ~50x faster at 1080p, and it needs no pycocotools, which only the [train] extra
    installs); without the core it raises ``NativeCoreUnavailableError``. ``native=False`` asks
    for ``Detections.to_json`` (pycocotools) instead.
    """
    rec: dict[str, Any] = {"frame": int(frame.index),
                           "timestamp": None if frame.timestamp is None else round(float(frame.timestamp), 6)}
    if frame.name is not None:
        rec["file"] = frame.name
    native = bool(native) and with_masks
    rec.update(dets.to_json(threshold=mask_threshold, with_masks=with_masks and not native))
    if native:
        from maskrt.runtime import native_core

        rles = native_core.paste_to_rle(dets.masks, dets.boxes, dets.image_size, mask_threshold, threads=1) \
            if len(dets) else []
        rec["masks"] = [{"size": [int(v) for v in r["size"]], "counts": r["counts"].decode("ascii")} for r in rles]
    return rec


@dataclass
class FrameResult:
    """One frame through the pipeline: the frame, its detections and (when a sink needs them) the
    annotated image (uint8 [H, W, 3] BGR) and the JSON record."""

    frame: Frame
    detections: Detections
    options: OverlayOptions = field(default_factory=OverlayOptions)
    annotated: np.ndarray | None = None
    record: dict | None = None

    def overlay(self) -> np.ndarray:
        """The annotated frame (computed on first use)."""
        if self.annotated is None:
            o = self.options
            self.annotated = draw_detections(self.frame.image, self.detections, alpha=o.alpha,
                                             draw_boxes=o.draw_boxes, draw_labels=o.draw_labels,
                                             mask_threshold=o.mask_threshold)
        return self.annotated

    def json_record(self) -> dict:
        """The JSON record (computed on first use; see :func:`frame_record`)."""
        if self.record is None:
            self.record = frame_record(self.frame, self.detections, self.options.mask_threshold)
        return self.record


@dataclass(frozen=True)
class StreamInfo:
    """What sinks learn at open: the source's name, nominal fps (None if unknown), frame size
    (H, W) if fixed and known, whether it is live, the model's class names, and a thread-safe
    ``request_stop()`` (e.g. a window's 'q' key)."""

    source: str
    fps: float | None
    frame_size: tuple[int, int] | None
    live: bool
    class_names: Sequence[str] = ()
    request_stop: Callable[[], None] = lambda: None


class Sink(abc.ABC):
    """A consumer of :class:`FrameResult` (see the module docstring)."""

    name = "sink"
    needs: frozenset[str] = frozenset()

    def open(self, info: StreamInfo) -> None:  # noqa: B027 - optional hook
        """Called once before the first frame."""

    @abc.abstractmethod
    def write(self, result: FrameResult) -> None:
        """Called per frame, in order, from one thread."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Called once at the end (also after errors); must leave what was written valid."""


def _check_parent(path: Path, what: str) -> None:
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{what} {path}: the folder {path.parent} does not exist")


# ====================================================================== video file
FOURCC_BY_SUFFIX = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "XVID"}


class VideoFileSink(Sink):
    """Annotated frames written with ``cv2.VideoWriter``.

    The codec follows the suffix (``.mp4``/``.mov``: mp4v, ``.avi``: MJPG, ``.mkv``: XVID) unless
    ``fourcc`` is given. ``fps``: default the source's nominal fps, else 25.
    NOTE: for a live source that drops frames the file holds only the processed frames, so at
    the camera's fps it plays faster than real time; pass the processing rate as ``fps`` to
    keep real time. The size is the first frame's; a later frame of another size is resized to
    it (with one warning). A writer that cannot be opened raises OSError naming the path/codec.
    """

    name = "video"
    needs = frozenset({"overlay"})

    def __init__(self, path: str | os.PathLike, *, fps: float | None = None, fourcc: str | None = None) -> None:
        self.path = Path(path)
        _check_parent(self.path, "video output")
        if fourcc is None:
            fourcc = FOURCC_BY_SUFFIX.get(self.path.suffix.lower())
            if fourcc is None:
                raise ValueError(f"video output {self.path}: unknown container {self.path.suffix!r}; use one of "
                                 f"{sorted(FOURCC_BY_SUFFIX)} or pass fourcc")
        if len(fourcc) != 4:
            raise ValueError(f"fourcc must be 4 characters, got {fourcc!r}")
        if fps is not None and not (np.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be positive, got {fps!r}")
        self.fourcc, self.fps = fourcc, fps
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None  # (w, h)
        self._resized_warned = False
        self.frames_written = 0

    def open(self, info: StreamInfo) -> None:
        if self.fps is None:
            self.fps = info.fps or 25.0

    def write(self, result: FrameResult) -> None:
        image = result.overlay()
        h, w = image.shape[:2]
        if self._writer is None:
            self._size = (w, h)
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*self.fourcc), float(self.fps or 25),
                                           (w, h))
            if not self._writer.isOpened():
                self._writer = None
                raise OSError(f"video output {self.path}: cv2.VideoWriter cannot write {self.fourcc!r} at {w}x{h} "
                              "(codec missing from this OpenCV build, or the file is not writable)")
        elif (w, h) != self._size:
            if not self._resized_warned:
                log.warning("%s: frame %d is %dx%d, the video is %dx%d; frames of other sizes are resized",
                            self.path, result.frame.index, w, h, *self._size)
                self._resized_warned = True
            image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(image)
        self.frames_written += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()  # writes the container's index: the file is complete from here
            self._writer = None


# ====================================================================== window
def display_available() -> tuple[bool, str]:
    """(available, why not): whether cv2.imshow can open a window here."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        # NOTE: checked before touching HighGUI: a GTK/Qt build without a display can abort the
        # whole process instead of raising.
        return False, "no DISPLAY / WAYLAND_DISPLAY"
    gui = "NONE"
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:"):
            gui = line.split(":", 1)[1].strip()
            break
    if gui.upper() == "NONE":
        return False, "this OpenCV build has no GUI (opencv-python-headless); install opencv-python for --show"
    return True, ""


class WindowSink(Sink):
    """Annotated frames in a ``cv2.imshow`` window; 'q' or Esc asks the pipeline to stop.
    Without a display (or with a headless OpenCV) it warns once and does nothing.

    NOTE: HighGUI runs from the pipeline's sink thread; that works with OpenCV's GTK and Qt
    backends on Linux and Windows (macOS Cocoa needs the main thread, where this sink degrades
    to the warning path if OpenCV raises)."""

    name = "window"
    needs = frozenset({"overlay"})

    def __init__(self, title: str = "maskrt", *, wait_ms: int = 1) -> None:
        self.title, self.wait_ms = title, int(wait_ms)
        self.enabled = False
        self.reason = ""
        self._request_stop: Callable[[], None] = lambda: None

    def open(self, info: StreamInfo) -> None:
        self._request_stop = info.request_stop
        ok, why = display_available()
        if ok:
            try:
                cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)
            except cv2.error as e:
                ok, why = False, str(e).strip().splitlines()[-1]
        self.enabled = ok
        self.reason = why
        if not ok:
            log.warning("window output skipped: %s", why)

    def write(self, result: FrameResult) -> None:
        if not self.enabled:
            return
        cv2.imshow(self.title, result.overlay())
        key = cv2.waitKey(max(self.wait_ms, 1)) & 0xFF
        if key in (ord("q"), 27):
            self._request_stop()

    def close(self) -> None:
        if self.enabled:
            try:
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)
            except cv2.error:
                pass
            self.enabled = False


# ====================================================================== JSON lines
class JsonlSink(Sink):
    """One JSON object per frame and line (:func:`frame_record`), written whole and flushed per
    line, so a crash or Ctrl-C leaves only complete lines. ``fsync=True`` also forces each
    line to disk (survives a power cut; slower)."""

    name = "jsonl"
    needs = frozenset({"record"})

    def __init__(self, path: str | os.PathLike, *, fsync: bool = False) -> None:
        self.path = Path(path)
        _check_parent(self.path, "JSON lines output")
        self.fsync = bool(fsync)
        self._f: TextIO | None = None
        self.lines_written = 0

    def open(self, info: StreamInfo) -> None:
        self._f = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, result: FrameResult) -> None:
        if self._f is None:
            raise RuntimeError(f"{self.path}: JsonlSink.write before open")
        # NOTE: one write() of the whole line then flush: the file never ends in half a record
        # unless the process dies inside that single write.
        self._f.write(json.dumps(result.json_record(), separators=(",", ":")) + "\n")
        self._f.flush()
        if self.fsync:
            os.fsync(self._f.fileno())
        self.lines_written += 1

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


# ====================================================================== image folders
def _write_image(path: Path, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), image):
        raise OSError(f"cannot write image {path} (folder not writable, or an unsupported extension)")


class ImageFolderSink(Sink):
    """Annotated frames as images in ``out_dir`` (created): ``frame_000123.png`` by frame index,
    or, for image-folder sources, the source file's stem + ``ext``."""

    name = "images"
    needs = frozenset({"overlay"})

    def __init__(self, out_dir: str | os.PathLike, *, ext: str = ".png") -> None:
        self.out_dir = Path(out_dir)
        if not ext.startswith("."):
            ext = "." + ext
        self.ext = ext
        self.images_written = 0
        self._used: set[str] = set()

    def open(self, info: StreamInfo) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)

    def write(self, result: FrameResult) -> None:
        f = result.frame
        if f.name:
            stem = Path(f.name).stem
            if stem in self._used:  # a.png then a.jpg: the second becomes a_jpg (then a_jpg_2, ...)
                base = stem = f"{stem}_{Path(f.name).suffix.lstrip('.').lower()}"
                k = 2
                while stem in self._used:
                    stem, k = f"{base}_{k}", k + 1
        else:
            stem = f"frame_{f.index:06d}"
        self._used.add(stem)
        _write_image(self.out_dir / f"{stem}{self.ext}", result.overlay())
        self.images_written += 1


def output_stems(names: Sequence[str]) -> dict[str, str]:
    """File name -> output stem: the name's stem, or ``stem_ext`` for names whose stems collide
    (``a.png`` and ``a.jpg`` -> ``a_png``, ``a_jpg``)."""
    stems: dict[str, list[str]] = {}
    for n in names:
        stems.setdefault(Path(n).stem, []).append(n)
    out = {}
    for stem, group in stems.items():
        for n in group:
            out[n] = stem if len(group) == 1 else f"{stem}_{Path(n).suffix.lstrip('.').lower()}"
    return out


class PerImageSink(Sink):
    """For ``maskrt infer``: per input image, ``<stem>.json`` (the :func:`frame_record`: boxes,
    scores, classes, names, RLE masks) and ``<stem>.png`` (the overlay) in ``out_dir``.
    ``stems`` maps each input file name to its output stem (:func:`output_stems`);
    ``on_written(result)`` is called after each image (e.g. a progress bar)."""

    name = "per-image"
    needs = frozenset({"overlay", "record"})

    def __init__(self, out_dir: str | os.PathLike, stems: dict[str, str] | None = None, *, overlay: bool = True,
                 on_written: Callable[[FrameResult], None] | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.stems = dict(stems or {})
        self.with_overlay = bool(overlay)
        if not overlay:
            self.needs = frozenset({"record"})
        self.on_written = on_written
        self.written: list[str] = []

    def open(self, info: StreamInfo) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)

    def write(self, result: FrameResult) -> None:
        f = result.frame
        stem = self.stems.get(f.name or "", Path(f.name).stem if f.name else f"frame_{f.index:06d}")
        tmp = self.out_dir / f".{stem}.json.tmp"
        tmp.write_text(json.dumps(result.json_record(), indent=None) + "\n", encoding="utf-8")
        os.replace(tmp, self.out_dir / f"{stem}.json")  # atomic: never a half-written JSON
        if self.with_overlay:
            _write_image(self.out_dir / f"{stem}.png", result.overlay())
        self.written.append(stem)
        if self.on_written is not None:
            self.on_written(result)
