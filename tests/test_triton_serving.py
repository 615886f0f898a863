"""maskrt on a real Triton Inference Server: the tritonserver 2.51 that nvidia-pytriton bundles
(Python backend), serving the repository ``maskrt serve`` writes for the default model, on
127.0.0.1 with ports chosen at run time. Every server is stopped at the end of its test or module.

References: the same ONNX graph in ONNX Runtime in this process (the ``predictor`` fixture, 2
threads), frame by frame; Triton's own statistics API for the batches it formed; Triton's own
errors for bad requests.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc", reason="needs tritonclient[grpc,http] (the serve extra)")
pytest.importorskip("tritonclient.http", reason="needs tritonclient[grpc,http] (the serve extra)")

import tritonclient.grpc as grpcclient  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from maskrt.runtime.backends.base import BackendError  # noqa: E402
from maskrt.runtime.backends.triton import ServerUnavailableError, TritonBackend  # noqa: E402
from maskrt.runtime.predictor import Predictor  # noqa: E402
from maskrt.runtime.serving.repository import write_python_model  # noqa: E402
from maskrt.runtime.serving.server import ServerError, TritonServer, find_tritonserver  # noqa: E402
from maskrt.runtime.video import ImageFolderSource, PipelineError, Sink, VideoPipeline  # noqa: E402

try:
    find_tritonserver()
except ServerError as e:
    pytest.skip(f"no tritonserver: {e}", allow_module_level=True)

MAX_BATCH = 8


def _frames(n: int, size=(240, 320), seed0: int = 0) -> list[np.ndarray]:
    from maskrt.train.data.synthetic import render_scene

    return [render_scene(size, seed=seed0 + i) for i in range(n)]


@pytest.fixture(scope="module")
def repository(onnx_model, tmp_path_factory):
    # NOTE: a 20 ms queue delay lets concurrent requests meet in one batch on a loaded 2-core box.
    root = tmp_path_factory.mktemp("triton_repo")
    write_python_model(onnx_model, root, max_batch=MAX_BATCH, queue_delay_us=20000, threads=2)
    return root


@pytest.fixture(scope="module")
def server(repository):
    s = TritonServer(repository, http_port=0, grpc_port=0)
    s.start()
    try:
        yield s
    finally:
        s.stop()


def _assert_same(got: dict, want: dict, where: str) -> None:
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=f"{where}: output {k}")


def test_four_concurrent_clients_equal_local_ort_and_batches_form(server, predictor):
    frames = _frames(16)
    batches = [predictor.prepare([f])[0].copy() for f in frames]
    want = [predictor.infer(b) for b in batches]
    urls = [f"triton://{server.grpc_url}/maskrt", f"triton+http://{server.http_url}/maskrt"] * 2
    results: dict[int, dict] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(len(urls))

    def client(c: int) -> None:
        try:
            with TritonBackend(urls[c]) as backend:
                start.wait(30)
                for i in range(c, len(batches), len(urls)):
                    results[i] = backend.infer(batches[i])
        except BaseException as e:  # reported below with the client's number
            errors.append(e)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(len(urls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert sorted(results) == list(range(len(batches)))
    for i in range(len(batches)):
        _assert_same(results[i], want[i], f"request {i}")
    # Triton's statistics: how many executions ran with each batch size
    stats = grpcclient.InferenceServerClient(server.grpc_url).get_inference_statistics("maskrt", as_json=True)
    by_size = {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats["model_stats"][0]["batch_stats"]}
    assert sum(size * n for size, n in by_size.items()) >= len(batches)
    assert max(size for size, n in by_size.items() if n > 0) > 1, by_size


def test_predictor_on_a_triton_url_equals_local_ort(server, predictor):
    frames = _frames(3, size=(200, 300), seed0=100)
    want = predictor.predict(frames)
    for url in (f"triton://{server.grpc_url}/maskrt", f"triton+http://{server.http_url}/maskrt/1"):
        with Predictor.open(url) as remote:
            assert remote.config == predictor.config and remote.backend.max_batch == MAX_BATCH
            got = remote.predict(frames)
            for g, w in zip(got, want, strict=True):
                np.testing.assert_array_equal(g.boxes, w.boxes)
                np.testing.assert_array_equal(g.scores, w.scores)
                np.testing.assert_array_equal(g.class_ids, w.class_ids)
                np.testing.assert_array_equal(g.masks, w.masks)
            assert remote.backend.stats.requests_answered == 1 and remote.backend.stats.frames_answered == 3


def test_bad_requests_get_clear_errors_and_the_server_stays_up(server, predictor):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    h, w = predictor.input_size

    def raw(x: np.ndarray, dtype: str) -> str:
        inp = grpcclient.InferInput("images", list(x.shape), dtype)
        inp.set_data_from_numpy(x)
        with pytest.raises(InferenceServerException) as e:
            client.infer("maskrt", [inp])
        return str(e.value)

    assert re.search(r"data.?type", raw(np.zeros((1, h, w, 3), np.float32), "FP32"), re.I)
    assert re.search(r"shape", raw(np.zeros((1, 100, 120, 3), np.uint8), "UINT8"), re.I)
    assert re.search(r"batch.size", raw(np.zeros((64, h, w, 3), np.uint8), "UINT8"), re.I)
    # through our backend: refused before anything is sent, with the contract's message
    with TritonBackend(f"triton://{server.grpc_url}/maskrt") as backend:
        with pytest.raises(ValueError, match="uint8"):
            backend.infer(np.zeros((1, h, w, 3), np.float32))
        with pytest.raises(ValueError, match="input size"):
            backend.infer(np.zeros((1, 100, 120, 3), np.uint8))
        with pytest.raises(ValueError, match=f"batch size of 1..{MAX_BATCH}"):
            backend.infer(np.zeros((MAX_BATCH + 1, h, w, 3), np.uint8))
        assert backend.stats.requests_sent == 0
        # a model name the server does not have: Triton's error, not a reconnect loop
        with pytest.raises(BackendError, match="not ready|unknown|not found"):
            TritonBackend(f"triton://{server.grpc_url}/nope", reconnect=False).open()
        # still up and right
        assert client.is_server_live() and client.is_model_ready("maskrt")
        batch = predictor.prepare(_frames(1, seed0=7))[0]
        _assert_same(backend.infer(batch), predictor.infer(batch), "after the bad requests")
    assert server.is_running()


class _Collect(Sink):
    """Keeps (frame index, detections) in the order written."""

    name = "collect"

    def __init__(self, on_write=None) -> None:
        self.items: list[tuple[int, object]] = []
        self.on_write = on_write

    def write(self, result) -> None:
        self.items.append((result.frame.index, result.detections))
        if self.on_write is not None:
            self.on_write(len(self.items))


def test_server_killed_mid_stream_pipeline_reconnects_and_accounts_for_every_frame(onnx_model, predictor, tmp_path):
    repo = tmp_path / "repo"
    write_python_model(onnx_model, repo, max_batch=4, queue_delay_us=0, threads=2)
    frames = _frames(16, seed0=200)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:03d}.png"), f)  # lossless: the pipeline reads these very pixels
    want = predictor.predict(frames)
    server = TritonServer(repo, http_port=0, grpc_port=0, die_with_parent=False).start()  # restarted by a thread
    groups = [server.pid]  # each incarnation leads its process group (its Python-backend stubs are in it)
    events: list[str] = []
    restarted = threading.Event()
    failures: list[BaseException] = []

    def outage() -> None:
        try:
            server.kill()
            time.sleep(1.0)  # the client finds it gone and backs off
            server.restart()
            groups.append(server.pid)
            restarted.set()
        except BaseException as e:
            failures.append(e)

    def on_write(n: int) -> None:
        if n == 5:  # mid-stream: 5 frames through, 11 to go
            threading.Thread(target=outage, daemon=True).start()

    sink = _Collect(on_write)
    try:
        backend = TritonBackend(f"triton://{server.grpc_url}/maskrt", backoff_initial_s=0.25, backoff_max_s=1.0,
                                max_reconnect_s=60.0, max_attempts=60, on_event=events.append)
        with Predictor(backend) as remote:
            stats = VideoPipeline(ImageFolderSource(sorted(folder.glob("*.png"))), remote, [sink], batch=1).run()
            assert restarted.wait(60) and not failures, failures
            # every frame accounted for: read, answered, written; none dropped
            assert (stats.frames_in, stats.frames_out, stats.drops, stats.discarded) == (16, 16, 0, 0)
            assert [i for i, _ in sink.items] == list(range(16))
            for i, d in sink.items:  # each result is its own frame's (frames differ from one another)
                np.testing.assert_array_equal(d.boxes, want[i].boxes, err_msg=f"frame {i}")
                np.testing.assert_array_equal(d.scores, want[i].scores, err_msg=f"frame {i}")
                np.testing.assert_array_equal(d.masks, want[i].masks, err_msg=f"frame {i}")
            s = backend.stats
            assert s.requests_failed >= 1 and s.reconnects >= 1 and s.gave_up == 0
            assert s.requests_sent == s.requests_answered + s.requests_failed
            assert s.frames_answered == 16 == s.requests_answered
            assert any("unavailable" in e for e in events) and any("reconnected" in e for e in events)
            # a server that stays down: the backend gives up within its time budget, with the reason
            server.kill()
            backend.max_reconnect_s, backend.backoff_initial_s = 1.0, 0.2
            gave_up = backend.stats.gave_up
            with pytest.raises(ServerUnavailableError, match="gave up after"):
                remote.infer(remote.prepare(frames[:1])[0])
            assert backend.stats.gave_up == gave_up + 1  # the budget ended the wait, counted once
            # ... and a pipeline on it ends with that error, at the infer stage, every frame accounted for
            with pytest.raises(PipelineError) as info:
                VideoPipeline(ImageFolderSource(sorted(folder.glob("*.png"))[:3]), remote, [_Collect()]).run()
            err = info.value
            assert err.stage == "infer" and isinstance(err.error, ServerUnavailableError)
            st = err.stats
            assert st.frames_out == 0 and st.frames_in == st.frames_out + st.drops + st.discarded
    finally:
        server.stop()
    for pgid in groups:  # nothing of a killed server is left running (its stubs used to be)
        deadline = time.monotonic() + 15.0  # SIGKILLed members need a moment to die (hang guard only)
        while _live_group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _live_group_members(pgid)


def _live_group_members(pgid: int) -> list[int]:
    """Pids of the processes of group ``pgid`` that are not zombies (/proc; a zombie waits for its
    new parent to reap it, and is no longer running)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry))
    return pids


def test_serve_cli_start_and_sigterm(onnx_model, predictor):
    cmd = [sys.executable, "-m", "maskrt", "serve", str(onnx_model), "--start", "--http-port", "0", "--grpc-port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 90
        url = None
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"(triton://\S+)", line)
            url = m.group(1) if m else None
        assert url, "".join(lines)
        repo = Path(re.search(r"wrote (\S+) ", lines[0]).group(1)).parent
        server_pid = int(re.search(r"pid (\d+)", "".join(lines)).group(1))
        with Predictor.open(url) as remote:
            batch = predictor.prepare(_frames(1, seed0=300))[0]
            _assert_same(remote.infer(batch), predictor.infer(batch), "maskrt serve --start")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, "".join(lines) + out
        assert "stopped tritonserver (SIGTERM" in out
        assert not repo.exists()  # the temporary repository and the server's workspace are removed
        with pytest.raises(ProcessLookupError):
            os.kill(server_pid, 0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
