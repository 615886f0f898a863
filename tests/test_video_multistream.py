"""Many sources through one batched pipeline (runtime/video/multistream.py).

Structural tests use the fake backend of test_video (each result names the frame it came from:
score = top-left pixel / 255) so that every stream's frames are checked one by one: three
generated video files and one simulated live camera faster than inference, a source that dies
mid-run, a source that never delivers. One test runs the real embedded model (ONNX Runtime)
and compares each stream's results with the frames run one by one. No test asserts a time.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from test_video import MemorySource, RecordingSink, fake_predictor, read_jsonl, tag_of, write_video

from maskrt.runtime.tracking import Tracker
from maskrt.runtime.video import (
    JsonlSink,
    MultiStreamPipeline,
    PipelineError,
    Sink,
    Source,
    SourceError,
)


def stream_value(s: int, i: int) -> int:
    return 30 + 60 * s + 3 * i


def uniform_clip(path: Path, s: int, n: int) -> Path:
    """n frames 320x320 of one grey level each (stream_value): the fake backend's score names them."""
    return write_video(path, [np.full((320, 320, 3), stream_value(s, i), np.uint8) for i in range(n)])


class BlockingSource(Source):
    """A live source that delivers nothing until ``release`` is set (then ends): a dead camera."""

    live = True

    def __init__(self, release: threading.Event, limit_s: float = 20.0) -> None:
        super().__init__("dead camera")
        self.release, self.limit_s = release, limit_s

    def _open(self) -> None:
        pass

    def _read(self):
        self.release.wait(self.limit_s)
        return self._end("released")

    def _close(self) -> None:
        pass


def low_score_tracker() -> Tracker:
    """The fake backend's scores are grey levels / 255 (0.1 .. 0.7): track them all."""
    return Tracker(high_score=0.05, low_score=0.0, new_track_score=0.05)


class FailingSink(Sink):
    def write(self, result) -> None:
        if result.frame.index == 2:
            raise OSError("disk full (simulated)")


def test_three_files_and_a_fast_live_camera_every_frame_accounted_for(tmp_path):
    counts = (9, 12, 7)
    paths = [uniform_clip(tmp_path / f"f{s}.avi", s, n) for s, n in enumerate(counts)]
    sinks = [RecordingSink() for _ in range(4)]
    files_done = lambda: all(len(sinks[s].indices) >= n for s, n in enumerate(counts))  # noqa: E731
    live = MemorySource(fps=400.0, live=True, until=files_done)
    jsonl = tmp_path / "s1.jsonl"
    ended: list[tuple[int, str, bool]] = []
    pipe = MultiStreamPipeline([*paths, live], fake_predictor(0.02), [[sinks[0]], [JsonlSink(jsonl), sinks[1]],
                                                                       [sinks[2]], [sinks[3]]],
                               batch=4, queue_size=2, trackers=[low_score_tracker() for _ in range(4)],
                               on_stream_end=lambda i, name, why, failed: ended.append((i, why, failed)))
    stats = pipe.run()

    for s, n in enumerate(counts):  # files: every frame, in order, the right one, nothing dropped
        st = stats.streams[s]
        assert (st.frames_in, st.frames_out, st.drops, st.discarded) == (n, n, 0, 0)
        assert sinks[s].indices == list(range(n)) and sinks[s].closed
        assert [tag_of(d) for d in sinks[s].dets] == pytest.approx([stream_value(s, i) for i in range(n)], abs=2)
        assert st.end_reason == "end of file" and not st.failed
    lines = read_jsonl(jsonl)
    assert [r["frame"] for r in lines] == list(range(counts[1])) and all("track_ids" in r for r in lines)

    st = stats.streams[3]  # the live camera: drops counted, everything else written
    assert st.live and st.drops > 0 and st.frames_out == len(sinks[3].indices) and st.discarded == 0
    assert st.frames_in == st.frames_out + st.drops == len(live.read_times)
    assert sinks[3].indices == sorted(set(sinks[3].indices))
    assert stats.mean_batch > 1.5, "frames of several streams share an inference"
    assert sorted(i for i, _, _ in ended) == [0, 1, 2, 3]
    # the fake detection sits still: each stream's tracker gives it one id
    for s in range(4):
        ids = {int(d.track_ids[0]) for d in sinks[s].dets[2:]}
        assert ids == {1}, (s, ids)
    text = stats.table()
    assert all(f"[{s}]" in text for s in range(4)) and stats.status_line().count("\n") == 4


