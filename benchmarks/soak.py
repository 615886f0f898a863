"""Soak: N frames through ``VideoPipeline`` with the ONNX Runtime backend; no leaks, nothing lost.

    python -m maskrt.benchmarks.soak               # 10,000 frames -> benchmarks/results/soak_10k.json
    python -m maskrt.benchmarks.soak --frames 2000 --out benchmarks/results/soak_2k.json
    python -m maskrt.benchmarks.soak --model m.onnx       # an exported model instead of the embedded default
    python -m maskrt.benchmarks.soak --max-seconds 1800   # stop cleanly after 30 min, report what ran

The model is the embedded default checkpoint (``maskrt/assets/default.pt``) exported to ONNX
(``maskrt.export.onnx_export``, "ort" flavour) into a temporary folder, unless ``--model`` names an
``.onnx`` file. The source is a generated clip (a panning synthetic scene, 240x400, written with
``cv2.VideoWriter`` as MJPG AVI) played in a loop: every loop closes the file and opens it again
through :class:`~maskrt.runtime.video.VideoFileSource`, so decoder and file-handle life cycles are
part of the soak. It is a file source (not live): back-pressure, nothing may be dropped. Results go
through the full postprocess (overlay and JSON record with RLE masks) into a :class:`JsonlSink`
(a temporary file) and a counting sink.

Checks (each is reported; the exit status is 1 when one fails):

* ``rss``: resident memory (``VmRSS`` of /proc/self/status, sampled every ``--sample-s`` seconds
  from the pipeline's status callback) grows by less than ``--max-rss-growth`` (5 %) from the end
  of the warm-up (``--warmup`` frames; the median of the first samples after it) to the end of the
  run (the median of the last samples);
* ``threads``: no Python thread (``threading.enumerate``) after that was not there before, and no
  more OS threads (/proc/self/task) after than before (a short pipeline run warms the thread pools
  first);
* ``fds``: no more open file descriptors (/proc/self/fd) after than before;
* ``frames``: frames in == frames out == N, no drops, nothing discarded, the JSON lines file
  holds N records numbered 0..N-1 in order, the counting sink saw N frames.

Timings are reported, never checked (a benchmark, not a test). ``tests/test_soak.py`` runs
:func:`run_soak` with a few hundred frames and asserts the same invariants.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from maskrt.runtime.predictor import Predictor
from maskrt.runtime.video import Frame, JsonlSink, Sink, Source, VideoFileSource, VideoPipeline

CLIP_SIZE = (240, 400)  # (h, w): wider than the 320x320 input, so every frame is letterboxed
CLIP_FRAMES = 48
CLIP_FPS = 25.0


# ------------------------------------------------------------------------------ process probes
def rss_kib() -> int:
    """Resident set size of this process in KiB (VmRSS of /proc/self/status)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def open_fds() -> int:
    """Open file descriptors of this process."""
    return len(os.listdir("/proc/self/fd")) - 1  # minus the one listdir itself holds


def os_threads(settle_s: float = 0.3, timeout_s: float = 5.0) -> int:
    """OS threads of this process (native pools included), once the count has been steady for
    ``settle_s``. NOTE: a Python thread counts as finished (``join`` returns) slightly before its
    OS thread is gone, so a count taken right after a join can include threads that are exiting."""
    count = len(os.listdir("/proc/self/task"))
    start = steady_since = t = time.monotonic()
    while t - steady_since < settle_s and t - start < timeout_s:
        time.sleep(0.02)
        now = len(os.listdir("/proc/self/task"))
        t = time.monotonic()
        if now != count:
            count, steady_since = now, t
    return count


def os_thread_names() -> dict[str, int]:
    """{thread name (/proc/self/task/*/comm): count}: which native pools are running."""
    names: dict[str, int] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm", encoding="utf-8", errors="replace") as f:
                name = f.read().strip()
        except OSError:  # the thread ended meanwhile
            continue
        names[name] = names.get(name, 0) + 1
    return dict(sorted(names.items()))


def python_threads() -> list[str]:
    return sorted(f"{t.name}#{t.ident}" for t in threading.enumerate() if t.is_alive())


# ------------------------------------------------------------------------------ clip and source
def write_clip(path: Path, n: int = CLIP_FRAMES, size: tuple[int, int] = CLIP_SIZE, fps: float = CLIP_FPS) -> Path:
    """A panning synthetic scene, ``n`` frames of ``size`` (h, w), MJPG AVI."""
    from maskrt.train.demo import demo_image

    h, w = size
    step = 4
    base = demo_image(7, (h, w + step * n))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"cv2.VideoWriter cannot write {path}")
    try:
        for i in range(n):
            writer.write(np.ascontiguousarray(base[:, step * i:step * i + w]))
    finally:
        writer.release()
    return path


