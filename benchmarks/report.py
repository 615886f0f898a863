"""The report of a run: the JSON schema check (format ``maskrt.bench/1``), the markdown summary and
the PNG plots (matplotlib, Agg)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .options import INFER_STAGES, RESULT_FORMAT, STAGE_LABELS, STAGES

__all__ = ["markdown_report", "validate_result", "write_plots"]

_SCHEMA_TOP = {"format": str, "name": str, "command": str, "options": dict, "model": dict, "inputs": dict,
               "machine": dict, "gemm": dict, "flops": dict, "results": dict, "comparisons": dict}
_SCHEMA_STATS = ("p50", "p90", "p99", "mean", "std", "min", "max", "n")


def validate_result(r: dict[str, Any]) -> None:
    """Checks a result dict against the bench JSON schema (format ``maskrt.bench/1``): the
    top-level keys and types, machine info, per batch the stage statistics (p50 <= p90 <= p99,
    all finite), FPS and detection counts. Raises ValueError naming the first violation."""
    def need(cond: bool, what: str) -> None:
        if not cond:
            raise ValueError(f"bench result: {what}")

    for k, t in _SCHEMA_TOP.items():
        need(isinstance(r.get(k), t), f"'{k}' must be a {t.__name__}")
    need(r["format"] == RESULT_FORMAT, f"format must be {RESULT_FORMAT!r}")
    for k in ("cpu", "logical_cores", "threads_used", "libraries", "gpus", "load_average_start"):
        need(k in r["machine"], f"machine.{k} missing")
    main = r["results"].get("main")
    need(isinstance(main, dict) and isinstance(main.get("batches"), dict) and main["batches"], "results.main.batches")
    runs = [main] + ([r["results"]["torch_eager"]] if r["results"].get("torch_eager") else [])
    for run in runs:
        need(isinstance(run.get("peak_rss_mib"), float), "peak_rss_mib must be a float")
        for b, e in run["batches"].items():
            need(int(b) == e.get("batch"), f"batch key {b}")
            for s in (*STAGES, "end_to_end"):
                st = e["stats_ms"].get(s)
                need(isinstance(st, dict) and all(k in st for k in _SCHEMA_STATS), f"stats_ms.{s} incomplete")
                need(all(math.isfinite(st[k]) for k in _SCHEMA_STATS[:-1]), f"stats_ms.{s} not finite")
                need(st["min"] <= st["p50"] <= st["p90"] <= st["p99"] <= st["max"], f"stats_ms.{s} percentiles order")
            need(e["fps_end_to_end"] > 0 and e["fps_infer_only"] > 0, "fps must be positive")
            need(len(e["detections_per_image"]) == e["batch"], "detections_per_image length")


# ====================================================================== report
def _fmt(v: float | None, nd: int = 1) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def markdown_report(r: dict[str, Any]) -> str:
    """The markdown summary of a result dict: setup, latency table, inner stages with the cost
    model, comparisons."""
    m, mc = r["model"], r["machine"]
    gemm = r["gemm"].get("gflops")
    lines = [f"# maskrt bench: {r['name']}", "",
             f"`{r['command']}`", "",
             f"* model: {m['name']} ({m['backbone']}), input {m['input_size'][0]}x{m['input_size'][1]}, "
             f"K = {m['detections_per_img']}, score threshold {m['box_score_thresh']}; source: {m['source']}",
             *[f"* note: {n}" for n in m["notes"]],
             f"* inputs: {r['inputs']['generator']} frames "
             f"{r['inputs']['frame_size'][0]}x{r['inputs']['frame_size'][1]} "
             "(identical every iteration), letterboxed to the input size",
             f"* machine: {mc['cpu']}, {mc['logical_cores']} logical cores, {mc['threads_used']} threads used; "
             f"load average at start {mc['load_average_start']}, end {mc.get('load_average_end')} "
             "(a shared machine: other jobs ran alongside)",
             f"* fp32 GEMM rate (numpy, {mc['threads_used']} threads): "
             + (f"{gemm:.1f} GFLOP/s" if gemm else r["gemm"].get("skipped", "-")), ""]
    runs = [r["results"]["main"]] + ([r["results"]["torch_eager"]] if r["results"].get("torch_eager") else [])
    lines += ["## Latency (ms per batch call; FPS = frames/s)", "",
              "| backend | batch | dets/img | prepare p50 | infer p50 | infer p90 | infer p99 | finish p50 | "
              "paste+RLE p50 | end-to-end p50 | p90 | p99 | mean ± std | FPS e2e | FPS infer | GFLOP | "
              "% of GEMM peak | peak RSS MiB |",
              "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for run in runs:
        for b, e in run["batches"].items():
            s = e["stats_ms"]
            cost = e.get("cost") or {}
            frac = cost.get("fraction_of_gemm_peak")
            lines.append(
                f"| {run['backend']} | {b} | {','.join(map(str, e['detections_per_image']))} | "
                f"{_fmt(s['prepare']['p50'], 2)} | {_fmt(s['infer']['p50'])} | {_fmt(s['infer']['p90'])} | "
                f"{_fmt(s['infer']['p99'])} | {_fmt(s['finish']['p50'], 2)} | {_fmt(s['paste_rle']['p50'], 2)} | "
                f"{_fmt(s['end_to_end']['p50'])} | {_fmt(s['end_to_end']['p90'])} | {_fmt(s['end_to_end']['p99'])} | "
                f"{_fmt(s['end_to_end']['mean'])} ± {_fmt(s['end_to_end']['std'])} | {_fmt(e['fps_end_to_end'], 2)} | "
                f"{_fmt(e['fps_infer_only'], 2)} | {_fmt(cost.get('gflop'))} | "
                f"{_fmt(None if frac is None else 100 * frac)} | {run['peak_rss_mib']:.0f} |")
    lines += ["", "## Inside inference (ms per batch call, median) and distance to the GEMM floor", "",
              "| backend | batch | stage | ms | GFLOP | floor ms | % of GEMM peak |",
              "|---|---:|---|---:|---:|---:|---:|"]
    for run in runs:
        for b, e in run["batches"].items():
            inner = e.get("inner_ms")
            if not inner:
                continue
            per = ((r["flops"].get(b) or {}).get("per_stage_gflop") or {})
            for s in INFER_STAGES:
                g = per.get(s)
                floor = g / gemm * 1e3 if (g is not None and gemm) else None
                frac = (g / (inner[s] / 1e3) / gemm * 100) if (g and gemm and inner[s] > 0) else None
                lines.append(f"| {run['backend']} | {b} | {STAGE_LABELS[s]} | {_fmt(inner[s])} | {_fmt(g, 2)} | "
                             f"{_fmt(floor)} | {_fmt(frac)} |")
    lines += ["", "## Comparisons (ratios)", ""]
    main = r["results"]["main"]
    for b, e in main["batches"].items():
        pp = e.get("postprocess_native_vs_python") or {}
        if "python_over_native" in pp:
            lines.append(f"* batch {b}: pure-Python paste + RLE / native = {pp['python_over_native']:.1f}x "
                         f"({pp['python_ms']:.2f} ms vs {pp['native_ms']:.2f} ms for {pp['detections']} detections)")
        elif pp.get("skipped"):
            lines.append(f"* batch {b}: native vs pure-Python post-processing skipped: {pp['skipped']}")
        pipe = e.get("pipeline")
        if pipe:
            lines.append(f"* batch {b}: pipeline FPS / inference-only FPS = {pipe['over_infer_only_fps']:.2f} "
                         f"({pipe['fps']:.2f} vs {e['fps_infer_only']:.2f} FPS, {pipe['frames']} frames)")
    for key, comp in r["comparisons"].items():
        if "skipped" in comp:
            lines.append(f"* {key}: skipped ({comp['skipped']})")
            continue
        for b, c in comp.items():
            lines.append(f"* batch {b}: {key.replace('_', ' ')}: infer p50 ratio {c['infer_p50_ratio']:.2f}, "
                         f"end-to-end p50 ratio {c['end_to_end_p50_ratio']:.2f}; same detection counts: "
                         f"{c['same_detection_counts']}")
    if "trtexec" in main:
        for b, t in main["trtexec"].items():
            lines.append(f"* trtexec batch {b}: {t.get('summary') or t.get('skipped')}")
    else:
        lines.append("* trtexec: skipped (no TensorRT engine benchmarked)")
    dm = main.get("device_memory", {})
    lines.append(f"* device memory: {dm.get('skipped') or dm}")
    return "\n".join(lines) + "\n"


def write_plots(r: dict[str, Any], out_dir: Path) -> list[Path]:
    """PNG plots (matplotlib, Agg): latency distribution per stage (violins), per-stage stacked
    bars (ms per frame), FPS vs batch size. Returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r["results"]["main"]] + ([r["results"]["torch_eager"]] if r["results"].get("torch_eager") else [])
    paths = []
    title = f"{r['model']['name']} {r['model']['input_size'][0]}x{r['model']['input_size'][1]}"

    # 1. latency distribution: one violin per stage, batch = first batch size of the main backend
    main = runs[0]
    b0, e0 = next(iter(main["batches"].items()))
    keys = [*STAGES, "end_to_end"]
    data = [e0["samples_ms"][k] for k in keys]
    fig, ax = plt.subplots(figsize=(6.4, 3.4), dpi=90)
    ax.violinplot(data, showmedians=True)
    ax.set_xticks(range(1, len(keys) + 1), [STAGE_LABELS.get(k, "end-to-end") for k in keys], rotation=20,
                  fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("ms per batch call (log)")
    ax.set_title(f"{title}: latency distribution, {main['backend']}, batch {b0}, n={len(data[0])}", fontsize=9)
    fig.tight_layout()
    p = out_dir / "latency_distribution.png"
    fig.savefig(p)
    plt.close(fig)
    paths.append(p)

    # 2. stacked bars: ms per frame by stage (inference split into its sub-stages where known)
    labels, stacks = [], []
    for run in runs:
        for b, e in run["batches"].items():
            s = e["stats_ms"]
            row = {"prepare": s["prepare"]["p50"]}
            if e.get("inner_ms"):
                row.update(e["inner_ms"])
            else:
                row["infer"] = s["infer"]["p50"]
            row.update(finish=s["finish"]["p50"], paste_rle=s["paste_rle"]["p50"])
            stacks.append({k: v / int(b) for k, v in row.items()})
            labels.append(f"{run['backend']}\nB={b}")
    order = ["prepare", "backbone_fpn", "rpn", "box_branch", "mask_branch", "other", "infer", "finish", "paste_rle"]
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=90)
    bottom = np.zeros(len(stacks))
    for k in order:
        vals = np.array([st.get(k, 0.0) for st in stacks])
        if vals.any():
            ax.bar(labels, vals, bottom=bottom, label=STAGE_LABELS[k])
            bottom += vals
    ax.set_ylabel("ms per frame (p50 of each stage)")
    ax.set_title(f"{title}: per-stage time", fontsize=9)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    p = out_dir / "stages_stacked.png"
    fig.savefig(p)
    plt.close(fig)
    paths.append(p)

    # 3. FPS vs batch size
    fig, ax = plt.subplots(figsize=(5.0, 3.2), dpi=90)
    for run in runs:
        bs = [int(b) for b in run["batches"]]
        ax.plot(bs, [e["fps_infer_only"] for e in run["batches"].values()], "o-", label=f"{run['backend']} infer")
        ax.plot(bs, [e["fps_end_to_end"] for e in run["batches"].values()], "s--", label=f"{run['backend']} e2e")
        pipe = [(int(b), e["pipeline"]["fps"]) for b, e in run["batches"].items() if e.get("pipeline")]
        if pipe:
            ax.plot(*zip(*pipe, strict=True), "^:", label=f"{run['backend']} pipeline")
    ax.set_xlabel("batch size")
    ax.set_ylabel("frames per second")
    ax.set_xticks(sorted({int(b) for run in runs for b in run["batches"]}))
    ax.set_title(f"{title}: FPS vs batch", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    p = out_dir / "fps_vs_batch.png"
    fig.savefig(p)
    plt.close(fig)
    paths.append(p)
    return paths
