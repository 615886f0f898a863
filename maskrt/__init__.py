"""maskrt: Mask R-CNN from PyTorch training to ONNX Runtime / TensorRT and real-time video.

Subpackages (each a top-level folder of the repository):
    maskrt.train       -- the PyTorch model, data, training loop, evaluation (needs torch)
    maskrt.export      -- ONNX export and TensorRT engine builder (needs torch, onnx)
    maskrt.runtime     -- backends, native pre/post-processing, video pipeline, CLI (no torch, no onnx)
    maskrt.benchmarks  -- ``maskrt bench`` and the kernel / pre-post / soak benchmarks (may use all three)
"""

from pathlib import Path

__version__ = "0.1.0"

# The embedded default checkpoint (committed; docs/results.md has the command that made it). Its one
# definition: the training side, the exporter, the demo, the benchmarks and the tests import it.
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "assets" / "default.pt"