class LoopingFileSource(Source):
    """A video file played ``total`` frames long, looping: at the end of the file the inner
    :class:`VideoFileSource` is closed and a new one opened. Not live. Frame indices count on
    across loops; timestamps are ``index / fps``."""

    live = False

    def __init__(self, path: str | os.PathLike, total: int) -> None:
        super().__init__(f"{path} (looped to {total} frames)")
        self.path, self.total = Path(path), int(total)
        self.loops = 0
        self._inner: VideoFileSource | None = None

    @property
    def fps(self) -> float | None:
        return self._inner.fps if self._inner is not None else None

    @property
    def frame_size(self) -> tuple[int, int] | None:
        return self._inner.frame_size if self._inner is not None else None

    @property
    def frame_count(self) -> int | None:
        return self.total

    def _open(self) -> None:
        self._inner = VideoFileSource(self.path).open()
        self.loops = 1

    def _read(self) -> Frame | None:
        assert self._inner is not None
        i = self.frames_read
        if i >= self.total:
            return self._end("end of soak")
        f = self._inner.read()
        if f is None:
            if self._inner.failed:
                return self._end(f"loop {self.loops}: {self._inner.end_reason}", failed=True)
            self._inner.close()
            self._inner = VideoFileSource(self.path).open()
            self.loops += 1
            f = self._inner.read()
            if f is None:
                return self._end(f"{self.path}: no frame after reopening ({self._inner.end_reason})", failed=True)
        return Frame(f.image, i, i / (self._inner.fps or CLIP_FPS))

    def _close(self) -> None:
        if self._inner is not None:
            self._inner.close()
            self._inner = None


class CountingSink(Sink):
    """Counts frames, checks their order, and asks for the annotated frame and the JSON record
    (so the postprocess stage does all its work) without keeping either."""

    name = "count"
    needs = frozenset({"overlay", "record"})

    def __init__(self) -> None:
        self.count = 0
        self.out_of_order = 0
        self.detections = 0

    def open(self, info: Any) -> None:
        pass

    def write(self, result: Any) -> None:
        if result.frame.index != self.count:
            self.out_of_order += 1
        self.count += 1
        self.detections += len(result.detections)

    def close(self) -> None:
        pass


def export_default(out_dir: Path) -> Path:
    """The embedded default checkpoint exported to ONNX (ort flavour) in ``out_dir``."""
    from maskrt.export.onnx_export import export_model
    from maskrt.train.demo import DEFAULT_CHECKPOINT
    from maskrt.train.model.checkpoint import load_checkpoint

    model, _ = load_checkpoint(DEFAULT_CHECKPOINT)
    path = out_dir / "default.onnx"
    export_model(model, path, "ort")
    return path


def _jsonl_frames(path: Path) -> tuple[int, bool]:
    """(records, whether they are numbered 0..n-1 in order and every line is whole)."""
    n, ordered = 0, True
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                return n, False
            if json.loads(line)["frame"] != n:
                ordered = False
            n += 1
    return n, ordered