@pytest.mark.parametrize("error", [SourceError("camera unplugged"), RuntimeError("camera unplugged")])
def test_a_source_that_dies_mid_run_ends_its_own_stream_and_the_others_go_on(tmp_path, error):
    paths = [uniform_clip(tmp_path / f"f{s}.avi", s, 10) for s in range(2)]
    dying = MemorySource(fail_at=4, error=error, live=True, fps=100.0)
    sinks = [RecordingSink() for _ in range(3)]
    messages: list[str] = []
    stats = MultiStreamPipeline([paths[0], dying, paths[1]], fake_predictor(0.005), [[s] for s in sinks], batch=3,
                                on_stream_end=lambda i, name, why, failed: messages.append(f"{i} {why}")).run()
    d = stats.streams[1]
    assert d.failed and "camera unplugged" in d.end_reason and d.frames_in == 4
    assert d.frames_out + d.drops == 4 and sinks[1].closed
    assert any(m.startswith("1 ") and "camera unplugged" in m for m in messages)
    for s in (0, 2):
        assert stats.streams[s].frames_out == 10 and sinks[s].indices == list(range(10))
    assert stats.error is None and "FAILED" in stats.table()


def test_a_dead_stream_never_stalls_the_others(tmp_path):
    release = threading.Event()
    path = uniform_clip(tmp_path / "f.avi", 0, 15)
    sink = RecordingSink()
    order: list[str] = []

    def on_end(i, name, why, failed):
        order.append(name)
        if i == 0:
            release.set()  # only now does the dead camera give up

    stats = MultiStreamPipeline([path, BlockingSource(release)], fake_predictor(0.005), [[sink], []],
                                on_stream_end=on_end).run()
    assert order == [str(path), "dead camera"]
    assert sink.indices == list(range(15)) and stats.streams[1].frames_in == 0
    assert stats.streams[1].end_reason == "released"


def test_a_failing_sink_aborts_everything_with_the_stage_named(tmp_path):
    paths = [uniform_clip(tmp_path / f"f{s}.avi", s, 8) for s in range(2)]
    rec = RecordingSink()
    with pytest.raises(PipelineError, match="sink-1 stage failed: OSError: disk full") as e:
        MultiStreamPipeline(paths, fake_predictor(), [[rec], [FailingSink()]], batch=2).run()
    assert rec.closed and e.value.stats is not None
    assert not [t for t in threading.enumerate() if t.name.startswith("maskrt-") and t.is_alive()]


def test_stop_ends_every_stream():
    srcs = [MemorySource(fps=200.0, live=True) for _ in range(2)]
    pipe = MultiStreamPipeline(srcs, fake_predictor(0.01), [[RecordingSink()], [RecordingSink()]], batch=2)
    threading.Timer(0.3, pipe.stop).start()
    stats = pipe.run()
    assert stats.stopped and all(s.end_reason == "stopped" for s in stats.streams)
    assert all(s.frames_in == s.frames_out + s.drops and s.frames_out > 0 for s in stats.streams)


