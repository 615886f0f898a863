"""Bad input and faults at every entry point (issue 8, part 1); the catalogue is docs/bad_input.md.

Each case gets a clear error or a documented recovery, nothing already written is lost, and the
native code never crashes. Cases already covered elsewhere (test_ort_backend, test_predictor,
test_video, test_train, test_data, test_model, test_build_engine, test_trt_backend,
test_native_core) are listed in the catalogue, not repeated here. Sections follow the entry
points: Python API (frames, backends, artefacts), native core, video, data and training, CLI.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from test_video import (  # the video tests' simulated sources, sinks and fake backend
    FakeBackend,
    FlakyCamera,
    MemorySource,
    RecordingSink,
    decode_all,
    fake_predictor,
    moving_scene,
    pipeline_threads,
    read_jsonl,
    write_video,
)

from maskrt.runtime.backends.base import ContractError, ModelLoadError, validate_outputs
from maskrt.runtime.config import preset
from maskrt.runtime.letterbox import as_bgr
from maskrt.runtime.predictor import Predictor
from maskrt.runtime.video import JsonlSink, PipelineError, VideoFileSource, VideoPipeline, open_source
from maskrt.runtime.video.sources import SourceOpenError
from maskrt.train.demo import DEFAULT_CHECKPOINT, demo_image
from maskrt.train.model import checkpoint as ckpt_mod
from maskrt.train.model.checkpoint import load_checkpoint, load_torchvision_weights, read_checkpoint, save_checkpoint
from maskrt.train.model.mask_rcnn import MaskRCNN

CFG = preset("mnv3-lite")


# ============================================================================ shared fixtures and helpers
def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "maskrt", *args], capture_output=True, text=True, timeout=timeout)


def _one_line_error(r: subprocess.CompletedProcess, command: str) -> str:
    """The CLI contract: exit 1, exactly one line `maskrt <command>: error: ...` on stderr (other
    messages, e.g. notes or FFMPEG's log, aside), no traceback. Returns the line."""
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith(f"maskrt {command}: error: ")]
    assert len(lines) == 1, r.stderr
    return lines[0]


