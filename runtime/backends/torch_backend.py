"""``TorchBackend``: the PyTorch model of a maskrt checkpoint behind the Backend interface.

The reference backend (eager PyTorch), for checkpoints (``.pt``). Imports torch only in
:meth:`open`, so the runtime stays torch-free until a checkpoint is actually run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from maskrt.runtime.config import ModelConfig

from .base import Backend, BackendError, ModelLoadError, ModelNotFoundError


class TorchBackend(Backend):
    """A maskrt checkpoint run by PyTorch eager on ``device`` ("cpu" or "cuda[:i]").

    The checkpoint is read (``torch.load(weights_only=True)``) at construction, so its config is
    known before :meth:`open`; a missing CUDA device is an error, never a fallback to the CPU.
    """

    name = "torch"

    def __init__(self, checkpoint: str | os.PathLike, *, device: str = "cpu", threads: int | None = None) -> None:
        super().__init__()
        try:
            import torch  # noqa: F401
        except ImportError as e:
            raise BackendError(f"running a checkpoint needs PyTorch: pip install 'maskrt[train]' ({e})") from None
        from maskrt.train.model.checkpoint import read_checkpoint

        self._path = Path(checkpoint)
        if not self._path.is_file():
            raise ModelNotFoundError(f"{self._path}: no such checkpoint file")
        try:
            self._payload = read_checkpoint(self._path)
        except ValueError as e:
            raise ModelLoadError(str(e)) from None
        self._config: ModelConfig = self._payload["config"]
        self._device = device
        self._threads = threads
        self._model = None

    @property
    def config(self) -> ModelConfig:
        return self._config

    def _open(self) -> None:
        import torch

        from maskrt.train.model.checkpoint import load_state_dict_strict
        from maskrt.train.model.mask_rcnn import MaskRCNN

        dev = torch.device(self._device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise BackendError(f"device {self._device!r} requested but CUDA is not available")
        if self._threads:
            torch.set_num_threads(self._threads)
        model = MaskRCNN(self._config)
        load_state_dict_strict(model, self._payload["model"], str(self._path))
        self._model = model.to(dev).eval()
        self._torch_device = dev

    def _close(self) -> None:
        self._model = None

    def _infer(self, images: np.ndarray) -> Mapping[str, np.ndarray]:
        import torch

        batch = torch.from_numpy(images).to(self._torch_device)
        with torch.inference_mode():
            out = self._model(batch)
        return {k: v.detach().cpu().numpy() for k, v in out.items()}
