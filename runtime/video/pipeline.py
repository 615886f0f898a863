"""``VideoPipeline``: capture -> preprocess -> infer -> postprocess -> sink, one thread each.

    with Predictor.open("model.onnx", intra_op_threads=2) as predictor:
        pipe = VideoPipeline(open_source("clip.mp4"), predictor, [JsonlSink("out.jsonl")])
        stats = pipe.run(status=lambda s: print(s.status_line(), end="\\r"))
        print(stats.table())

Threads and queues
    capture      ``source.read()``; one frame at a time
    preprocess   ``predictor.prepare``: letterbox up to ``batch`` frames into a reused buffer
    infer        ``predictor.infer``: the backend
    postprocess  ``predictor.finish`` (boxes to original coordinates), the tracker (``track_ids``,
                 when one is given), then what the sinks need:
                 the annotated frame (overlay) and/or the JSON record (mask paste + RLE)
    sink         every sink's ``write``, in source order

The stages are joined by bounded ``queue.Queue``s. For a file (``source.live`` False) every
frame goes through, in order: a full queue blocks the stage before it (back-pressure) and
nothing is dropped. For a live source the capture thread never blocks: it writes into a one-frame
slot that the preprocess thread takes from; a frame still in the slot when the next arrives is
overwritten and counted in ``drops``. The queues after it hold one item each for live sources
(``queue_size`` for files) and the preprocess thread takes a frame only when the inference
queue has room, so a processed frame is about two inference times old at most (one waiting
while the previous batch runs, one running) plus the short stages, however far the camera runs
ahead.

Stopping
    * end of stream: each stage passes an end marker on after its last item; all threads end.
    * :meth:`VideoPipeline.stop` (any thread), or Ctrl-C while :meth:`run` blocks in the main
      thread: no new frame is read; frames already read are finished and written. A second
      Ctrl-C (or a stop that does not finish within ``join_timeout_s``) aborts: the stages drop
      what they hold and end.
    * an exception in any stage: the first one is recorded with its stage's name, every stage
      is told to abort, all threads are joined, sinks and the source are closed (what was
      written stays valid), and :meth:`run` raises :class:`PipelineError` (``stage``, ``error``;
      the original exception is its ``__cause__``).

Timing (every stage, ms per frame): the time a stage spends working on a frame, not waiting on
its queues; a batched stage's time is divided among the frames of the batch. ``capture`` is the
time inside ``source.read()``, which for a live or real-time source includes waiting for the
device's next frame. ``end_to_end`` is from ``read()`` returning the frame to its last sink write.
:class:`PipelineStats` reports count, mean, p50/p90/p99 and max per stage, frames in/out, drops
and FPS.

Imports numpy and OpenCV only (through the sources and sinks); the predictor brings its backend.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .sinks import FrameResult, OverlayOptions, Sink, StreamInfo
from .sources import Frame, Source, SourceError, open_source

__all__ = ["STAGES", "PipelineError", "PipelineStats", "StageStats", "VideoPipeline"]

log = logging.getLogger("maskrt.video")

STAGES = ("capture", "preprocess", "infer", "postprocess", "sink")
END_TO_END = "end_to_end"

_EOS = object()  # end-of-stream marker passed down the queues


class _Aborted(Exception):
    """Raised inside a stage when the pipeline aborts (error, second Ctrl-C, stop timeout)."""


class PipelineError(RuntimeError):
    """A stage failed. ``stage``: its name; ``error``: the exception (also ``__cause__``);
    ``stats``: the :class:`PipelineStats` at shutdown."""

    def __init__(self, stage: str, error: BaseException, stats: PipelineStats | None = None) -> None:
        msg = str(error).strip() or type(error).__name__
        super().__init__(f"{stage} stage failed: {type(error).__name__}: {msg}")
        self.stage, self.error, self.stats = stage, error, stats


# ====================================================================== statistics
@dataclass(frozen=True)
class StageStats:
    """Per-frame times of one stage, milliseconds. Percentiles are linear-interpolated
    (``numpy.percentile``) over all frames up to 20000, beyond that over a uniform random sample
    of 20000 (reservoir sampling); ``count``, ``mean`` and ``max`` are always exact."""

    count: int = 0
    mean: float = 0.0
    p50: float = 0.0
    p90: float = 0.0
    p99: float = 0.0
    max: float = 0.0
    recent: float = 0.0  # mean of the last 64 frames (the live status line)


class _Samples:
    """Thread-safe accumulator of one stage's per-frame times (ms)."""

    CAPACITY = 20000

    def __init__(self, seed: int) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._res: list[float] = []
        self._recent: deque[float] = deque(maxlen=64)
        self.count, self.total, self.max = 0, 0.0, 0.0

    def add(self, ms: float) -> None:
        with self._lock:
            self.count += 1
            self.total += ms
            self.max = max(self.max, ms)
            self._recent.append(ms)
            # NOTE: reservoir sampling (algorithm R): every frame has the same chance to be in the
            # sample, so hour-long runs keep unbiased percentiles in bounded memory.
            if len(self._res) < self.CAPACITY:
                self._res.append(ms)
            else:
                j = self._rng.randrange(self.count)
                if j < self.CAPACITY:
                    self._res[j] = ms

    def summary(self) -> StageStats:
        with self._lock:
            if not self.count:
                return StageStats()
            p50, p90, p99 = (float(v) for v in np.percentile(np.asarray(self._res, np.float64), [50, 90, 99]))
            return StageStats(self.count, self.total / self.count, p50, p90, p99, self.max,
                              float(np.mean(self._recent)))


