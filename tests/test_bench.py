"""`maskrt bench` (the maskrt.benchmarks package): the harness on the embedded default model with a couple of
iterations. Checks structure only -- schema, ordered percentiles, plots, cost-model fields, one-line
CLI errors. Benchmarks are not tests: nothing here asserts a time."""

import json
import subprocess
import sys

import numpy as np
import pytest

from maskrt.benchmarks import artefacts, measure, options, profilers, report, run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    opts = options.BenchOptions(batches=(1, 2), iters=2, warmup=1, threads=2, out_dir=str(out), profile_runs=1,
                              pipeline_frames=2, post_repeats=1, progress=False,
                              frame_size=(240, 320), gemm_sizes=(128, 256))
    return run.run_benchmark(opts), out


def test_json_schema_and_percentile_order(result):
    r, out = result
    on_disk = json.loads((out / "bench.json").read_text())
    report.validate_result(on_disk)  # raises on any violation
    assert on_disk["format"] == options.RESULT_FORMAT
    m = on_disk["machine"]
    assert m["threads_used"] == 2 and m["cpu"] and m["logical_cores"] >= 1
    assert "onnxruntime" in m["libraries"] and "load_average_end" in m
    for b, e in on_disk["results"]["main"]["batches"].items():
        for stage in (*options.STAGES, "end_to_end"):
            st = e["stats_ms"][stage]
            assert st["p50"] <= st["p90"] <= st["p99"]
            assert st["n"] == 2
        assert len(e["detections_per_image"]) == int(b)
        assert set(e["inner_ms"]) == set(options.INFER_STAGES)  # ONNX Runtime profile attribution
        assert e["ort_profile"]["median_ms"]["run"] > 0
        assert e["pipeline"]["frames"] == 2
    md = (out / "bench.md").read_text()
    assert "| ort | 1 |" in md and "| ort | 2 |" in md and "% of GEMM peak" in md


def test_plots_are_png(result):
    _, out = result
    for name in ("latency_distribution.png", "stages_stacked.png", "fps_vs_batch.png"):
        data = (out / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) < 200_000


def test_cost_model_fields(result):
    r, _ = result
    assert r["gemm"]["gflops"] > 0 and r["gemm"]["threads"] == 2
    for e in r["results"]["main"]["batches"].values():
        c = e["cost"]
        assert c["gflop"] > 0 and c["achieved_gflops"] > 0 and c["fraction_of_gemm_peak"] > 0 and c["floor_ms"] > 0
        assert set(c["per_stage"]) == {"backbone_fpn", "rpn", "box_branch", "mask_branch"}
        assert all(v["gflop"] > 0 for v in c["per_stage"].values())
    f1, f2 = r["flops"]["1"]["total_gflop"], r["flops"]["2"]["total_gflop"]
    assert f2 == pytest.approx(2 * f1)  # fixed-size graph: FLOPs scale with the batch


def test_comparisons_present(result):
    r, _ = result
    pp = r["results"]["main"]["batches"]["1"]["postprocess_native_vs_python"]
    assert pp["python_over_native"] > 0
    assert r["comparisons"]["vs_torch_eager"]["skipped"]


def test_summarize_and_stage_names():
    s = measure.summarize([3.0, 1.0, 2.0, 10.0])
    assert s["min"] <= s["p50"] <= s["p90"] <= s["p99"] <= s["max"] and s["n"] == 4
    assert profilers.stage_of_node("front//backbone/body/features.0/Conv") == "backbone_fpn"
    assert profilers.stage_of_node("front//head/conv/Conv") == "rpn"
    assert profilers.stage_of_node("fused box_head//box_head/fc6/Gemm") == "box_branch"
    assert profilers.stage_of_node("masks/RoiAlign_3") == "mask_branch"
    assert profilers.stage_of_node("ReorderInput_token_3") is None


