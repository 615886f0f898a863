"""The video pipeline (runtime/video/): sources, threads and queues, sinks, the `video` / `infer` commands.

Real model: the embedded default checkpoint exported to ONNX and run by ONNX Runtime. Structural
tests (drops, stop, errors, reconnects) use a `Predictor` over a fake backend whose outputs encode
which frame they came from, so order and identity are checked exactly. No test asserts a time;
the latency test compares each frame's age with the backlog a drop-free pipeline would have, both
counted in frames of the same simulated camera.
"""

from __future__ import annotations

import _thread
import argparse
import bisect
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from maskrt.runtime.backends.base import Backend, BackendError
from maskrt.runtime.config import preset
from maskrt.runtime.detections import Detections
from maskrt.runtime.predictor import Predictor
from maskrt.runtime.video import (
    CameraSource,
    Frame,
    GStreamerSource,
    ImageFolderSource,
    JsonlSink,
    PipelineError,
    ReconnectingSource,
    Sink,
    Source,
    SourceError,
    SourceOpenError,
    StreamSource,
    VideoFileSink,
    VideoFileSource,
    VideoPipeline,
    WindowSink,
    draw_detections,
    open_source,
)
from maskrt.runtime.video.sources import gstreamer_available
from maskrt.train.demo import demo_image


# ============================================================================ helpers
def moving_scene(seed: int, size: tuple[int, int], n: int) -> list[np.ndarray]:
    """n frames of a generated scene panning right by 4 px per frame: uint8 [h, w, 3] each."""
    h, w = size
    base = demo_image(seed, (h, w + 4 * n))
    return [np.ascontiguousarray(base[:, 4 * i:4 * i + w]) for i in range(n)]


def write_video(path: Path, frames: list[np.ndarray], fps: float = 25.0) -> Path:
    fourcc = "MJPG" if path.suffix == ".avi" else "mp4v"
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def decode_all(path: Path) -> list[np.ndarray]:
    """Every frame of a video, decoded independently of the pipeline."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    return frames


def read_jsonl(path: Path) -> list[dict]:
    text = path.read_text()
    assert text == "" or text.endswith("\n"), "the last line is incomplete"
    return [json.loads(line) for line in text.splitlines()]


def pipeline_threads() -> set[threading.Thread]:
    # NOTE: alive ones only: after a KeyboardInterrupt lands inside Thread.join, CPython 3.11 can
    # list a thread that has already finished (is_alive() False) in enumerate() for a moment.
    return {t for t in threading.enumerate() if t.name.startswith("maskrt-") and t.is_alive()}


class RecordingSink(Sink):
    """Keeps what it gets: frame index, the detections, the age of the frame at the sink."""

    def __init__(self, fail_at: int | None = None, jsonl: Path | None = None) -> None:
        self.jsonl = jsonl  # a JSON lines file written by a sink before this one: check it is flushed per frame
        self.indices: list[int] = []
        self.dets: list[Detections] = []
        self.ages: list[float] = []
        self.times: list[float] = []
        self.opened = self.closed = False
        self.fail_at = fail_at

    def open(self, info) -> None:
        self.opened = True
        self.info = info

    def write(self, result) -> None:
        if self.fail_at is not None and len(self.indices) == self.fail_at:
            raise OSError("disk full (simulated)")
        if self.jsonl is not None:
            assert len(read_jsonl(self.jsonl)) == len(self.indices) + 1, "JSON lines not flushed per frame"
        now = time.perf_counter()
        self.indices.append(result.frame.index)
        self.dets.append(result.detections)
        self.ages.append(now - result.frame.captured)
        self.times.append(now)

    def close(self) -> None:
        self.closed = True


# ---------------------------------------------------------------------------- fake model
CFG = preset("mnv3-lite")  # input 320x320, K = 50, M = 28


class FakeBackend(Backend):
    """A contract-conforming backend without a model: one detection per image whose score is
    the image's top-left pixel / 255 (so each result names its frame), after ``delay_s``."""

    name = "fake"

    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__()
        self.delay_s = delay_s
        self.calls = 0

    @property
    def config(self):
        return CFG

    def _open(self) -> None:
        pass

    def _close(self) -> None:
        pass

    def _infer(self, images: np.ndarray):
        self.calls += 1
        time.sleep(self.delay_s)
        b, k, m = images.shape[0], CFG.detections_per_img, CFG.mask_resolution
        out = {"num_detections": np.ones(b, np.int32), "boxes": np.zeros((b, k, 4), np.float32),
               "scores": np.zeros((b, k), np.float32), "classes": np.zeros((b, k), np.int32),
               "masks": np.zeros((b, k, m, m), np.float32)}
        out["boxes"][:, 0] = (40, 40, 120, 160)
        out["scores"][:, 0] = images[:, 0, 0, 0] / 255.0
        out["classes"][:, 0] = 1
        out["masks"][:, 0] = 1.0
        return out


