"""Frame sources for the video pipeline: files, cameras, streams, GStreamer pipelines, image folders.

Every source has the same small interface (:class:`Source`): ``open()``, ``read() -> Frame | None``
(``None`` = the stream ended; :attr:`Source.end_reason` says why, :attr:`Source.failed` whether it
was a failure), ``close()``, ``interrupt()`` (thread-safe: wakes any wait inside ``read``), and the
properties ``live``, ``fps``, ``frame_size``, ``frame_count``.

* **Files and image folders** are not live: the pipeline takes every frame, in order, and applies
  back-pressure. A video file that stops decoding before its frame count ends the stream with a
  message naming the frame (``failed`` = True); nothing is raised.
* **Cameras, network streams and GStreamer pipelines** are live: the pipeline keeps only the
  newest frame. When a live source stops delivering frames it is reopened with exponential
  back-off (bounded by a number of attempts and a total time); every step is reported through
  ``on_event`` (default: a ``logging`` warning) and, if it never comes back, the stream ends with a
  message saying how long and how often it was retried.

:func:`open_source` picks the class from a command-line style spec.

Imports numpy and OpenCV only.
"""

from __future__ import annotations

import abc
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from maskrt.runtime.letterbox import as_bgr

__all__ = [
    "IMAGE_EXTENSIONS",
    "STREAM_SCHEMES",
    "CameraSource",
    "CaptureSource",
    "Frame",
    "GStreamerSource",
    "ImageFolderSource",
    "ReconnectingSource",
    "Source",
    "SourceError",
    "SourceOpenError",
    "StreamSource",
    "VideoFileSource",
    "open_source",
]

log = logging.getLogger("maskrt.video")

# What cv2.imread reads (OpenCV's image codecs); anything else in a folder is skipped with a warning.
IMAGE_EXTENSIONS = frozenset({".bmp", ".dib", ".jpg", ".jpeg", ".jpe", ".jp2", ".png", ".webp", ".avif", ".pbm",
                              ".pgm", ".ppm", ".pxm", ".pnm", ".pfm", ".sr", ".ras", ".tif", ".tiff", ".exr", ".hdr",
                              ".pic"})
# URL schemes that FFMPEG (through cv2.VideoCapture) opens as network streams.
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp", "mms")


class SourceError(RuntimeError):
    """A source failed. Raised by :meth:`Source.read` of custom sources, it ends the pipeline's
    stream cleanly with this message (``failed``); any other exception from ``read`` is a capture
    stage error."""


class SourceOpenError(SourceError):
    """A source cannot be opened (not a video, no such camera, no GStreamer in this OpenCV, ...)."""


@dataclass
class Frame:
    """One frame from a source.

    image: uint8 [H, W, 3] BGR, C-contiguous (any size; the pipeline letterboxes).
    index: 0-based position in the source. For live sources it counts every frame read from the
        device, including those the pipeline later drops, so gaps in the output show the drops.
    timestamp: seconds; files: media time (``index / fps``, or the decoder's position when the
        file has no frame rate); live sources: wall-clock time (``time.time()``) at capture;
        image folders: ``index / fps`` when an fps was given, else None.
    captured: ``time.perf_counter()`` when ``read`` returned it (the reference of the pipeline's
        end-to-end latency; not meaningful across processes).
    name: the file name (image folders) or None.
    """

    image: np.ndarray
    index: int
    timestamp: float | None
    captured: float = field(default_factory=time.perf_counter)
    name: str | None = None


def _check_image(image: Any, what: str) -> np.ndarray:
    """A frame image as uint8 [H, W, 3] C-contiguous BGR; greyscale [H, W] / [H, W, 1] and BGRA
    [H, W, 4] are converted (:func:`maskrt.runtime.letterbox.as_bgr`). Raises ValueError naming
    ``what`` otherwise (16-bit and float frames with how to convert them)."""
    return np.ascontiguousarray(as_bgr(image, f"{what}: a frame"))