@dataclass
class PipelineStats:
    """A snapshot of the pipeline (live during :meth:`VideoPipeline.run`, final after it).

    frames_in: frames read from the source; frames_out: frames through every sink; drops: live
    frames overwritten before preprocessing; discarded: frames read but neither written nor
    dropped (an abort, or still in flight in a live snapshot). ``frames_in == frames_out +
    drops + discarded``. fps: frames_out / elapsed_s; recent_fps: over the last ~64 frames.
    """

    source: str
    live: bool
    frames_in: int
    frames_out: int
    drops: int
    discarded: int
    elapsed_s: float
    fps: float
    recent_fps: float
    stages: dict[str, StageStats]
    running: bool = False
    end_reason: str | None = None
    source_failed: bool = False
    stopped: bool = False
    interrupted: bool = False
    error: str | None = None
    error_stage: str | None = None
    leaked_threads: list[str] = field(default_factory=list)
    tracks: dict[str, int] | None = None  # the tracker's counts (tentative, confirmed, lost, ids) or None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def status_line(self) -> str:
        """One short line for a live status display."""
        s = self.stages

        def ms(name: str) -> str:
            return f"{s[name].recent:.1f}" if s[name].count else "-"

        return (f"{self.recent_fps:5.1f} fps | in {self.frames_in} out {self.frames_out} drop {self.drops} | ms: "
                f"cap {ms('capture')} pre {ms('preprocess')} inf {ms('infer')} post {ms('postprocess')} "
                f"sink {ms('sink')} e2e {ms(END_TO_END)}" + (f" | {tracks_text(self.tracks)}" if self.tracks else ""))

    def table(self) -> str:
        """The final summary: a table of per-stage ms per frame and one line of totals."""
        head = f"{'stage':<12} {'frames':>7} {'mean':>8} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}   (ms per frame)"
        rows = [head]
        for name in (*STAGES, END_TO_END):
            st = self.stages[name]
            label = "end-to-end" if name == END_TO_END else name
            if st.count:
                rows.append(f"{label:<12} {st.count:>7} {st.mean:>8.2f} {st.p50:>8.2f} {st.p90:>8.2f} {st.p99:>8.2f} "
                            f"{st.max:>8.2f}")
            else:
                rows.append(f"{label:<12} {0:>7} {'-':>8} {'-':>8} {'-':>8} {'-':>8} {'-':>8}")
        tail = (f"frames: {self.frames_in} in, {self.frames_out} out, {self.drops} dropped"
                + (f", {self.discarded} discarded" if self.discarded else "")
                + f"; {self.elapsed_s:.2f} s, {self.fps:.1f} FPS")
        rows.append(tail)
        if self.tracks is not None:
            rows.append(f"tracks: {tracks_text(self.tracks)}")
        why = self.error and f"error in {self.error_stage}: {self.error}" or self.end_reason
        if why:
            rows.append(f"ended: {why}")
        return "\n".join(rows)