def fake_predictor(delay_s: float = 0.0) -> Predictor:
    return Predictor(FakeBackend(delay_s)).__enter__()


def frame_value(index: int) -> int:
    return 20 + index % 200


def tag_of(d: Detections) -> int:
    """The frame value a FakeBackend result came from."""
    return int(round(float(d.scores[0]) * 255))


class MemorySource(Source):
    """Frames generated in memory (320x320, value = frame_value(index)), optionally paced at
    ``fps`` (then live, like a camera), ending after ``n`` frames or when ``until()`` is true;
    ``fail_at``: raise ``error`` instead of frame ``fail_at``. Records each read's time."""

    def __init__(self, n: int | None = None, *, fps: float | None = None, live: bool = False,
                 until=None, fail_at: int | None = None, error: BaseException | None = None) -> None:
        super().__init__("memory")
        self.n, self._fps, self.live, self.until = n, fps, live, until
        self.fail_at, self.error = fail_at, error
        self.read_times: list[float] = []
        self.closed = False

    @property
    def fps(self):
        return self._fps

    def _open(self) -> None:
        self._t0 = time.perf_counter()

    def _read(self):
        i = self.frames_read
        if self.fail_at is not None and i == self.fail_at:
            raise self.error
        if (self.n is not None and i >= self.n) or (self.until is not None and self.until()):
            return self._end("end of memory stream")
        if self._fps:
            delay = self._t0 + i / self._fps - time.perf_counter()
            if delay > 0 and self._interrupt.wait(delay):
                return self._end("interrupted")
        self.read_times.append(time.perf_counter())
        return Frame(np.full((320, 320, 3), frame_value(i), np.uint8), i, i / (self._fps or 25.0))

    def _close(self) -> None:
        self.closed = True


# ============================================================================ fixtures
@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    return {"square": write_video(d / "square.avi", moving_scene(3, (320, 320), 30)),
            "wide": write_video(d / "wide.mp4", moving_scene(5, (240, 400), 7), fps=10.0)}


# ============================================================================ file sources through the real model
@pytest.mark.parametrize("clip, batch", [("square", 1), ("wide", 3)])
def test_file_pipeline_keeps_every_frame_in_order_and_matches_direct_predict(predictor, clips, tmp_path, clip, batch):
    path = clips[clip]
    frames = decode_all(path)
    n = len(frames)
    h, w = frames[0].shape[:2]
    jsonl, video, rec = tmp_path / "out.jsonl", tmp_path / "out.avi", RecordingSink()
    before = pipeline_threads()
    stats = VideoPipeline(open_source(path), predictor, [JsonlSink(jsonl), VideoFileSink(video), rec],
                          batch=batch, queue_size=2).run()
    assert pipeline_threads() == before

    # every frame accounted for, in order, nothing dropped
    assert (stats.frames_in, stats.frames_out, stats.drops, stats.discarded) == (n, n, 0, 0)
    assert stats.end_reason == "end of file" and not stats.source_failed and stats.error is None
    assert rec.indices == list(range(n)) and rec.closed
    for stage in ("capture", "preprocess", "infer", "postprocess", "sink", "end_to_end"):
        st = stats.stages[stage]
        assert st.count == n and 0 <= st.p50 <= st.p90 <= st.p99 <= st.max
    assert "end-to-end" in stats.table() and "fps" in stats.status_line()

    # reference: the same decoded frames straight through Predictor.predict, in the same batches
    ref: list[Detections] = []
    for i in range(0, n, batch):
        ref += predictor.predict(frames[i:i + batch])
    lines = read_jsonl(jsonl)
    assert [r["frame"] for r in lines] == list(range(n))
    fps = cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FPS)
    assert sum(len(d) for d in ref) > 0
    for i, (r, d) in enumerate(zip(lines, ref, strict=True)):
        assert r["timestamp"] == pytest.approx(i / fps)
        assert r["image_size"] == [h, w]
        np.testing.assert_allclose(np.asarray(r["boxes"]).reshape(-1, 4), d.boxes, atol=0.006)
        np.testing.assert_allclose(r["scores"], d.scores, atol=6e-6)
        assert r["classes"] == d.class_ids.tolist() and r["names"] == d.class_names
        if len(d):
            rles = [{"size": m["size"], "counts": m["counts"].encode()} for m in r["masks"]]
            decoded = mask_utils.decode(rles).transpose(2, 0, 1).astype(bool)
            np.testing.assert_array_equal(decoded, d.bitmaps())
        else:
            assert r["masks"] == []

    # annotated video: readable, same frame count and size, and it is the overlay of the detections
    out = decode_all(video)
    assert len(out) == n and out[0].shape == (h, w, 3)
    k = max(range(n), key=lambda j: len(ref[j]))
    drawn = draw_detections(frames[k], ref[k]).astype(np.float64)
    err_overlay = np.abs(out[k] - drawn).mean()
    err_plain = np.abs(out[k] - frames[k].astype(np.float64)).mean()
    assert err_overlay < err_plain / 2, (err_overlay, err_plain)