def test_parse_ort_profile_attributes_by_run():
    ev = [{"cat": "Session", "name": "model_run", "ts": 0, "dur": 100},
          {"cat": "Node", "name": "front//backbone/x/Conv_kernel_time", "ts": 1, "dur": 50},
          {"cat": "Session", "name": "model_run", "ts": 200, "dur": 100},
          {"cat": "Node", "name": "front//backbone/x/Conv_kernel_time", "ts": 201, "dur": 40},
          {"cat": "Node", "name": "Reorder_1_kernel_time", "ts": 250, "dur": 20},
          {"cat": "Node", "name": "mask_head//m/Conv_kernel_time", "ts": 271, "dur": 30}]
    p = profilers.parse_ort_profile(ev, {"Reorder_1": "mask_branch"}, skip_runs=1)
    med = p["median"]
    assert med["backbone_fpn"] == pytest.approx(0.04) and med["mask_branch"] == pytest.approx(0.05)
    assert med["run"] == pytest.approx(0.1) and med["other"] == pytest.approx(0.01)


def test_make_frames_are_uint8_bgr():
    frames, gen = artefacts.make_frames(2, (48, 64), seed=3)
    assert len(frames) == 2 and all(f.shape == (48, 64, 3) and f.dtype == np.uint8 for f in frames)
    assert not np.array_equal(frames[0], frames[1]) and gen
    fb = artefacts.fallback_scene((48, 64), 0)
    assert fb.shape == (48, 64, 3) and fb.dtype == np.uint8


def test_bench_module_is_torch_free():
    code = ("import sys, maskrt.benchmarks, maskrt.benchmarks.cli, maskrt.benchmarks.options; "
            "print(','.join(m for m in ('torch', 'onnx', 'matplotlib') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "", r.stdout + r.stderr


@pytest.mark.parametrize("args, needle", [
    (["--batches", "1,x"], "--batches must be a comma-separated list of integers"),
    (["--batches", "0"], "--batches must list distinct positive batch sizes"),
    (["--batch", "0"], "--batches must list distinct positive batch sizes"),
    (["--batch", "1,2"], "--batch N is one batch size (frames per inference); a list is --batches 1,2"),
    (["--batch", "2", "--batches", "1,2"], "give --batches B[,B] or --batch N, not both"),
    (["--backend", "tpu"], "--backend must be one of"),
    (["--precision", "fp16"], "--precision fp16 needs a TensorRT engine"),
    (["--iters", "0"], "--iters must be an integer >= 1"),
    (["--size", "300", "320"], "--size must be H W, positive multiples of 32"),
    (["--model", "no/such/model.onnx"], "no such file"),
    (["--model", "not-a-preset"], "nor a preset name"),
])
def test_cli_errors_are_one_line(args, needle, capsys):
    from maskrt.runtime.cli import main

    assert main(["bench", "--no-progress", *args]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("maskrt bench: error: ") and needle in lines[0], lines


def test_cli_error_in_a_real_process():
    r = subprocess.run([sys.executable, "-m", "maskrt", "bench", "--threads", "two"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == ["maskrt bench: error: --threads must be an integer, got 'two'"]


def test_every_committed_result_has_one_reproducing_run():
    """benchmarks/results/ holds exactly what `python -m maskrt.benchmarks.reproduce` writes, each
    entry from one run, and each run's command names its result."""
    from pathlib import Path

    from maskrt.benchmarks.reproduce import PRODUCES, RESULTS, RUNS

    assert set(PRODUCES) == set(RUNS)
    made = [r for rs in PRODUCES.values() for r in rs]
    assert len(made) == len(set(made))
    committed = {p.name for p in Path(RESULTS).iterdir() if not p.name.startswith(".")}
    assert committed == set(made)
    for name, (_, cmds, _) in RUNS.items():
        text = " ".join(" ".join(c) for c in cmds)
        assert all(r in text or str(RESULTS) in text for r in PRODUCES[name]), name
