"""ONNX Runtime (exported "ort" graph) vs PyTorch eager on the CPU, same weights, same inputs.

    python benchmarks/bench_ort_vs_torch.py --model default --iters 10
    python benchmarks/bench_ort_vs_torch.py --model r50 --iters 5

Both run with the same fixed thread count (default 2), after warm-up, on identical uint8 inputs;
the two backends alternate iteration by iteration so that whatever else the machine does
affects both alike, and the ratio is taken from this one run. Writes JSON to
benchmarks/results/ort_vs_torch_<model>.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def _stats(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"median_ms": float(np.median(a)), "p90_ms": float(np.percentile(a, 90)),
            "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean()), "std_ms": float(a.std()),
            "min_ms": float(a.min()), "n": int(a.size)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default", help="'default' (embedded checkpoint) or a preset (random weights)")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    import onnxruntime as ort
    import torch
    from tqdm import tqdm

    from maskrt.export.commands import _load_model
    from maskrt.export.onnx_export import export_model
    from maskrt.export.parity import compare_batches, onnx_runner, torch_runner
    from maskrt.train.demo import demo_image

    torch.set_num_threads(args.threads)
    model = _load_model(None, None if args.model == "default" else args.model, None)
    cfg = model.cfg
    images = np.stack([demo_image(11 + i, cfg.input_size) for i in range(args.batch)])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        export_model(model, path, "ort")
        runners = {"torch_eager": torch_runner(model), "onnxruntime": onnx_runner(path, args.threads)}
        ref = runners["torch_eager"](images)
        same = all(r.ok for r in compare_batches(ref, runners["onnxruntime"](images), cfg.input_size))
        for _ in range(args.warmup):
            for run in runners.values():
                run(images)
        times: dict[str, list[float]] = {k: [] for k in runners}
        for _ in tqdm(range(args.iters), desc=f"{args.model} x{args.iters}"):
            for name, run in runners.items():
                t = time.perf_counter()
                run(images)
                times[name].append((time.perf_counter() - t) * 1e3)
    res = {k: _stats(v) for k, v in times.items()}
    ratio = res["onnxruntime"]["median_ms"] / res["torch_eager"]["median_ms"]
    out = {
        "model": cfg.name, "input_size": list(cfg.input_size), "batch": args.batch, "threads": args.threads,
        "detections_per_image": [int(n) for n in ref["num_detections"]], "identical_detections": same,
        "results": res, "ort_over_torch_median": ratio,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version(), "torch": torch.__version__, "onnxruntime": ort.__version__},
        "command": f"python benchmarks/bench_ort_vs_torch.py --model {args.model} --iters {args.iters} "
                   f"--warmup {args.warmup} --threads {args.threads} --batch {args.batch}",
    }
    dest = Path(args.out or Path(__file__).parent / "results" / f"ort_vs_torch_{args.model}.json")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2))
    print("| backend | median ms | p90 | p99 | mean ± std | n |\n|---|---|---|---|---|---|")
    for k, s in res.items():
        print(f"| {k} | {s['median_ms']:.1f} | {s['p90_ms']:.1f} | {s['p99_ms']:.1f} | "
              f"{s['mean_ms']:.1f} ± {s['std_ms']:.1f} | {s['n']} |")
    print(f"ONNX Runtime / eager (median): {ratio:.2f}; identical detections: {same}; -> {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