def test_truncated_file_ends_cleanly_with_a_clear_message(predictor, clips, tmp_path):
    data = clips["square"].read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[:int(len(data) * 0.3)])
    decodable = len(decode_all(cut))
    assert 0 < decodable < 30
    jsonl = tmp_path / "cut.jsonl"
    stats = VideoPipeline(VideoFileSource(cut), predictor, [JsonlSink(jsonl)]).run()
    assert stats.source_failed and stats.error is None
    assert stats.frames_in == stats.frames_out == decodable
    assert f"could not decode frame {decodable} of the 30 expected" in stats.end_reason
    assert "truncated or corrupt" in stats.end_reason
    assert [r["frame"] for r in read_jsonl(jsonl)] == list(range(decodable))


# ============================================================================ live sources
def test_live_source_faster_than_inference_drops_frames_and_keeps_latency_bounded(predictor):
    sink = RecordingSink()
    target = 16  # processed frames; the camera runs at 200 fps meanwhile
    src = MemorySource(fps=200.0, live=True, until=lambda: len(sink.indices) >= target)
    stats = VideoPipeline(src, predictor, [sink], queue_size=4).run()
    n_in = stats.frames_in
    assert n_in == len(src.read_times) and stats.frames_out == len(sink.indices) >= target

    # drops are counted; nothing else is lost (the frames in flight at the end are finished)
    assert stats.drops > 0 and stats.frames_out + stats.drops == n_in and stats.discarded == 0
    assert sink.indices == sorted(set(sink.indices)), "order kept"
    gaps = np.diff([-1, *sink.indices]) - 1
    assert int(gaps.sum()) + (n_in - 1 - sink.indices[-1]) == stats.drops
    assert all(d.image_size == (320, 320) for d in sink.dets)

    # capture never blocks: when the k-th frame reached the sink the camera had delivered far more
    # frames than the queues hold (with back-pressure it could be at most k + capacity + in flight)
    newest_at = [bisect.bisect_right(src.read_times, t) - 1 for t in sink.times]
    assert newest_at[-2] > len(sink.indices) + 20

    # latency bounded: a drop-free FIFO would output its k-th frame (index k) while the camera is at
    # newest_at[k], a backlog of newest_at[k] - k frames that grows with k; here a frame's age in
    # camera frames stays a small part of it once the backlog has built up.
    for k, (idx, newest) in enumerate(zip(sink.indices, newest_at, strict=True)):
        age_frames, backlog = newest - idx, newest - k
        if k >= 10:
            assert age_frames < backlog / 2, (k, age_frames, backlog)
    assert newest_at[-2] - sink.indices[-2] < (newest_at[-2] - (len(sink.indices) - 2)) / 3


def test_live_pipeline_identity_with_batches_and_stop_from_another_thread():
    sink = RecordingSink()
    src = MemorySource(fps=300.0, live=True)  # endless; inference takes 2 frames per 30 ms: drops
    pipe = VideoPipeline(src, fake_predictor(0.03), [sink], batch=2)
    before = pipeline_threads()
    timer = threading.Timer(0.6, pipe.stop)
    timer.start()
    stats = pipe.run()
    timer.join()
    assert stats.stopped and not stats.interrupted and stats.end_reason == "stopped"
    assert pipeline_threads() == before and src.closed and sink.closed
    assert stats.frames_out > 0 and stats.drops > 0
    assert stats.frames_out + stats.drops == stats.frames_in  # stop drains what was read
    assert [tag_of(d) for d in sink.dets] == [frame_value(i) for i in sink.indices]


