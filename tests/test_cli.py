"""The `maskrt` command line: real subprocess runs, one-line errors, non-zero exits."""

import json
import subprocess
import sys

import pytest
from pycocotools.coco import COCO


def _run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "maskrt", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_demo_runs_the_whole_chain(tmp_path):
    """checkpoint -> ONNX -> ONNX Runtime (checked against eager) -> video pipeline -> outputs."""
    import cv2

    out = tmp_path / "demo"
    r = _run("demo", "--seed", "1", "--frames", "6", "--out-dir", str(out))
    assert r.returncode == 0, r.stderr
    assert "identical detections" in r.stdout
    assert ("ONNX outputs: num_detections int32 [1], boxes float32 [1, 50, 4], scores float32 [1, 50], "
            "classes int32 [1, 50], masks float32 [1, 50, 28, 28]") in r.stdout
    assert "frames: 6 in, 6 out, 0 dropped" in r.stdout
    cap = cv2.VideoCapture(str(out / "annotated.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 6
    lines = (out / "detections.jsonl").read_text().splitlines()
    assert [json.loads(line)["frame"] for line in lines] == list(range(6))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["parity_frame0"]["ok"] and summary["pipeline"]["frames_out"] == 6
    # The demo scores itself against the clip's ground truth, written beside the clip.
    gt = COCO(str(out / "clip.gt.json"))
    score = summary["self_score"]
    assert score["frames"] == 6 and score["ground_truth"] == len(gt.getAnnIds()) > 0
    assert score["detections"] == sum(len(json.loads(line)["scores"]) for line in lines)
    assert all(0.0 <= score[k] <= 1.0 for k in ("mask_AP50", "precision", "recall"))
    assert f"mask AP50 {score['mask_AP50']:.3f}, precision {score['precision']:.3f}" in r.stdout
    sheet = cv2.imread(str(out / "gallery.png"))
    assert sheet is not None and sheet.shape[0] > 3 * 300 and sheet.shape[1] > 4 * 400  # 3 rows of 2 pairs


def test_errors_are_one_line_and_nonzero(tmp_path):
    r = _run("demo", "--config", "no-such-config")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == ["maskrt demo: error: unknown config 'no-such-config'; "
                                             "choose one of ['mnv3', 'mnv3-lite', 'r18-small', 'r50']"]
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    r = _run("demo", "--checkpoint", str(bad))
    assert r.returncode == 1 and "Traceback" not in r.stderr and "not a loadable checkpoint" in r.stderr
    r = _run("--debug", "demo", "--checkpoint", str(bad))
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_data_synth_writes_a_coco_set(tmp_path):
    out = tmp_path / "synth"
    r = _run("data", "synth", "--out-dir", str(out), "--train", "3", "--val", "2", "--seed", "4", "--no-progress")
    assert r.returncode == 0, r.stderr
    for split, n in (("train", 3), ("val", 2)):
        ann = out / "annotations" / f"instances_{split}.json"
        assert len(json.loads(ann.read_text())["images"]) == n
        coco = COCO(str(ann))
        assert len(coco.getImgIds()) == n
        assert len(list((out / split).glob("*.png"))) == n


@pytest.mark.parametrize("argv, line", [
    (["bench", "--out", "d"], "maskrt bench: error: --out was renamed: use --out-dir DIR (bench writes a folder)"),
    (["demo", "--out", "d"], "maskrt demo: error: --out was renamed: use --out-dir DIR (the demo writes a folder)"),
    (["infer", "--model", "m.onnx", "x.png", "--out", "d"],
     "maskrt infer: error: --out was renamed: use --out-dir DIR (infer writes a folder)"),
    (["train", "--out", "d"], "maskrt train: error: --out was renamed: use --out-dir DIR (train writes a folder)"),
    (["data", "synth", "--out", "d"],
     "maskrt data synth: error: --out was renamed: use --out-dir DIR (data synth writes a folder)"),
    (["parity", "--flavours", "ort"],
     "maskrt parity: error: --flavours was renamed: use --flavour F, once per flavour (--flavour ort --flavour trt)"),
    (["parity", "--out", "d"], "maskrt parity: error: --out was renamed: use --out-dir DIR (parity writes a folder "
                               "of graphs; the report is --json FILE)"),
    (["eval", "--checkpoint", "c.pt", "--batch-size", "2"],
     "maskrt eval: error: --batch-size was renamed: use --batch N (images per inference)"),
])
def test_old_spellings_fail_with_one_line_naming_the_new(argv, line, capsys):
    from maskrt.runtime.cli import main

    with pytest.raises(SystemExit) as e:  # a usage error, as argparse's own: exit status 2
        main(argv)
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [line]


def test_parity_flavour_is_repeatable():
    from maskrt.runtime.cli import build_parser

    argv = ["parity", "--flavour", "trt", "--flavour", "ort"]
    assert build_parser(argv).parse_args(argv).flavour == ["trt", "ort"]
    assert build_parser(["parity"]).parse_args(["parity"]).flavour is None  # all flavours


def test_old_preset_name_is_an_alias_with_a_deprecation_line():
    import warnings

    from maskrt.runtime.config import preset

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        old = preset("mnv3-small")
    assert [str(w.message) for w in seen] == [
        "preset 'mnv3-small' is deprecated (its body is MobileNetV3-Large): use 'mnv3-lite'"]
    assert old == preset("mnv3-lite") and old.backbone == "mobilenet_v3_large"
