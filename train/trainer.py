"""The training loop: ``maskrt train`` and ``python -m maskrt.train.trainer`` (torchrun-ready).

What one run writes under ``out_dir`` (rank 0 only):

* ``metrics.jsonl``: one JSON object per log step: ``iter`` (completed iterations), ``epoch``
  (images seen / data-set size), ``lr``, each loss of ``LOSS_NAMES``, ``total``, ``grad_norm``
  (means over the iterations since the previous line, over all ranks), ``time`` and
  ``data_time`` (seconds per iteration, same window);
* ``loss_curve.png``: total and each loss term against the iteration, log y; rewritten at every
  checkpoint and at the end;
* ``checkpoint_last.pt``: everything ``--resume`` needs (weights, optimizer, schedule, RNG
  states of every rank, data-order state, ``TrainConfig`` JSON), written atomically every
  ``checkpoint_every`` iterations and at the end;
* ``model_final.pt``: weights + ``ModelConfig`` (+ the ``TrainConfig`` JSON), for export/eval.

Every file loads with ``torch.load(weights_only=True)``: only tensors, strings, numbers, lists
and dicts are saved (RNG states become tensors and lists).

Exact resume. A run stopped after iteration ``k`` and resumed from a checkpoint of iteration
``k`` computes the same losses as an uninterrupted run (deterministic on CPU), because

* the data order is recomputed, not replayed: the training stream is the concatenation of
  per-epoch permutations ``epoch_permutation(seed, epoch, N)``; iteration ``i`` (1-based) takes
  the global positions ``[(i-1) G, i G)`` with ``G = world_size * batch_size`` and rank ``r``
  the slice ``[r B, (r+1) B)`` of them (a batch may straddle two epochs);
* augmentations are drawn from generators seeded by ``(seed, epoch, index)`` inside
  ``CocoInstances``, whatever the worker count;
* the model's proposal sampling draws from torch's global RNG (``torch.randperm``), whose state
  (per rank) is saved and restored; the DataLoader gets a generator of its own because it would
  otherwise draw its base seed from the global RNG each time an iterator is created, which
  shifts every later sampling draw after a resume.

Distributed. Under ``torchrun`` (``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` in the environment) the
process group is initialised (gloo on CPU, nccl on CUDA), the model is wrapped in
``DistributedDataParallel`` and every rank reads its own shard of each global batch.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from maskrt.runtime.cli import renamed_option
from maskrt.runtime.config import JsonConfig, ModelConfig, preset

from .data.coco import CocoInstances, collate
from .data.transforms import Compose, RandomHorizontalFlip, ResizeShortestSide
from .model.checkpoint import load_state_dict_strict, read_checkpoint, save_checkpoint
from .model.mask_rcnn import LOSS_NAMES, MaskRCNN
from .schedule import SCHEDULES, LRSchedule

log = logging.getLogger(__name__)

AMP_MODES = ("off", "bf16", "fp16")
CHECKPOINT_LAST = "checkpoint_last.pt"
MODEL_FINAL = "model_final.pt"
METRICS_FILE = "metrics.jsonl"
LOSS_CURVE = "loss_curve.png"
# Fields a resume may change: they steer the run, not the optimisation of the iterations done.
RESUMABLE_CHANGES = ("max_iters", "checkpoint_every", "log_every", "num_workers")
# Separates the data-order seed stream from CocoInstances' (seed, epoch, index) augmentation streams.
_ORDER_STREAM = 0x6F726472
_SAMPLING_STREAM = 0x73616D70


# ---------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class TrainConfig(JsonConfig):
    """Optimisation and data-augmentation settings of one training run.

    Saved as JSON in every checkpoint; ``--resume`` refuses a configuration that differs from
    the saved one except in ``RESUMABLE_CHANGES``. Empty ``milestones``/``min_sizes`` and
    ``max_size = 0`` mean "derive" (see :meth:`resolved`); checkpoints hold resolved values.
    """

    lr: float = 0.01  # base learning rate for batch_size * world_size images per update
    momentum: float = 0.9
    weight_decay: float = 1e-4
    weight_decay_norm: float = 0.0  # GroupNorm/BatchNorm scales and shifts (detectron2's default)
    warmup_iters: int = 100
    warmup_factor: float = 1e-3
    schedule: str = "step"  # "step" (milestones, gamma) or "cosine"
    milestones: tuple[int, ...] = ()  # () = 2/3 and 8/9 of max_iters
    gamma: float = 0.1
    max_iters: int = 2000
    batch_size: int = 2  # images per process
    grad_clip: float = 0.0  # max global gradient norm, 0 = off
    amp: str = "off"  # "bf16" / "fp16" autocast on CUDA; ignored (with a warning) on CPU
    checkpoint_every: int = 500
    log_every: int = 20
    seed: int = 0
    num_workers: int = 0
    min_sizes: tuple[int, ...] = ()  # shortest-side sizes drawn per image; () = the model's input size
    max_size: int = 0  # longest side at most; 0 = the model's input size
    flip_prob: float = 0.5

    def _validate(self) -> None:
        def bad(name: str, why: str) -> None:
            raise ValueError(f"TrainConfig.{name}: {why} (got {getattr(self, name)!r})")

        for name in ("lr", "momentum", "weight_decay", "weight_decay_norm", "warmup_factor", "gamma",
                     "grad_clip", "flip_prob"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                bad(name, "must be a finite number")
        for name in ("warmup_iters", "max_iters", "batch_size", "checkpoint_every", "log_every", "seed",
                     "num_workers", "max_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                bad(name, "must be an integer")
        if self.lr <= 0:
            bad("lr", "must be positive")
        if not 0 <= self.momentum < 1:
            bad("momentum", "must be in [0, 1)")
        for name in ("weight_decay", "weight_decay_norm", "grad_clip", "warmup_iters", "num_workers", "max_size",
                     "seed"):
            if getattr(self, name) < 0:
                bad(name, "must be >= 0")
        if not 0 < self.warmup_factor <= 1:
            bad("warmup_factor", "must be in (0, 1]")
        if not 0 < self.gamma <= 1:
            bad("gamma", "must be in (0, 1]")
        for name in ("max_iters", "batch_size", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                bad(name, "must be >= 1")
        if self.schedule not in SCHEDULES:
            bad("schedule", f"must be one of {SCHEDULES}")
        if self.amp not in AMP_MODES:
            bad("amp", f"must be one of {AMP_MODES}")
        m = self.milestones
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in m) or list(m) != sorted(set(m)):
            bad("milestones", "must be increasing positive integers")
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in self.min_sizes):
            bad("min_sizes", "must be positive integers")
        if not 0 <= self.flip_prob <= 1:
            bad("flip_prob", "must be in [0, 1]")

    def resolved(self, model_cfg: ModelConfig) -> TrainConfig:
        """Fill the derived fields: milestones at 2/3 and 8/9 of ``max_iters`` (for "step"), and
        the resize range from the model's input size (H, W): shortest side ``min(H, W)``,
        longest ``max(H, W)``, the box the runtime letterboxes into."""
        changes: dict[str, Any] = {}
        if self.schedule == "step" and not self.milestones:
            ms = sorted({max(1, round(self.max_iters * 2 / 3)), max(1, round(self.max_iters * 8 / 9))})
            changes["milestones"] = tuple(ms)
        if not self.min_sizes:
            changes["min_sizes"] = (min(model_cfg.input_size),)
        if not self.max_size:
            changes["max_size"] = max(model_cfg.input_size)
        return self.replace(**changes) if changes else self


def config_differences(saved: TrainConfig, requested: TrainConfig,
                       ignore: Sequence[str] = RESUMABLE_CHANGES) -> list[str]:
    """``"name: saved -> requested"`` for each field that differs, except ``ignore``."""
    a, b = saved.to_dict(), requested.to_dict()
    return [f"{k}: {a[k]!r} -> {b[k]!r}" for k in a if k not in ignore and a[k] != b[k]]


class TrainingDiverged(RuntimeError):
    """A loss, the gradient norm or the weights became NaN or infinite."""


@dataclass
class TrainResult:
    iteration: int  # completed iterations
    out_dir: Path
    final_model: Path
    last_checkpoint: Path
    last_metrics: dict[str, Any] | None  # the last metrics.jsonl line (None when nothing ran)


# ---------------------------------------------------------------------------------- data order
def epoch_permutation(seed: int, epoch: int, num_images: int) -> np.ndarray:
    """The order of the data set in ``epoch``: a permutation of ``range(num_images)`` that
    depends only on ``(seed, epoch)``, so a resume recomputes it instead of storing it."""
    return np.random.default_rng([int(seed), _ORDER_STREAM, int(epoch)]).permutation(num_images)


class StreamBatchSampler:
    """One rank's batches, as lists of ``(epoch, index)``, for iterations ``start + 1 .. stop``.

    The global stream is epoch 0's permutation, then epoch 1's, ...; iteration ``i`` (1-based)
    consumes positions ``[(i-1) G, i G)``, ``G = world_size * batch_size``, and rank ``r`` gets
    positions ``(i-1) G + r B .. (i-1) G + (r+1) B - 1``. Nothing is dropped or padded: a batch
    may hold the end of one epoch and the start of the next, and a data set smaller than
    ``G`` still works.
    """

    def __init__(self, num_images: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 start: int = 0, stop: int = 0) -> None:
        if num_images < 1:
            raise ValueError("no training images")
        self.n, self.bs, self.seed = int(num_images), int(batch_size), int(seed)
        self.rank, self.world = int(rank), int(world_size)
        self.start, self.stop = int(start), int(stop)
        self._cache: tuple[int, np.ndarray] | None = None

    def _perm(self, epoch: int) -> np.ndarray:
        if self._cache is None or self._cache[0] != epoch:
            self._cache = (epoch, epoch_permutation(self.seed, epoch, self.n))
        return self._cache[1]

    def batch(self, i: int) -> list[tuple[int, int]]:
        """Rank's ``(epoch, image index)`` pairs of iteration ``i`` (1-based)."""
        first = (i - 1) * self.world * self.bs + self.rank * self.bs
        out = []
        for p in range(first, first + self.bs):
            epoch, k = divmod(p, self.n)
            out.append((epoch, int(self._perm(epoch)[k])))
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for i in range(self.start + 1, self.stop + 1):
            yield self.batch(i)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


