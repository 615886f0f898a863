"""What each part imports, in a fresh interpreter (a subprocess: this process has torch loaded).

* the runtime (every module of ``maskrt.runtime``) imports neither ``maskrt.train`` nor
  ``maskrt.export`` nor torch nor onnx: an edge box has numpy, OpenCV and ONNX Runtime only;
* the ``maskrt`` command imports a command's module only when that command runs: ``--help`` reads
  the command table, ``maskrt video --help`` loads only ``maskrt.runtime.video_cli`` (and the
  tracker's parameter defaults);
* ``maskrt video``, ``maskrt infer``, ``maskrt serve`` (writing a repository) and ``maskrt bench
  --backend ort`` on an ONNX graph run to the end without torch or onnx ever entering
  ``sys.modules``.

Nothing here is timed (timings belong in benchmarks): the module sets are the property.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import cv2
import pytest

FORBIDDEN = ("torch", "onnx", "maskrt.train", "maskrt.export")

_PROBE = textwrap.dedent("""
    import json, sys
    {body}
    mods = sorted(sys.modules)
    print("\\n@@MODULES@@" + json.dumps(mods))
""")


def _probe(body: str, timeout: float = 300) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Runs ``body`` in a fresh interpreter; returns the process and its final ``sys.modules``."""
    r = subprocess.run([sys.executable, "-c", _PROBE.format(body=body)], capture_output=True, text=True,
                       timeout=timeout)
    assert "@@MODULES@@" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    return r, set(json.loads(r.stdout.rsplit("@@MODULES@@", 1)[1]))


def _forbidden(mods: set[str]) -> list[str]:
    return sorted(m for m in mods if any(m == f or m.startswith(f + ".") for f in FORBIDDEN))


def _cli(argv: list[str]) -> str:
    """A probe body that runs ``maskrt <argv>`` in-process and keeps its exit status."""
    return ("from maskrt.runtime.cli import main\n"
            "try:\n"
            f"    rc = main({argv!r})\n"
            "except SystemExit as e:\n"
            "    rc = e.code\n"
            "print('@@RC@@', rc)\n")


def _rc(r: subprocess.CompletedProcess) -> int:
    return int(r.stdout.split("@@RC@@", 1)[1].split()[0])


def test_runtime_imports_neither_train_export_torch_nor_onnx():
    # serving/triton_model.py runs inside tritonserver's Python backend, which provides the module
    # triton_python_backend_utils; an empty stand-in lets it import here so its imports are checked too.
    body = ("import importlib, pkgutil, types\n"
            "sys.modules['triton_python_backend_utils'] = types.ModuleType('triton_python_backend_utils')\n"
            "import maskrt.runtime\n"
            "names = ['maskrt.runtime'] + [m.name for m in pkgutil.walk_packages(maskrt.runtime.__path__, "
            "'maskrt.runtime.')]\n"
            "for n in names:\n"
            "    importlib.import_module(n)\n"
            "print('@@N@@', len(names))\n")
    r, mods = _probe(body)
    assert r.returncode == 0, r.stderr
    # every module of the package was imported (the walk found them), and none pulled in the others
    assert int(r.stdout.split("@@N@@", 1)[1].split()[0]) >= 20
    for name in ("maskrt.runtime.cli", "maskrt.runtime.video_cli", "maskrt.runtime.backends.trt",
                 "maskrt.runtime.backends.torch_backend", "maskrt.runtime.video.sinks",
                 "maskrt.runtime.serving.triton_model", "maskrt.runtime.tracking.evaluate"):
        assert name in mods
    assert _forbidden(mods) == []


def test_the_probe_can_fail():
    """The same probe sees torch when something imports it (the check above can fail)."""
    r, mods = _probe("import maskrt.train.model.mask_rcnn")
    assert r.returncode == 0 and "torch" in _forbidden(mods) and "maskrt.train" in mods