class _Payload:
    """Pickles as a call of ``os.mkdir(marker)``: harmless, and visible if it ever ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _evil_checkpoint(path: Path, marker: Path, *, training: bool = False) -> Path:
    """A file that looks like a maskrt checkpoint but carries a code-executing pickle payload."""
    model, payload = load_checkpoint(DEFAULT_CHECKPOINT)
    data = {"format": "maskrt.checkpoint", "format_version": 1, "config": payload["config"].to_json(),
            "model": model.state_dict(), "extra": _Payload(marker)}
    if training:
        data.update(iteration=1, train_config="{}", optimizer={}, rng=[], data_order={})
    torch.save(data, path)
    return path


# ============================================================================ Python API: frames into Predictor
def test_greyscale_and_bgra_frames_are_converted_as_documented(predictor):
    bgr = demo_image(11, (240, 320))
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    as_bgr_grey = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    ref_grey = predictor.predict(as_bgr_grey)
    for frame in (grey, grey[:, :, None], np.ascontiguousarray(grey[:, ::-1])[:, ::-1]):  # 2-D, [h, w, 1], strided
        d = predictor.predict(frame)  # one frame -> one Detections (a 2-D frame is not a batch of rows)
        assert d.image_size == (240, 320)
        np.testing.assert_array_equal(d.boxes, ref_grey.boxes)
        np.testing.assert_array_equal(d.class_ids, ref_grey.class_ids)
    bgra = cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)
    bgra[..., 3] = np.arange(320, dtype=np.uint8)[None, :]  # alpha is ignored, whatever it holds
    d, ref = predictor.predict(bgra), predictor.predict(bgr)
    np.testing.assert_array_equal(d.boxes, ref.boxes)
    np.testing.assert_array_equal(d.scores, ref.scores)
    # mixed list: each frame converted on its own
    dets = predictor.predict([grey, bgra, bgr])
    assert [len(x) for x in dets] == [len(ref_grey), len(ref), len(ref)]
    assert as_bgr(bgr) is bgr  # a BGR frame is not copied


@pytest.mark.parametrize(("frame", "words"), [
    (np.zeros((40, 60, 3), np.uint16), ["uint16", ">> 8", "convertScaleAbs"]),
    (np.zeros((40, 60), np.uint16), ["uint16", "8 bits"]),
    (np.full((40, 60, 3), 0.5, np.float32), ["float32", "np.clip(img * 255"]),
    (np.full((40, 60, 3), np.nan, np.float64), ["float64", "NaN must be replaced"]),
    (np.zeros((40, 60, 3), np.int32), ["int32", "8 bits"]),
    (np.zeros((40, 60, 3), bool), ["bool", "uint8"]),
    (np.zeros((40, 60, 2), np.uint8), ["[40, 60, 2]", "[h, w, 3]"]),
    (np.zeros((0, 60, 3), np.uint8), ["empty (0 x 60)"]),
    (np.zeros((40, 0), np.uint8), ["empty (40 x 0)"]),
    (np.zeros((40, 0, 4), np.uint8), ["empty (40 x 0)"]),
    ([[1, 2, 3]], ["numpy array", "list"]),
])
def test_frames_that_cannot_be_converted_are_refused_with_how_to(predictor, frame, words):
    with pytest.raises(ValueError) as e:
        predictor.predict(frame)
    for w in words:
        assert w in str(e.value), str(e.value)
    with pytest.raises(ValueError, match="expected a numpy array"):
        predictor.predict(None)


def test_tiny_huge_and_extreme_aspect_frames(predictor):
    # 1x1, 1 pixel wide/high over 8000, and 8000x8000 (np.zeros: the kernel maps untouched pages
    # to the zero page, so this costs little memory); detections stay inside the frame
    for shape in ((1, 1, 3), (8000, 2, 3), (2, 8000, 3), (8000, 8000, 3)):
        frame = np.zeros(shape, np.uint8) if shape[0] == 8000 == shape[1] else np.full(shape, 90, np.uint8)
        d = predictor.predict(frame)
        h, w = shape[:2]
        assert d.image_size == (h, w)
        assert np.isfinite(d.boxes).all()
        assert (d.boxes[:, [0, 2]] >= 0).all() and (d.boxes[:, [0, 2]] <= w).all()
        assert (d.boxes[:, [1, 3]] >= 0).all() and (d.boxes[:, [1, 3]] <= h).all()
        if h * w < 10**6:
            assert d.bitmaps().shape == (len(d), h, w)


# ============================================================================ Python API: backends
def test_float_nan_and_inf_batches_never_reach_a_backend(predictor):
    batch = np.zeros((1, 320, 320, 3), np.float32)
    batch[0, 0, 0, 0] = np.nan
    batch[0, 1, 1, 1] = np.inf
    with pytest.raises(ValueError, match="must be uint8"):
        predictor.backend.infer(batch)
    from maskrt.runtime.backends.torch_backend import TorchBackend

    with TorchBackend(DEFAULT_CHECKPOINT) as t:
        with pytest.raises(ValueError, match="must be uint8"):
            t.infer(batch)


def _outputs(b: int = 2, n: tuple[int, ...] = (2, 1)) -> dict[str, np.ndarray]:
    k, m = CFG.detections_per_img, CFG.mask_resolution
    return {"num_detections": np.array(n, np.int32), "boxes": np.zeros((b, k, 4), np.float32),
            "scores": np.zeros((b, k), np.float32), "classes": np.zeros((b, k), np.int32),
            "masks": np.zeros((b, k, m, m), np.float32)}


@pytest.mark.parametrize("name", ["boxes", "scores", "masks"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_detections_from_a_backend_are_a_contract_error(name, value):
    kw = {"batch": 2, "max_detections": CFG.detections_per_img, "mask_resolution": CFG.mask_resolution}
    out = _outputs()
    out[name][1, 3] = value  # a padding row of image 1 (count 1): not looked at
    validate_outputs(out, **kw)
    out[name][1, 0] = value  # a detection of image 1
    with pytest.raises(ContractError, match=rf"'{name}' has NaN or inf in the detections of image\(s\) \[1\]"):
        validate_outputs(out, **kw)


class _NanBackend(FakeBackend):
    """Real detections until frame ``at``, then a NaN box (a broken engine)."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def _infer(self, images):
        out = super()._infer(images)
        if self.calls > self.at:
            out["boxes"][:, 0, 0] = np.nan
        return out