@pytest.mark.parametrize("kwargs, match", [
    ({"sources": []}, "non-empty list"),
    ({"sinks": [[]]}, "one list per source"),
    ({"trackers": [Tracker()]}, "one per source"),
    ({"batch": 0}, "batch must be a positive int"),
])
def test_bad_arguments(tmp_path, kwargs, match):
    path = uniform_clip(tmp_path / "f.avi", 0, 2)
    args = {"sources": [path, path], "predictor": fake_predictor(), **kwargs}
    with pytest.raises(ValueError, match=match):
        MultiStreamPipeline(**args)
    t = Tracker()
    with pytest.raises(ValueError, match="its own tracker"):
        MultiStreamPipeline([path, path], fake_predictor(), trackers=[t, t])


def test_two_files_through_the_real_model_match_each_stream_run_alone(predictor, tmp_path):
    from test_video import decode_all, moving_scene

    paths = [write_video(tmp_path / f"c{s}.avi", moving_scene(11 + s, (240, 320), 5)) for s in range(2)]
    sinks = [RecordingSink() for _ in paths]
    stats = MultiStreamPipeline(paths, predictor, [[s] for s in sinks], batch=2,
                                trackers=[Tracker(), Tracker()]).run()
    assert stats.batches < 10  # 10 frames in fewer inferences: batched across streams
    for s, path in enumerate(paths):
        frames = decode_all(path)
        assert sinks[s].indices == list(range(len(frames)))
        for frame, got in zip(frames, sinks[s].dets, strict=True):
            ref = predictor.predict(frame)
            np.testing.assert_allclose(got.boxes, ref.boxes, atol=0.006)
            np.testing.assert_allclose(got.scores, ref.scores, atol=6e-6)
            assert got.track_ids is not None and len(got.track_ids) == len(ref)


# ============================================================================ command line
def test_video_command_with_two_sources_and_a_sources_file(onnx_model, tmp_path, capsys):
    # in this process (the subprocess path of the command is test_video's): maskrt.runtime.video_cli.main
    from test_video import moving_scene

    from maskrt.runtime.video_cli import main

    paths = [write_video(tmp_path / f"c{s}.avi", moving_scene(21 + s, (240, 320), 4 + s)) for s in range(2)]
    listing = tmp_path / "cams.txt"
    listing.write_text(f"# two recorded cameras\n{paths[1]}\n\n")
    rc = main(["video", "--model", str(onnx_model), "--source", str(paths[0]), "--sources", str(listing),
               "--jsonl", str(tmp_path / "out.jsonl"), "--batch", "2", "--threads", "2", "--status", "on",
               "--track-max-lost", "10"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "2 streams" in out and "tracking on" in out
    for s in range(2):
        lines = read_jsonl(tmp_path / f"out_{s}.jsonl")
        assert [x["frame"] for x in lines] == list(range(4 + s))
        assert all(len(x["track_ids"]) == len(x["scores"]) for x in lines)
        row = next(line for line in out.splitlines() if line.startswith(f"[{s}] "))
        assert f" {4 + s} " in row and "end of file" in row

    rc = main(["video", "--model", str(onnx_model), "--source", str(paths[0]), "--track-min-hits", "0"])
    err = capsys.readouterr().err
    assert rc == 1 and "min_hits must be an integer >= 1" in err and "Traceback" not in err
    rc = main(["video", "--model", str(onnx_model), "--source", str(paths[0]), "--source", str(paths[1]), "--show"])
    assert rc == 1 and "--show takes one source" in capsys.readouterr().err


def test_console_rewrites_a_status_block_in_place():
    import io

    from maskrt.runtime.video_cli import _Console

    buf = io.StringIO()
    c = _Console("maskrt video", buf, True)
    c.status("total\n[0] a\n[1] b")
    c.status("total 2\n[0] a 2\n[1] b 2")
    c.message("stream 1 ended")
    c.status("one line")
    c.end_status()
    text = buf.getvalue()
    assert "\x1b[2F" in text  # back to the first line of the 3-line block
    assert text.index("maskrt video: stream 1 ended\n") > text.index("[1] b 2")
    assert text.endswith("one line\n")
