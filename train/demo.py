"""`maskrt demo`: run the model on a generated image and print the deployment contract.

With no checkpoint it runs randomly initialised weights of the smallest preset, which proves the
whole forward pass and the output contract; later stages grow this into the full chain.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

import maskrt
from maskrt.runtime.config import preset

# The embedded default checkpoint (committed; docs/results.md has the command that made it).
DEFAULT_CHECKPOINT = Path(maskrt.__file__).resolve().parent / "assets" / "default.pt"


def demo_image(seed: int, size: tuple[int, int]) -> np.ndarray:
    """A synthetic scene (shapes on a textured background): uint8 [H, W, 3] BGR."""
    from maskrt.train.data.synthetic import render_scene

    return render_scene(size, seed)


def run_demo(config: str | None = None, checkpoint: str | None = None, seed: int = 0, top: int = 5) -> int:
    """Without --config/--checkpoint: the embedded default checkpoint if present, else r18-small
    with random weights."""
    from maskrt.train.model.checkpoint import load_checkpoint
    from maskrt.train.model.mask_rcnn import MaskRCNN

    torch.manual_seed(seed)
    if checkpoint is None and config is None and DEFAULT_CHECKPOINT.is_file():
        checkpoint = str(DEFAULT_CHECKPOINT)
    if checkpoint:
        model, payload = load_checkpoint(checkpoint)
        cfg = payload["config"]
        source = checkpoint
    else:
        config = config or "r18-small"
        cfg = preset(config)
        model = MaskRCNN(cfg).eval()
        source = f"preset '{config}', random weights (seed {seed})"
    image = demo_image(seed, cfg.input_size)
    batch = torch.from_numpy(image)[None]
    with torch.inference_mode():
        model(batch)  # warm-up
        t0 = time.perf_counter()
        out = model(batch)
        dt = time.perf_counter() - t0

    print(f"model   : {cfg.name} ({cfg.backbone}-FPN, {cfg.num_classes} classes incl. background) from {source}")
    print(f"input   : images uint8 {list(batch.shape)} BGR (generated scene, seed {seed})")
    print(f"forward : {dt * 1000:.1f} ms on CPU ({torch.get_num_threads()} threads)")
    print("outputs :")
    for name, v in out.items():
        print(f"  {name:<15} {str(v.dtype).replace('torch.', ''):<8} {list(v.shape)}")
    n = int(out["num_detections"][0])
    print(f"detections: {n} (rows past num_detections are padding)")
    names = cfg.names
    for i in range(min(n, top)):
        x1, y1, x2, y2 = (float(v) for v in out["boxes"][0, i])
        c = int(out["classes"][0, i])
        area = float((out["masks"][0, i] > 0.5).float().mean())
        print(f"  #{i}: {names[c]:<14} score {float(out['scores'][0, i]):.3f}  box ({x1:6.1f}, {y1:6.1f}, "
              f"{x2:6.1f}, {y2:6.1f})  mask {cfg.mask_resolution}x{cfg.mask_resolution}, {area:.0%} above 0.5")
    return 0