class _EpochIndexed(torch.utils.data.Dataset):
    """``CocoInstances`` addressed by ``(epoch, index)``: the augmentation stream follows each
    sample's own epoch, which can differ within a batch that straddles two epochs."""

    def __init__(self, dataset: CocoInstances) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, dict[str, Any]]:
        """Returns (image uint8 [H, W, 3] BGR, target) of sample ``key[1]`` in epoch ``key[0]``."""
        epoch, index = key
        self.dataset.set_epoch(epoch)  # each worker has its own copy: no races
        return self.dataset[index]


def build_transforms(cfg: TrainConfig) -> Compose:
    """Multi-scale shortest-side resize, then a random horizontal flip (resolved ``cfg``)."""
    if not cfg.min_sizes or not cfg.max_size:
        raise ValueError("build_transforms needs a resolved TrainConfig (min_sizes, max_size)")
    return Compose([ResizeShortestSide(cfg.min_sizes, cfg.max_size), RandomHorizontalFlip(cfg.flip_prob)])


def load_dataset(train_ann: str | os.PathLike, train_images: str | os.PathLike, cfg: TrainConfig) -> CocoInstances:
    """The training set with augmentation, validated (ValueError on any problem found)."""
    ds = CocoInstances(train_ann, train_images, transforms=build_transforms(cfg), seed=cfg.seed)
    if len(ds) == 0:
        raise ValueError(f"{train_ann}: no training images")
    if not any(ds.keep_crowd or not a["iscrowd"] for a in ds.coco.dataset["annotations"]):
        raise ValueError(f"{train_ann}: no usable instance annotations (nothing to train on)")
    return ds