def test_non_finite_outputs_stop_the_pipeline_at_the_infer_stage_keeping_what_was_written(tmp_path):
    jsonl = tmp_path / "nan.jsonl"
    before = pipeline_threads()
    pred = Predictor(_NanBackend(at=5)).__enter__()
    with pytest.raises(PipelineError, match="infer stage failed: ContractError: output 'boxes' has NaN") as e:
        VideoPipeline(MemorySource(40), pred, [JsonlSink(jsonl)], queue_size=2).run()
    assert e.value.stage == "infer" and pipeline_threads() == before
    # whole lines, valid JSON (no NaN), in order, never the bad frame; frames still in flight when
    # the pipeline aborts are not written (the abort drops them)
    lines = read_jsonl(jsonl)
    assert [r["frame"] for r in lines] == list(range(len(lines))) and len(lines) <= 5


# ============================================================================ Python API: artefacts
@pytest.mark.parametrize("fraction", [0.0, 0.001, 0.3, 0.999])
def test_truncated_checkpoint_at_every_entry_point(tmp_path, fraction):
    data = Path(DEFAULT_CHECKPOINT).read_bytes()
    bad = tmp_path / "cut.pt"
    bad.write_bytes(data[:int(len(data) * fraction)])
    with pytest.raises(ValueError, match=r"cut\.pt: not a loadable checkpoint"):
        read_checkpoint(bad)
    with pytest.raises(ModelLoadError, match="not a loadable checkpoint"):
        Predictor.open(bad)
    model = MaskRCNN(CFG)
    with pytest.raises(ValueError, match="not a loadable state dict"):
        load_torchvision_weights(model, bad)


def test_pickle_payload_is_refused_everywhere_and_never_runs(tmp_path):
    marker = tmp_path / "PAYLOAD_RAN"
    evil = _evil_checkpoint(tmp_path / "evil.pt", marker)
    words = r"evil\.pt: refused: the file's pickle references posix\.mkdir.*weights_only=True.*never runs code"
    with pytest.raises(ValueError, match=words):
        read_checkpoint(evil)
    with pytest.raises(ValueError, match=words):
        load_checkpoint(evil)
    with pytest.raises(ModelLoadError, match=words):
        Predictor.open(evil)
    with pytest.raises(ValueError, match=words):
        load_torchvision_weights(MaskRCNN(CFG), evil)
    assert not marker.exists()
    # the payload is real: loading without weights_only would have run it (checked in a child
    # process, which is the one that creates the marker)
    code = f"import torch; torch.load({str(evil)!r}, weights_only=False)"
    subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert marker.is_dir()


def test_engine_from_another_tensorrt_or_gpu_is_refused_before_deserialising(tmp_path):
    """The sidecar check (runtime/engine_meta.py) needs no TensorRT: every mismatch is named."""
    from test_trt_backend import make_meta

    from maskrt.runtime.engine_meta import EngineMismatch, Environment, check_compatible
    from maskrt.runtime.plugin_table import plugin_versions

    meta = make_meta(b"engine", plugins=plugin_versions(), plugin_library="libmaskrt_plugins.so")
    here = Environment("10.8.0", "Other GPU", "9.0", {k: v + ".1" for k, v in plugin_versions().items()})
    with pytest.raises(EngineMismatch) as e:
        check_compatible(meta, here)
    msg = str(e.value)
    for words in ("TensorRT 10.3.0 (engine) vs 10.8.0 (here)", "compute capability 8.7 (engine) vs 9.0",
                  "maskrt build"):
        assert words in msg, msg


# ============================================================================ native core: odd frames never crash it
@pytest.mark.parametrize("image", [
    np.zeros((30, 40), np.uint8), np.zeros((30, 40, 4), np.uint8), np.zeros((30, 40, 3), np.uint16),
    np.full((30, 40, 3), np.nan, np.float32), np.zeros((0, 40, 3), np.uint8), np.zeros((30, 40, 3), np.uint8)[:, ::-2],
])
def test_native_letterbox_refuses_odd_frames_and_as_bgr_makes_them_usable(image):
    from maskrt.runtime import native_core as nc

    # the native core is part of every install (Predictor.prepare uses it): missing is a failure, not a skip
    assert nc.NATIVE_AVAILABLE, "maskrt._core (native core) is not built"
    with pytest.raises(ValueError, match="image"):
        nc.letterbox(image, (32, 32))
    try:
        usable = as_bgr(image)
    except ValueError:
        return  # refused with a message (16-bit, float, empty); tested above
    usable = np.ascontiguousarray(usable)
    lb = nc.letterbox(usable, (32, 32))
    assert lb.image.shape == (32, 32, 3)


