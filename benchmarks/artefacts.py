"""What a benchmark runs on: the model artefact named by ``--model`` (an ONNX graph, an engine, a
checkpoint, a preset with random weights, or the embedded default; checkpoints are exported to a
temporary ONNX graph for ONNX Runtime) and the synthetic camera frames."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from maskrt import DEFAULT_CHECKPOINT

from .options import MODEL_SUFFIXES, BenchError, BenchOptions

__all__ = ["Artefacts", "backend_kwargs", "fallback_scene", "make_frames", "prepare_artefacts"]


def fallback_scene(size: tuple[int, int], seed: int) -> np.ndarray:
    """Shapes on a noisy textured background with numpy/OpenCV only: uint8 [H, W, 3] BGR."""
    import cv2

    h, w = size
    rng = np.random.default_rng([int(seed), 7])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(40, 200, 3).astype(np.float32)
    img = base + 30 * np.sin(xx[..., None] / rng.uniform(20, 80) + yy[..., None] / rng.uniform(20, 80))
    img = np.clip(img + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)
    s = min(h, w)
    for _ in range(int(rng.integers(3, 9))):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        r = int(s * math.exp(rng.uniform(math.log(0.04), math.log(0.2))))
        kind = int(rng.integers(0, 3))
        if kind == 0:
            cv2.circle(img, (cx, cy), r, color, -1)
        elif kind == 1:
            cv2.rectangle(img, (cx - r, cy - r // 2), (cx + r, cy + r // 2), color, -1)
        else:
            pts = np.array([[cx, cy - r], [cx - r, cy + r], [cx + r, cy + r]], np.int32)
            cv2.fillPoly(img, [pts], color)
    return np.ascontiguousarray(img)


def make_frames(n: int, frame_size: tuple[int, int], seed: int = 0) -> tuple[list[np.ndarray], str]:
    """``n`` distinct synthetic camera frames, each uint8 [H, W, 3] BGR (``frame_size`` = (H, W)).

    The training set's scene renderer (``maskrt.train.data.synthetic.render_scene``, the
    distribution the embedded model was trained on, so it yields a realistic number of
    detections) when the [train] extra is installed, else a numpy/OpenCV shapes scene. Returns
    (frames, generator name)."""
    try:
        from maskrt.train.data.synthetic import render_scene
    except ImportError:
        return [fallback_scene(frame_size, seed + i) for i in range(n)], "maskrt.benchmarks.artefacts.fallback_scene"
    return [np.ascontiguousarray(render_scene(frame_size, seed + i)) for i in range(n)], \
        "maskrt.train.data.synthetic.render_scene"


@dataclass
class Artefacts:
    source: str  # what --model named
    kind: str  # onnx | engine | checkpoint | preset | default
    run_path: Path  # the file the chosen backend opens
    config: Any  # ModelConfig
    onnx_path: Path | None = None  # an ONNX graph of the same model (FLOPs), if any
    torch_path: Path | None = None  # a checkpoint of the same weights and config (torch backend / --compare)
    notes: list[str] = field(default_factory=list)


def _classify(model: str | None) -> tuple[str, Path | None, str | None]:
    """(kind, path, preset name) of a --model value."""
    from maskrt.runtime.config import PRESET_ALIASES, PRESETS

    if model is None:
        return "default", DEFAULT_CHECKPOINT, None
    p = Path(model)
    kind = MODEL_SUFFIXES.get(p.suffix.lower())
    if kind is not None:
        if not p.is_file():
            raise BenchError(f"--model {model}: no such file")
        return kind, p, None
    if model in PRESETS or model in PRESET_ALIASES:
        return "preset", None, model
    raise BenchError(f"--model {model!r}: not a .onnx / .pt / .engine file nor a preset name ({sorted(PRESETS)})")


def prepare_artefacts(opts: BenchOptions, tmp: Path, say: Any) -> Artefacts:
    kind, path, preset_name = _classify(opts.model)
    source = opts.model or f"embedded default ({path})"
    if kind == "onnx":
        if opts.backend != "ort":
            raise BenchError(f"--model {path}: an ONNX graph runs with --backend ort (TensorRT needs an engine from "
                             "`maskrt build`; --backend torch needs a .pt checkpoint)")
        if opts.detections is not None:
            raise BenchError("--detections K re-exports the model with score threshold 0 and K detections: pass the "
                             ".pt checkpoint (or a preset), not an exported graph")
        if opts.compare:
            raise BenchError("--compare needs the PyTorch weights: pass the .pt checkpoint (it is exported to ONNX "
                             "for ONNX Runtime), not an exported graph")
        from maskrt.runtime.backends.ort import OrtBackend

        cfg = OrtBackend(path).config
        if opts.size is not None and tuple(opts.size) != tuple(cfg.input_size):
            raise BenchError(f"--size {opts.size[0]} {opts.size[1]}: {path} was exported for "
                             f"{cfg.input_size[0]}x{cfg.input_size[1]}; re-export it (or pass the checkpoint)")
        return Artefacts(source, kind, path, cfg, onnx_path=path)
    if kind == "engine":
        if opts.backend != "trt":
            raise BenchError(f"--model {path}: a TensorRT engine runs with --backend trt")
        if opts.detections is not None or opts.size is not None:
            raise BenchError("--detections/--size are fixed when the engine is built; rebuild it instead")
        from maskrt.runtime.backends.trt import TrtBackend

        backend = TrtBackend(path)
        meta = backend.engine_meta
        if meta.precision != opts.precision:
            raise BenchError(f"--precision {opts.precision}: {path} was built for {meta.precision}")
        return Artefacts(source, kind, path, backend.config)
    # a checkpoint, a preset or the embedded default: PyTorch weights we can export
    if opts.backend == "trt":
        raise BenchError("--backend trt needs a TensorRT engine: `maskrt export --flavour trt` then `maskrt build`, "
                         "and pass the .engine file")
    try:
        import torch
    except ImportError as e:
        raise BenchError(f"--model {source}: a PyTorch checkpoint/preset needs torch (pip install 'maskrt[train]'; "
                         f"{e})") from None
    from maskrt.runtime.config import preset
    from maskrt.train.model.checkpoint import load_checkpoint, save_checkpoint
    from maskrt.train.model.mask_rcnn import MaskRCNN

    torch.set_num_threads(opts.threads)
    if kind == "preset":
        torch.manual_seed(opts.seed)
        model = MaskRCNN(preset(preset_name)).eval()
        notes = [f"preset {preset_name!r} with random weights (torch.manual_seed({opts.seed}))"]
    else:
        if kind == "default" and not path.is_file():
            raise BenchError(f"the embedded default checkpoint {path} is missing; pass --model")
        model, _ = load_checkpoint(path)
        notes = []
    cfg = model.cfg
    changes: dict[str, Any] = {}
    if opts.size is not None and tuple(opts.size) != tuple(cfg.input_size):
        changes["input_size"] = tuple(int(s) for s in opts.size)
    if opts.detections is not None:
        # NOTE: the worst case is made honestly by the model itself: every class score above 0
        # passes (box_score_thresh 0; the test is strict, softmax scores are > 0), then per-class
        # NMS and the top-K, so the count reaches K whenever NMS leaves K candidates (it is
        # reported per image, never assumed).
        changes.update(box_score_thresh=0.0, detections_per_img=int(opts.detections))
        notes.append(f"--detections {opts.detections}: box_score_thresh 0.0 and detections_per_img "
                     f"{opts.detections} (re-exported); the achieved counts are in detections_per_image")
    if changes:
        state = model.state_dict()
        model = MaskRCNN(cfg.replace(**changes)).eval()
        model.load_state_dict(state, strict=True)
        cfg = model.cfg
    art = Artefacts(source, kind, Path(), cfg, notes=notes)
    if opts.backend == "torch" or opts.compare:
        if kind == "checkpoint" and not changes:
            art.torch_path = path
        elif kind == "default" and not changes:
            art.torch_path = path
        else:
            art.torch_path = tmp / "model.pt"
            save_checkpoint(art.torch_path, model)
    try:
        import onnx  # noqa: F401

        have_onnx = True
    except ImportError:
        have_onnx = False
    if opts.backend == "ort" or have_onnx:
        from maskrt.export.onnx_export import export_model

        art.onnx_path = tmp / "model.onnx"
        t = time.perf_counter()
        export_model(model, art.onnx_path, "ort")
        say(f"exported {cfg.name} {cfg.input_size[0]}x{cfg.input_size[1]} to ONNX ({time.perf_counter() - t:.1f} s)")
    art.run_path = art.onnx_path if opts.backend == "ort" else art.torch_path
    art._model = model  # kept for the torch FLOP count when there is no ONNX graph
    return art


def backend_kwargs(backend: str, opts: BenchOptions) -> dict[str, Any]:
    if backend == "ort":
        providers = ["cuda"] if opts.device.startswith("cuda") else ["cpu"]
        return {"intra_op_threads": opts.threads, "inter_op_threads": 1, "providers": providers}
    if backend == "torch":
        return {"threads": opts.threads, "device": opts.device}
    return {}