def data_paths(data: str | os.PathLike | None, train_ann: str | os.PathLike | None = None,
               train_images: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """Annotation file and image folder: explicit ones win over the layout of ``data`` (what
    ``maskrt data synth`` writes: ``data/annotations/instances_train.json``, ``data/train``)."""
    if data is None and (train_ann is None or train_images is None):
        raise ValueError("no training data: give --data DIR, or both --train-ann and --train-images")
    ann = Path(train_ann) if train_ann is not None else Path(data) / "annotations" / "instances_train.json"
    img = Path(train_images) if train_images is not None else Path(data) / "train"
    return ann, img


# -------------------------------------------------------------------------------- distributed
@dataclass
class _Dist:
    enabled: bool = False
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False  # we initialised it, so we tear it down

    @property
    def main(self) -> bool:
        return self.rank == 0


def _launched_by_torchrun() -> bool:
    return all(k in os.environ for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"))


def _resolve_device(device: str, dist_info: _Dist) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"unknown device {device!r}; choose auto, cpu or cuda")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available")
        if dist_info.enabled:
            device = f"cuda:{dist_info.local_rank}"
        dev = torch.device(device)
        torch.cuda.set_device(dev)
        return dev
    return torch.device("cpu")


def _init_distributed(device: str) -> _Dist:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return _Dist(True, dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), False)
    if not _launched_by_torchrun():
        return _Dist()
    info = _Dist(True, int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]), True)
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(info.local_rank)  # before init, so nccl binds the right GPU
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return info


def _all_agree(d: _Dist, ok: bool, device: torch.device) -> bool:
    """True when ``ok`` holds on every rank (so all ranks stop together instead of hanging)."""
    if not d.enabled:
        return ok
    import torch.distributed as dist

    flag = torch.tensor([1 if ok else 0], dtype=torch.int32, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


# -------------------------------------------------------------------------------- RNG states
def _rng_state(device: torch.device) -> dict[str, Any]:
    """This process's RNG states, as tensors and plain lists (weights_only-loadable).

    The legacy global numpy and Python generators are unused by maskrt itself (its data
    pipeline uses seeded ``Generator`` objects) but are kept for user code and callbacks."""
    np_state = np.random.get_state(legacy=False)  # noqa: NPY002
    version, py_state, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "numpy": {"bit_generator": np_state["bit_generator"],
                  "key": [int(v) for v in np_state["state"]["key"]], "pos": int(np_state["state"]["pos"]),
                  "has_gauss": int(np_state["has_gauss"]), "gauss": float(np_state["gauss"])},
        "python": {"version": int(version), "state": [int(v) for v in py_state],
                   "gauss_next": None if gauss is None else float(gauss)},
    }


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
    n = state["numpy"]
    np_state = {"bit_generator": n["bit_generator"], "state": {"key": np.asarray(n["key"], np.uint32), "pos": n["pos"]},
                "has_gauss": n["has_gauss"], "gauss": n["gauss"]}
    np.random.set_state(np_state)  # noqa: NPY002
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))


def _derived_seed(*words: int) -> int:
    return int(np.random.SeedSequence([int(w) for w in words]).generate_state(1, np.uint64)[0] >> 1)


# ----------------------------------------------------------------------------------- outputs
def _check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir) as f:
            f.write(b"maskrt")
    except OSError as e:
        raise ValueError(f"output folder {out_dir} is not writable ({e.strerror or e})") from None


def read_metrics(path: Path, upto: int | None = None) -> list[dict[str, Any]]:
    """Lines of a metrics.jsonl (with ``iter <= upto``); a torn last line from a crash is skipped."""
    records = []
    if not path.is_file():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("iter"), int) and (upto is None or rec["iter"] <= upto):
            records.append(rec)
    return records


@contextlib.contextmanager
def _atomic_open(path: Path, mode: str, **kwargs: Any) -> Iterator[Any]:
    """Write a sibling temporary file, then rename it over ``path``: readers never see a torn
    file. Created with ``open`` rather than ``mkstemp`` so the umask, not 0600, sets its mode."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def plot_loss_curve(records: Sequence[dict[str, Any]], path: str | os.PathLike) -> None:
    """Total and each loss term of ``records`` (metrics.jsonl lines) against the iteration, log
    y, as a PNG written atomically. Uses Agg directly: no pyplot, no global backend switch."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    fig = Figure(figsize=(8, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    iters = [r["iter"] for r in records]
    ax.plot(iters, [r["total"] for r in records], color="black", linewidth=2, label="total")
    for name in LOSS_NAMES:
        ax.plot(iters, [r[name] for r in records], linewidth=1, label=name.removeprefix("loss_"))
    if records:
        ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_title(f"training loss ({path.parent.name})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    with _atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")


