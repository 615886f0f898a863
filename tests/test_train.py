"""The training loop: loss goes down, exact resume, DDP under torchrun, outputs, bad input, divergence.

Every run here is real (no mocked model): a tiny synthetic set of 128x128 images and the
r18-small preset with smaller RPN/RoI sampling budgets, on the CPU.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from maskrt.runtime.config import preset
from maskrt.train.data import synthetic
from maskrt.train.data.coco import CocoInstances, collate
from maskrt.train.model.checkpoint import load_checkpoint, read_checkpoint
from maskrt.train.model.mask_rcnn import LOSS_NAMES, MaskRCNN
from maskrt.train.model.roi_heads import RoIHeads
from maskrt.train.schedule import lr_factor
from maskrt.train.trainer import (
    CHECKPOINT_LAST,
    LOSS_CURVE,
    METRICS_FILE,
    MODEL_FINAL,
    BackboneAutocast,
    StreamBatchSampler,
    TrainConfig,
    TrainingDiverged,
    add_train_arguments,
    epoch_permutation,
    read_metrics,
    train,
    train_config_from_args,
)

# Smaller sampling budgets than the preset: the same code paths, a faster iteration.
MODEL = preset("r18-small").replace(rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=150,
                                    box_batch_size_per_image=64)
BASE = TrainConfig(lr=0.01, warmup_iters=3, schedule="step", milestones=(20,), log_every=1, checkpoint_every=100,
                   batch_size=2, min_sizes=(96, 112, 128), max_size=160, flip_prob=0.5, seed=0)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Interrupt(Exception):
    """Raised from a callback: the run stops mid-way as a crash would."""


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    synthetic.generate(root, 6, 0, seed=0, image_size=(128, 128), progress=False)
    return root


@pytest.fixture(scope="module")
def reference_run(data_dir, tmp_path_factory):
    """30 uninterrupted iterations, one metrics line per iteration."""
    out = tmp_path_factory.mktemp("reference")
    cfg = BASE.replace(max_iters=30, checkpoint_every=10)
    result = train(cfg, out, data=data_dir, model_config=MODEL, progress=False)
    return cfg, out, result


# ----------------------------------------------------------------------------- pure parts
def test_lr_schedule_warmup_step_cosine():
    kw = dict(max_iters=100, warmup_iters=10, warmup_factor=0.1)
    assert lr_factor(0, schedule="step", milestones=(50, 80), gamma=0.1, **kw) == pytest.approx(0.1)
    assert lr_factor(5, schedule="step", milestones=(50, 80), gamma=0.1, **kw) == pytest.approx(0.55)
    assert [lr_factor(i, schedule="step", milestones=(50, 80), gamma=0.1, **kw) for i in (10, 49, 50, 79, 80)] == \
        pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01])
    assert lr_factor(50, schedule="cosine", **kw) == pytest.approx(0.5)
    assert lr_factor(100, schedule="cosine", **kw) == pytest.approx(0.0, abs=1e-12)


def test_data_stream_shards_each_epoch_permutation():
    n, bs, world = 7, 2, 2
    per_rank = [StreamBatchSampler(n, bs, seed=5, rank=r, world_size=world, start=0, stop=7) for r in range(world)]
    stream = [key for batches in zip(*per_rank, strict=True) for b in batches for key in b]
    assert len(stream) == 7 * bs * world
    for e in range(len(stream) // n):  # every whole epoch is exactly that epoch's permutation
        assert [i for ep, i in stream[e * n : (e + 1) * n]] == epoch_permutation(5, e, n).tolist()
        assert {ep for ep, _ in stream[e * n : (e + 1) * n]} == {e}
    # A resumed sampler continues the same stream.
    later = StreamBatchSampler(n, bs, seed=5, rank=1, world_size=world, start=4, stop=7)
    assert list(later) == list(per_rank[1])[4:]


def test_train_config_round_trip_and_validation():
    cfg = BASE.resolved(MODEL)
    assert TrainConfig.from_json(cfg.to_json()) == cfg
    assert TrainConfig(max_iters=90).resolved(MODEL).milestones == (60, 80)
    assert TrainConfig().resolved(MODEL).min_sizes == (320,) and TrainConfig().resolved(MODEL).max_size == 320
    for bad in (dict(lr=-1.0), dict(schedule="poly"), dict(amp="fp8"), dict(milestones=(5, 3)), dict(batch_size=0),
                dict(lr=float("nan"))):
        with pytest.raises(ValueError, match="TrainConfig"):
            TrainConfig(**bad)


def test_command_line_options_build_the_config():
    import argparse

    parser = add_train_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--out-dir", "x", "--lr", "0.02", "--milestones", "5", "9", "--min-sizes", "96", "128",
                              "--amp", "bf16", "--max-iters", "10"])
    cfg = train_config_from_args(args)
    assert (cfg.lr, cfg.milestones, cfg.min_sizes, cfg.amp, cfg.max_iters) == (0.02, (5, 9), (96, 128), "bf16", 10)
    assert cfg.momentum == 0.9 and cfg.weight_decay == 1e-4  # untouched defaults


def test_mixed_precision_covers_the_backbone_only(data_dir):
    # CPU autocast stands in for CUDA's: the mechanism (hooks, casts, cleanup) is the same.
    ds = CocoInstances(data_dir / "annotations" / "instances_train.json", data_dir / "train")
    torch.manual_seed(0)
    model = MaskRCNN(MODEL.replace(num_classes=ds.num_classes)).train()
    images, targets = collate([ds[0], ds[1]])
    torch.manual_seed(1)
    reference = model(images, targets)
    seen = {}
    hooks = [model.backbone.body.register_forward_hook(lambda m, a, out: seen.update(body=out["0"].dtype)),
             model.rpn.register_forward_pre_hook(lambda m, a: seen.update(rpn=a[0][0].dtype))]
    mixed = BackboneAutocast(model, "cpu", torch.bfloat16)
    torch.manual_seed(1)
    losses = model(images, targets)
    sum(losses.values()).backward()
    mixed.close()
    for h in hooks:
        h.remove()
    assert seen == {"body": torch.bfloat16, "rpn": torch.float32}
    assert not torch.is_autocast_enabled("cpu")
    for k in LOSS_NAMES:
        assert losses[k].dtype == torch.float32
        assert float(losses[k].detach()) == pytest.approx(float(reference[k].detach()), rel=0.05, abs=1e-3), k
    assert model.backbone.body.conv1.weight.grad is not None
    assert not model.backbone._forward_pre_hooks and not model.backbone._forward_hooks


# ----------------------------------------------------------------------------- training runs
def test_thirty_iterations_lower_the_loss(reference_run):
    _, out, result = reference_run
    totals = [r["total"] for r in read_metrics(out / METRICS_FILE)]
    assert len(totals) == 30 and result.iteration == 30
    first, last = sum(totals[:5]) / 5, sum(totals[-5:]) / 5
    assert last < 0.85 * first, (first, last)


def test_outputs_are_valid_and_load_with_weights_only(reference_run):
    cfg, out, _ = reference_run
    lines = (out / METRICS_FILE).read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["iter"] for r in records] == list(range(1, 31))
    for r in records:
        assert set(r) >= {"iter", "epoch", "lr", *LOSS_NAMES, "total", "grad_norm", "time", "data_time"}
        assert r["total"] == pytest.approx(sum(r[k] for k in LOSS_NAMES))
        expected_lr = cfg.lr * lr_factor(r["iter"] - 1, schedule="step", max_iters=30, milestones=(20,), gamma=0.1,
                                         warmup_iters=3, warmup_factor=cfg.warmup_factor)
        assert r["lr"] == pytest.approx(expected_lr)
    assert (out / LOSS_CURVE).read_bytes()[:8] == PNG_MAGIC

    for name in (CHECKPOINT_LAST, MODEL_FINAL):
        payload = torch.load(out / name, map_location="cpu", weights_only=True)
        assert payload["iteration"] == 30 and TrainConfig.from_json(payload["train_config"]).max_iters == 30
    last = torch.load(out / CHECKPOINT_LAST, map_location="cpu", weights_only=True)
    assert {"optimizer", "scheduler", "rng", "data_order", "log_window"} <= set(last)
    assert len(last["rng"]) == 1 and last["data_order"]["num_images"] == 6
    final = torch.load(out / MODEL_FINAL, map_location="cpu", weights_only=True)
    assert "optimizer" not in final and "rng" not in final
    assert (out / MODEL_FINAL).stat().st_size < 0.6 * (out / CHECKPOINT_LAST).stat().st_size

    model, payload = load_checkpoint(out / MODEL_FINAL)
    names = ("__background__", *(name for _, name in synthetic.CATEGORIES))
    assert payload["config"].class_names == names and payload["config"].num_classes == 7
    assert payload["config"].extra["coco_category_ids"] == [0, *(cid for cid, _ in synthetic.CATEGORIES)]
    assert payload["config"].rpn_pre_nms_top_n_train == 300  # the model_config override travelled
    model.train()
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_interrupted_and_resumed_run_gives_the_same_losses(reference_run, data_dir, tmp_path):
    cfg, ref_out, _ = reference_run
    out = tmp_path / "run"

    def crash_at_5(it, losses):
        if it == 5:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(cfg.replace(checkpoint_every=3), out, data=data_dir, model_config=MODEL, progress=False,
              callback=crash_at_5)
    assert read_checkpoint(out / CHECKPOINT_LAST)["iteration"] == 3
    assert [r["iter"] for r in read_metrics(out / METRICS_FILE)] == list(range(1, 6))

    # Resume from iteration 3 with run-control changes only: a shorter run and a worker process
    # for the data (augmentation draws must not depend on where the sample is loaded).
    result = train(cfg.replace(checkpoint_every=3, max_iters=7, num_workers=1), out, data=data_dir,
                   model_config=MODEL, resume=True, progress=False)
    assert result.iteration == 7
    resumed = read_metrics(out / METRICS_FILE)
    reference = read_metrics(ref_out / METRICS_FILE)[:7]
    assert [r["iter"] for r in resumed] == list(range(1, 8))  # lines 4, 5 of the crashed run replaced
    for a, b in zip(reference, resumed, strict=True):
        for k in (*LOSS_NAMES, "total", "lr"):
            assert b[k] == pytest.approx(a[k], abs=1e-6), (a["iter"], k)


def test_resume_refuses_a_different_config(reference_run, data_dir):
    cfg, out, _ = reference_run
    before = _sha(out / CHECKPOINT_LAST)
    with pytest.raises(ValueError, match=r"differs .*lr: 0\.01 -> 0\.02"):
        train(cfg.replace(lr=0.02), out, data=data_dir, model_config=MODEL, resume=True, progress=False)
    with pytest.raises(ValueError, match="model configuration differs"):
        train(cfg, out, data=data_dir, model_config="r18-small", resume=True, progress=False)
    with pytest.raises(ValueError, match="already holds a training run"):
        train(cfg, out, data=data_dir, model_config=MODEL, progress=False)
    assert _sha(out / CHECKPOINT_LAST) == before


def test_resume_accepts_a_renamed_config(reference_run, data_dir, tmp_path):
    # A preset renamed after the run started (only ModelConfig.name differs) still resumes; the
    # checkpoint keeps its name. The run is complete, so nothing is trained.
    cfg, ref_out, _ = reference_run
    out = tmp_path / "run"
    out.mkdir()
    (out / CHECKPOINT_LAST).write_bytes((ref_out / CHECKPOINT_LAST).read_bytes())
    result = train(cfg, out, data=data_dir, model_config=MODEL.replace(name="renamed_preset"), resume=True,
                   progress=False)
    assert result.iteration == 30
    assert read_checkpoint(out / CHECKPOINT_LAST)["config"].name == MODEL.name


def test_fine_tune_starts_from_the_checkpoint_weights(reference_run, data_dir, tmp_path):
    # --weights: a new run (iteration 0, fresh optimizer) whose model starts as the checkpoint's. With
    # a learning rate too small to move anything, its final weights are the checkpoint's; a model
    # initialised afresh would differ everywhere.
    cfg, ref_out, _ = reference_run
    src = ref_out / MODEL_FINAL
    out = tmp_path / "ft"
    result = train(cfg.replace(lr=1e-12, warmup_iters=0, max_iters=2, checkpoint_every=2), out, data=data_dir,
                   weights=src, progress=False)
    assert result.iteration == 2
    init, tuned = read_checkpoint(src), read_checkpoint(out / MODEL_FINAL)
    assert tuned["config"] == init["config"]  # the checkpoint's own config, no --config given
    for k, v in init["model"].items():
        torch.testing.assert_close(tuned["model"][k], v, atol=1e-6, rtol=0, msg=k)
    # and its first losses are those of a trained model, not of iteration 1 of a fresh one
    first_ft = read_metrics(out / METRICS_FILE)[0]["total"]
    first_ref = read_metrics(ref_out / METRICS_FILE)[0]["total"]
    assert first_ft < 0.8 * first_ref


def test_fine_tune_refusals_leave_nothing(reference_run, data_dir, tmp_path):
    cfg, ref_out, _ = reference_run
    src = ref_out / MODEL_FINAL
    out = tmp_path / "ft"
    with pytest.raises(ValueError, match="give one of them"):
        train(cfg, ref_out, data=data_dir, weights=src, resume=True, progress=False)
    # a preset that is not the checkpoint's architecture (here: other sampling budgets)
    with pytest.raises(ValueError, match=r"not the checkpoint's architecture: .*rpn_pre_nms_top_n_train"):
        train(cfg, out, data=data_dir, weights=src, model_config="r18-small", progress=False)
    with pytest.raises(ValueError, match="no such checkpoint"):
        train(cfg, out, data=data_dir, weights=tmp_path / "missing.pt", progress=False)
    assert not out.exists() or _no_outputs(out)


def test_two_process_ddp_under_torchrun(data_dir, tmp_path):
    out = tmp_path / "ddp"
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "maskrt.train.trainer", "--data", str(data_dir), "--out-dir", str(out), "--max-iters", "3",
           "--log-every", "1", "--checkpoint-every", "2", "--warmup-iters", "1", "--min-sizes", "96",
           "--max-size", "128", "--batch-size", "1", "--device", "cpu", "--no-progress"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert [rec["iter"] for rec in read_metrics(out / METRICS_FILE)] == [1, 2, 3]  # rank 0 alone writes
    model, payload = load_checkpoint(out / MODEL_FINAL)
    assert payload["iteration"] == 3 and payload["config"].num_classes == 7
    last = torch.load(out / CHECKPOINT_LAST, map_location="cpu", weights_only=True)
    assert last["data_order"]["world_size"] == 2 and len(last["rng"]) == 2
    assert not torch.equal(last["rng"][0]["torch"], last["rng"][1]["torch"])  # per-rank sampling streams


# ----------------------------------------------------------------------------- bad input
def _no_outputs(out: Path) -> bool:
    return not out.exists() or not any(out.iterdir())


def test_bad_data_is_refused_before_training(data_dir, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="annotation file not found"):
        train(BASE, out, train_ann=tmp_path / "missing.json", train_images=data_dir / "train", progress=False)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="malformed JSON"):
        train(BASE, out, train_ann=bad, train_images=data_dir / "train", progress=False)
    bad.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}))
    with pytest.raises(ValueError, match="no training images"):
        train(BASE, out, train_ann=bad, train_images=data_dir / "train", progress=False)
    ann = json.loads((data_dir / "annotations" / "instances_train.json").read_text())
    ann["images"][0]["file_name"] = "not_there.png"
    bad.write_text(json.dumps(ann))
    with pytest.raises(ValueError, match="missing"):
        train(BASE, out, train_ann=bad, train_images=data_dir / "train", progress=False)
    with pytest.raises(ValueError, match="no training data"):
        train(BASE, out, progress=False)
    with pytest.raises(ValueError, match="no checkpoint"):
        train(BASE, out, data=data_dir, resume=True, progress=False)
    assert _no_outputs(out)


def test_unwritable_output_folder_is_refused(data_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="not writable"):
        train(BASE, blocker / "out", data=data_dir, model_config=MODEL, progress=False)


def test_nan_loss_stops_with_the_iteration_and_terms(data_dir, tmp_path, monkeypatch):
    out = tmp_path / "nan"
    calls = {"n": 0}
    real = RoIHeads._train_forward

    def poisoned(self, *args, **kwargs):
        losses = real(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 5:
            losses["loss_mask"] = losses["loss_mask"] * float("nan")
        return losses

    monkeypatch.setattr(RoIHeads, "_train_forward", poisoned)
    seen = {}

    def record(it, losses):
        if (out / CHECKPOINT_LAST).exists():
            seen[it] = _sha(out / CHECKPOINT_LAST)

    with pytest.raises(TrainingDiverged, match=r"non-finite loss at iteration 5 .*loss_mask=nan.*iteration 4\)"):
        train(BASE.replace(max_iters=8, checkpoint_every=2, warmup_iters=0), out, data=data_dir, model_config=MODEL,
              progress=False, callback=record)
    assert _sha(out / CHECKPOINT_LAST) == seen[4]
    assert read_checkpoint(out / CHECKPOINT_LAST)["iteration"] == 4
    assert not (out / MODEL_FINAL).exists()
    assert [r["iter"] for r in read_metrics(out / METRICS_FILE)] == [1, 2, 3, 4]


def test_exploding_learning_rate_stops_and_keeps_the_last_checkpoint(data_dir, tmp_path):
    out = tmp_path / "explode"
    seen = {}

    def record(it, losses):
        seen[it] = _sha(out / CHECKPOINT_LAST)

    with pytest.raises(TrainingDiverged, match=r"non-finite .* iteration \d+"):
        train(BASE.replace(lr=1e6, warmup_iters=0, max_iters=8, checkpoint_every=1), out, data=data_dir,
              model_config=MODEL, progress=False, callback=record)
    last = max(seen)
    assert last < 8 and _sha(out / CHECKPOINT_LAST) == seen[last]
    payload = read_checkpoint(out / CHECKPOINT_LAST)
    assert payload["iteration"] == last
    assert all(torch.isfinite(v).all() for v in payload["model"].values() if v.is_floating_point())