def test_file_stop_from_another_thread_finishes_what_was_read(tmp_path):
    sink = RecordingSink(jsonl=tmp_path / "s.jsonl")
    src = MemorySource(500)
    pipe = VideoPipeline(src, fake_predictor(0.005), [JsonlSink(tmp_path / "s.jsonl"), sink], queue_size=3)
    threading.Timer(0.3, pipe.stop).start()
    stats = pipe.run()
    assert stats.stopped and 0 < stats.frames_out < 500
    assert stats.frames_out == stats.frames_in and stats.drops == 0
    assert sink.indices == list(range(stats.frames_out))
    assert [r["frame"] for r in read_jsonl(tmp_path / "s.jsonl")] == sink.indices


class OutageBackend(FakeBackend):
    """A remote backend whose server went down after ``ok`` batches: ``_infer`` then waits in its
    reconnect back-off until ``interrupt()`` (TritonBackend's contract) and fails like it does."""

    def __init__(self, ok: int) -> None:
        super().__init__()
        self.ok, self.waiting = ok, threading.Event()
        self._interrupted = threading.Event()

    def interrupt(self) -> None:
        self._interrupted.set()

    def _infer(self, images: np.ndarray):
        if self.calls >= self.ok:
            self.waiting.set()
            if not self._interrupted.wait(60.0):  # hang guard only
                raise AssertionError("the pipeline never interrupted the backend's reconnect wait")
            raise BackendError("server unavailable: interrupted")
        return super()._infer(images)


def test_stop_interrupts_a_remote_backends_reconnect_wait():
    backend = OutageBackend(ok=3)
    pipe = VideoPipeline(MemorySource(fps=100.0, live=True), Predictor(backend).__enter__(), [RecordingSink()])
    threading.Thread(target=lambda: backend.waiting.wait(30.0) and pipe.stop(), daemon=True).start()
    with pytest.raises(Exception, match="interrupted") as info:
        pipe.run()
    assert backend._interrupted.is_set()
    assert "infer stage" in str(info.value)


def test_ctrl_c_in_the_main_thread_stops_cleanly(tmp_path):
    sink = RecordingSink()
    pipe = VideoPipeline(MemorySource(fps=200.0, live=True), fake_predictor(0.01),
                         [sink, JsonlSink(tmp_path / "c.jsonl")])
    before = pipeline_threads()
    timer = threading.Timer(0.5, _thread.interrupt_main)
    timer.start()
    stats = pipe.run()
    timer.join()
    assert stats.interrupted and stats.end_reason == "interrupted (Ctrl-C)"
    assert pipeline_threads() == before and sink.closed
    assert stats.frames_out > 0 and [r["frame"] for r in read_jsonl(tmp_path / "c.jsonl")] == sink.indices


# ============================================================================ errors
class FailingPredictor(Predictor):
    """A Predictor whose ``step`` raises on its ``at``-th call (0-based)."""

    def __init__(self, step: str, at: int) -> None:
        super().__init__(FakeBackend())
        self.backend.open()
        self.step, self.at, self.calls = step, at, 0

    def _maybe_fail(self, step: str) -> None:
        if step == self.step:
            if self.calls == self.at:
                raise ValueError(f"{step} exploded (simulated)")
            self.calls += 1

    def prepare(self, frames, out=None):
        self._maybe_fail("prepare")
        return super().prepare(frames, out)

    def infer(self, batch):
        self._maybe_fail("infer")
        return super().infer(batch)

    def finish(self, outputs, infos):
        self._maybe_fail("finish")
        return super().finish(outputs, infos)


@pytest.mark.parametrize("stage", ["capture", "preprocess", "infer", "postprocess", "sink"])
def test_stage_error_is_reraised_with_the_stage_after_a_clean_shutdown(stage, tmp_path):
    at = 5
    src = MemorySource(200, fail_at=at if stage == "capture" else None, error=RuntimeError("camera on fire"))
    pred = FailingPredictor({"preprocess": "prepare", "infer": "infer", "postprocess": "finish"}.get(stage, ""), at)
    sink = RecordingSink(fail_at=at if stage == "sink" else None)
    jsonl = tmp_path / "e.jsonl"
    before = pipeline_threads()
    pipe = VideoPipeline(src, pred, [JsonlSink(jsonl), sink], queue_size=2)
    with pytest.raises(PipelineError, match=rf"^{stage} stage failed: ") as info:
        pipe.run()
    assert info.value.stage == stage and info.value.__cause__ is info.value.error
    assert isinstance(info.value.error, RuntimeError if stage == "capture" else OSError if stage == "sink"
                      else ValueError)
    assert pipeline_threads() == before  # every thread joined
    assert src.closed and sink.closed
    lines = read_jsonl(jsonl)  # whole, valid lines, in order, of the frames before the failure
    assert [r["frame"] for r in lines] == list(range(len(lines))) and len(lines) <= at + (stage == "sink")
    assert info.value.stats.error_stage == stage