# ------------------------------------------------------------------------------------ model
def _model_config(model_config: ModelConfig | str | None, ds: CocoInstances) -> ModelConfig:
    """The preset (or given config) with the data set's classes. ``extra["coco_category_ids"]``
    maps each label (index) back to its COCO category id (0 for background) for evaluation."""
    base = preset(model_config) if isinstance(model_config, str) else model_config
    if not isinstance(base, ModelConfig):
        raise ValueError(f"model_config must be a preset name or a ModelConfig, got {type(model_config).__name__}")
    cat_ids = [0] + [ds.label_to_cat_id[i] for i in range(1, ds.num_classes)]
    return base.replace(num_classes=ds.num_classes, class_names=ds.class_names,
                        extra={**base.extra, "coco_category_ids": cat_ids})


def _param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Trainable parameters in two groups: normalisation layers (``weight_decay_norm``) and the
    rest (``weight_decay``). Order follows ``named_parameters`` so optimizer states map back."""
    norm_types = (nn.GroupNorm, nn.LayerNorm, nn.modules.batchnorm._NormBase)
    norm_params = {id(p) for m in model.modules() if isinstance(m, norm_types) for p in m.parameters(recurse=False)}
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if id(p) in norm_params else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": cfg.weight_decay_norm})
    return groups


class BackboneAutocast:
    """Run ``model.backbone`` (body + FPN) under autocast and give the heads float32 features.

    The whole forward is not autocast because the RPN builds anchors and decodes boxes in the
    features' dtype, where float16 / bfloat16 lose whole pixels at the coordinates of large
    inputs, and because the model's RoIAlign writes float32 samples into a buffer of the
    features' dtype, which fails under autocast. The backbone holds most of the FLOPs.

    Hooks, not a wrapper module, so the state-dict names stay those of ``MaskRCNN``. ``close()``
    removes the hooks and leaves an autocast region that an exception in the backbone left open
    (autocast state is per thread and would leak into the caller otherwise).
    """

    def __init__(self, model: MaskRCNN, device_type: str, dtype: torch.dtype) -> None:
        self.device_type, self.dtype = device_type, dtype
        self._ctx: Any = None
        self._handles = [model.backbone.register_forward_pre_hook(self._enter),
                         model.backbone.register_forward_hook(self._leave)]

    def _enter(self, module: nn.Module, args: Any) -> None:
        self._ctx = torch.autocast(self.device_type, dtype=self.dtype)
        self._ctx.__enter__()

    def _leave(self, module: nn.Module, args: Any, output: dict[str, Tensor]) -> dict[str, Tensor]:
        """output: FPN levels, float [N, C, H_l, W_l] in ``dtype``; returned as float32."""
        self._ctx, ctx = None, self._ctx
        ctx.__exit__(None, None, None)
        return type(output)((k, v.float()) for k, v in output.items())

    def close(self) -> None:
        if self._ctx is not None:
            self._ctx, ctx = None, self._ctx
            ctx.__exit__(None, None, None)
        for h in self._handles:
            h.remove()
        self._handles = []


def _nonfinite_message(what: str, it: int, values: Sequence[float], ckpt: Path, saved_iter: int) -> str:
    """The divergence error: what went wrong, where, every loss term, and what is on disk."""
    terms = ", ".join(f"{n}={v:.6g}" for n, v in zip(LOSS_NAMES, values, strict=True))
    kept = f"{ckpt} (iteration {saved_iter}) is unchanged" if saved_iter > 0 else "no checkpoint was written"
    return f"{what} at iteration {it} (losses: {terms}); stopped without saving: {kept}"


# ------------------------------------------------------------------------------------ train
def train(
    cfg: TrainConfig | None,
    out_dir: str | os.PathLike,
    *,
    data: str | os.PathLike | None = None,
    train_ann: str | os.PathLike | None = None,
    train_images: str | os.PathLike | None = None,
    model_config: ModelConfig | str | None = None,
    resume: bool = False,
    weights: str | os.PathLike | None = None,
    device: str = "auto",
    progress: bool = True,
    callback: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train Mask R-CNN on a COCO-format set and write the outputs listed in the module docstring.

    Args:
        cfg: optimisation settings; ``None`` = defaults, or on resume the checkpoint's own.
        out_dir: output folder; refused when it already holds a run unless ``resume``.
        data / train_ann / train_images: the training set (see :func:`data_paths`); on resume
            the checkpoint's paths are used when none are given.
        model_config: preset name or ``ModelConfig`` (``num_classes``/``class_names`` are always
            taken from the data set); ``None`` = "r18-small", or on resume the checkpoint's.
        resume: continue from ``out_dir/checkpoint_last.pt``; the configuration must match the
            saved one except in ``RESUMABLE_CHANGES`` and the process count must be the same.
        weights: fine-tune: start a new run (iteration 0, fresh optimizer and schedule) from the
            weights of this checkpoint (``model_final.pt``, ``checkpoint_last.pt`` or the embedded
            default). The model configuration is the checkpoint's (``model_config`` may name the
            same architecture; any difference is refused) and the data set must have its classes.
            Not with ``resume``, which continues the run's own weights.
        device: "auto", "cpu", "cuda" (under torchrun: each rank's ``LOCAL_RANK`` GPU).
        progress: show a tqdm bar (rank 0).
        callback: ``callback(iteration, losses)`` on every rank after each iteration (after
            its checkpoint, if any); an exception raised there stops the run as a crash would.

    Raises ValueError before the first iteration for bad configuration, data or output folder,
    and ``TrainingDiverged`` when a loss, the gradient norm or the weights become non-finite
    (nothing is saved for that iteration; the previous checkpoint stays).
    """
    d = _init_distributed(device)
    ok = False
    try:
        result = _train(d, cfg, Path(out_dir), data, train_ann, train_images, model_config, resume, weights,
                        device, progress, callback)
        ok = True
        return result
    finally:
        if d.owns_group:
            import torch.distributed as dist

            if ok:
                dist.barrier()
            dist.destroy_process_group()