# ============================================================================ video sources and the pipeline
@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad_clips")
    return write_video(d / "c.avi", moving_scene(3, (120, 160), 30))


@pytest.mark.parametrize("damage", ["garbage", "zeros"])
def test_video_corrupt_mid_stream_ends_cleanly_with_every_decoded_frame(clip, tmp_path, damage):
    data = bytearray(clip.read_bytes())
    n = len(data)
    junk = np.random.default_rng(0).integers(0, 256, n // 8, dtype=np.uint8).tobytes() if damage == "garbage" \
        else bytes(n // 8)
    bad = tmp_path / "bad.avi"
    bad.write_bytes(bytes(data[:n // 2]) + junk + bytes(data[n // 2 + n // 8:]))  # same length, middle damaged
    decodable = len(decode_all(bad))
    assert 0 < decodable < 30
    jsonl = tmp_path / "bad.jsonl"
    stats = VideoPipeline(VideoFileSource(bad), fake_predictor(), [JsonlSink(jsonl)]).run()
    assert stats.error is None and stats.source_failed
    assert stats.frames_in == stats.frames_out == decodable and stats.discarded == 0
    assert f"could not decode frame {decodable} of the 30 expected" in stats.end_reason
    assert [r["frame"] for r in read_jsonl(jsonl)] == list(range(decodable))


@pytest.mark.parametrize("content", ["empty", "mp4_cut", "text"])
def test_video_that_cannot_be_opened_is_a_clear_open_error(tmp_path, content):
    path = tmp_path / "v.mp4"
    if content == "mp4_cut":
        full = write_video(tmp_path / "full.mp4", moving_scene(3, (120, 160), 10))
        path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])  # mp4v: the index (moov) is at the end
    else:
        path.write_bytes(b"" if content == "empty" else b"hello, not a video")
    with pytest.raises(SourceOpenError, match="cannot open as a video"):
        VideoFileSource(path).open()
    with pytest.raises(SourceOpenError, match="cannot open as a video"):
        VideoPipeline(open_source(path), fake_predictor()).run()


class _StallingSource(MemorySource):
    """Delivers ``n_before`` frames, then blocks inside read() until ``release`` is set; with
    ``interruptible`` the wait also ends on interrupt() (the pipeline's stop)."""

    def __init__(self, n_before: int, interruptible: bool) -> None:
        super().__init__(None)
        self.n_before, self.interruptible = n_before, interruptible
        self.release = threading.Event()
        self.stalled = threading.Event()

    def _read(self):
        if self.frames_read == self.n_before:
            self.stalled.set()
            while not self.release.wait(0.01):
                if self.interruptible and self._interrupt.is_set():
                    return self._end("interrupted")
            return self._end("released")
        return super()._read()


def test_stalled_source_stops_cleanly_on_stop(tmp_path):
    src = _StallingSource(6, interruptible=True)
    jsonl = tmp_path / "s.jsonl"
    pipe = VideoPipeline(src, fake_predictor(), [JsonlSink(jsonl)])
    before = pipeline_threads()
    threading.Thread(target=lambda: (src.stalled.wait(10), pipe.stop())).start()
    stats = pipe.run()
    assert stats.stopped and stats.error is None and stats.leaked_threads == []
    assert stats.frames_in == stats.frames_out == 6 and pipeline_threads() == before
    assert [r["frame"] for r in read_jsonl(jsonl)] == list(range(6))


def test_source_stalled_beyond_interrupt_is_abandoned_after_the_join_timeout(tmp_path):
    src = _StallingSource(4, interruptible=False)  # e.g. a driver call that ignores interrupt()
    jsonl = tmp_path / "s.jsonl"
    pipe = VideoPipeline(src, fake_predictor(), [JsonlSink(jsonl)], join_timeout_s=1.0)
    threading.Thread(target=lambda: (src.stalled.wait(10), pipe.stop())).start()
    try:
        stats = pipe.run()  # returns: the stuck capture thread is reported, not waited for forever
        assert stats.leaked_threads == ["maskrt-capture"] and stats.end_reason == "aborted"
        assert stats.frames_out == 4 and [r["frame"] for r in read_jsonl(jsonl)] == list(range(4))
    finally:
        src.release.set()
    deadline = time.monotonic() + 10
    while any(t.name == "maskrt-capture" for t in pipeline_threads()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(t.name == "maskrt-capture" for t in pipeline_threads())


class _OddCamera(FlakyCamera):
    """FlakyCamera whose frames after ``switch_at`` are ``kind``: greyscale, BGRA or 16-bit."""

    def __init__(self, plan, kind: str, switch_at: int, **kw) -> None:
        super().__init__(plan, **kw)
        self.kind, self.switch_at = kind, switch_at

    def _grab(self):
        image = super()._grab()
        if image is None or self.frames_read < self.switch_at:
            return image
        if self.kind == "grey":
            return image[:, :, 0].copy()
        if self.kind == "bgra":
            return cv2.cvtColor(image, cv2.COLOR_BGR2BGRA)
        return image.astype(np.uint16) * 257


@pytest.mark.parametrize("kind", ["grey", "bgra"])
def test_camera_that_disappears_and_comes_back_in_another_format_is_converted(kind):
    # 5 frames, lost, one failed reopen, back with 5 frames in another pixel format, then gone
    cam = _OddCamera([(5, 0), (5, 1)], kind, switch_at=5, max_attempts=2, backoff_initial_s=0.01,
                     on_event=lambda m: None)
    sink = RecordingSink()
    stats = VideoPipeline(cam, fake_predictor(), [sink]).run()
    assert cam.reconnects == 1 and stats.source_failed and "gave up" in stats.end_reason
    assert stats.error is None and stats.frames_in == 10 and stats.frames_out + stats.drops == 10
    assert all(d.image_size == (320, 320) for d in sink.dets)


def test_camera_delivering_16_bit_frames_fails_with_how_to_convert():
    cam = _OddCamera([(6, 0)], "u16", switch_at=3, on_event=lambda m: None)
    sink = RecordingSink()
    before = pipeline_threads()
    with pytest.raises(PipelineError, match=r"capture stage failed: ValueError: flaky camera: a frame: expected "
                                            r"uint8 BGR pixels, got dtype uint16.*>> 8") as e:
        VideoPipeline(cam, fake_predictor(), [sink]).run()
    assert e.value.stats.frames_in == 3 and pipeline_threads() == before and sink.closed


# ============================================================================ data and training
def test_coco_set_with_an_undecodable_image_names_the_file(tmp_path):
    from maskrt.train.data.coco import CocoInstances

    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((16, 16, 3), np.uint8))
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    ann = {"images": [{"id": 1, "file_name": "a.png", "height": 16, "width": 16},
                      {"id": 2, "file_name": "b.png", "height": 16, "width": 16}],
           "annotations": [], "categories": [{"id": 1, "name": "x"}]}
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    ds = CocoInstances(tmp_path / "ann.json", tmp_path)
    ds[0]
    with pytest.raises(ValueError, match=r"b\.png: cannot be read as an image"):
        ds[1]


@pytest.mark.parametrize(("content", "words"), [
    ("[]", "top level must be a JSON object"),
    (json.dumps({"images": [{"id": 1, "file_name": "a.png", "height": "16", "width": 16}], "annotations": [],
                 "categories": [{"id": 1, "name": "x"}]}), "height"),
    (json.dumps({"images": [{"id": 1, "file_name": "a.png", "height": 16, "width": 16}],
                 "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, float("nan"), 4],
                                  "segmentation": [[0, 0, 4, 0, 4, 4]], "iscrowd": 0}],
                 "categories": [{"id": 1, "name": "x"}]}), None),
])
def test_malformed_coco_structure_is_refused_or_skipped(tmp_path, content, words):
    from maskrt.train.data.coco import CocoInstances

    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((16, 16, 3), np.uint8))
    (tmp_path / "ann.json").write_text(content)
    if words is None:  # a NaN box is a skipped annotation, counted, not a crash
        ds = CocoInstances(tmp_path / "ann.json", tmp_path)
        assert sum(ds.skipped.values()) == 1 and ds[0][1]["boxes"].shape == (0, 4)
    else:
        with pytest.raises(ValueError, match=words):
            CocoInstances(tmp_path / "ann.json", tmp_path)