def tracks_text(counts: dict[str, int] | None) -> str:
    """``'3 tracked, 1 lost, 7 ids'`` from a tracker's ``counts()`` (``'-'`` for None)."""
    if not counts:
        return "-"
    return f"{counts.get('confirmed', 0)} tracked, {counts.get('lost', 0)} lost, {counts.get('ids', 0)} ids"


def tracker_counts(tracker: Any) -> dict[str, int] | None:
    counts = getattr(tracker, "counts", None)
    return dict(counts()) if callable(counts) else None


# ====================================================================== queues
class _Channel:
    """A bounded FIFO between two stages: ``put`` blocks while full (back-pressure), ``get``
    while empty; both give up with :class:`_Aborted` once the pipeline aborts."""

    def __init__(self, maxsize: int, abort: threading.Event, poll_s: float) -> None:
        self._q: queue.Queue = queue.Queue(maxsize)
        self._abort, self._poll = abort, poll_s

    def put(self, item: Any) -> bool:
        while True:
            if self._abort.is_set():
                raise _Aborted
            try:
                self._q.put(item, timeout=self._poll)
                return False
            except queue.Full:
                pass

    def get(self) -> Any:
        while True:
            if self._abort.is_set():
                raise _Aborted
            try:
                return self._q.get(timeout=self._poll)
            except queue.Empty:
                pass

    def close(self) -> None:
        self.put(_EOS)

    def wait_for_space(self) -> None:
        """Blocks until the queue has room (or raises :class:`_Aborted`). NOTE: a hint, not a
        reservation; exact here because this queue has a single producer."""
        while self._q.full():
            if self._abort.is_set():
                raise _Aborted
            time.sleep(min(self._poll, 0.002))


class _LatestSlot:
    """A one-item slot for live sources: ``put`` never blocks and overwrites an item not yet
    taken (returns True then: a drop); ``get`` blocks until an item or the end marker."""

    def __init__(self, abort: threading.Event, poll_s: float) -> None:
        self._cond = threading.Condition()
        self._item: Any = None
        self._full = False
        self._closed = False
        self._abort, self._poll = abort, poll_s

    def put(self, item: Any) -> bool:
        with self._cond:
            overwritten = self._full
            self._item, self._full = item, True
            self._cond.notify()
            return overwritten

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def get(self) -> Any:
        with self._cond:
            while not self._full:
                if self._abort.is_set():
                    raise _Aborted
                if self._closed:
                    return _EOS  # NOTE: only after the last frame was taken: the newest frame is never lost at the end
                self._cond.wait(self._poll)
            if self._abort.is_set():
                raise _Aborted
            item, self._item, self._full = self._item, None, False
            return item


@dataclass
class _Prepared:
    frames: list[Frame]
    batch: np.ndarray  # uint8 [B', H, W, 3], B' >= len(frames) (padded for fixed-batch backends)
    infos: list[Any]


@dataclass
class _Inferred:
    frames: list[Frame]
    outputs: dict[str, np.ndarray]
    infos: list[Any]


# ====================================================================== the pipeline
def _positive_int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive int, got {v!r}")
    return int(v)


def _check_tracker(tracker: Any) -> Any:
    if tracker is not None and not callable(getattr(tracker, "track", None)):
        raise ValueError(f"tracker must have track(detections, frame_index), got {type(tracker).__name__}")
    return tracker