def _prepare(d: _Dist, cfg: TrainConfig | None, out: Path, data, train_ann, train_images, model_config,
             resume: bool, weights) -> tuple[TrainConfig, ModelConfig, CocoInstances, dict[str, Any] | None,
                                            dict[str, Tensor] | None]:
    """Everything that can be checked before a model exists. Raises ValueError. Returns the
    configurations, the data set, the resume payload (or None) and the fine-tune weights (or None)."""
    payload = None
    init_state = None
    ckpt_path = out / CHECKPOINT_LAST
    if resume and weights is not None:
        raise ValueError("--weights starts a new run from a checkpoint's weights, --resume continues this run: "
                         "give one of them")
    if resume:
        if not ckpt_path.is_file():
            raise ValueError(f"--resume: no checkpoint {ckpt_path} to resume from")
        payload = read_checkpoint(ckpt_path)
        for key in ("train_config", "iteration", "optimizer", "rng", "data_order"):
            if key not in payload:
                raise ValueError(f"{ckpt_path}: not a training checkpoint (no {key!r}); cannot resume from it")
        saved = TrainConfig.from_json(payload["train_config"])
        saved_model: ModelConfig = payload["config"]
        if cfg is None:
            cfg = saved
        else:
            cfg = cfg.resolved(saved_model)
            diff = config_differences(saved, cfg)
            if diff:
                raise ValueError(f"--resume: the training configuration differs from {ckpt_path}: "
                                 + "; ".join(diff) + f" (only {', '.join(RESUMABLE_CHANGES)} may change)")
            if cfg.schedule == "cosine" and cfg.max_iters != saved.max_iters and d.main:
                log.warning("max_iters %d -> %d stretches the cosine schedule: the learning rate jumps at the resume",
                            saved.max_iters, cfg.max_iters)
        if data is None and train_ann is None and train_images is None and isinstance(payload.get("data"), dict):
            train_ann, train_images = payload["data"]["train_ann"], payload["data"]["train_images"]
        ann, img = data_paths(data, train_ann, train_images)
        ds = load_dataset(ann, img, cfg)
        mcfg = _model_config(model_config, ds) if model_config is not None else saved_model
        # NOTE: `name` is a label, not a hyper-parameter: a preset renamed since the run started
        # (mnv3-small -> mnv3-lite) resumes, and the checkpoint keeps the name it was trained under.
        if mcfg.name != saved_model.name and mcfg.replace(name=saved_model.name) == saved_model:
            mcfg = saved_model
        if mcfg != saved_model:
            a, b = saved_model.to_dict(), mcfg.to_dict()
            diff = [f"{k}: {a[k]!r} -> {b[k]!r}" for k in a if a[k] != b[k]]
            raise ValueError(f"--resume: the model configuration differs from {ckpt_path}: " + "; ".join(diff))
        order = payload["data_order"]
        if order["num_images"] != len(ds):
            raise ValueError(f"--resume: the training set has {len(ds)} images but the checkpoint was trained on "
                             f"{order['num_images']}; the data order cannot continue")
        if order["world_size"] != d.world:
            raise ValueError(f"--resume: the checkpoint was written by {order['world_size']} process(es), this run "
                             f"has {d.world}; resume with the same count (the data order and RNG states are "
                             f"per process)")
    else:
        cfg = cfg if cfg is not None else TrainConfig()
        init = read_checkpoint(weights) if weights is not None else None
        base = model_config if model_config is not None else (init["config"] if init is not None else "r18-small")
        base_cfg = preset(base) if isinstance(base, str) else base
        if not isinstance(base_cfg, ModelConfig):
            raise ValueError(f"model_config must be a preset name or a ModelConfig, got {type(base).__name__}")
        if init is not None and model_config is not None:
            # NOTE: a preset names an architecture; a checkpoint trained from it may have changed fields
            # (anchor sizes, input size). Fine-tuning keeps the checkpoint's, so a preset must agree.
            base_cfg = _same_architecture(init["config"], base_cfg, weights)
        cfg = cfg.resolved(base_cfg)
        ann, img = data_paths(data, train_ann, train_images)
        ds = load_dataset(ann, img, cfg)
        mcfg = _model_config(base_cfg, ds)
        if init is not None:
            saved = init["config"]
            if (mcfg.num_classes, tuple(mcfg.class_names)) != (saved.num_classes, tuple(saved.class_names)):
                raise ValueError(f"--weights {weights}: the checkpoint has classes {list(saved.class_names)[1:]}, "
                                 f"the training set {list(mcfg.class_names)[1:]}; fine-tuning needs the same ones")
            init_state = init["model"]
        existing = [n for n in (CHECKPOINT_LAST, MODEL_FINAL) if (out / n).exists()]
        if existing:
            raise ValueError(f"{out} already holds a training run ({', '.join(existing)}); pass --resume to "
                             f"continue it or choose another --out")
    if d.main:
        _check_writable(out)
        if resume:
            _remove_stale_temporaries(out)
    return cfg, mcfg, ds, payload, init_state


