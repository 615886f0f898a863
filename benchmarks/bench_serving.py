"""Triton (Python backend + ONNX Runtime) against in-process ONNX Runtime, 1/2/4 concurrent clients, one run.

The embedded default model ("ort" graph, 320x320; ``--onnx`` for another), one request = one
letterboxed frame (distinct synthetic scenes). For each number of clients C:

  in-process   C threads calling one OrtBackend.infer (intra-op threads = --threads) concurrently
  triton       C threads, each with its own TritonBackend (gRPC) on the tritonserver that
               nvidia-pytriton bundles, serving the repository `maskrt serve` writes (one
               instance, intra-op threads = --threads, dynamic batching up to 8, --queue-delay-us)

Each client sends 3 untimed warm-up requests, then --requests timed ones. Reported per (mode, C):
throughput (frames/s over the timed wall time of all clients together), latency p50 / p99 per
request (numpy percentile, linear) and, for Triton, the batch sizes its dynamic batcher formed
(statistics API, timed part only). Server and clients share this machine's cores: the Triton
figures include the gRPC round trip, (de)serialisation and the Python-backend stub's copies.

    .venv/bin/python benchmarks/bench_serving.py [--requests 24] [--threads 2] [--queue-delay-us 2000]
        [--out benchmarks/results/serving_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def _frames(n: int, size: tuple[int, int]) -> list[np.ndarray]:
    from maskrt.train.data.synthetic import render_scene

    return [render_scene(size, seed=i) for i in range(n)]


def _run(clients: int, make_infer, batches: list[np.ndarray], requests: int, warmup: int = 3,
         before_timed=None) -> dict:
    """``clients`` threads, each ``make_infer()`` -> (infer(batch), close()); ``before_timed()`` runs
    once every client has warmed up, before the timed requests. Returns latencies and wall time."""
    lat: list[list[float]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []
    ready = threading.Barrier(clients + 1)
    go = threading.Barrier(clients + 1)

    def client(c: int) -> None:
        try:
            infer, close = make_infer()
            try:
                for i in range(warmup):
                    infer(batches[(c + i) % len(batches)])
                ready.wait()
                go.wait()
                for i in range(requests):
                    b = batches[(c * requests + i) % len(batches)]
                    t0 = time.perf_counter_ns()
                    infer(b)
                    lat[c].append((time.perf_counter_ns() - t0) / 1e6)
            finally:
                close()
        except BaseException as e:
            errors.append(e)
            ready.abort()
            go.abort()

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    ready.wait()
    if before_timed is not None:
        time.sleep(0.5)  # NOTE: Triton records an execution's statistics just after its responses
        before_timed()
    t0 = time.perf_counter()
    go.wait()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    a = np.array([x for xs in lat for x in xs])
    return {"clients": clients, "requests": int(a.size), "wall_s": wall, "throughput_fps": a.size / wall,
            "p50_ms": float(np.median(a)), "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean())}


def _batch_counts(client, model: str) -> dict[int, int]:
    stats = client.get_inference_statistics(model, as_json=True)
    rows = stats["model_stats"][0].get("batch_stats", [])
    return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnx", default=None, help="an 'ort' graph (default: the embedded checkpoint, exported here)")
    ap.add_argument("--requests", type=int, default=24, help="timed requests per client (default 24)")
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads, both modes (default 2)")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--queue-delay-us", type=int, default=2000)
    ap.add_argument("--out", default="benchmarks/results/serving_cpu.json")
    args = ap.parse_args()

    import tritonclient.grpc as grpcclient

    from maskrt.runtime.backends.ort import OrtBackend
    from maskrt.runtime.backends.triton import TritonBackend
    from maskrt.runtime.serving.repository import write_python_model
    from maskrt.runtime.serving.server import TritonServer

    with tempfile.TemporaryDirectory(prefix="maskrt-bench-serving-") as tmp:
        onnx = args.onnx
        if onnx is None:
            from maskrt.export.onnx_export import export_model
            from maskrt.train.demo import DEFAULT_CHECKPOINT
            from maskrt.train.model.checkpoint import load_checkpoint

            onnx = Path(tmp) / "default.onnx"
            export_model(load_checkpoint(DEFAULT_CHECKPOINT)[0], onnx, "ort")
        local = OrtBackend(onnx, intra_op_threads=args.threads).open()
        h, w = local.input_size
        batches = [f[None].copy() for f in _frames(16, (h, w))]
        repo = Path(tmp) / "repo"
        write_python_model(onnx, repo, max_batch=8, queue_delay_us=args.queue_delay_us, threads=args.threads)
        results: list[dict] = []
        with TritonServer(repo, http_port=0, grpc_port=0) as server:
            url = f"triton://{server.grpc_url}/maskrt"
            stats_client = grpcclient.InferenceServerClient(server.grpc_url)
            for c in args.clients:
                r = _run(c, lambda: (local.infer, lambda: None), batches, args.requests)
                results.append({"mode": "in-process", **r})
                print(f"in-process  clients={c}  {r['throughput_fps']:.2f} fps  p50 {r['p50_ms']:.1f} ms  "
                      f"p99 {r['p99_ms']:.1f} ms", flush=True)

                def remote():
                    b = TritonBackend(url).open()
                    return b.infer, b.close

                before: dict[int, int] = {}
                r = _run(c, remote, batches, args.requests,
                         before_timed=lambda b=before: b.update(_batch_counts(stats_client, "maskrt")))
                time.sleep(0.5)  # NOTE: Triton records an execution's statistics just after its responses
                after = _batch_counts(stats_client, "maskrt")
                r["batches"] = {str(k): after.get(k, 0) - before.get(k, 0) for k in sorted(after)
                                if after.get(k, 0) - before.get(k, 0) > 0}
                results.append({"mode": "triton", **r})
                print(f"triton      clients={c}  {r['throughput_fps']:.2f} fps  p50 {r['p50_ms']:.1f} ms  "
                      f"p99 {r['p99_ms']:.1f} ms  batches {r['batches']}", flush=True)
        local.close()
    by = {(r["mode"], r["clients"]): r for r in results}
    for c in args.clients:
        t, i = by[("triton", c)], by[("in-process", c)]
        t["throughput_vs_in_process"] = t["throughput_fps"] / i["throughput_fps"]
        t["p50_vs_in_process"] = t["p50_ms"] / i["p50_ms"]
    doc = {"benchmark": "serving", "model": "embedded default (mnv3-small, 320x320)" if args.onnx is None else
           str(args.onnx), "threads": args.threads, "requests_per_client": args.requests, "warmup_per_client": 3,
           "queue_delay_us": args.queue_delay_us, "max_batch": 8, "machine": platform.processor() or platform.machine(),
           "cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(), "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print("\n| clients | in-process fps | p50 / p99 ms | Triton fps | p50 / p99 ms | Triton/in-process fps | "
          "Triton batches |\n|---|---|---|---|---|---|---|")
    for c in args.clients:
        t, i = by[("triton", c)], by[("in-process", c)]
        print(f"| {c} | {i['throughput_fps']:.2f} | {i['p50_ms']:.0f} / {i['p99_ms']:.0f} | "
              f"{t['throughput_fps']:.2f} | {t['p50_ms']:.0f} / {t['p99_ms']:.0f} | "
              f"{t['throughput_vs_in_process']:.2f} | {t['batches']} |")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