class _Runner:
    """What both pipelines share: stop / fail / the stage wrapper and the main-thread supervisor
    (status callbacks, Ctrl-C, stop timeout, abort timeout). A subclass sets ``_lock``, ``_stop``,
    ``_abort``, ``_t_stop``, ``_interrupted``, ``_error``, ``_threads``, ``_leaked``,
    ``join_timeout_s``, ``poll_s`` and implements ``_interrupt_sources`` and ``stats``."""

    def _interrupt_sources(self) -> None:
        raise NotImplementedError

    def stats(self) -> Any:
        raise NotImplementedError

    def _configure(self, predictor: Any, *, batch: int, queue_size: int, max_frames: int | None, min_score: float,
                   overlay_alpha: float, draw_boxes: bool, draw_labels: bool, mask_threshold: float,
                   join_timeout_s: float, poll_s: float) -> None:
        """Validates and sets the arguments both pipelines take (one ValueError per bad one)."""
        for attr in ("prepare", "infer", "finish"):
            if not callable(getattr(predictor, attr, None)):
                raise ValueError(f"predictor must have prepare/infer/finish (a maskrt Predictor), got "
                                 f"{type(predictor).__name__} without {attr}()")
        try:
            in_h, in_w = (int(v) for v in predictor.input_size)
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"predictor.input_size must be (H, W), got "
                             f"{getattr(predictor, 'input_size', None)!r}") from None
        self._input_size = (in_h, in_w)
        self.predictor = predictor
        self.batch = _positive_int("batch", batch)
        backend = getattr(predictor, "backend", None)
        self._min_batch = int(getattr(backend, "min_batch", 1) or 1)
        max_batch = getattr(backend, "max_batch", None)
        if max_batch is not None and self.batch > max_batch:
            raise ValueError(f"batch={self.batch} but the model takes at most {max_batch} frames per inference")
        self.queue_size = _positive_int("queue_size", queue_size)
        self.max_frames = None if max_frames is None else _positive_int("max_frames", max_frames)
        if not (0.0 <= float(min_score) <= 1.0):
            raise ValueError(f"min_score must be in [0, 1], got {min_score!r}")
        self.min_score = float(min_score)
        if not (0.0 <= float(overlay_alpha) <= 1.0):
            raise ValueError(f"overlay_alpha must be in [0, 1], got {overlay_alpha!r}")
        if not (0.0 <= float(mask_threshold) < 1.0):
            raise ValueError(f"mask_threshold must be in [0, 1), got {mask_threshold!r}")
        self.options = OverlayOptions(float(overlay_alpha), bool(draw_boxes), bool(draw_labels), float(mask_threshold))
        if not (join_timeout_s > 0 and poll_s > 0):
            raise ValueError("join_timeout_s and poll_s must be positive")
        self.join_timeout_s, self.poll_s = float(join_timeout_s), float(poll_s)

    def stop(self) -> None:
        """Thread-safe: read no more frames, finish the ones already read, then end. ``run``
        returns normally (``stats.stopped``)."""
        with self._lock:
            if not self._stop.is_set():
                self._t_stop = time.perf_counter()
                self._stop.set()
        self._interrupt_sources()
        self._interrupt_backend()

    def _fail(self, stage: str, error: BaseException) -> None:
        with self._lock:
            if self._error is None:
                self._error = (stage, error)
        self._abort.set()
        self._interrupt_sources()
        self._interrupt_backend()

    def _interrupt_backend(self) -> None:
        """Ends a remote backend's reconnect wait now (``TritonBackend.interrupt``): a stop or a
        failure elsewhere must not wait out the back-off of a server that is down. NOTE: only the
        wait is cut short; a request in flight to a live server completes."""
        interrupt = getattr(getattr(getattr(self, "predictor", None), "backend", None), "interrupt", None)
        if callable(interrupt):
            interrupt()

    def _stage(self, name: str, body: Callable[[], None]) -> None:
        try:
            body()
        except _Aborted:
            pass
        except BaseException as e:  # recorded with the stage name, re-raised by run()
            self._fail(name, e)

    def _supervise(self, status: Callable[[Any], None] | None, interval: float) -> None:
        """Main-thread loop: status callbacks, Ctrl-C, stop timeout."""
        next_status = time.perf_counter() + interval
        t_abort: float | None = None
        while True:
            try:
                alive = [t for t in self._threads if t.is_alive()]
                if not alive:
                    return
                alive[-1].join(self.poll_s)
                now = time.perf_counter()
                if status is not None and now >= next_status and self._error is None:
                    next_status = now + interval
                    try:
                        status(self.stats())
                    except KeyboardInterrupt:
                        raise
                    except Exception as e:
                        self._fail("status", e)
                if self._t_stop is not None and not self._abort.is_set() and now - self._t_stop > self.join_timeout_s:
                    log.warning("stop did not finish within %.1f s; aborting", self.join_timeout_s)
                    self._abort.set()
                if self._abort.is_set():
                    t_abort = t_abort or now
                    if now - t_abort > self.join_timeout_s:
                        self._leaked = [t.name for t in self._threads if t.is_alive()]
                        log.warning("threads still running after abort (left behind as daemons): %s", self._leaked)
                        return
            except KeyboardInterrupt:
                if not self._stop.is_set():
                    self._interrupted = True
                    self.stop()
                else:  # NOTE: a second Ctrl-C: stop waiting for in-flight frames
                    self._abort.set()
                    self._interrupt_sources()