def _same_architecture(saved: ModelConfig, requested: ModelConfig, source) -> ModelConfig:
    """``saved`` when ``requested`` (a preset) describes the same network, apart from its name and
    the data-set fields; ValueError listing the differences otherwise."""
    ignore = {"name", "num_classes", "class_names", "extra"}
    a, b = saved.to_dict(), requested.to_dict()
    diff = [f"{k}: {a[k]!r} (checkpoint) vs {b[k]!r}" for k in a if k not in ignore and a[k] != b[k]]
    if diff:
        raise ValueError(f"--weights {source}: --config {requested.name} is not the checkpoint's architecture: "
                         + "; ".join(diff) + " (leave --config out to use the checkpoint's)")
    return saved


def _remove_stale_temporaries(out: Path) -> None:
    """Delete the temporary files of atomic writes that a killed run (SIGKILL, power cut) left in
    ``out``: ``.checkpoint_last.pt.<random>.tmp`` and the like. The files they were to replace are
    intact (the rename never happened); the temporaries are only wasted space."""
    prefixes = tuple(f".{n}." for n in (CHECKPOINT_LAST, MODEL_FINAL, METRICS_FILE, LOSS_CURVE))
    for p in out.iterdir():
        if p.name.startswith(prefixes) and p.name.endswith(".tmp") and p.is_file():
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
            log.warning("removed %s, left by an interrupted write of the previous run", p)


def _train(d: _Dist, cfg_in, out: Path, data, train_ann, train_images, model_config, resume: bool, weights,
           device_name: str, progress: bool, callback) -> TrainResult:
    dev = _resolve_device(device_name, d)
    error: BaseException | None = None
    try:
        cfg, mcfg, ds, payload, init_state = _prepare(d, cfg_in, out, data, train_ann, train_images, model_config,
                                                      resume, weights)
    except (ValueError, OSError) as e:
        error = e
    if not _all_agree(d, error is None, dev):
        if error is not None:
            raise error
        raise ValueError("another process failed before training (see its error)")

    amp = cfg.amp if dev.type == "cuda" else "off"
    if cfg.amp != "off" and amp == "off" and d.main:
        log.warning("amp=%s is for CUDA only; training in float32 on %s", cfg.amp, dev)
    start = int(payload["iteration"]) if payload is not None else 0
    ckpt_path, final_path, metrics_path = out / CHECKPOINT_LAST, out / MODEL_FINAL, out / METRICS_FILE

    # Model initialisation draws from the global RNGs: same seed on every rank (DDP broadcasts
    # rank 0's weights anyway), then a per-rank stream for the proposal sampling inside the model.
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)  # noqa: NPY002 -- the global stream user code may rely on
    random.seed(cfg.seed)
    model = MaskRCNN(mcfg)
    if payload is not None:
        load_state_dict_strict(model, payload["model"], source=str(ckpt_path))
    elif init_state is not None:
        load_state_dict_strict(model, init_state, source=str(weights))
        init_state = None
    model.to(dev).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(_param_groups(model, cfg), lr=cfg.lr, momentum=cfg.momentum)
    schedule = LRSchedule(cfg.schedule, cfg.max_iters, cfg.milestones, cfg.gamma, cfg.warmup_iters, cfg.warmup_factor)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")
    window = {"count": 0, "sums": [0.0] * (len(LOSS_NAMES) + 1), "time": 0.0, "data_time": 0.0}
    if payload is not None:
        optimizer.load_state_dict(payload["optimizer"])
        schedule.load_state_dict(payload["scheduler"])
        if payload.get("grad_scaler"):
            scaler.load_state_dict(payload["grad_scaler"])
        window = payload.get("log_window") or window
        _set_rng_state(payload["rng"][d.rank], dev)
        payload["model"] = payload["optimizer"] = None  # loaded: free the copies for the whole run
    else:
        torch.manual_seed(_derived_seed(cfg.seed, _SAMPLING_STREAM, d.rank))

    net: nn.Module = model
    if d.enabled:
        # find_unused_parameters: a batch without positive proposals (e.g. images without
        # instances) skips the mask head, and DDP without it would wait forever for those grads.
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None, find_unused_parameters=True)

    sampler = StreamBatchSampler(len(ds), cfg.batch_size, cfg.seed, d.rank, d.world, start, cfg.max_iters)
    loader = torch.utils.data.DataLoader(
        _EpochIndexed(ds), batch_sampler=sampler, collate_fn=collate, num_workers=cfg.num_workers,
        pin_memory=dev.type == "cuda", generator=torch.Generator().manual_seed(cfg.seed),
    )
    records: list[dict[str, Any]] = []
    if d.main:
        records = read_metrics(metrics_path, upto=start) if resume else []
        # Lines past the checkpoint belong to the interrupted run and will be recomputed.
        with _atomic_open(metrics_path, "w", encoding="utf-8") as f:
            f.write("".join(json.dumps(r) + "\n" for r in records))
    mixed = BackboneAutocast(model, dev.type, torch.bfloat16 if amp == "bf16" else torch.float16) \
        if amp != "off" else None

    bar = None
    if d.main and progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.max_iters, initial=start, desc="train", unit="it", dynamic_ncols=True)
        bar.write(f"training {mcfg.name} ({mcfg.num_classes - 1} classes, {len(ds)} images) on {dev} x {d.world}: "
                  f"iterations {start + 1}..{cfg.max_iters}, {cfg.batch_size * d.world} images per update")
    saved_iter = start if payload is not None else 0
    metrics_file = open(metrics_path, "a", encoding="utf-8") if d.main else None
    it = start
    try:
        data_iter = iter(loader)
        t_end = time.perf_counter()
        for it in range(start + 1, cfg.max_iters + 1):
            images, targets = next(data_iter)
            t_data = time.perf_counter()
            lr = cfg.lr * schedule.factor(it - 1)
            for g in optimizer.param_groups:
                g["lr"] = lr
            if dev.type != "cpu":
                images = [im.to(dev, non_blocking=True) for im in images]
                targets = [{k: t[k].to(dev, non_blocking=True) for k in ("boxes", "labels", "masks")}
                           for t in targets]
            losses = net(images, targets)
            loss_vec = torch.stack([losses[k].float() for k in LOSS_NAMES])
            total = loss_vec.sum()
            report = loss_vec.detach()
            if d.enabled:
                import torch.distributed as dist

                report = report.clone()
                dist.all_reduce(report)
                report /= d.world
            values = report.tolist()  # one host sync for all terms; all ranks see the same NaN and stop together
            if not all(math.isfinite(v) for v in values):
                raise TrainingDiverged(_nonfinite_message("non-finite loss", it, values, ckpt_path, saved_iter))

            optimizer.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            if amp == "fp16":
                scaler.unscale_(optimizer)
            grads = [p.grad for p in params if p.grad is not None]
            if cfg.grad_clip > 0:
                grad_norm = float(nn.utils.clip_grad_norm_(params, cfg.grad_clip))
            else:
                grad_norm = float(nn.utils.get_total_norm(grads)) if grads else 0.0
            # fp16: GradScaler skips steps with inf gradients and lowers its scale; elsewhere an
            # inf/NaN gradient would poison the weights, so stop before the update.
            if not math.isfinite(grad_norm) and amp != "fp16":
                raise TrainingDiverged(_nonfinite_message(f"non-finite gradient norm ({grad_norm})", it, values,
                                                          ckpt_path, saved_iter))
            scaler.step(optimizer)
            scaler.update()

            window["count"] += 1
            for j, v in enumerate([*values, grad_norm if math.isfinite(grad_norm) else 0.0]):
                window["sums"][j] += v
            window["time"] += time.perf_counter() - t_end
            window["data_time"] += t_data - t_end
            if it % cfg.log_every == 0 or it == cfg.max_iters:
                rec = _window_record(it, lr, window, sampler, len(ds))
                window = {"count": 0, "sums": [0.0] * (len(LOSS_NAMES) + 1), "time": 0.0, "data_time": 0.0}
                if metrics_file is not None:
                    metrics_file.write(json.dumps(rec) + "\n")
                    metrics_file.flush()
                    records.append(rec)
            if bar is not None:
                bar.set_postfix_str(f"total={sum(values):.3f} " + " ".join(
                    f"{n.removeprefix('loss_')}={v:.3f}" for n, v in zip(LOSS_NAMES, values, strict=True))
                    + f" lr={lr:.2e}", refresh=False)
                bar.update(1)
            if it % cfg.checkpoint_every == 0 or it == cfg.max_iters:
                _save_training_checkpoint(d, dev, ckpt_path, model, optimizer, schedule, scaler, cfg, it, sampler,
                                          len(ds), window, ds)
                saved_iter = it
                if d.main:
                    plot_loss_curve(records, out / LOSS_CURVE)
            if callback is not None:
                callback(it, dict(zip(LOSS_NAMES, values, strict=True)))
            t_end = time.perf_counter()  # checkpoints and callbacks stay out of the per-iteration times
    finally:
        if mixed is not None:
            mixed.close()
        if bar is not None:
            bar.close()
        if metrics_file is not None:
            metrics_file.close()

    if d.main:
        save_checkpoint(final_path, model, train_config=cfg.to_json(), iteration=it)
        plot_loss_curve(records, out / LOSS_CURVE)
    return TrainResult(iteration=it, out_dir=out, final_model=final_path, last_checkpoint=ckpt_path,
                       last_metrics=records[-1] if records else None)