@pytest.fixture(scope="module")
def train_data(tmp_path_factory):
    from maskrt.train.data import synthetic

    root = tmp_path_factory.mktemp("bad_input_synth")
    synthetic.generate(root, 4, 0, seed=0, image_size=(96, 96), progress=False)
    return root


TRAIN_ARGS = ["--config", "mnv3-lite", "--min-sizes", "64", "--max-size", "96", "--batch-size", "1",
              "--warmup-iters", "1", "--log-every", "1", "--device", "cpu", "--no-progress", "--seed", "0"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_disk_full_during_a_checkpoint_write_keeps_the_previous_checkpoint(train_data, tmp_path, monkeypatch):
    from maskrt.train.trainer import CHECKPOINT_LAST, TrainConfig, read_metrics, train

    out = tmp_path / "run"
    # 4 iterations: the checkpoint of iteration 2 is written whole, the one of iteration 4 hits ENOSPC
    cfg = TrainConfig(lr=0.01, warmup_iters=1, max_iters=4, checkpoint_every=2, log_every=1, batch_size=1,
                      min_sizes=(64,), max_size=96, seed=0)
    real_save = torch.save
    calls = {"n": 0}

    def save_then_fill_the_disk(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the second checkpoint: half the bytes, then ENOSPC
            f.write(b"PK\x03\x04" + bytes(4096))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_then_fill_the_disk)
    with pytest.raises(OSError, match=r"cannot write .*checkpoint_last\.pt \(disk full\): No space left on device; "
                                      r"the previous file is unchanged") as e:
        train(cfg, out, data=train_data, model_config="mnv3-lite", progress=False)
    assert e.value.errno == errno.ENOSPC
    assert read_checkpoint(out / CHECKPOINT_LAST)["iteration"] == 2  # the previous one, whole
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]  # no partial file left
    monkeypatch.setattr(torch, "save", real_save)
    result = train(cfg, out, data=train_data, model_config="mnv3-lite", resume=True, progress=False)
    assert result.iteration == 4
    assert [r["iter"] for r in read_metrics(out / "metrics.jsonl")] == list(range(1, 5))


