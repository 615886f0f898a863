"""The embedded default checkpoint and the generated demo scenes.

``maskrt demo`` itself (the whole chain) is ``export/demo.py``; this module holds what the
training side, the exporter, the tests and the benchmarks share: where the committed default
checkpoint lives and how a demo scene is drawn.
"""

from __future__ import annotations

import numpy as np

from maskrt import DEFAULT_CHECKPOINT  # noqa: F401  (re-exported: its one definition is in maskrt/__init__.py)


def demo_image(seed: int, size: tuple[int, int]) -> np.ndarray:
    """A synthetic scene (shapes on a textured background): uint8 [H, W, 3] BGR."""
    from maskrt.train.data.synthetic import render_scene

    return render_scene(size, seed)