def _window_record(it: int, lr: float, window: dict[str, Any], sampler: StreamBatchSampler,
                   num_images: int) -> dict[str, Any]:
    n = max(window["count"], 1)
    means = [s / n for s in window["sums"]]
    rec: dict[str, Any] = {"iter": it, "epoch": round(it * sampler.world * sampler.bs / num_images, 4), "lr": lr}
    rec.update({name: means[j] for j, name in enumerate(LOSS_NAMES)})
    rec["total"] = sum(means[: len(LOSS_NAMES)])
    rec["grad_norm"] = means[-1]
    rec["time"] = window["time"] / n
    rec["data_time"] = window["data_time"] / n
    return rec


def _save_training_checkpoint(d: _Dist, dev: torch.device, path: Path, model: MaskRCNN, optimizer, schedule,
                              scaler, cfg: TrainConfig, it: int, sampler: StreamBatchSampler, num_images: int,
                              window: dict[str, Any], ds: CocoInstances) -> None:
    """Gather every rank's RNG state and let rank 0 write ``path`` atomically."""
    state = _rng_state(dev)
    if d.enabled:
        import torch.distributed as dist

        states: list[Any] = [None] * d.world
        dist.all_gather_object(states, state)
    else:
        states = [state]
    if not d.main:
        return
    # A finite gradient can still overflow a weight; never replace a good checkpoint with it.
    with torch.no_grad():
        finite = bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all())
    if not finite:
        raise TrainingDiverged(f"non-finite weights after the update of iteration {it}; {path} was not overwritten")
    epoch, pos = divmod(it * sampler.world * sampler.bs, num_images)
    save_checkpoint(
        path, model,
        train_config=cfg.to_json(),
        iteration=it,
        optimizer=optimizer.state_dict(),
        scheduler=schedule.state_dict(),
        grad_scaler=scaler.state_dict() if scaler.is_enabled() else {},
        rng=states,
        data_order={"seed": cfg.seed, "num_images": num_images, "world_size": sampler.world,
                    "batch_size": sampler.bs, "epoch": epoch, "position": pos},
        data={"train_ann": str(ds.ann_file.resolve()), "train_images": str(ds.image_dir.resolve())},
        log_window=window,
    )