def test_source_error_ends_the_stream_cleanly(tmp_path, monkeypatch):
    jsonl = tmp_path / "s.jsonl"
    src = MemorySource(100, fail_at=7, error=SourceError("network camera rebooted"))
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    window = WindowSink()  # no display here: skipped with a reason, the run goes on
    stats = VideoPipeline(src, fake_predictor(), [JsonlSink(jsonl), window]).run()
    assert not window.enabled and "DISPLAY" in window.reason
    assert stats.source_failed and "network camera rebooted" in stats.end_reason and stats.error is None
    assert stats.frames_out == 7 and [r["frame"] for r in read_jsonl(jsonl)] == list(range(7))


def test_bad_arguments_are_refused():
    p = fake_predictor()
    with pytest.raises(ValueError, match="batch"):
        VideoPipeline(MemorySource(1), p, batch=0)
    with pytest.raises(ValueError, match="queue_size"):
        VideoPipeline(MemorySource(1), p, queue_size=0)
    with pytest.raises(ValueError, match="Sink"):
        VideoPipeline(MemorySource(1), p, [object()])
    with pytest.raises(ValueError, match="prepare/infer/finish"):
        VideoPipeline(MemorySource(1), object())
    pipe = VideoPipeline(MemorySource(2), p)
    pipe.run()
    with pytest.raises(RuntimeError, match="runs once"):
        pipe.run()


# ============================================================================ reconnecting live sources
class FlakyCamera(ReconnectingSource):
    """A simulated camera: ``plan`` is a list of (frames to deliver, failed opens before the
    next successful one); after the plan it never opens again."""

    def __init__(self, plan, **kwargs) -> None:
        super().__init__("flaky camera", **kwargs)
        self.plan = list(plan)
        self.connected = False
        self.opens = 0

    def _connect(self) -> bool:
        self.opens += 1
        if not self.plan:
            return False
        frames, failures = self.plan[0]
        if failures > 0:
            self.plan[0] = (frames, failures - 1)
            return False
        self.connected, self.left = True, frames
        self.plan.pop(0)
        return True

    def _grab(self):
        if not self.connected or self.left == 0:
            return None
        self.left -= 1
        time.sleep(0.002)
        return np.full((320, 320, 3), frame_value(self.frames_read), np.uint8)

    def _disconnect(self) -> None:
        self.connected = False


def test_camera_reopens_with_exponential_backoff_then_gives_up():
    events: list[str] = []
    # open, 10 frames, lost; 2 failed reopens then back with 10 frames; lost for good
    cam = FlakyCamera([(10, 0), (10, 2)], max_attempts=3, backoff_initial_s=0.01, backoff_max_s=1.0,
                      on_event=events.append)
    sink = RecordingSink()
    stats = VideoPipeline(cam, fake_predictor(), [sink]).run()
    assert cam.backoff_delays == [0.01, 0.02, 0.04, 0.01, 0.02, 0.04]
    assert cam.reconnects == 1 and cam.reconnect_attempts == 6
    assert stats.frames_in == 20 and stats.frames_out + stats.drops == 20
    assert stats.source_failed and "gave up after 3 reconnect attempts" in stats.end_reason
    assert any("reconnect attempt 1/3 in 0.01 s" in e for e in events)
    assert any("reconnected (attempt 3" in e for e in events)
    assert [tag_of(d) for d in sink.dets] == [frame_value(i) for i in sink.indices]