class Source(abc.ABC):
    """A stream of frames (see the module docstring).

    Subclasses implement :meth:`_open`, :meth:`_read` and :meth:`_close` and set ``live``.
    ``read`` is called from one thread (the pipeline's capture thread); ``interrupt`` and the
    read-only properties may be called from any thread.
    """

    #: True: frames arrive in real time whether or not anyone reads them (keep the newest, drop the rest)
    live: bool = False

    def __init__(self, name: str, *, on_event: Callable[[str], None] | None = None) -> None:
        self.name = name
        self.on_event = on_event
        self.events: list[str] = []  # every reported event (the last 100)
        self.end_reason: str | None = None  # why read() returned None
        self.failed = False  # the stream ended by a failure (truncated file, camera lost, ...)
        self.frames_read = 0
        self._is_open = False
        self._interrupt = threading.Event()

    # ---------------------------------------------------------------- properties
    @property
    def fps(self) -> float | None:
        """Nominal frame rate (None when unknown)."""
        return None

    @property
    def frame_size(self) -> tuple[int, int] | None:
        """(H, W) of the frames when known and fixed, else None."""
        return None

    @property
    def frame_count(self) -> int | None:
        """Number of frames (files and folders) or None (live, or unknown)."""
        return None

    @property
    def is_open(self) -> bool:
        return self._is_open

    # ---------------------------------------------------------------- lifecycle
    def open(self) -> Source:
        """Opens the source (raises :class:`SourceOpenError` / FileNotFoundError with the cause)."""
        if self._is_open:
            raise SourceError(f"{self.name}: already open")
        self._interrupt.clear()
        self.end_reason, self.failed, self.frames_read = None, False, 0
        self._open()
        self._is_open = True
        return self

    def read(self) -> Frame | None:
        """The next frame, or None when the stream has ended (see :attr:`end_reason`)."""
        if not self._is_open:
            raise SourceError(f"{self.name}: not open (call open() first)")
        if self.end_reason is not None:
            return None
        frame = self._read()
        if frame is not None:
            self.frames_read += 1
        elif self.end_reason is None:
            self.end_reason = "end of stream"
        return frame

    def close(self) -> None:
        """Releases the device/file; closing a closed source does nothing."""
        if not self._is_open:
            return
        try:
            self._close()
        finally:
            self._is_open = False

    def interrupt(self) -> None:
        """Thread-safe: wake any wait inside :meth:`read` (back-off, real-time pacing) so it returns
        soon (with None); used by the pipeline's stop()."""
        self._interrupt.set()

    def __enter__(self) -> Source:
        if not self._is_open:
            self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self.read()) is not None:
            yield frame

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} ({'live' if self.live else 'file'})>"

    # ---------------------------------------------------------------- helpers
    def _report(self, message: str) -> None:
        """One event (reconnects, skipped files, ...): kept in :attr:`events` and passed to
        ``on_event`` (default: a logging warning)."""
        self.events.append(message)
        del self.events[:-100]
        if self.on_event is not None:
            self.on_event(message)
        else:
            log.warning("%s", message)

    def _end(self, reason: str, failed: bool = False) -> None:
        """Marks the end of the stream; returns None for ``return self._end(...)``."""
        self.end_reason, self.failed = reason, failed
        return None

    # ---------------------------------------------------------------- subclass hooks
    @abc.abstractmethod
    def _open(self) -> None: ...

    @abc.abstractmethod
    def _read(self) -> Frame | None:
        """The next frame, or None after calling :meth:`_end` (or plain None: 'end of stream')."""

    @abc.abstractmethod
    def _close(self) -> None: ...


