"""Checkpoints: weights + ModelConfig in one file, loaded with ``weights_only=True``.

Format (a plain dict; nothing but tensors, strings and numbers, so no pickle code runs):
    {"format": "maskrt.checkpoint", "format_version": 1,
     "config": <ModelConfig JSON string>, "model": <state dict>, ...training state}
"""

from __future__ import annotations

import errno
import os
import pickle
import re
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
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and e.errno is not None:
            # NOTE: the same errno (ENOSPC, EDQUOT, EIO, ...) with a message that names the file
            # and says that the previous version is untouched.
            kept = "the previous file is unchanged" if path.exists() else "nothing was written"
            full = " (disk full)" if e.errno in (errno.ENOSPC, errno.EDQUOT) else ""
            raise OSError(e.errno, f"cannot write {path}{full}: {e.strerror or e}; {kept}") from e
        raise


def save_checkpoint(path: str | os.PathLike, model: MaskRCNN, **extra: Any) -> None:
    """Write weights, config and any extra (weights_only-loadable) state atomically."""
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": model.cfg.to_json(),
               "model": model.state_dict(), **extra}
    atomic_torch_save(payload, path)


_GLOBAL = re.compile(r"unsupported GLOBAL (\S+)")


def load_weights_only(path: str | os.PathLike, what: str = "checkpoint") -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with one-line errors.

    A pickle that references anything but tensors, numbers, strings and containers (a class, a
    function: what a code-executing payload needs) is refused by ``weights_only=True`` before
    anything runs; the ValueError names what it referenced. Any other failure (truncated file,
    not a torch file) is a ValueError with the cause's first line."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        m = _GLOBAL.search(str(e))
        if m is None:
            raise ValueError(f"{path}: not a loadable {what} (UnpicklingError: {_first_line(e)})") from None
        raise ValueError(f"{path}: refused: the file's pickle references {m.group(1).rstrip('.')}, which is not "
                         f"a tensor, number, string or container; maskrt loads files with torch.load("
                         f"weights_only=True) and never runs code from them (a maskrt {what} holds no such object: "
                         "this file was not written by maskrt, or it was tampered with)") from None
    except Exception as e:  # truncated zip, not a torch file, ...: all the same to the user
        raise ValueError(f"{path}: not a loadable {what} ({type(e).__name__}: {_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load and check a checkpoint file. Raises ValueError naming the problem."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such checkpoint file")
    payload = load_weights_only(path, "checkpoint")
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
        state = load_weights_only(source, "state dict")
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]  # torchvision's reference scripts wrap it
    if not isinstance(state, dict):
        raise ValueError(f"{name}: expected a state dict, got {type(state).__name__}")
    load_state_dict_strict(model, convert_torchvision_state_dict(state), source=name)