# -------------------------------------------------------------------------------------- CLI
def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``maskrt train`` options to ``parser`` (returned for chaining).

    Training options default to None so that ``--resume`` can tell given flags (checked against
    the checkpoint) from defaults (taken from the checkpoint)."""
    d = TrainConfig()
    parser.add_argument("--config", default=None,
                        help="model preset: r18-small, r50, mnv3, mnv3-lite (default r18-small; on --resume the "
                             "checkpoint's)")
    parser.add_argument("--data", default=None,
                        help="data folder as written by `maskrt data synth` (annotations/instances_train.json, train/)")
    parser.add_argument("--train-ann", default=None, help="COCO instances JSON (overrides --data)")
    parser.add_argument("--train-images", default=None, help="image folder of --train-ann (overrides --data)")
    parser.add_argument("--out-dir", required=True, metavar="DIR", help="output folder (metrics, plots, checkpoints)")
    renamed_option(parser, "--out", "--out-dir DIR (train writes a folder)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint_last.pt")
    parser.add_argument("--weights", default=None, metavar="CKPT",
                        help="fine-tune: a new run starting from this checkpoint's weights and model config "
                             "(e.g. maskrt/assets/default.pt); not with --resume")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = parser.add_argument_group("optimisation")
    g.add_argument("--lr", type=float, help=f"base learning rate (default {d.lr})")
    g.add_argument("--momentum", type=float, help=f"SGD momentum (default {d.momentum})")
    g.add_argument("--weight-decay", type=float, help=f"(default {d.weight_decay})")
    g.add_argument("--weight-decay-norm", type=float, help=f"for norm layers (default {d.weight_decay_norm})")
    g.add_argument("--warmup-iters", type=int, help=f"linear warm-up length (default {d.warmup_iters})")
    g.add_argument("--warmup-factor", type=float, help=f"warm-up start factor (default {d.warmup_factor})")
    g.add_argument("--schedule", choices=SCHEDULES, help=f"(default {d.schedule})")
    g.add_argument("--milestones", type=int, nargs="+", help="step schedule (default 2/3 and 8/9 of --max-iters)")
    g.add_argument("--gamma", type=float, help=f"step decay factor (default {d.gamma})")
    g.add_argument("--max-iters", type=int, help=f"(default {d.max_iters})")
    g.add_argument("--batch-size", type=int, help=f"images per process (default {d.batch_size})")
    g.add_argument("--grad-clip", type=float, help="max gradient norm, 0 = off (default 0)")
    g.add_argument("--amp", choices=AMP_MODES, help="autocast on CUDA (default off)")
    g.add_argument("--seed", type=int, help=f"(default {d.seed})")
    g = parser.add_argument_group("run control")
    g.add_argument("--checkpoint-every", type=int, help=f"iterations (default {d.checkpoint_every})")
    g.add_argument("--log-every", type=int, help=f"iterations (default {d.log_every})")
    g.add_argument("--num-workers", type=int, help=f"DataLoader workers (default {d.num_workers})")
    g = parser.add_argument_group("augmentation")
    g.add_argument("--min-sizes", type=int, nargs="+",
                   help="shortest-side sizes, one drawn per image (default: the model's input size)")
    g.add_argument("--max-size", type=int, help="longest side at most (default: the model's input size)")
    g.add_argument("--flip-prob", type=float, help=f"horizontal flip probability (default {d.flip_prob})")
    return parser


_CONFIG_FLAGS = tuple(f.name for f in dataclasses.fields(TrainConfig))


def train_config_from_args(args: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
    """``base`` (default: ``TrainConfig()``) with the options given on the command line."""
    given = {k: getattr(args, k) for k in _CONFIG_FLAGS if getattr(args, k, None) is not None}
    for k in ("milestones", "min_sizes"):
        if k in given:
            given[k] = tuple(given[k])
    return (base or TrainConfig()).replace(**given)


def run_train(args: argparse.Namespace) -> int:
    """Run ``maskrt train`` from parsed arguments; returns the process exit code. Errors are
    raised (ValueError before training, TrainingDiverged during it) for the CLI to print."""
    given = any(getattr(args, k, None) is not None for k in _CONFIG_FLAGS)
    if args.resume:
        saved_path = Path(args.out_dir) / CHECKPOINT_LAST
        saved = TrainConfig.from_json(read_checkpoint(saved_path)["train_config"]) if saved_path.is_file() else None
        cfg = train_config_from_args(args, saved) if (given and saved is not None) else None
    else:
        cfg = train_config_from_args(args)
    result = train(cfg, args.out_dir, data=args.data, train_ann=args.train_ann, train_images=args.train_images,
                   model_config=args.config, resume=args.resume, weights=args.weights, device=args.device,
                   progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        last = result.last_metrics
        loss = f", total loss {last['total']:.4f}" if last else ""
        print(f"trained to iteration {result.iteration}{loss}: {result.final_model}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m maskrt.train.trainer`` (what ``torchrun ... -m maskrt.train.trainer`` runs)."""
    parser = argparse.ArgumentParser(prog="maskrt train", description="Train Mask R-CNN on a COCO-format set.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    add_train_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_train(args)
    except KeyboardInterrupt:
        print("maskrt train: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            raise
        rank = f" [rank {os.environ['RANK']}]" if _launched_by_torchrun() else ""
        print(f"maskrt train{rank}: error: {str(e).strip() or type(e).__name__}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