# ====================================================================== files
class VideoFileSource(Source):
    """A video file read with ``cv2.VideoCapture`` (FFMPEG): every frame, in order.

    ``realtime=True`` paces reading to the file's frame rate and makes the source live (the
    pipeline then drops frames it cannot keep up with, as with a camera): a way to rehearse a
    camera deployment with a recording.

    NOTE: ``read`` returning False is both the normal end of a file and a decode failure in
    OpenCV. The two are told apart by the container's frame count (CAP_PROP_FRAME_COUNT): a
    failure before it ends the stream with ``failed`` and a message naming the frame. Some
    containers only estimate that count; the message says "expected".
    """

    def __init__(self, path: str | os.PathLike, *, realtime: bool = False,
                 on_event: Callable[[str], None] | None = None) -> None:
        super().__init__(str(path), on_event=on_event)
        self.path = Path(path)
        self.live = bool(realtime)
        self._cap: cv2.VideoCapture | None = None
        self._fps: float | None = None
        self._count: int | None = None
        self._size: tuple[int, int] | None = None
        self._t0 = 0.0

    @property
    def fps(self) -> float | None:
        return self._fps

    @property
    def frame_size(self) -> tuple[int, int] | None:
        return self._size

    @property
    def frame_count(self) -> int | None:
        return self._count

    def _open(self) -> None:
        if not self.path.is_file():
            raise FileNotFoundError(f"video file {self.path}: no such file")
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise SourceOpenError(f"{self.path}: cannot open as a video (not a video file, a damaged header, or a "
                                  "codec this OpenCV build cannot decode)")
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self._fps = fps if np.isfinite(fps) and 0 < fps < 1000 else None
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self._count = n if n > 0 else None
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self._size = (h, w) if h > 0 and w > 0 else None
        self._cap = cap
        self._t0 = time.perf_counter()

    def _read(self) -> Frame | None:
        assert self._cap is not None
        i = self.frames_read
        if self.live and self._fps:
            # Real-time pacing: frame i is due at t0 + i / fps (interruptible by stop()).
            delay = self._t0 + i / self._fps - time.perf_counter()
            if delay > 0 and self._interrupt.wait(delay):
                return self._end("interrupted")
        try:
            ok, image = self._cap.read()
        except cv2.error as e:
            ok, image = False, None
            self._report(f"{self.path}: decoder error at frame {i}: {str(e).strip().splitlines()[-1]}")
        if not ok or image is None:
            if self._count is not None and i < self._count:
                return self._end(f"{self.path}: could not decode frame {i} of the {self._count} expected (truncated "
                                 f"or corrupt file); stopped after {i} frames", failed=True)
            return self._end("end of file")
        if self._fps:
            ts = i / self._fps
        else:
            ts = float(self._cap.get(cv2.CAP_PROP_POS_MSEC)) / 1000.0
        return Frame(_check_image(image, str(self.path)), i, ts)

    def _close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def _natural_key(name: str) -> list[Any]:
    # NOTE: natural order ("frame2" before "frame10"), case-insensitive: what a person numbering
    # frames expects; ties (names differing only in case) fall back to the plain name.
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)] + [name]


