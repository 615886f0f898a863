"""The soak (maskrt.benchmarks.soak) at CI size: the same code path as the 10,000-frame run, a few
hundred frames. Asserts the invariants (memory, threads, file handles, every frame accounted
for), never a time."""

from __future__ import annotations

import importlib

import pytest

FRAMES = 160


@pytest.fixture(scope="module")
def soak():
    return importlib.import_module("maskrt.benchmarks.soak")


def test_soak_invariants_hold(soak, onnx_model, tmp_path):
    # the session's export of the embedded checkpoint (the soak's own export step is export_model)
    r = soak.run_soak(FRAMES, model=onnx_model, workdir=tmp_path, warmup=40, sample_s=0.25)
    a = r["accounting"]
    # every frame accounted for: read, through every stage, into both sinks, in order
    assert (a["frames_in"], a["frames_out"], a["drops"], a["discarded"]) == (FRAMES, FRAMES, 0, 0), a
    assert a["sink_frames"] == a["jsonl_records"] == FRAMES and a["jsonl_in_order"] and a["sink_out_of_order"] == 0
    assert a["error"] is None and a["end_reason"] == "end of soak"
    assert r["clip"]["loops"] == -(-FRAMES // soak.CLIP_FRAMES)  # the clip was closed and reopened each loop
    assert a["detections"] > 0  # the real model ran
    # no leaks
    assert r["python_threads"]["leaked"] == [] and r["python_threads"]["pipeline_leaked"] == []
    assert r["os_threads"]["after"] <= r["os_threads"]["before"], r["os_threads"]
    assert r["fds"]["after"] <= r["fds"]["before"], r["fds"]
    assert r["rss"]["samples"] >= 2 and r["rss"]["growth_pct"] < 5.0, r["rss"]
    assert r["checks"] == {"rss": True, "threads": True, "fds": True, "frames": True} and r["passed"]
    assert "PASSED" in soak.summary(r)


def test_soak_source_loops_and_counts(soak, tmp_path):
    from maskrt.runtime.video import Frame

    clip = soak.write_clip(tmp_path / "c.avi", n=5, size=(48, 64))
    src = soak.LoopingFileSource(clip, 12).open()
    frames = list(src)
    src.close()
    assert [f.index for f in frames] == list(range(12)) and all(isinstance(f, Frame) for f in frames)
    assert src.loops == 3 and src.end_reason == "end of soak" and not src.failed
    assert all(f.image.shape == (48, 64, 3) for f in frames)
    with pytest.raises(ValueError, match="frames must be"):
        soak.run_soak(1)