class VideoPipeline(_Runner):
    """Runs a :class:`Predictor` over a :class:`Source` into :class:`Sink` s (module docstring).

    Args:
        source: a :class:`Source` (opened here if it is not open) or a spec for :func:`open_source`.
            The pipeline closes it at the end.
        predictor: an open ``maskrt.runtime.predictor.Predictor`` (or anything with ``prepare``,
            ``infer``, ``finish`` and ``input_size``); not closed here.
        sinks: consumers of the results; opened and closed here.
        batch: frames per inference (the last batch of a stream may be smaller; a backend with a
            fixed batch gets it zero-padded).
        queue_size: capacity of each queue between stages for files (live sources use 1; see the
            module docstring).
        max_frames: stop after reading this many frames from the source (None: no limit).
        min_score: drop detections scoring below this (on top of the model's own threshold).
        overlay_alpha, draw_boxes, draw_labels, mask_threshold: how annotated frames are drawn
            (mask_threshold also binarises the RLE masks of JSON records).
        join_timeout_s: how long a stop may take before the pipeline aborts, and how long an
            aborting thread is waited for before it is reported as leaked.
        tracker: None (no tracking) or a tracker (``maskrt.runtime.tracking.Tracker``: anything
            with ``track(detections, frame_index) -> Detections``) that gives every frame's
            detections their ``track_ids``; run in frame order in the postprocess thread.
    """

    def __init__(self, source: Source | str | int, predictor: Any, sinks: Sequence[Sink] = (), *, batch: int = 1,
                 queue_size: int = 4, max_frames: int | None = None, min_score: float = 0.0, overlay_alpha: float = 0.5,
                 draw_boxes: bool = True, draw_labels: bool = True, mask_threshold: float = 0.5,
                 join_timeout_s: float = 10.0, poll_s: float = 0.05, tracker: Any | None = None) -> None:
        self.source = open_source(source)
        self._configure(predictor, batch=batch, queue_size=queue_size, max_frames=max_frames, min_score=min_score,
                        overlay_alpha=overlay_alpha, draw_boxes=draw_boxes, draw_labels=draw_labels,
                        mask_threshold=mask_threshold, join_timeout_s=join_timeout_s, poll_s=poll_s)
        self.sinks = list(sinks)
        for s in self.sinks:
            if not isinstance(s, Sink):
                raise ValueError(f"sinks must be Sink instances, got {type(s).__name__}")
        self._needs = frozenset().union(*(s.needs for s in self.sinks))
        self.tracker = _check_tracker(tracker)

        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._abort = threading.Event()
        self._started = False
        self._running = False
        self._t_start = self._t_end = 0.0
        self._t_stop: float | None = None
        self._timers = {name: _Samples(i) for i, name in enumerate((*STAGES, END_TO_END))}
        self._frames_in = self._frames_out = self._drops = 0
        self._done_times: deque[float] = deque(maxlen=64)
        self._end_reason: str | None = None
        self._source_failed = False
        self._interrupted = False
        self._error: tuple[str, BaseException] | None = None
        self._threads: list[threading.Thread] = []
        self._leaked: list[str] = []

    # ---------------------------------------------------------------- control
    @property
    def live(self) -> bool:
        return bool(self.source.live)

    def _interrupt_sources(self) -> None:
        self.source.interrupt()

    def stats(self) -> PipelineStats:
        """A snapshot (thread-safe)."""
        now = time.perf_counter()
        end = self._t_end if (self._started and not self._running) else now
        elapsed = max(end - self._t_start, 0.0) if self._started else 0.0
        done = list(self._done_times)
        recent = (len(done) - 1) / (done[-1] - done[0]) if len(done) > 1 and done[-1] > done[0] else 0.0
        n_in, n_out, drops = self._frames_in, self._frames_out, self._drops
        err = self._error
        return PipelineStats(
            source=self.source.name, live=self.live, frames_in=n_in, frames_out=n_out, drops=drops,
            discarded=max(n_in - n_out - drops, 0), elapsed_s=elapsed, fps=n_out / elapsed if elapsed > 0 else 0.0,
            recent_fps=recent, stages={k: t.summary() for k, t in self._timers.items()}, running=self._running,
            end_reason=self._end_reason, source_failed=self._source_failed, stopped=self._stop.is_set(),
            interrupted=self._interrupted, error=None if err is None else f"{type(err[1]).__name__}: {err[1]}",
            error_stage=None if err is None else err[0], leaked_threads=list(self._leaked),
            tracks=tracker_counts(self.tracker))

    # ---------------------------------------------------------------- run
    def run(self, status: Callable[[PipelineStats], None] | None = None, status_interval_s: float = 0.5
            ) -> PipelineStats:
        """Runs to the end of the stream, a stop() or Ctrl-C, blocking; returns the final stats.
        ``status(stats)`` is called from this thread every ``status_interval_s``. Raises
        :class:`PipelineError` after a clean shutdown when a stage failed. A pipeline runs once."""
        with self._lock:
            if self._started:
                raise RuntimeError("a VideoPipeline runs once; make a new one for another run")
            self._started = True
        self._t_start = time.perf_counter()
        src = self.source
        if not src.is_open:
            src.open()
        opened: list[Sink] = []
        try:
            info = StreamInfo(src.name, src.fps, src.frame_size, self.live,
                              tuple(getattr(getattr(self.predictor, "config", None), "names", ()) or ()), self.stop)
            for s in self.sinks:
                s.open(info)
                opened.append(s)
        except BaseException:
            for s in opened:
                try:
                    s.close()
                except Exception as e:  # the open error is the one to report
                    log.warning("closing sink %s after a failed open: %s", s.name, e)
            src.close()
            raise

        q_size = 1 if self.live else self.queue_size
        self._ch_capture: _LatestSlot | _Channel = (_LatestSlot(self._abort, self.poll_s) if self.live
                                                    else _Channel(self.queue_size, self._abort, self.poll_s))
        self._ch_pre = _Channel(q_size, self._abort, self.poll_s)
        self._ch_inf = _Channel(q_size, self._abort, self.poll_s)
        self._ch_post = _Channel(q_size, self._abort, self.poll_s)
        # NOTE: preprocess writes batches into a ring of reused buffers. A buffer comes round again
        # after len(ring) batches; by then at least len(ring) - capacity - 1 = 1 later batch has
        # been taken by the single infer thread, which only takes a batch after finishing the
        # previous one, so the old buffer is no longer read. Hence capacity + 2 buffers.
        h, w = self._input_size
        self._buffers = [np.zeros((max(self.batch, self._min_batch), h, w, 3), np.uint8) for _ in range(q_size + 2)]
        self._buf_i = 0

        bodies = {"capture": self._capture, "preprocess": self._preprocess, "infer": self._infer,
                  "postprocess": self._postprocess, "sink": self._sink}
        self._threads = [threading.Thread(target=self._stage, args=(name, body), name=f"maskrt-{name}", daemon=True)
                         for name, body in bodies.items()]
        self._running = True
        try:
            for t in self._threads:
                t.start()
            self._supervise(status, status_interval_s)
        finally:
            self._shutdown()
        final = self.stats()
        if self._error is not None:
            stage, err = self._error
            raise PipelineError(stage, err, final) from err
        return final

    def _shutdown(self) -> None:
        if not self._leaked and any(t.is_alive() for t in self._threads):
            # _supervise left early (an unexpected exception in this thread): abort and wait a bounded time.
            self._abort.set()
            self.source.interrupt()
            deadline = time.perf_counter() + self.join_timeout_s
            for t in self._threads:
                t.join(max(deadline - time.perf_counter(), 0.0))
        if self._abort.is_set() and self._error is None and self._end_reason is None:
            self._end_reason = "aborted"
        by_name = {t.name: t for t in self._threads}
        if not by_name["maskrt-capture"].is_alive():
            try:
                self.source.close()
            except Exception as e:
                log.warning("closing source %s: %s", self.source.name, e)
        if not by_name["maskrt-sink"].is_alive():
            for s in self.sinks:
                try:
                    s.close()
                except Exception as e:
                    with self._lock:
                        if self._error is None:
                            self._error = ("sink", e)
                    log.warning("closing sink %s: %s", s.name, e)
        self._t_end = time.perf_counter()
        self._running = False
        self._leaked = [t.name for t in self._threads if t.is_alive()]

    # ---------------------------------------------------------------- stages
    def _capture(self) -> None:
        src, out, timer = self.source, self._ch_capture, self._timers["capture"]
        while True:
            if self._abort.is_set():
                raise _Aborted
            if self._stop.is_set():
                self._end_reason = "interrupted (Ctrl-C)" if self._interrupted else "stopped"
                break
            if self.max_frames is not None and self._frames_in >= self.max_frames:
                self._end_reason = f"reached max_frames ({self.max_frames})"
                break
            t0 = time.perf_counter()
            try:
                frame = src.read()
            except SourceError as e:
                self._end_reason, self._source_failed = f"{src.name}: {e}", True
                break
            t1 = time.perf_counter()
            if frame is None:
                if self._stop.is_set():
                    self._end_reason = "interrupted (Ctrl-C)" if self._interrupted else "stopped"
                else:
                    self._end_reason = src.end_reason or "end of stream"
                    self._source_failed = bool(src.failed)
                break
            if not isinstance(frame, Frame):
                raise TypeError(f"{src.name}: read() must return a Frame or None, got {type(frame).__name__}")
            frame.captured = t1  # NOTE: the end-to-end clock starts when read() returns
            timer.add((t1 - t0) * 1e3)
            self._frames_in += 1
            if out.put(frame):
                self._drops += 1
        out.close()

    def _preprocess(self) -> None:
        inp, out, timer = self._ch_capture, self._ch_pre, self._timers["preprocess"]
        eos = False
        while not eos:
            if self.live:
                # NOTE: take the newest frame only once the next queue has room: a frame taken
                # earlier would wait (ageing) in this thread's hands while newer ones are dropped.
                out.wait_for_space()
            first = inp.get()
            if first is _EOS:
                break
            frames = [first]
            while len(frames) < self.batch:
                item = inp.get()
                if item is _EOS:
                    eos = True
                    break
                frames.append(item)
            t0 = time.perf_counter()
            buf = self._buffers[self._buf_i % len(self._buffers)]
            self._buf_i += 1
            batch, infos = self.predictor.prepare([f.image for f in frames], out=buf)
            if len(frames) < self._min_batch:  # a fixed-batch backend: pad the last batch with black frames
                buf[len(frames):self._min_batch] = 0
                batch = buf[:self._min_batch]
            dt = (time.perf_counter() - t0) * 1e3 / len(frames)
            for _ in frames:
                timer.add(dt)
            out.put(_Prepared(frames, batch, list(infos)))
        out.close()

    def _infer(self) -> None:
        inp, out, timer = self._ch_pre, self._ch_inf, self._timers["infer"]
        while (item := inp.get()) is not _EOS:
            t0 = time.perf_counter()
            outputs = self.predictor.infer(item.batch)
            dt = (time.perf_counter() - t0) * 1e3 / len(item.frames)
            for _ in item.frames:
                timer.add(dt)
            out.put(_Inferred(item.frames, outputs, item.infos))
        out.close()

    def _postprocess(self) -> None:
        inp, out, timer = self._ch_inf, self._ch_post, self._timers["postprocess"]
        overlay, record = "overlay" in self._needs, "record" in self._needs
        while (item := inp.get()) is not _EOS:
            t0 = time.perf_counter()
            dets = self.predictor.finish(item.outputs, item.infos)
            if len(dets) != len(item.frames):
                raise RuntimeError(f"predictor.finish returned {len(dets)} results for {len(item.frames)} frames")
            share = (time.perf_counter() - t0) * 1e3 / len(item.frames)
            for frame, d in zip(item.frames, dets, strict=True):
                t1 = time.perf_counter()
                if self.min_score > 0 and len(d):
                    d = d.select(d.scores >= self.min_score)
                if self.tracker is not None:
                    # NOTE: frame.index counts a live source's dropped frames too: the motion model
                    # predicts over the gap
                    d = self.tracker.track(d, frame.index)
                result = FrameResult(frame, d, self.options)
                if overlay:
                    result.overlay()
                if record:
                    result.json_record()
                timer.add(share + (time.perf_counter() - t1) * 1e3)
                out.put(result)
        out.close()

    def _sink(self) -> None:
        inp, timer, e2e = self._ch_post, self._timers["sink"], self._timers[END_TO_END]
        while (result := inp.get()) is not _EOS:
            t0 = time.perf_counter()
            for s in self.sinks:
                s.write(result)
            t1 = time.perf_counter()
            timer.add((t1 - t0) * 1e3)
            e2e.add((t1 - result.frame.captured) * 1e3)
            self._frames_out += 1
            self._done_times.append(t1)