def test_camera_reconnect_is_bounded_in_time_and_interruptible():
    cam = FlakyCamera([(3, 0)], max_attempts=50, backoff_initial_s=0.2, backoff_max_s=10.0, max_reconnect_s=0.5,
                      on_event=lambda m: None)
    cam.open()
    frames = list(cam)
    assert len(frames) == 3 and cam.failed
    assert cam.backoff_delays == [0.2]  # the next wait (0.4 s) would pass the 0.5 s budget
    # stop() during a long back-off returns at once
    cam = FlakyCamera([(1, 0)], backoff_initial_s=30.0, backoff_max_s=30.0, on_event=lambda m: None)
    cam.open()
    assert cam.read() is not None
    threading.Timer(0.2, cam.interrupt).start()
    assert cam.read() is None and cam.end_reason == "interrupted" and not cam.failed
    with pytest.raises(SourceOpenError, match="cannot open"):
        FlakyCamera([]).open()  # a first open that fails raises at once (retry_open=False)


# ============================================================================ choosing and reading sources
def test_open_source_chooses_by_spec(clips, tmp_path):
    assert isinstance(open_source("0"), CameraSource) and open_source(2).target == 2
    s = open_source("rtsp://admin:secret@10.0.0.5/stream1")
    assert isinstance(s, StreamSource) and "secret" not in s.name and s.live
    assert isinstance(open_source("videotestsrc ! videoconvert ! appsink"), GStreamerSource)
    assert isinstance(open_source(tmp_path), ImageFolderSource)
    v = open_source(clips["square"])
    assert isinstance(v, VideoFileSource) and not v.live
    assert open_source(clips["square"], realtime=True).live
    img = tmp_path / "one.png"
    cv2.imwrite(str(img), demo_image(1, (50, 60)))
    assert isinstance(open_source(str(img)), ImageFolderSource)
    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        open_source(tmp_path / "missing.mp4")
    with pytest.raises(ValueError, match="unsupported URL scheme"):
        open_source("ftp://host/x.mp4")
    with pytest.raises(SourceOpenError, match="camera 97: cannot open"):
        CameraSource(97).open()
    if not gstreamer_available():
        with pytest.raises(SourceOpenError, match="no GStreamer support"):
            open_source("videotestsrc ! appsink").open()
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("hello")
    with pytest.raises(SourceOpenError, match="cannot open as a video"):
        VideoFileSource(not_video).open()


def test_image_folder_is_sorted_and_skips_non_images(tmp_path):
    for name, size in (("img10.png", (40, 50)), ("img2.jpg", (30, 20)), ("img1.png", (60, 30))):
        cv2.imwrite(str(tmp_path / name), demo_image(len(name), size))
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    (tmp_path / "sub").mkdir()
    events: list[str] = []
    src = ImageFolderSource(tmp_path, fps=5.0, on_event=events.append).open()
    frames = list(src)
    assert [f.name for f in frames] == ["img1.png", "img2.jpg", "img10.png"]
    assert [f.image.shape[:2] for f in frames] == [(60, 30), (30, 20), (40, 50)]
    assert [f.timestamp for f in frames] == [0.0, 0.2, 0.4]
    assert src.unreadable == ["broken.png"] and {"notes.txt", "sub/"} <= set(src.skipped)
    assert any("skipping 2 non-image entries" in e for e in events) and any("broken.png" in e for e in events)
    with pytest.raises(SourceOpenError, match="no images"):
        ImageFolderSource(tmp_path / "sub").open()


@pytest.mark.parametrize("native", [False, True])
def test_overlay_blends_exactly_the_mask_pixels(native):
    from maskrt.runtime.video import class_colour
    from maskrt.runtime.video.overlay import native_overlay_available

    if native and not native_overlay_available():
        pytest.skip("maskrt._core (native core) is not built")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (90, 120, 3), np.uint8)
    masks = rng.random((3, 28, 28)).astype(np.float32)
    # given in ascending score order: drawing priority must follow the score, not the order
    dets = Detections(np.array([[50.5, 30.2, 119, 89], [10, 5, 70, 60], [-20, 40, 30, 100]], np.float32),
                      np.array([0.6, 0.9, 0.3], np.float32), np.array([2, 1, 3], np.int32), masks, (90, 120),
                      ("bg", "a", "b", "c"))
    out = draw_detections(image, dets, alpha=0.3, draw_boxes=False, draw_labels=False, native=native)

    # independent: full-size bitmaps; the best-scoring covering instance colours a pixel, blended once
    bitmaps = dets.bitmaps()
    a = int(np.rint(0.3 * 256))
    expect = image.astype(np.int64)
    done = np.zeros((90, 120), bool)
    for i in (1, 0, 2):
        sel = bitmaps[i] & ~done
        c = np.array(class_colour(int(dets.class_ids[i])), np.int64)
        expect[sel] = (expect[sel] * (256 - a) + c * a + 128) >> 8
        done |= sel
    if native:  # float64 paste: may differ only where a probability is within ~1e-6 of 0.5
        assert (np.abs(out.astype(np.int64) - expect).max(-1) > 0).mean() < 1e-3
    else:
        np.testing.assert_array_equal(out, expect)
    np.testing.assert_array_equal(out[~bitmaps.any(0)], image[~bitmaps.any(0)])

    # box outline: columns floor(x1)..ceil(x2)-1, rows likewise, 1 px (90x120 image), best on top
    one = Detections(np.array([[10.2, 5.7, 70.0, 60.3]], np.float32), np.array([0.9], np.float32),
                     np.array([1], np.int32), np.zeros((1, 28, 28), np.float32), (90, 120), ("bg", "a"))
    boxed = draw_detections(image, one, alpha=0.5, draw_labels=False, native=native)
    c = np.array(class_colour(1), np.uint8)
    ring = np.zeros((90, 120), bool)
    ring[5, 10:70] = ring[60, 10:70] = ring[5:61, 10] = ring[5:61, 69] = True
    assert (boxed[ring] == c).all() and np.array_equal(boxed[~ring], image[~ring])

    assert np.array_equal(draw_detections(image, dets.empty((90, 120), 28), native=native), image)
    with pytest.raises(ValueError, match="detections are for"):
        draw_detections(image[:50], dets, native=native)