@pytest.mark.parametrize("argv, allowed", [
    (["--help"], set()),
    (["video", "--help"], {"maskrt.runtime.video_cli", "maskrt.runtime.tracking", "maskrt.runtime.tracking.config"}),
    (["infer", "--help"], {"maskrt.runtime.video_cli"}),
    (["serve", "--help"], {"maskrt.runtime.serving", "maskrt.runtime.serving.cli"}),
    (["bench", "--help"], {"maskrt.benchmarks", "maskrt.benchmarks.cli", "maskrt.benchmarks.options"}),
    (["data", "--help"], set()),
])
def test_help_imports_only_the_named_command(argv, allowed):
    r, mods = _probe(_cli(argv))
    assert _rc(r) == 0 and "usage: maskrt" in r.stdout, r.stderr
    ours = {m for m in mods if m.startswith("maskrt.")} - {"maskrt.runtime", "maskrt.runtime.cli"}
    assert ours == allowed
    assert "numpy" not in mods and _forbidden(mods) == []


def test_a_command_missing_its_extra_still_parses_and_names_it():
    body = ("sys.modules['torch'] = None  # a runtime-only install\n" + _cli(["train", "--data", "x"]))
    r, _ = _probe(body)
    assert _rc(r) == 1
    assert r.stderr.strip().splitlines() == [
        "maskrt train: error: `maskrt train` needs pip install 'maskrt[train]' (import of torch halted; None in "
        "sys.modules)"]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    from maskrt.train.demo import demo_image

    d = tmp_path_factory.mktemp("imgs")
    for i in range(2):
        cv2.imwrite(str(d / f"f{i}.png"), demo_image(40 + i, (96, 128)))
    return d


def test_video_and_infer_import_no_torch_no_onnx(onnx_model, image_folder, tmp_path):
    r, mods = _probe(_cli(["video", "--model", str(onnx_model), "--source", str(image_folder), "--threads", "2",
                           "--jsonl", str(tmp_path / "v.jsonl"), "--status", "off"]))
    assert _rc(r) == 0, r.stderr
    assert len((tmp_path / "v.jsonl").read_text().splitlines()) == 2
    assert "maskrt.runtime.video.pipeline" in mods and "onnxruntime" in mods
    assert _forbidden(mods) == []

    r, mods = _probe(_cli(["infer", "--model", str(onnx_model), str(image_folder), "--threads", "2",
                           "--out-dir", str(tmp_path / "inf"), "--no-progress"]))
    assert _rc(r) == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "inf").iterdir()) == ["f0.json", "f0.png", "f1.json", "f1.png"]
    assert _forbidden(mods) == []


def test_bench_ort_imports_no_torch_no_onnx(onnx_model, tmp_path):
    out = tmp_path / "bench"
    r, mods = _probe(_cli(["bench", "--model", str(onnx_model), "--backend", "ort", "--iters", "1", "--warmup", "0",
                           "--profile-runs", "1", "--pipeline-frames", "1", "--frame-size", "96", "128",
                           "--no-plots", "--no-progress", "--out-dir", str(out)]))
    assert _rc(r) == 0, r.stderr
    result = json.loads((out / "bench.json").read_text())
    # the FLOP model (onnx shape inference) ran, in its own process
    assert result["flops"]["1"]["total_gflop"] > 0 and result["results"]["main"]["batches"]["1"]["cost"]
    assert "maskrt.benchmarks.measure" in mods and "onnxruntime" in mods
    assert _forbidden([m for m in mods if not m.startswith("maskrt.train")]) == []


def test_serve_imports_no_torch_no_onnx(onnx_model, tmp_path):
    repo = tmp_path / "repo"
    r, mods = _probe(_cli(["serve", str(onnx_model), "--out-dir", str(repo)]))
    assert _rc(r) == 0, r.stderr
    assert (repo / "maskrt" / "config.pbtxt").is_file()  # the repository was written
    assert "maskrt.runtime.serving.repository" in mods
    assert _forbidden(mods) == []