def test_sigkill_mid_training_keeps_the_last_checkpoint_and_resume_continues(train_data, tmp_path):
    """`maskrt train` in a child process, killed with SIGKILL once a checkpoint exists; the
    checkpoint loads, the metrics file has only whole lines, and `--resume` finishes the run."""
    from maskrt.train.trainer import CHECKPOINT_LAST, MODEL_FINAL, read_metrics

    out = tmp_path / "run"
    ckpt = out / CHECKPOINT_LAST
    cmd = [sys.executable, "-m", "maskrt", "train", "--data", str(train_data), "--out-dir", str(out), *TRAIN_ARGS,
           "--max-iters", "400", "--checkpoint-every", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if ckpt.is_file() and len(read_metrics(out / "metrics.jsonl")) >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()
        # NOTE: the kill lands wherever the child is, often inside a checkpoint write
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    payload = read_checkpoint(ckpt)  # whole: the rename of a finished write is the only way in
    k = payload["iteration"]
    assert 1 <= k < 400 and not (out / MODEL_FINAL).exists()
    records = read_metrics(out / "metrics.jsonl")
    assert [r["iter"] for r in records] == list(range(1, len(records) + 1)) and len(records) >= k
    stale = out / f".{CHECKPOINT_LAST}.left-by-a-kill.tmp"  # what a kill inside a write leaves
    stale.write_bytes(b"partial")

    r = subprocess.run([*cmd[:-4], "--max-iters", str(k + 2), "--checkpoint-every", "1", "--resume"],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert f"trained to iteration {k + 2}" in r.stdout
    assert not stale.exists() and "left by an interrupted write" in r.stderr
    assert read_checkpoint(ckpt)["iteration"] == k + 2
    assert [r["iter"] for r in read_metrics(out / "metrics.jsonl")] == list(range(1, k + 3))
    load_checkpoint(out / MODEL_FINAL)


def test_resume_from_a_checkpoint_with_a_pickle_payload_is_refused(train_data, tmp_path):
    from maskrt.train.trainer import CHECKPOINT_LAST, TrainConfig, train

    out = tmp_path / "run"
    out.mkdir()
    marker = tmp_path / "PAYLOAD_RAN"
    _evil_checkpoint(out / CHECKPOINT_LAST, marker, training=True)
    before = _sha(out / CHECKPOINT_LAST)
    with pytest.raises(ValueError, match="refused: the file's pickle references posix.mkdir"):
        train(TrainConfig(max_iters=2), out, data=train_data, resume=True, progress=False)
    assert not marker.exists() and _sha(out / CHECKPOINT_LAST) == before


# ============================================================================ command line
@pytest.fixture(scope="module")
def bad_artefacts(tmp_path_factory, onnx_model):
    d = tmp_path_factory.mktemp("bad_artefacts")
    onnx = onnx_model.read_bytes()
    (d / "cut.onnx").write_bytes(onnx[: len(onnx) // 3])
    ckpt = Path(DEFAULT_CHECKPOINT).read_bytes()
    (d / "cut.pt").write_bytes(ckpt[: len(ckpt) // 2])
    _evil_checkpoint(d / "evil.pt", d / "PAYLOAD_RAN")
    (d / "run").mkdir()
    _evil_checkpoint(d / "run" / "checkpoint_last.pt", d / "PAYLOAD_RAN", training=True)
    (d / "m.engine").write_bytes(b"engine bytes")  # no sidecar
    cv2.imwrite(str(d / "img.png"), demo_image(3, (64, 80)))
    (d / "not_a_video.mp4").write_text("hello")
    return d


@pytest.mark.parametrize(("args", "command", "words"), [
    (["infer", "--model", "{d}/cut.onnx", "{d}/img.png", "--out-dir", "{d}/o"], "infer", "cut.onnx"),
    (["infer", "--model", "{d}/m.engine", "{d}/img.png", "--out-dir", "{d}/o"], "infer", "engine sidecar not found"),
    (["infer", "--model", "{d}/evil.pt", "{d}/img.png", "--out-dir", "{d}/o"], "infer", "refused: the file's pickle"),
    (["export", "--checkpoint", "{d}/cut.pt", "--out", "{d}/x.onnx"], "export", "not a loadable checkpoint"),
    (["train", "--out-dir", "{d}/run", "--resume"], "train", "refused: the file's pickle references"),
    (["video", "--model", "{onnx}", "--source", "{d}/not_a_video.mp4"], "video", "cannot open as a video"),
])
def test_cli_errors_are_one_line_without_traceback(bad_artefacts, onnx_model, args, command, words):
    d = bad_artefacts
    r = _cli(*(a.format(d=d, onnx=onnx_model) for a in args))
    line = _one_line_error(r, command)
    assert words in line, line
    assert not (d / "PAYLOAD_RAN").exists()


def test_cli_debug_shows_the_traceback(bad_artefacts):
    r = _cli("--debug", "infer", "--model", str(bad_artefacts / "evil.pt"), str(bad_artefacts / "img.png"),
             "--out-dir", str(bad_artefacts / "o"))
    assert r.returncode != 0 and "Traceback" in r.stderr and "refused" in r.stderr
    assert not (bad_artefacts / "PAYLOAD_RAN").exists()


def test_resave_of_a_good_checkpoint_survives_a_failed_write(tmp_path, monkeypatch):
    """save_checkpoint (model_final.pt, exports) over an existing file: ENOSPC leaves it whole."""
    path = tmp_path / "m.pt"
    model = MaskRCNN(CFG).eval()
    save_checkpoint(path, model)
    before = _sha(path)

    def fail(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    monkeypatch.setattr(ckpt_mod.torch, "save", fail)
    with pytest.raises(OSError, match=r"m\.pt \(disk full\).*the previous file is unchanged"):
        save_checkpoint(path, model)
    assert _sha(path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]