@pytest.mark.parametrize("native", [False, True])
def test_tracked_detections_are_drawn_in_their_track_colour(native):
    from maskrt.runtime.video import class_colour, track_colour
    from maskrt.runtime.video.overlay import UNTRACKED_COLOUR, native_overlay_available

    if native and not native_overlay_available():
        pytest.skip("maskrt._core (native core) is not built")
    image = np.full((90, 120, 3), 100, np.uint8)
    masks = np.ones((2, 28, 28), np.float32)
    dets = Detections(np.array([[5, 5, 40, 40], [60, 40, 110, 85]], np.float32), np.array([0.9, 0.8], np.float32),
                      np.array([1, 1], np.int32), masks, (90, 120), ("bg", "a"), np.array([7, -1]))
    ring_px = (5, 20)  # on box 0's outline
    out = draw_detections(image, dets, alpha=0.5, draw_labels=False, native=native)
    assert tuple(int(v) for v in out[ring_px]) == track_colour(7) != class_colour(1)
    assert tuple(int(v) for v in out[40, 80]) == UNTRACKED_COLOUR  # the outline of the untracked one
    ids = [track_colour(i) for i in range(1, 40)]
    assert len(set(ids)) == len(ids) and track_colour(7) == track_colour(7)
    # the same id keeps its colour whatever the class and the order of the detections
    flipped = Detections(dets.boxes[::-1].copy(), dets.scores[::-1].copy(), np.array([3, 2], np.int32), masks,
                         (90, 120), ("bg", "a", "b", "c"), np.array([-1, 7]))
    out2 = draw_detections(image, flipped, alpha=0.5, draw_labels=False, native=native)
    assert tuple(int(v) for v in out2[ring_px]) == track_colour(7)


def test_frame_record_is_the_same_with_and_without_the_native_core(predictor, monkeypatch):
    from maskrt.runtime import native_core
    from maskrt.runtime.video import sinks

    frame = Frame(cv2.resize(demo_image(8, (240, 400)), (600, 360)), 4, 0.16, name="x.png")
    d = predictor.predict(frame.image)
    assert len(d) > 0
    fast = sinks.frame_record(frame, d)
    slow = sinks.frame_record(frame, d, native=False)  # Detections.to_json (pycocotools)
    assert fast == slow and slow == {"frame": 4, "timestamp": 0.16, "file": "x.png", **d.to_json()}
    assert sinks.frame_record(frame, d, with_masks=False).get("masks") is None
    # no silent fallback: without the core the native paths fail and say so; native=False still works
    monkeypatch.setattr(native_core, "_core", None)
    with pytest.raises(native_core.NativeCoreUnavailableError, match="maskrt._core is not available"):
        sinks.frame_record(frame, d)
    with pytest.raises(native_core.NativeCoreUnavailableError):
        draw_detections(frame.image, d)
    assert sinks.frame_record(frame, d, native=False) == slow


# ============================================================================ command line
def _cli(*args):
    """`maskrt <args>` when runtime/cli.py wires the command, else this module's own entry point."""
    from maskrt.runtime import cli

    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    module = "maskrt" if args[0] in sub.choices else "maskrt.runtime.video_cli"
    r = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, timeout=120)
    # decoded by hand: text=True would turn the status line's carriage returns into newlines
    return subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode(), r.stderr.decode())


