"""The embedded default checkpoint and the generated demo scenes.

``maskrt demo`` itself (the whole chain) is ``export/demo.py``; this module holds what the
training side, the exporter, the tests and the benchmarks share: where the committed default
checkpoint lives and how a demo scene is drawn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import maskrt

# The embedded default checkpoint (committed; docs/results.md has the command that made it).
DEFAULT_CHECKPOINT = Path(maskrt.__file__).resolve().parent / "assets" / "default.pt"


def demo_image(seed: int, size: tuple[int, int]) -> np.ndarray:
    """A synthetic scene (shapes on a textured background): uint8 [H, W, 3] BGR."""
    from maskrt.train.data.synthetic import render_scene

    return render_scene(size, seed)
