"""``MultiStreamPipeline``: N sources through one batched inference stage (DeepStream-style).

    with Predictor.open("model.onnx", intra_op_threads=2) as predictor:
        pipe = MultiStreamPipeline(["cam1.mp4", "rtsp://cam2/stream"], predictor,
                                   [[JsonlSink("cam1.jsonl")], [JsonlSink("cam2.jsonl")]],
                                   batch=2, trackers=[Tracker(), Tracker()])
        stats = pipe.run(status=lambda s: print(s.status_line()))
        print(stats.table())

Threads and queues
    capture-i    one per stream: ``source.read()`` into that stream's inbox
    batch        takes the newest frame of each stream that has one (a file stream may give
                 several while the batch has room), round robin from the stream after the last
                 one served, up to ``batch`` frames; letterboxes them into one buffer. It never
                 waits for a particular stream: a batch is whatever is ready.
    infer        one ``predictor.infer`` per batch, for every stream
    postprocess  ``predictor.finish``, then per frame its stream's ``min_score`` filter, tracker
                 (one per stream, in frame order) and what its sinks need
    sink-i       one per stream: that stream's sinks, in frame order; closed at its end

Inboxes: a **file** stream's inbox is a bounded FIFO (``queue_size``): a full inbox blocks that
stream's capture thread only (back-pressure; nothing dropped). A **live** stream's inbox is one
slot: a frame not yet taken when the next arrives is overwritten and counted in that stream's
``drops``. A slow source only has fewer frames in the batches; a source that ends or fails
(``SourceError``, a read that returns None, or any exception from its ``read``) ends its own
stream: its end passes down the stages behind its last frame, its sinks are closed, its
reason is reported (``on_stream_end`` and the stats), and the other streams go on.

Every frame is accounted for per stream: ``frames_in == frames_out + drops + discarded``
(``discarded``: read but neither written nor dropped: an abort, or in flight in a snapshot).

Stopping and errors are as in :class:`~maskrt.runtime.video.pipeline.VideoPipeline`: ``stop()``
(or Ctrl-C in :meth:`run`) reads no new frame on any stream and finishes those read; a second
Ctrl-C aborts; an exception in a shared stage or a sink aborts everything and :meth:`run` raises
:class:`PipelineError` after closing what was opened.

NOTE: a slow *sink* back-pressures the shared stages (postprocess waits for room in that
stream's output queue); give slow outputs to their own process if they must not.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .pipeline import (
    _EOS,
    END_TO_END,
    PipelineError,
    StageStats,
    _Aborted,
    _Channel,
    _check_tracker,
    _Runner,
    _Samples,
    tracker_counts,
    tracks_text,
)
from .sinks import FrameResult, Sink, StreamInfo
from .sources import Frame, Source, SourceError, open_source

__all__ = ["SHARED_STAGES", "MultiStreamPipeline", "MultiStreamStats", "StreamStats"]

log = logging.getLogger("maskrt.video")

SHARED_STAGES = ("preprocess", "infer", "postprocess")
STREAM_STAGES = ("capture", "sink", END_TO_END)


# ====================================================================== statistics
@dataclass
class StreamStats:
    """One stream of a :class:`MultiStreamStats` snapshot (fields as in ``PipelineStats``)."""

    index: int
    source: str
    live: bool
    frames_in: int
    frames_out: int
    drops: int
    discarded: int
    fps: float
    recent_fps: float
    stages: dict[str, StageStats]  # capture, sink, end_to_end
    running: bool
    end_reason: str | None
    failed: bool
    tracks: dict[str, int] | None

    def status_line(self) -> str:
        e2e = self.stages[END_TO_END]
        lat = f"{e2e.recent:.0f}" if e2e.count else "-"
        state = "" if self.running else f" | ended: {self.end_reason}"
        track = f" | {tracks_text(self.tracks)}" if self.tracks else ""
        return (f"[{self.index}] {self.source[:32]:<32} {self.recent_fps:5.1f} fps | in {self.frames_in} out "
                f"{self.frames_out} drop {self.drops} | e2e {lat} ms{track}{state}")


@dataclass
class MultiStreamStats:
    """A snapshot of a :class:`MultiStreamPipeline`: per stream (:attr:`streams`), the shared
    stages (ms per frame), batches run and frames per batch, totals."""

    streams: list[StreamStats]
    stages: dict[str, StageStats]  # preprocess, infer, postprocess
    batches: int
    mean_batch: float
    elapsed_s: float
    fps: float
    running: bool = False
    stopped: bool = False
    interrupted: bool = False
    error: str | None = None
    error_stage: str | None = None
    leaked_threads: list[str] = field(default_factory=list)

    @property
    def frames_in(self) -> int:
        return sum(s.frames_in for s in self.streams)

    @property
    def frames_out(self) -> int:
        return sum(s.frames_out for s in self.streams)

    @property
    def drops(self) -> int:
        return sum(s.drops for s in self.streams)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def status_line(self) -> str:
        """The live status: a totals line, then one line per stream."""
        s = self.stages

        def ms(name: str) -> str:
            return f"{s[name].recent:.1f}" if s[name].count else "-"

        head = (f"{len(self.streams)} streams {self.fps:5.1f} fps | in {self.frames_in} out {self.frames_out} drop "
                f"{self.drops} | batch {self.mean_batch:.2f} | ms/frame: pre {ms('preprocess')} inf {ms('infer')} "
                f"post {ms('postprocess')}")
        return "\n".join([head, *(st.status_line() for st in self.streams)])

    def table(self) -> str:
        """The final summary: shared stages, then one row per stream."""
        rows = [f"{'stage':<12} {'frames':>7} {'mean':>8} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}   (ms per frame)"]
        for name in SHARED_STAGES:
            st = self.stages[name]
            rows.append(f"{name:<12} {st.count:>7} {st.mean:>8.2f} {st.p50:>8.2f} {st.p90:>8.2f} {st.p99:>8.2f} "
                        f"{st.max:>8.2f}" if st.count else f"{name:<12} {0:>7}" + f" {'-':>8}" * 5)
        rows.append(f"batches: {self.batches}, {self.mean_batch:.2f} frames per batch; {self.elapsed_s:.2f} s, "
                    f"{self.fps:.1f} FPS over all streams")
        rows.append(f"{'stream':<34} {'in':>6} {'out':>6} {'drop':>6} {'disc':>5} {'fps':>6} {'e2e p50':>8} "
                    f"{'e2e p99':>8}  tracks / end")
        for st in self.streams:
            e2e = st.stages[END_TO_END]
            p50, p99 = (f"{e2e.p50:.1f}", f"{e2e.p99:.1f}") if e2e.count else ("-", "-")
            name = f"[{st.index}] {st.source}"[:34]
            rows.append(f"{name:<34} {st.frames_in:>6} {st.frames_out:>6} {st.drops:>6} {st.discarded:>5} "
                        f"{st.fps:>6.1f} {p50:>8} {p99:>8}  {tracks_text(st.tracks) if st.tracks else '-'}; "
                        f"{'FAILED: ' if st.failed else ''}{st.end_reason or 'running'}")
        if self.error:
            rows.append(f"ended: error in {self.error_stage}: {self.error}")
        return "\n".join(rows)


# ====================================================================== inboxes
class _Inbox:
    """Frames of one stream waiting for the batch thread (module docstring). All inboxes share
    one condition, so the batch thread can wait for "any stream has something"."""

    def __init__(self, live: bool, capacity: int, cond: threading.Condition, abort: threading.Event,
                 poll_s: float) -> None:
        self.live, self.capacity = live, 1 if live else capacity
        self._items: deque[Frame] = deque()
        self._closed = False
        self._cond, self._abort, self._poll = cond, abort, poll_s

    def put(self, frame: Frame) -> bool:
        """Adds a frame; True when it overwrote one (live). Files block while full."""
        with self._cond:
            if self.live:
                dropped = bool(self._items)
                self._items.clear()
                self._items.append(frame)
                self._cond.notify_all()
                return dropped
            while len(self._items) >= self.capacity:
                if self._abort.is_set():
                    raise _Aborted
                self._cond.wait(self._poll)
            self._items.append(frame)
            self._cond.notify_all()
            return False

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def take(self) -> Frame | object | None:
        """Caller holds the condition: the oldest frame, _EOS once closed and empty, else None."""
        if self._items:
            item = self._items.popleft()
            self._cond.notify_all()  # room for a blocked file capture
            return item
        return _EOS if self._closed else None

    def has_frame(self) -> bool:
        return bool(self._items)


@dataclass
class _Batch:
    streams: list[int]
    frames: list[Frame]
    batch: np.ndarray | None
    infos: list[Any]
    ends: list[int]  # streams whose end comes after this batch's frames
    outputs: dict[str, np.ndarray] | None = None


class _Stream:
    """Per-stream state: source, sinks, tracker, counters, timers, end."""

    def __init__(self, index: int, source: Source, sinks: list[Sink], tracker: Any | None, seed: int) -> None:
        self.index, self.source, self.sinks, self.tracker = index, source, sinks, tracker
        self.frames_in = self.frames_out = self.drops = 0
        self.timers = {name: _Samples(seed + i) for i, name in enumerate(STREAM_STAGES)}
        self.done_times: deque[float] = deque(maxlen=64)
        self.end_reason: str | None = None
        self.failed = False
        self.ended = False  # its sink thread has finished
        self.t_end: float | None = None
        self.needs = frozenset().union(*(s.needs for s in sinks))
        self.inbox: _Inbox
        self.outbox: _Channel


# ====================================================================== the pipeline
class MultiStreamPipeline(_Runner):
    """N sources -> one batched :class:`Predictor` -> per-stream trackers and sinks (module docstring).

    Args:
        sources: :class:`Source` s or specs for :func:`open_source` (opened here if not open;
            closed at the end).
        predictor: an open ``Predictor`` (``prepare``/``infer``/``finish``/``input_size``).
        sinks: one sequence of sinks per source (opened and closed here).
        batch: frames per inference, at most (a batch holds what is ready).
        queue_size: inbox capacity of file streams and of the queues between stages.
        max_frames: per stream, stop after reading this many frames.
        trackers: None, or one tracker (or None) per source (``track(dets, frame_index)``).
        on_stream_end: ``f(index, source_name, reason, failed)``, called from a stream's sink
            thread when that stream has ended (default: a logging warning for a failed stream).
        min_score, overlay_alpha, draw_boxes, draw_labels, mask_threshold, join_timeout_s,
            poll_s: as for ``VideoPipeline``.
    """

    def __init__(self, sources: Sequence[Source | str | int], predictor: Any, sinks: Sequence[Sequence[Sink]] | None
                 = None, *, batch: int = 1, queue_size: int = 4, max_frames: int | None = None,
                 trackers: Sequence[Any | None] | None = None, min_score: float = 0.0, overlay_alpha: float = 0.5,
                 draw_boxes: bool = True, draw_labels: bool = True, mask_threshold: float = 0.5,
                 on_stream_end: Callable[[int, str, str, bool], None] | None = None, join_timeout_s: float = 10.0,
                 poll_s: float = 0.05) -> None:
        if isinstance(sources, (str, Source)) or not len(sources):
            raise ValueError("sources must be a non-empty list of sources")
        srcs = [open_source(s) for s in sources]
        n = len(srcs)
        sinks = [[] for _ in range(n)] if sinks is None else [list(s) for s in sinks]
        if len(sinks) != n:
            raise ValueError(f"sinks: one list per source expected ({n}), got {len(sinks)}")
        for group in sinks:
            for s in group:
                if not isinstance(s, Sink):
                    raise ValueError(f"sinks must be Sink instances, got {type(s).__name__}")
        trackers = [None] * n if trackers is None else list(trackers)
        if len(trackers) != n:
            raise ValueError(f"trackers: one per source expected ({n}), got {len(trackers)}")
        if len({id(t) for t in trackers if t is not None}) != sum(t is not None for t in trackers):
            raise ValueError("trackers: each stream needs its own tracker (a tracker follows one stream)")
        for t in trackers:
            _check_tracker(t)
        self._configure(predictor, batch=batch, queue_size=queue_size, max_frames=max_frames, min_score=min_score,
                        overlay_alpha=overlay_alpha, draw_boxes=draw_boxes, draw_labels=draw_labels,
                        mask_threshold=mask_threshold, join_timeout_s=join_timeout_s, poll_s=poll_s)
        self.on_stream_end = on_stream_end
        self.streams = [_Stream(i, s, sinks[i], trackers[i], 10 * i) for i, s in enumerate(srcs)]

        self._lock = threading.Lock()
        self._ready = threading.Condition()
        self._stop = threading.Event()
        self._abort = threading.Event()
        self._started = self._running = False
        self._t_start = self._t_end = 0.0
        self._t_stop: float | None = None
        self._interrupted = False
        self._timers = {name: _Samples(1000 + i) for i, name in enumerate(SHARED_STAGES)}
        self._batches = self._batched_frames = 0
        self._error: tuple[str, BaseException] | None = None
        self._threads: list[threading.Thread] = []
        self._leaked: list[str] = []

    @property
    def sources(self) -> list[Source]:
        return [st.source for st in self.streams]

    # ---------------------------------------------------------------- control
    def _interrupt_sources(self) -> None:
        for st in self.streams:
            st.source.interrupt()

    def stats(self) -> MultiStreamStats:
        """A snapshot (thread-safe)."""
        now = time.perf_counter()
        end = self._t_end if (self._started and not self._running) else now
        elapsed = max(end - self._t_start, 0.0) if self._started else 0.0
        streams = []
        for st in self.streams:
            done = list(st.done_times)
            recent = (len(done) - 1) / (done[-1] - done[0]) if len(done) > 1 and done[-1] > done[0] else 0.0
            own = (st.t_end if st.t_end is not None else end) - self._t_start if self._started else 0.0
            n_in, n_out, drops = st.frames_in, st.frames_out, st.drops
            streams.append(StreamStats(
                st.index, st.source.name, bool(st.source.live), n_in, n_out, drops, max(n_in - n_out - drops, 0),
                n_out / own if own > 0 else 0.0, recent, {k: t.summary() for k, t in st.timers.items()},
                self._running and not st.ended, st.end_reason, st.failed, tracker_counts(st.tracker)))
        err = self._error
        return MultiStreamStats(
            streams=streams, stages={k: t.summary() for k, t in self._timers.items()}, batches=self._batches,
            mean_batch=self._batched_frames / self._batches if self._batches else 0.0, elapsed_s=elapsed,
            fps=sum(s.frames_out for s in streams) / elapsed if elapsed > 0 else 0.0, running=self._running,
            stopped=self._stop.is_set(), interrupted=self._interrupted,
            error=None if err is None else f"{type(err[1]).__name__}: {err[1]}",
            error_stage=None if err is None else err[0], leaked_threads=list(self._leaked))

    # ---------------------------------------------------------------- run
    def run(self, status: Callable[[MultiStreamStats], None] | None = None, status_interval_s: float = 0.5
            ) -> MultiStreamStats:
        """Runs until every stream has ended, a stop() or Ctrl-C; returns the final stats.
        Raises :class:`PipelineError` after a clean shutdown when a shared stage or a sink failed."""
        with self._lock:
            if self._started:
                raise RuntimeError("a MultiStreamPipeline runs once; make a new one for another run")
            self._started = True
        self._t_start = time.perf_counter()
        names = tuple(getattr(getattr(self.predictor, "config", None), "names", ()) or ())
        opened: list[Sink] = []
        try:
            for st in self.streams:
                if not st.source.is_open:
                    st.source.open()
                info = StreamInfo(st.source.name, st.source.fps, st.source.frame_size, bool(st.source.live), names,
                                  self.stop)
                for s in st.sinks:
                    s.open(info)
                    opened.append(s)
        except BaseException:
            for s in opened:
                try:
                    s.close()
                except Exception as e:  # the open error is the one to report
                    log.warning("closing sink %s after a failed open: %s", s.name, e)
            for st in self.streams:
                st.source.close()
            raise

        any_live = any(st.source.live for st in self.streams)
        q_size = 1 if any_live else self.queue_size
        for st in self.streams:
            st.inbox = _Inbox(bool(st.source.live), self.queue_size, self._ready, self._abort, self.poll_s)
            st.outbox = _Channel(1 if st.source.live else self.queue_size, self._abort, self.poll_s)
        self._ch_pre = _Channel(q_size, self._abort, self.poll_s)
        self._ch_inf = _Channel(q_size, self._abort, self.poll_s)
        # NOTE: the batch buffers are a ring, as in VideoPipeline: capacity + 2 buffers, so a buffer
        # comes round again only after the single infer thread has finished with it.
        h, w = self._input_size
        self._buffers = [np.zeros((max(self.batch, self._min_batch), h, w, 3), np.uint8) for _ in range(q_size + 2)]
        self._buf_i = 0

        bodies: list[tuple[str, Callable[[], None]]] = [(f"capture-{st.index}", lambda st=st: self._capture(st))
                                                        for st in self.streams]
        bodies += [("batch", self._batcher), ("infer", self._infer), ("postprocess", self._postprocess)]
        bodies += [(f"sink-{st.index}", lambda st=st: self._sink(st)) for st in self.streams]
        self._threads = [threading.Thread(target=self._stage, args=(name, body), name=f"maskrt-{name}", daemon=True)
                         for name, body in bodies]
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
            self._abort.set()
            self._interrupt_sources()
            deadline = time.perf_counter() + self.join_timeout_s
            for t in self._threads:
                t.join(max(deadline - time.perf_counter(), 0.0))
        by_name = {t.name: t for t in self._threads}
        for st in self.streams:
            if st.end_reason is None and self._abort.is_set():
                st.end_reason = "aborted"
            if not by_name[f"maskrt-capture-{st.index}"].is_alive():
                try:
                    st.source.close()
                except Exception as e:
                    log.warning("closing source %s: %s", st.source.name, e)
            if not by_name[f"maskrt-sink-{st.index}"].is_alive():
                self._close_sinks(st)
        self._t_end = time.perf_counter()
        self._running = False
        self._leaked = [t.name for t in self._threads if t.is_alive()]

    def _close_sinks(self, st: _Stream) -> None:
        for s in st.sinks:
            try:
                s.close()
            except Exception as e:
                with self._lock:
                    if self._error is None:
                        self._error = (f"sink-{st.index}", e)
                log.warning("closing sink %s of stream %d: %s", s.name, st.index, e)
        st.sinks = []  # closed once

    # ---------------------------------------------------------------- stages
    def _capture(self, st: _Stream) -> None:
        src, inbox, timer = st.source, st.inbox, st.timers["capture"]
        try:
            while True:
                if self._abort.is_set():
                    raise _Aborted
                if self._stop.is_set():
                    st.end_reason = "interrupted (Ctrl-C)" if self._interrupted else "stopped"
                    break
                if self.max_frames is not None and st.frames_in >= self.max_frames:
                    st.end_reason = f"reached max_frames ({self.max_frames})"
                    break
                t0 = time.perf_counter()
                try:
                    frame = src.read()
                except SourceError as e:
                    st.end_reason, st.failed = f"{src.name}: {e}", True
                    break
                except Exception as e:
                    # NOTE: unlike VideoPipeline (one stream: any read error is the run's error), a
                    # stream's failure here ends that stream only; the others go on.
                    st.end_reason, st.failed = f"{src.name}: {type(e).__name__}: {e}", True
                    break
                t1 = time.perf_counter()
                if frame is None:
                    if self._stop.is_set():
                        st.end_reason = "interrupted (Ctrl-C)" if self._interrupted else "stopped"
                    else:
                        st.end_reason = src.end_reason or "end of stream"
                        st.failed = bool(src.failed)
                    break
                if not isinstance(frame, Frame):
                    st.end_reason, st.failed = (f"{src.name}: read() must return a Frame or None, got "
                                                f"{type(frame).__name__}"), True
                    break
                frame.captured = t1
                timer.add((t1 - t0) * 1e3)
                st.frames_in += 1
                if inbox.put(frame):
                    st.drops += 1
        finally:
            inbox.close()

    def _gather(self, start: int, ended: list[bool]) -> tuple[list[tuple[int, Frame]], list[int]]:
        """Caller holds the condition. One pass from stream ``start``: the frame of each stream
        that has one, then more frames of file streams while the batch has room."""
        n = len(self.streams)
        got: list[tuple[int, Frame]] = []
        ends: list[int] = []
        order = [(start + k) % n for k in range(n)]
        for more in (False, True):
            progress = True
            while progress and len(got) < self.batch:
                progress = False
                for s in order:
                    if len(got) >= self.batch:
                        break
                    st = self.streams[s]
                    if ended[s] or (more and st.inbox.live):
                        continue
                    item = st.inbox.take()
                    if item is _EOS:
                        ended[s] = True
                        ends.append(s)
                    elif item is not None:
                        got.append((s, item))
                        progress = more
                if not more:
                    break
        return got, ends

    def _batcher(self) -> None:
        out, timer = self._ch_pre, self._timers["preprocess"]
        n = len(self.streams)
        ended = [False] * n
        start = 0
        while not all(ended):
            # NOTE: take frames only once the inference queue has room: a frame taken earlier would
            # age in this thread's hands while its live stream delivers newer ones.
            out.wait_for_space()
            with self._ready:
                while True:
                    if self._abort.is_set():
                        raise _Aborted
                    got, ends = self._gather(start, ended)
                    if got or ends or all(ended):
                        break
                    self._ready.wait(self.poll_s)
            if got:
                start = (got[-1][0] + 1) % n
            if not got:
                out.put(_Batch([], [], None, [], ends))
                continue
            t0 = time.perf_counter()
            buf = self._buffers[self._buf_i % len(self._buffers)]
            self._buf_i += 1
            frames = [f for _, f in got]
            batch, infos = self.predictor.prepare([f.image for f in frames], out=buf)
            if len(frames) < self._min_batch:  # a fixed-batch backend: pad with black frames
                buf[len(frames):self._min_batch] = 0
                batch = buf[:self._min_batch]
            dt = (time.perf_counter() - t0) * 1e3 / len(frames)
            for _ in frames:
                timer.add(dt)
            out.put(_Batch([s for s, _ in got], frames, batch, list(infos), ends))
        out.close()

    def _infer(self) -> None:
        inp, out, timer = self._ch_pre, self._ch_inf, self._timers["infer"]
        while (item := inp.get()) is not _EOS:
            if item.frames:
                t0 = time.perf_counter()
                item.outputs = self.predictor.infer(item.batch)
                dt = (time.perf_counter() - t0) * 1e3 / len(item.frames)
                for _ in item.frames:
                    timer.add(dt)
                self._batches += 1
                self._batched_frames += len(item.frames)
            out.put(item)
        out.close()

    def _postprocess(self) -> None:
        inp, timer = self._ch_inf, self._timers["postprocess"]
        while (item := inp.get()) is not _EOS:
            if item.frames:
                t0 = time.perf_counter()
                dets = self.predictor.finish(item.outputs, item.infos)
                if len(dets) != len(item.frames):
                    raise RuntimeError(f"predictor.finish returned {len(dets)} results for {len(item.frames)} frames")
                share = (time.perf_counter() - t0) * 1e3 / len(item.frames)
                for s, frame, d in zip(item.streams, item.frames, dets, strict=True):
                    st = self.streams[s]
                    t1 = time.perf_counter()
                    if self.min_score > 0 and len(d):
                        d = d.select(d.scores >= self.min_score)
                    if st.tracker is not None:
                        d = st.tracker.track(d, frame.index)
                    result = FrameResult(frame, d, self.options)
                    if "overlay" in st.needs:
                        result.overlay()
                    if "record" in st.needs:
                        result.json_record()
                    timer.add(share + (time.perf_counter() - t1) * 1e3)
                    st.outbox.put(result)
            for s in item.ends:
                self.streams[s].outbox.close()

    def _sink(self, st: _Stream) -> None:
        inp, timer, e2e = st.outbox, st.timers["sink"], st.timers[END_TO_END]
        while (result := inp.get()) is not _EOS:
            t0 = time.perf_counter()
            for s in st.sinks:
                s.write(result)
            t1 = time.perf_counter()
            timer.add((t1 - t0) * 1e3)
            e2e.add((t1 - result.frame.captured) * 1e3)
            st.frames_out += 1
            st.done_times.append(t1)
        self._close_sinks(st)
        st.t_end = time.perf_counter()
        st.ended = True
        reason = st.end_reason or "end of stream"
        if self.on_stream_end is not None:
            self.on_stream_end(st.index, st.source.name, reason, st.failed)
        elif st.failed:
            log.warning("stream %d (%s) ended: %s; the other streams go on", st.index, st.source.name, reason)
