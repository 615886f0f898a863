"""The `maskrt` command line: real subprocess runs, one-line errors, non-zero exits."""

import json
import subprocess
import sys

from pycocotools.coco import COCO


def _run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "maskrt", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_demo_prints_the_output_contract():
    r = _run("demo", "--seed", "1")
    assert r.returncode == 0, r.stderr
    for line in ("num_detections  int32    [1]", "boxes           float32  [1, 50, 4]",
                 "masks           float32  [1, 50, 28, 28]"):
        assert line in r.stdout


def test_errors_are_one_line_and_nonzero(tmp_path):
    r = _run("demo", "--config", "no-such-config")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == ["maskrt demo: error: unknown config 'no-such-config'; "
                                             "choose one of ['mnv3', 'mnv3-small', 'r18-small', 'r50']"]
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    r = _run("demo", "--checkpoint", str(bad))
    assert r.returncode == 1 and "Traceback" not in r.stderr and "not a loadable checkpoint" in r.stderr
    r = _run("--debug", "demo", "--checkpoint", str(bad))
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_data_synth_writes_a_coco_set(tmp_path):
    out = tmp_path / "synth"
    r = _run("data", "synth", "--out", str(out), "--train", "3", "--val", "2", "--seed", "4", "--no-progress")
    assert r.returncode == 0, r.stderr
    for split, n in (("train", 3), ("val", 2)):
        ann = out / "annotations" / f"instances_{split}.json"
        assert len(json.loads(ann.read_text())["images"]) == n
        coco = COCO(str(ann))
        assert len(coco.getImgIds()) == n
        assert len(list((out / split).glob("*.png"))) == n
