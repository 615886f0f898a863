"""One benchmark run: artefacts -> GEMM probe and FLOP model -> measuring loop per backend ->
comparisons and cost model -> JSON, markdown and plots in the output folder."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from .artefacts import make_frames, prepare_artefacts
from .flops import count_onnx_flops_isolated, count_torch_flops
from .machine import gemm_rate, load_average, machine_info
from .measure import run_backend
from .options import RESULT_FORMAT, BenchOptions, argv_of
from .report import markdown_report, validate_result, write_plots

__all__ = ["run_benchmark"]


def _cost(flops: dict[str, Any] | None, gemm: dict[str, Any] | None, infer_ms: float,
          inner_ms: dict[str, float] | None) -> dict[str, Any] | None:
    """Achieved GFLOP/s and fraction of the GEMM rate, whole inference and per sub-stage."""
    if flops is None or gemm is None or infer_ms <= 0:
        return None
    rate = gemm["gflops"]
    out = {"gflop": flops["total_gflop"], "achieved_gflops": flops["total_gflop"] / (infer_ms / 1e3)}
    out["fraction_of_gemm_peak"] = out["achieved_gflops"] / rate
    out["floor_ms"] = flops["total_gflop"] / rate * 1e3
    if inner_ms:
        per = {}
        for s, g in flops["per_stage_gflop"].items():
            ms = inner_ms.get(s, 0.0)
            per[s] = {"gflop": g, "ms": ms, "floor_ms": g / rate * 1e3,
                      "fraction_of_gemm_peak": (g / (ms / 1e3) / rate) if ms > 0 else None}
        out["per_stage"] = per
    return out


def _default_name(opts: BenchOptions, cfg: Any) -> str:
    h, w = cfg.input_size
    det = f"_det{opts.detections}" if opts.detections else ""
    label = "default" if opts.model is None else Path(opts.model).stem if Path(opts.model).suffix else opts.model
    return f"{label}_{opts.backend}_{h}x{w}{det}"


def run_benchmark(opts: BenchOptions) -> dict[str, Any]:
    """Runs the benchmark described by ``opts``; writes JSON, markdown and plots to the output
    folder (``opts.out_dir``, default benchmarks/results/<name>) and returns the result dict."""
    opts.check()
    os.environ.setdefault("OMP_NUM_THREADS", str(opts.threads))
    try:
        import cv2

        cv2.setNumThreads(opts.threads)
    except ImportError:
        pass
    from tqdm import tqdm

    log: list[str] = []

    def say(msg: str) -> None:
        log.append(msg)
        if opts.progress:
            tqdm.write(f"maskrt bench: {msg}", file=sys.stderr)

    t_start = time.time()
    machine = machine_info(opts.threads)
    with tempfile.TemporaryDirectory(prefix="maskrt_bench_") as td:
        tmp = Path(td)
        art = prepare_artefacts(opts, tmp, say)
        cfg = art.config
        name = opts.name or _default_name(opts, cfg)
        out_dir = Path(opts.out_dir) if opts.out_dir else Path("benchmarks") / "results" / name
        frames, generator = make_frames(max(opts.batches), tuple(opts.frame_size), opts.seed)

        gemm = None
        if opts.device == "cpu":
            say(f"measuring the fp32 GEMM rate with {opts.threads} threads")
            gemm = gemm_rate(opts.threads, opts.gemm_sizes)
        flops_by_batch: dict[int, Any] = {}
        if art.onnx_path is not None:
            flops_by_batch = count_onnx_flops_isolated(art.onnx_path, opts.batches)
        model = getattr(art, "_model", None)
        for b in opts.batches:
            if b not in flops_by_batch and model is not None:
                from maskrt.runtime.letterbox import letterbox

                imgs = np.stack([letterbox(f, cfg.input_size).image for f in frames[:b]])
                flops_by_batch[b] = count_torch_flops(model, imgs)

        n_iter = (opts.warmup + opts.iters) * len(opts.batches) * (2 if opts.compare else 1)
        bar = tqdm(total=n_iter, desc="maskrt bench", unit="it", file=sys.stderr, disable=not opts.progress)
        try:
            main = run_backend(opts.backend, art.run_path, opts, frames, bar, tmp, art.onnx_path, flops_by_batch,
                                gemm, say, main=True)
            ref = None
            if opts.compare:
                ref = run_backend("torch", art.torch_path, opts, frames, bar, tmp, None, flops_by_batch, gemm, say,
                                   main=False)
        finally:
            bar.close()

    comparisons: dict[str, Any] = {}
    if ref is not None:
        comparisons[f"{opts.backend}_vs_torch_eager"] = {
            str(b): {"infer_p50_ratio": main["batches"][str(b)]["stats_ms"]["infer"]["p50"]
                     / ref["batches"][str(b)]["stats_ms"]["infer"]["p50"],
                     "end_to_end_p50_ratio": main["batches"][str(b)]["stats_ms"]["end_to_end"]["p50"]
                     / ref["batches"][str(b)]["stats_ms"]["end_to_end"]["p50"],
                     "same_detection_counts": main["batches"][str(b)]["detections_per_image"]
                     == ref["batches"][str(b)]["detections_per_image"]}
            for b in opts.batches}
    else:
        comparisons["vs_torch_eager"] = {"skipped": "not requested (--compare)"}
    if gemm is not None:
        # NOTE: the GEMM probe runs again at the end and the better of the two counts: on a shared
        # machine a probe that met another job's burst would understate the floor.
        again = gemm_rate(opts.threads, opts.gemm_sizes)
        gemm["probes_gflops"] = [gemm["gflops"], again["gflops"]]
        if again["gflops"] > gemm["gflops"]:
            again["probes_gflops"] = gemm["probes_gflops"]
            gemm = again
    for run in (main, ref):
        for b, e in (run or {}).get("batches", {}).items():
            e["cost"] = _cost(flops_by_batch.get(int(b)), gemm, e["stats_ms"]["infer"]["p50"], e.get("inner_ms"))
    machine["load_average_end"] = load_average()
    result = {
        "format": RESULT_FORMAT,
        "name": name,
        "created_unix": round(t_start, 1),
        "duration_s": round(time.time() - t_start, 1),
        "command": "maskrt bench " + " ".join(argv_of(opts)),
        "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(opts).items()},
        "model": {"source": art.source, "kind": art.kind, "name": cfg.name, "backbone": cfg.backbone,
                  "input_size": list(cfg.input_size), "detections_per_img": cfg.detections_per_img,
                  "box_score_thresh": cfg.box_score_thresh, "rpn_post_nms_top_n_test": cfg.rpn_post_nms_top_n_test,
                  "notes": art.notes},
        "inputs": {"generator": generator, "frame_size": list(opts.frame_size), "seed": opts.seed,
                   "identical_every_iteration": True},
        "machine": machine,
        "gemm": gemm if gemm is not None else {"skipped": f"device {opts.device}: the CPU GEMM floor does not apply"},
        "flops": {str(b): v for b, v in flops_by_batch.items()},
        "results": {"main": main, "torch_eager": ref},
        "comparisons": comparisons,
        "log": log,
    }
    validate_result(result)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench.json").write_text(json.dumps(result, indent=1))
    (out_dir / "bench.md").write_text(markdown_report(result))
    if opts.plots:
        write_plots(result, out_dir)
    result["out_dir"] = str(out_dir)
    return result
