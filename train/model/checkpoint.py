"""Checkpoints: weights + ModelConfig in one file, loaded with ``weights_only=True``.

Format (a plain dict; nothing but tensors, strings and numbers, so no pickle code runs):
    {"format": "maskrt.checkpoint", "format_version": 1,
     "config": <ModelConfig JSON string>, "model": <state dict>, ...training state}
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from maskrt.runtime.config import ModelConfig

from .mask_rcnn import MaskRCNN

FORMAT = "maskrt.checkpoint"
FORMAT_VERSION = 1


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over ``path``:
    a crash or a full disk mid-write leaves the previous file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def save_checkpoint(path: str | os.PathLike, model: MaskRCNN, **extra: Any) -> None:
    """Write weights, config and any extra (weights_only-loadable) state atomically."""
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": model.cfg.to_json(),
               "model": model.state_dict(), **extra}
    atomic_torch_save(payload, path)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load and check a checkpoint file. Raises ValueError naming the problem."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, foreign pickle, ...: all the same to the user
        raise ValueError(f"{path}: not a loadable checkpoint ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a maskrt checkpoint (no format marker '{FORMAT}')")
    if payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format version {payload.get('format_version')} "
                         f"is not supported (expected {FORMAT_VERSION})")
    if "config" not in payload:
        raise ValueError(f"{path}: checkpoint has no model config")
    if not isinstance(payload.get("model"), dict):
        raise ValueError(f"{path}: checkpoint has no model weights")
    try:
        payload["config"] = ModelConfig.from_json(payload["config"])
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: invalid model config in checkpoint: {e}") from None
    return payload


def load_state_dict_strict(model: nn.Module, state: dict[str, Tensor], source: str = "state dict") -> None:
    """Strict load that reports every missing key, unexpected key and shape mismatch at once."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(
        f"{k}: expected {tuple(own[k].shape)}, got {tuple(state[k].shape)}"
        for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape)
    )
    if missing or unexpected or mismatched:
        def fmt(title, items):
            if not items:
                return ""
            shown = ", ".join(items[:20]) + (f", ... ({len(items)} in all)" if len(items) > 20 else "")
            return f"\n  {title} ({len(items)}): {shown}"
        raise ValueError(f"{source} does not match the model:" + fmt("missing keys", missing)
                         + fmt("unexpected keys", unexpected) + fmt("shape mismatches", mismatched))
    model.load_state_dict(state, strict=True)


def load_checkpoint(path: str | os.PathLike) -> tuple[MaskRCNN, dict[str, Any]]:
    """Build the model from the checkpoint's own config and load its weights (eval mode).
    Returns (model, payload) where payload['config'] is the ModelConfig."""
    payload = read_checkpoint(path)
    model = MaskRCNN(payload["config"])
    load_state_dict_strict(model, payload["model"], source=str(path))
    return model.eval(), payload


def load_torchvision_weights(model: MaskRCNN, source: str | os.PathLike | dict[str, Tensor]) -> None:
    """Load a torchvision ``maskrcnn_resnet50_fpn`` state dict (a downloaded .pth file or a dict)
    into ``model`` strictly, mapping names with ``convert_torchvision_state_dict``."""
    from .torchvision_keys import convert_torchvision_state_dict

    if isinstance(source, dict):
        state, name = source, "torchvision state dict"
    else:
        name = str(source)
        try:
            state = torch.load(source, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"{name}: not a loadable state dict ({type(e).__name__}: {e})") from None
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]  # torchvision's reference scripts wrap it
    if not isinstance(state, dict):
        raise ValueError(f"{name}: expected a state dict, got {type(state).__name__}")
    load_state_dict_strict(model, convert_torchvision_state_dict(state), source=name)