def list_images(folder: str | os.PathLike) -> tuple[list[Path], list[str]]:
    """(image files of ``folder`` in natural order, names of the other entries). Image = a file
    whose extension is in :data:`IMAGE_EXTENSIONS`; sub-folders are not entered."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder}: no such directory")
    images, other = [], []
    for p in sorted(folder.iterdir(), key=lambda p: _natural_key(p.name)):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
            images.append(p)
        else:
            other.append(p.name + ("/" if p.is_dir() else ""))
    return images, other


class ImageFolderSource(Source):
    """The images of a folder (natural sort order: ``img2`` before ``img10``), or an explicit list
    of image files. Files whose extension is not an image format, sub-folders, and images that do
    not decode are skipped with a warning (counted in :attr:`skipped`). Frames may differ in size.

    ``fps`` (optional) gives the frames timestamps ``index / fps``.
    """

    live = False

    def __init__(self, path: str | os.PathLike | Sequence[str | os.PathLike], *, fps: float | None = None,
                 on_event: Callable[[str], None] | None = None) -> None:
        if isinstance(path, (str, os.PathLike)):
            self.folder: Path | None = Path(path)
            self._given: list[Path] | None = None
            name = str(path)
        else:
            self.folder = None
            self._given = [Path(p) for p in path]
            name = str(self._given[0]) if len(self._given) == 1 else f"{len(self._given)} images"
        super().__init__(name, on_event=on_event)
        if fps is not None and not (np.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be positive, got {fps!r}")
        self._fps = fps
        self.paths: list[Path] = []
        self.skipped: list[str] = []  # entries that are not images, and images that did not decode
        self.unreadable: list[str] = []  # images that did not decode

    @property
    def fps(self) -> float | None:
        return self._fps

    @property
    def frame_count(self) -> int | None:
        return len(self.paths) if self._is_open else None

    def _open(self) -> None:
        if self._given is not None:
            for p in self._given:
                if not p.is_file():
                    raise FileNotFoundError(f"image {p}: no such file")
            self.paths = [p for p in self._given if p.suffix.lower() in IMAGE_EXTENSIONS]
            skipped = [p.name for p in self._given if p.suffix.lower() not in IMAGE_EXTENSIONS]
        else:
            assert self.folder is not None
            self.paths, skipped = list_images(self.folder)
        self.skipped = list(skipped)
        if skipped:
            more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
            self._report(f"{self.name}: skipping {len(skipped)} non-image entr{'y' if len(skipped) == 1 else 'ies'}: "
                         f"{', '.join(skipped[:5])}{more}")
        if not self.paths:
            raise SourceOpenError(f"{self.name}: no images (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")

    def _read(self) -> Frame | None:
        while self._pos < len(self.paths):
            p = self.paths[self._pos]
            self._pos += 1
            image = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if image is None:
                self.skipped.append(p.name)
                self.unreadable.append(p.name)
                self._report(f"{p}: cannot decode the image; skipped")
                continue
            i = self.frames_read
            ts = i / self._fps if self._fps else None
            return Frame(_check_image(image, str(p)), i, ts, name=p.name)
        return self._end("end of folder" if self.folder is not None else "end of images")

    def open(self) -> Source:
        self._pos = 0
        return super().open()

    def _close(self) -> None:
        pass


# ====================================================================== live sources
class ReconnectingSource(Source):
    """A live source that reopens itself with exponential back-off when frames stop coming.

    Subclasses implement three device hooks: :meth:`_connect` (True when the device opened),
    :meth:`_grab` (the next image, or None when the device delivered nothing) and
    :meth:`_disconnect`.

    On a failed grab the device is closed and reopened: before attempt k (1-based) the source
    waits ``min(backoff_initial_s * 2**(k-1), backoff_max_s)`` seconds; it gives up after
    ``max_attempts`` attempts or when the next wait would pass ``max_reconnect_s`` since the loss,
    and then ends the stream with ``failed`` and a message. Each step is reported (``on_event``).
    ``reconnect=False`` ends the stream at the first failed grab. ``retry_open=True`` also applies
    the back-off to the first open (a camera that is still booting); by default a first open
    that fails raises at once (a wrong camera index should not hang).

    Waits are interruptible by :meth:`interrupt` (the pipeline's stop()).
    """

    live = True

    def __init__(self, name: str, *, reconnect: bool = True, max_attempts: int = 10, max_reconnect_s: float = 60.0,
                 backoff_initial_s: float = 0.5, backoff_max_s: float = 8.0, retry_open: bool = False,
                 on_event: Callable[[str], None] | None = None) -> None:
        super().__init__(name, on_event=on_event)
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError(f"max_attempts must be a positive int, got {max_attempts!r}")
        for arg, v in (("max_reconnect_s", max_reconnect_s), ("backoff_initial_s", backoff_initial_s),
                       ("backoff_max_s", backoff_max_s)):
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v >= 0):
                raise ValueError(f"{arg} must be a non-negative number of seconds, got {v!r}")
        if backoff_max_s < backoff_initial_s:
            raise ValueError(f"backoff_max_s ({backoff_max_s}) must be >= backoff_initial_s ({backoff_initial_s})")
        self.reconnect = bool(reconnect)
        self.max_attempts = max_attempts
        self.max_reconnect_s = float(max_reconnect_s)
        self.backoff_initial_s = float(backoff_initial_s)
        self.backoff_max_s = float(backoff_max_s)
        self.retry_open = bool(retry_open)
        self.reconnects = 0  # successful reopenings
        self.reconnect_attempts = 0  # all reopen attempts
        self.backoff_delays: list[float] = []  # every wait before an attempt, in order (seconds)

    def backoff_delay(self, attempt: int) -> float:
        """Seconds to wait before reopen attempt ``attempt`` (1-based)."""
        return min(self.backoff_initial_s * 2.0 ** (attempt - 1), self.backoff_max_s)

    # ---------------------------------------------------------------- device hooks
    @abc.abstractmethod
    def _connect(self) -> bool:
        """Open the device; True on success."""

    @abc.abstractmethod
    def _grab(self) -> np.ndarray | None:
        """The next image (uint8 [H, W, 3] BGR) or None when the device gave nothing."""

    @abc.abstractmethod
    def _disconnect(self) -> None:
        """Release the device (must tolerate a device that is not open)."""

    # ---------------------------------------------------------------- Source
    def _open(self) -> None:
        if self._connect():
            return
        self._disconnect()
        if not self.retry_open:
            raise SourceOpenError(self._open_failure_message())
        if not self._reopen(f"{self.name}: could not open"):
            raise SourceOpenError(self.end_reason or self._open_failure_message())

    def _open_failure_message(self) -> str:
        return f"{self.name}: cannot open"

    def _read(self) -> Frame | None:
        while True:
            if self._interrupt.is_set():
                return self._end("interrupted")
            image = self._grab()
            if image is not None:
                return Frame(_check_image(image, self.name), self.frames_read, time.time())
            self._disconnect()
            if not self.reconnect:
                return self._end(f"{self.name}: stream lost after {self.frames_read} frames (reconnect disabled)",
                                 failed=True)
            if not self._reopen(f"{self.name}: no frame (stream lost after {self.frames_read} frames)"):
                return None

    def _reopen(self, what: str) -> bool:
        """Reopen with back-off; True when the device is back, else False after :meth:`_end`."""
        t_lost = time.monotonic()
        tried = 0
        for attempt in range(1, self.max_attempts + 1):
            delay = self.backoff_delay(attempt)
            if time.monotonic() - t_lost + delay > self.max_reconnect_s:
                break  # the next wait would pass the time budget
            self._report(f"{what}; reconnect attempt {attempt}/{self.max_attempts} in {delay:.3g} s")
            self.backoff_delays.append(delay)
            if self._interrupt.wait(delay):
                self._end("interrupted")
                return False
            tried += 1
            self.reconnect_attempts += 1
            if self._connect():
                self.reconnects += 1
                self._report(f"{self.name}: reconnected (attempt {attempt}, after "
                             f"{time.monotonic() - t_lost:.3g} s)")
                return True
            self._disconnect()
            what = f"{self.name}: reconnect attempt {attempt} failed"
        self._end(f"{self.name}: lost; gave up after {tried} reconnect attempt{'' if tried == 1 else 's'} over "
                  f"{time.monotonic() - t_lost:.3g} s (frames read: {self.frames_read})", failed=True)
        self._report(self.end_reason or "")
        return False

    def _close(self) -> None:
        self._disconnect()


class CaptureSource(ReconnectingSource):
    """A live ``cv2.VideoCapture`` target (camera index, URL or GStreamer pipeline) with reconnects.

    ``api``: OpenCV's backend preference (``cv2.CAP_ANY``, ``cv2.CAP_FFMPEG``, ``cv2.CAP_GSTREAMER``);
    ``params``: ``cv2.CAP_PROP_*`` pairs passed at open; ``settings``: properties set after open.
    """

    def __init__(self, target: int | str, *, name: str | None = None, api: int = cv2.CAP_ANY,
                 params: Sequence[int] = (), settings: dict[int, float] | None = None, **kwargs: Any) -> None:
        super().__init__(name or str(target), **kwargs)
        self.target = target
        self.api = int(api)
        self.params = [int(p) for p in params]
        self.settings = dict(settings or {})
        self._cap: cv2.VideoCapture | None = None
        self._fps: float | None = None
        self._size: tuple[int, int] | None = None

    @property
    def fps(self) -> float | None:
        return self._fps

    @property
    def frame_size(self) -> tuple[int, int] | None:
        return self._size

    def _connect(self) -> bool:
        try:
            cap = cv2.VideoCapture(self.target, self.api, self.params) if self.params else \
                cv2.VideoCapture(self.target, self.api)
        except cv2.error as e:
            self._report(f"{self.name}: OpenCV error at open: {str(e).strip().splitlines()[-1]}")
            return False
        if not cap.isOpened():
            cap.release()
            return False
        for prop, value in self.settings.items():
            cap.set(prop, value)
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self._fps = fps if np.isfinite(fps) and 0 < fps < 1000 else None
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self._size = (h, w) if h > 0 and w > 0 else None
        self._cap = cap
        return True

    def _grab(self) -> np.ndarray | None:
        if self._cap is None:
            return None
        try:
            ok, image = self._cap.read()
        except cv2.error:
            return None
        return image if ok and image is not None else None

    def _disconnect(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class CameraSource(CaptureSource):
    """A local camera by index (V4L2 on Linux). ``width``/``height``/``fps`` are requests to the
    driver (it may choose another mode; :attr:`frame_size` reports what it gave).

    NOTE: CAP_PROP_BUFFERSIZE = 1 asks the driver to keep one buffered frame, so a read returns
    a fresh frame rather than one queued while the pipeline was busy (not every driver obeys;
    the capture thread reading continuously is what bounds the age either way).
    """

    def __init__(self, index: int, *, width: int | None = None, height: int | None = None, fps: float | None = None,
                 **kwargs: Any) -> None:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
            raise ValueError(f"camera index must be a non-negative int, got {index!r}")
        settings = {cv2.CAP_PROP_BUFFERSIZE: 1}
        if width:
            settings[cv2.CAP_PROP_FRAME_WIDTH] = int(width)
        if height:
            settings[cv2.CAP_PROP_FRAME_HEIGHT] = int(height)
        if fps:
            settings[cv2.CAP_PROP_FPS] = float(fps)
        super().__init__(int(index), name=f"camera {int(index)}", settings=settings, **kwargs)

    def _open_failure_message(self) -> str:
        return f"{self.name}: cannot open (no such camera, or it is in use by another program)"


class StreamSource(CaptureSource):
    """A network stream (RTSP, RTMP, HTTP(S) MJPEG/HLS, UDP, ...) through OpenCV's FFMPEG backend,
    with open and read timeouts so a dead camera is detected (and reconnected) rather than
    blocking forever."""

    def __init__(self, url: str, *, timeout_s: float = 10.0, **kwargs: Any) -> None:
        ms = int(max(timeout_s, 0.001) * 1000)
        params = (cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms)
        super().__init__(url, name=_redact(url), api=cv2.CAP_FFMPEG, params=params, **kwargs)

    def _open_failure_message(self) -> str:
        return f"{self.name}: cannot open the stream (unreachable, wrong URL/credentials, or a format FFMPEG rejects)"


def _redact(url: str) -> str:
    """The URL without a password (rtsp://user:secret@host -> rtsp://user:***@host) for messages."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


def gstreamer_available() -> bool:
    """Whether this OpenCV build has the GStreamer video I/O backend."""
    m = re.search(r"^\s*GStreamer:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    return bool(m and m.group(1).upper() != "NO")


class GStreamerSource(CaptureSource):
    """A GStreamer pipeline string ending in an ``appsink`` (``cv2.CAP_GSTREAMER``), e.g.
    ``"rtspsrc location=rtsp://cam/ latency=0 ! decodebin ! videoconvert ! appsink drop=1"``."""

    def __init__(self, pipeline: str, **kwargs: Any) -> None:
        super().__init__(pipeline, name=f"gstreamer[{_redact(pipeline)[:60]}]", api=cv2.CAP_GSTREAMER, **kwargs)

    def _open(self) -> None:
        if not gstreamer_available():
            raise SourceOpenError(f"{self.name}: this OpenCV build has no GStreamer support "
                                  "(cv2.getBuildInformation() says GStreamer: NO); install an OpenCV built with "
                                  "GStreamer (e.g. the distribution's python3-opencv, or a JetPack build) to use "
                                  "pipeline strings")
        super()._open()

    def _open_failure_message(self) -> str:
        return (f"{self.name}: GStreamer could not start the pipeline (check it with gst-launch-1.0; it must end in "
                "an appsink producing BGR, e.g. '... ! videoconvert ! video/x-raw,format=BGR ! appsink')")


# ====================================================================== choosing a source
def open_source(spec: Source | int | str | os.PathLike, *, realtime: bool = False, fps: float | None = None,
                on_event: Callable[[str], None] | None = None, **live_options: Any) -> Source:
    """The source a spec names (not opened):

    * a :class:`Source` -> itself;
    * an int, or a string of digits -> :class:`CameraSource`;
    * ``scheme://...`` with a stream scheme (rtsp, http, ...) -> :class:`StreamSource`
      (``file://`` -> the path);
    * a string containing ``!`` -> :class:`GStreamerSource`;
    * a directory -> :class:`ImageFolderSource` (``fps`` gives its frames timestamps);
    * a file -> :class:`ImageFolderSource` of that one image when its extension is an image
      format, else :class:`VideoFileSource` (``realtime`` makes it live, paced at its fps).

    ``on_event`` receives the source's messages (reconnects, skipped files). ``live_options``
    go to live sources only (:class:`ReconnectingSource` settings: ``reconnect``,
    ``max_attempts``, ``max_reconnect_s``, ``backoff_initial_s``, ``backoff_max_s``,
    ``retry_open``; ``timeout_s`` for streams) and are ignored for files and folders.
    Raises FileNotFoundError for a path that does not exist.
    """
    if isinstance(spec, Source):
        return spec
    if isinstance(spec, bool):
        raise ValueError(f"source spec must be a path, URL, camera index or pipeline, got {spec!r}")
    stream_only = {k: live_options.pop(k) for k in ("timeout_s",) if k in live_options}
    if isinstance(spec, (int, np.integer)):
        return CameraSource(int(spec), on_event=on_event, **live_options)
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"source spec must be a non-empty path, URL, camera index or pipeline, got {spec!r}")
    s = spec.strip()
    if re.fullmatch(r"\d+", s):
        return CameraSource(int(s), on_event=on_event, **live_options)
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", s)
    if m and "!" not in s:
        scheme = m.group(1).lower()
        if scheme == "file":
            s = s[len("file://"):]
        elif scheme in STREAM_SCHEMES:
            return StreamSource(s, on_event=on_event, **stream_only, **live_options)
        else:
            raise ValueError(f"source {_redact(s)!r}: unsupported URL scheme {scheme!r}; streams: {STREAM_SCHEMES}")
    elif "!" in s:
        return GStreamerSource(s, on_event=on_event, **live_options)
    path = Path(s).expanduser()
    if path.is_dir():
        return ImageFolderSource(path, fps=fps, on_event=on_event)
    if path.is_file():
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            return ImageFolderSource([path], fps=fps, on_event=on_event)
        return VideoFileSource(path, realtime=realtime, on_event=on_event)
    raise FileNotFoundError(f"source {s!r}: no such file or directory (a source is a video file, an image folder, "
                            "a camera index, a stream URL such as rtsp://..., or a GStreamer pipeline with '!')")