# ------------------------------------------------------------------------------ the soak
def run_soak(frames: int = 10_000, *, model: str | os.PathLike | None = None, workdir: str | os.PathLike | None = None,
             warmup: int | None = None, threads: int = 2, batch: int = 1, sample_s: float = 1.0,
             max_rss_growth: float = 0.05, progress: bool = False, max_seconds: float | None = None) -> dict[str, Any]:
    """Runs the soak and returns its result (``result["passed"]``, ``result["checks"]``; see the
    module docstring). ``workdir``: where the clip, the exported model and the JSON lines go
    (default: a temporary folder, removed afterwards). ``warmup``: frames before the RSS baseline
    (default: 10 % of ``frames``, at least 20). ``max_seconds``: stop (cleanly, as Ctrl-C does) after
    this long and report the frames run (``result["stopped_early"]``)."""
    if frames < 2:
        raise ValueError(f"frames must be >= 2, got {frames}")
    warm = max(20, frames // 10) if warmup is None else int(warmup)
    if not 0 <= warm < frames:
        raise ValueError(f"warmup must be in [0, frames), got {warm}")
    with tempfile.TemporaryDirectory(prefix="maskrt-soak-") as tmp:
        work = Path(workdir) if workdir is not None else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        model_path = Path(model) if model is not None else export_default(work)
        clip = write_clip(work / "clip.avi")
        t_setup = time.perf_counter() - t0
        return _run(frames, model_path, clip, work, warm, threads, batch, sample_s, max_rss_growth, progress,
                    t_setup, max_seconds)


def _run(frames: int, model_path: Path, clip: Path, work: Path, warm: int, threads: int, batch: int,
         sample_s: float, max_rss_growth: float, progress: bool, t_setup: float,
         max_seconds: float | None) -> dict[str, Any]:
    jsonl = work / "soak.jsonl"
    with Predictor.open(model_path, intra_op_threads=threads) as predictor:
        # Warm every pool (ONNX Runtime, OpenCV, the native core; some start threads lazily, from
        # whichever thread first needs them) with a short pipeline run before the "before" snapshot.
        warm_sink = CountingSink()
        VideoPipeline(LoopingFileSource(clip, 8), predictor, [warm_sink], batch=batch).run()
        if warm_sink.count != 8:
            raise RuntimeError(f"{clip}: the warm-up run wrote {warm_sink.count} of 8 frames")

        before = {"python_threads": python_threads(), "os_threads": os_threads(), "fds": open_fds(),
                  "rss_kib": rss_kib(), "os_thread_names": os_thread_names()}
        source = LoopingFileSource(clip, frames)
        counter = CountingSink()
        pipe = VideoPipeline(source, predictor, [JsonlSink(jsonl), counter], batch=batch, queue_size=4)
        samples: list[tuple[int, float, int]] = []  # (frames_out, seconds, rss KiB)
        t_run = time.perf_counter()
        last = [0.0]

        def status(s: Any) -> None:
            now = time.perf_counter()
            if max_seconds is not None and now - t_run > max_seconds:
                pipe.stop()
            if now - last[0] >= sample_s:
                last[0] = now
                samples.append((s.frames_out, now - t_run, rss_kib()))
                if progress:
                    print(f"\r{s.status_line()} | rss {samples[-1][2] / 1024:.0f} MiB", end="", file=sys.stderr,
                          flush=True)

        stats = pipe.run(status=status, status_interval_s=min(sample_s, 0.25))
        if progress:
            print(file=sys.stderr)
        elapsed = time.perf_counter() - t_run
        samples.append((stats.frames_out, elapsed, rss_kib()))
        after = {"python_threads": python_threads(), "os_threads": os_threads(), "fds": open_fds(),
                 "rss_kib": rss_kib(), "os_thread_names": os_thread_names()}
        loops = source.loops

    # ---------------------------------------------------------------- memory
    post = [s for s in samples if s[0] >= warm]
    k = max(1, min(5, len(post) // 4))
    if post:
        baseline = float(np.median([s[2] for s in post[:k]]))
        final = float(np.median([s[2] for s in post[-k:]]))
        peak = max(s[2] for s in post)
        growth = (final - baseline) / baseline
    else:  # the run was shorter than one sample interval after the warm-up
        baseline = final = peak = float(samples[-1][2])
        growth = 0.0
    jsonl_lines, jsonl_ordered = _jsonl_frames(jsonl)
    # Ctrl-C (SIGINT), SIGTERM or max_seconds stop the soak early: the frames read are finished
    # and checked, and the result says so (``stopped_early``, ``frames`` = what was run).
    early = stats.interrupted or stats.stopped
    n = stats.frames_in if early else frames

    checks = {
        "rss": growth < max_rss_growth,
        # NOTE: "no new ones", not "the same ones": in a test process, threads and files of earlier
        # work may end during the soak; what the soak leaked would be new.
        "threads": (not set(after["python_threads"]) - set(before["python_threads"])
                    and after["os_threads"] <= before["os_threads"] and not stats.leaked_threads),
        "fds": after["fds"] <= before["fds"],
        "frames": (stats.frames_in == stats.frames_out == n and stats.drops == 0 and stats.discarded == 0
                   and stats.error is None and not stats.source_failed and counter.count == n
                   and counter.out_of_order == 0 and jsonl_lines == n and jsonl_ordered),
    }
    st = stats.stages
    return {
        "frames": n,
        "frames_requested": frames,
        "stopped_early": early,
        "warmup_frames": warm,
        "batch": batch,
        "threads": threads,
        "model": str(model_path.name),
        "clip": {"size": list(CLIP_SIZE), "frames": CLIP_FRAMES, "loops": loops},
        "setup_s": round(t_setup, 2),
        "elapsed_s": round(elapsed, 2),
        "fps": round(stats.fps, 2),
        "ms_per_frame": {name: {"mean": round(v.mean, 2), "p50": round(v.p50, 2), "p99": round(v.p99, 2),
                                "max": round(v.max, 2)} for name, v in st.items() if v.count},
        "rss": {"before_kib": before["rss_kib"], "baseline_kib": int(baseline), "final_kib": int(final),
                "peak_after_warmup_kib": int(peak), "growth_pct": round(100 * growth, 3),
                "limit_pct": 100 * max_rss_growth, "samples": len(samples),
                "trace": [[n, round(t, 1), kib] for n, t, kib in samples[:: max(1, len(samples) // 200)]]},
        "python_threads": {"before": len(before["python_threads"]), "after": len(after["python_threads"]),
                           "leaked": sorted(set(after["python_threads"]) - set(before["python_threads"])),
                           "pipeline_leaked": stats.leaked_threads},
        "os_threads": {"before": before["os_threads"], "after": after["os_threads"],
                       "names_before": before["os_thread_names"], "names_after": after["os_thread_names"]},
        "fds": {"before": before["fds"], "after": after["fds"]},
        "accounting": {"frames_in": stats.frames_in, "frames_out": stats.frames_out, "drops": stats.drops,
                       "discarded": stats.discarded, "sink_frames": counter.count,
                       "sink_out_of_order": counter.out_of_order, "jsonl_records": jsonl_lines,
                       "jsonl_in_order": jsonl_ordered, "detections": counter.detections,
                       "end_reason": stats.end_reason, "error": stats.error},
        "checks": checks,
        "passed": all(checks.values()),
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(),
                    "platform": platform.platform()},
    }


def summary(result: dict[str, Any]) -> str:
    r, a = result["rss"], result["accounting"]
    stopped = f" (stopped early; {result['frames_requested']} requested)" if result["stopped_early"] else ""
    lines = [
        f"soak: {result['frames']} frames{stopped} in {result['elapsed_s']:.1f} s ({result['fps']:.1f} FPS), "
        f"clip looped {result['clip']['loops']} times",
        f"  rss     {r['baseline_kib'] / 1024:.1f} MiB after {result['warmup_frames']} warm-up frames -> "
        f"{r['final_kib'] / 1024:.1f} MiB at the end ({r['growth_pct']:+.2f} %, limit {r['limit_pct']:.0f} %; "
        f"peak {r['peak_after_warmup_kib'] / 1024:.1f} MiB)",
        f"  threads python {result['python_threads']['before']} -> {result['python_threads']['after']}, "
        f"OS {result['os_threads']['before']} -> {result['os_threads']['after']}",
        f"  fds     {result['fds']['before']} -> {result['fds']['after']}",
        f"  frames  in {a['frames_in']} out {a['frames_out']} dropped {a['drops']} discarded {a['discarded']}, "
        f"sink {a['sink_frames']}, jsonl {a['jsonl_records']} (in order: {a['jsonl_in_order']}); "
        f"ended: {a['end_reason']}",
    ]
    ms = result["ms_per_frame"]
    lines.append("  ms/frame " + ", ".join(f"{k} {v['mean']:.1f}" for k, v in ms.items()))
    lines.append("  checks  " + ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in result["checks"].items())
                 + f" -> {'PASSED' if result['passed'] else 'FAILED'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--warmup", type=int, default=None, help="frames before the RSS baseline (default 10 %%, >= 20)")
    ap.add_argument("--model", default=None, help="an exported .onnx (default: the embedded checkpoint, exported)")
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--sample-s", type=float, default=1.0, help="RSS sampling interval")
    ap.add_argument("--max-rss-growth", type=float, default=0.05)
    ap.add_argument("--out", default=None, help="JSON result (default benchmarks/results/soak_<N>.json)")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--max-seconds", type=float, default=None,
                    help="stop cleanly after this long and report the frames run (also: Ctrl-C, SIGTERM)")
    args = ap.parse_args(argv)
    # NOTE: a background job of a non-interactive shell starts with SIGINT ignored; restore it, and
    # let SIGTERM stop the run the same way, so an early stop still writes its result.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    result = run_soak(args.frames, model=args.model, warmup=args.warmup, threads=args.threads, batch=args.batch,
                      sample_s=args.sample_s, max_rss_growth=args.max_rss_growth, progress=not args.no_progress,
                      max_seconds=args.max_seconds)
    n = result["frames"]
    tag = f"{n // 1000}k" if n % 1000 == 0 else str(n)
    out = Path(args.out) if args.out else Path(__file__).resolve().parent / "results" / f"soak_{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(summary(result))
    print(f"written: {out}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