def test_video_command_end_to_end(onnx_model, clips, tmp_path):
    jsonl, saved = tmp_path / "v.jsonl", tmp_path / "v.mp4"
    r = _cli("video", "--model", str(onnx_model), "--source", str(clips["wide"]), "--jsonl", str(jsonl),
             "--save", str(saved), "--threads", "2", "--batch", "2", "--status", "on")
    assert r.returncode == 0, r.stderr
    for row in ("capture", "preprocess", "infer", "postprocess", "sink", "end-to-end"):
        assert any(line.startswith(row) for line in r.stdout.splitlines()), r.stdout
    assert "frames: 7 in, 7 out, 0 dropped" in r.stdout and "ended: end of file" in r.stdout
    assert "\r" in r.stderr and "fps" in r.stderr  # the live status line
    lines = read_jsonl(jsonl)
    assert [x["frame"] for x in lines] == list(range(7)) and all(x["image_size"] == [240, 400] for x in lines)
    assert all(len(x["track_ids"]) == len(x["scores"]) for x in lines)  # tracking is on by default
    out = decode_all(saved)
    assert len(out) == 7 and out[0].shape == (240, 400, 3)

    assert "tracking on" in r.stdout and "tracks: " in r.stdout

    r = _cli("video", "--model", str(onnx_model), "--source", str(tmp_path / "nope.mp4"))
    assert r.returncode == 1 and "no such file or directory" in r.stderr and "Traceback" not in r.stderr


def test_track_flags_parse_to_a_tracker_config_or_none():
    from maskrt.runtime.video_cli import add_video_arguments, tracker_config

    p = argparse.ArgumentParser()
    add_video_arguments(p)
    base = ["--model", "m.onnx", "--source", "x.mp4"]
    assert tracker_config(p.parse_args(base)) is not None  # on by default
    assert tracker_config(p.parse_args([*base, "--no-track"])) is None
    cfg = tracker_config(p.parse_args([*base, "--track-max-lost", "7", "--track-mask-weight", "0"]))
    assert (cfg.max_lost, cfg.mask_weight) == (7, 0.0)
    with pytest.raises(ValueError, match="mask_weight must be a number in"):
        tracker_config(p.parse_args([*base, "--track-mask-weight", "2"]))


def test_infer_command_on_a_folder(onnx_model, tmp_path):
    src = tmp_path / "imgs"
    src.mkdir()
    sizes = {"b.png": (200, 300), "a.jpg": (320, 320), "c.png": (150, 100)}
    for name, size in sizes.items():
        cv2.imwrite(str(src / name), demo_image(len(name) + size[0], size))
    (src / "readme.txt").write_text("not an image")
    out = tmp_path / "out"
    r = _cli("infer", "--model", str(onnx_model), str(src), "--out-dir", str(out), "--threads", "2")
    assert r.returncode == 0, r.stderr
    assert "readme.txt" in r.stderr and "3 image(s)" in r.stdout
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "a.png", "b.json", "b.png", "c.json", "c.png"]
    for name, (h, w) in sizes.items():
        stem = Path(name).stem
        rec = json.loads((out / f"{stem}.json").read_text())
        assert rec["file"] == name and rec["image_size"] == [h, w]
        assert len(rec["boxes"]) == len(rec["scores"]) == len(rec["masks"]) == len(rec["names"])
        for m in rec["masks"]:
            assert mask_utils.decode({"size": m["size"], "counts": m["counts"].encode()}).shape == (h, w)
        png = cv2.imread(str(out / f"{stem}.png"))
        assert png.shape == (h, w, 3)
    # one image, through this module's entry point in a process that must not load torch or onnx
    one = tmp_path / "one"
    shutil.copy(src / "b.png", tmp_path / "b.png")
    code = ("import sys; from maskrt.runtime.video_cli import main; "
            f"rc = main(['infer', '--model', {str(onnx_model)!r}, {str(tmp_path / 'b.png')!r}, '--out-dir', "
            f"{str(one)!r}, '--no-overlay']); "
            "bad = [m for m in ('torch', 'onnx') if m in sys.modules]; print('loaded:', bad); "
            "sys.exit(rc or bool(bad))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "loaded: []" in r.stdout
    assert sorted(p.name for p in one.iterdir()) == ["b.json"]
