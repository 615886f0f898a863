"""The measuring loop: warm-up, then timed iterations of the Predictor steps as the video pipeline
runs them, per batch size and backend; native vs Python post-processing, pipeline FPS, device
memory and trtexec where there is an engine."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .artefacts import backend_kwargs
from .machine import peak_rss_mib
from .options import INFER_STAGES, STAGES, BenchOptions
from .profilers import TorchStageTimer, ort_profile

__all__ = ["run_backend", "summarize"]


def summarize(ms: Sequence[float]) -> dict[str, float]:
    """Statistics of latency samples ``ms`` (float milliseconds, >= 1 sample): p50/p90/p99
    (numpy linear interpolation), mean, std (population), min, max, n."""
    a = np.asarray(ms, np.float64)
    if a.size == 0:
        raise ValueError("summarize: no samples")
    p50, p90, p99 = (float(v) for v in np.percentile(a, [50, 90, 99]))
    return {"p50": p50, "p90": p90, "p99": p99, "mean": float(a.mean()), "std": float(a.std()),
            "min": float(a.min()), "max": float(a.max()), "n": int(a.size)}


def record_stage(frames: Sequence[np.ndarray], dets: Sequence[Any]) -> list[dict]:
    """The video pipeline's postprocess work for a JSON record sink, per frame: ``FrameResult``
    (runtime/video/sinks.py) -> ``json_record()`` = native paste to RLE."""
    from maskrt.runtime.video.sinks import FrameResult
    from maskrt.runtime.video.sources import Frame

    return [FrameResult(Frame(f, i, None), d).json_record() for i, (f, d) in enumerate(zip(frames, dets, strict=True))]


def device_memory(backend: Any) -> dict[str, Any]:
    """Peak device memory where a GPU is in use, else a reason."""
    if getattr(backend, "name", "") == "torch" and str(getattr(backend, "_device", "cpu")).startswith("cuda"):
        import torch

        return {"peak_mib": torch.cuda.max_memory_allocated() / 2**20, "method": "torch.cuda.max_memory_allocated"}
    if getattr(backend, "name", "") == "trt":
        try:
            from maskrt.runtime.engine_meta import import_cudart

            cudart = import_cudart()
            err, free, total = cudart.cudaMemGetInfo()
            return {"used_mib": (total - free) / 2**20, "total_mib": total / 2**20,
                    "method": "cudaMemGetInfo after the run (device-wide)"}
        except Exception as e:  # no cuda-python: say so
            return {"skipped": f"device memory not read: {type(e).__name__}: {e}"}
    return {"skipped": "no GPU in use (CPU backend)"}


def measure(predictor: Any, frames: list[np.ndarray], opts: BenchOptions, bar: Any,
             timer: TorchStageTimer | None) -> dict[str, Any]:
    """Warm-up, then ``opts.iters`` timed iterations of prepare / infer / finish / paste_rle on
    the same frames (uint8 [h, w, 3] each); per-iteration ms of each stage and of the sum."""
    h, w = predictor.input_size
    buf = np.empty((len(frames), h, w, 3), np.uint8)
    samples: dict[str, list[float]] = {s: [] for s in (*STAGES, "end_to_end")}
    inner: dict[str, list[float]] = {s: [] for s in INFER_STAGES}
    counts: list[int] = []
    for it in range(opts.warmup + opts.iters):
        t0 = time.perf_counter()
        batch, infos = predictor.prepare(frames, out=buf)
        t1 = time.perf_counter()
        outputs = predictor.infer(batch)
        t2 = time.perf_counter()
        dets = predictor.finish(outputs, infos)
        t3 = time.perf_counter()
        record_stage(frames, dets)
        t4 = time.perf_counter()
        bar.update(1)
        infer_ms = (t2 - t1) * 1e3
        sub = timer.take(infer_ms) if timer is not None else None
        if it < opts.warmup:
            continue
        for s, v in zip((*STAGES, "end_to_end"), ((t1 - t0) * 1e3, infer_ms, (t3 - t2) * 1e3, (t4 - t3) * 1e3,
                                                  (t4 - t0) * 1e3), strict=True):
            samples[s].append(v)
        if sub is not None:
            for s in INFER_STAGES:
                inner[s].append(sub[s])
        counts = [int(n) for n in outputs["num_detections"]]
    return {"samples": samples, "inner": inner if timer is not None else None, "outputs": outputs,
            "infos": infos, "detections_per_image": counts}


def postprocess_compare(outputs: dict[str, np.ndarray], infos: Sequence[Any], predictor: Any, frames: list,
                         repeats: int) -> dict[str, Any]:
    """Native paste + RLE (the pipeline's path) vs the pure-Python reference (runtime/postprocess.py
    ``paste_masks`` + ``masks_to_rle``, pycocotools) on the same detections: median ms per batch."""
    from maskrt.runtime import postprocess

    dets = predictor.finish(outputs, infos)
    res: dict[str, Any] = {"detections": [len(d) for d in dets], "repeats": repeats}

    def native() -> None:
        record_stage(frames, dets)

    def python() -> None:
        for d in dets:
            bm = postprocess.paste_masks(d.masks, d.boxes, d.image_size, 0.5)
            postprocess.masks_to_rle(bm)

    for name, fn in (("native_ms", native), ("python_ms", python)):
        try:
            fn()
        except ImportError as e:
            res["skipped"] = f"pure-Python reference needs pycocotools ([train] extra): {e}"
            return res
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t) * 1e3)
        res[name] = float(np.median(ts))
    res["python_over_native"] = res["python_ms"] / max(res["native_ms"], 1e-9)
    return res


def pipeline_fps(predictor: Any, frames: list[np.ndarray], batch: int, n_frames: int) -> dict[str, Any]:
    """FPS of the threaded :class:`VideoPipeline` over an in-memory file-like source of
    ``n_frames`` (cycling ``frames``) with a sink that needs the JSON record (paste + RLE) and
    discards it."""
    from maskrt.runtime.video.pipeline import VideoPipeline
    from maskrt.runtime.video.sinks import Sink
    from maskrt.runtime.video.sources import Frame, Source

    class _MemorySource(Source):
        def __init__(self) -> None:
            super().__init__("memory")
            self._i = 0

        @property
        def fps(self) -> float | None:
            return None

        @property
        def frame_count(self) -> int | None:
            return n_frames

        def _open(self) -> None:
            self._i = 0

        def _close(self) -> None:
            pass

        def _read(self) -> Frame | None:
            if self._i >= n_frames:
                return None
            f = Frame(frames[self._i % len(frames)], self._i, None)
            self._i += 1
            return f

    class _RecordSink(Sink):
        name = "discard"
        needs = frozenset({"record"})

        def write(self, result) -> None:
            pass

    stats = VideoPipeline(_MemorySource(), predictor, [_RecordSink()], batch=batch).run()
    st = stats.stages
    return {"frames": stats.frames_out, "elapsed_s": stats.elapsed_s, "fps": stats.fps,
            "stage_mean_ms_per_frame": {k: v.mean for k, v in st.items()}}


def trtexec(engine: Path, plugin_lib: Path | None, batch: int, input_size: tuple[int, int],
             iters: int) -> dict[str, Any]:
    """trtexec on the engine for ``batch`` frames: its GPU compute time, latency and throughput lines.

    NOTE: the plugin library is loaded with ``--dynamicPlugins`` (``IPluginRegistry::loadLibrary``,
    which calls the library's exported ``getCreators``: plugins/tensorrt/register.cpp). Our library
    has no static ``REGISTER_TENSORRT_PLUGIN`` initialisers, so ``--staticPlugins`` (dlopen only)
    would register nothing and deserialising the engine would fail."""
    exe = shutil.which("trtexec")
    if exe is None:
        return {"skipped": "trtexec is not on PATH"}
    h, w = input_size
    cmd = [exe, f"--loadEngine={engine}", f"--shapes=images:{batch}x{h}x{w}x3", f"--iterations={iters}",
           "--warmUp=500", "--avgRuns=1"]
    if plugin_lib is not None:
        cmd.append(f"--dynamicPlugins={plugin_lib}")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        return {"skipped": f"trtexec failed (exit {r.returncode}): {(r.stderr or r.stdout).strip()[-300:]}",
                "command": " ".join(cmd)}
    found = {}
    for key in ("GPU Compute Time", "Latency", "Throughput"):
        m = re.search(rf"{key}: (.*)", r.stdout)
        if m:
            found[key] = m.group(1).strip()
    return {"command": " ".join(cmd), "summary": found}


def run_backend(backend_name: str, run_path: Path, opts: BenchOptions, frames_all: list[np.ndarray],
                 bar: Any, tmp: Path, onnx_path: Path | None, flops_by_batch: dict[int, Any],
                 gemm: dict[str, Any] | None, say: Any, *, main: bool) -> dict[str, Any]:
    from maskrt.runtime.predictor import Predictor, open_backend

    kwargs = backend_kwargs(backend_name, opts)
    predictor = Predictor(open_backend(run_path, **kwargs))
    results: dict[str, Any] = {"backend": backend_name, "artefact": str(run_path.name), "batches": {}}
    node_stage = None
    with predictor:
        backend = predictor.backend
        if backend_name == "ort":
            results["providers"] = backend.providers
        timer = None
        if backend_name == "torch":
            model = getattr(backend, "_model", None)
            timer = TorchStageTimer(model) if model is not None else None
            results["inner_method"] = "forward hooks on backbone, rpn, roi_heads; roi_heads.mask_branch wrapped"
        try:
            for b in opts.batches:
                frames = frames_all[:b]
                m = measure(predictor, frames, opts, bar, timer)
                stats = {s: summarize(v) for s, v in m["samples"].items()}
                e2e = stats["end_to_end"]["p50"]
                entry: dict[str, Any] = {
                    "batch": b, "stats_ms": stats, "samples_ms": {k: [round(x, 4) for x in v]
                                                                 for k, v in m["samples"].items()},
                    "fps_end_to_end": b / (e2e / 1e3), "fps_infer_only": b / (stats["infer"]["p50"] / 1e3),
                    "detections_per_image": m["detections_per_image"],
                }
                inner = None
                if m["inner"] is not None:
                    inner = {s: float(np.median(v)) for s, v in m["inner"].items()}
                    entry["inner_ms"] = inner
                    entry["inner_samples_ms"] = {k: [round(x, 4) for x in v] for k, v in m["inner"].items()}
                elif backend_name == "ort" and opts.profile_runs > 0 and onnx_path is not None:
                    batch_arr, _ = predictor.prepare(frames)
                    prof, node_stage = ort_profile(onnx_path, kwargs, np.ascontiguousarray(batch_arr),
                                                    opts.profile_runs, tmp, node_stage)
                    med = prof["median"]
                    scale = stats["infer"]["p50"] / med["run"] if med["run"] > 0 else 0.0
                    inner = {s: med[s] * scale for s in INFER_STAGES}
                    entry["inner_ms"] = inner
                    entry["ort_profile"] = {"runs": len(prof["runs"]), "median_ms": med,
                                            "scale_to_unprofiled": scale,
                                            "nodes_without_prefix": prof["n_nodes_unknown"]}
                if main:
                    if m["detections_per_image"] is not None:
                        entry["postprocess_native_vs_python"] = postprocess_compare(
                            m["outputs"], m["infos"], predictor, frames, opts.post_repeats)
                    n_pipe = opts.pipeline_frames if opts.pipeline_frames is not None else max(opts.iters, 2) * b
                    if n_pipe > 0:
                        say(f"{backend_name} batch {b}: pipeline over {n_pipe} frames")
                        pipe = pipeline_fps(predictor, frames, b, n_pipe)
                        pipe["over_infer_only_fps"] = pipe["fps"] / entry["fps_infer_only"]
                        entry["pipeline"] = pipe
                results["batches"][str(b)] = entry
        finally:
            if timer is not None:
                timer.remove()
        results["device_memory"] = device_memory(backend)
        if backend_name == "trt" and main:
            lib = getattr(backend, "plugin_library", None)
            results["trtexec"] = {str(b): trtexec(run_path, lib, b, predictor.input_size, max(opts.iters, 10))
                                  for b in opts.batches}
    results["peak_rss_mib"] = peak_rss_mib()
    return results
