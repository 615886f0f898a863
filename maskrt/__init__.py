"""maskrt: Mask R-CNN from PyTorch training to ONNX Runtime / TensorRT and real-time video.

Subpackages (each a top-level folder of the repository):
    maskrt.train       -- the PyTorch model, data, training loop, evaluation (needs torch)
    maskrt.export      -- ONNX export and TensorRT engine builder (needs torch, onnx)
    maskrt.runtime     -- backends, native pre/post-processing, video pipeline, CLI (no torch, no onnx)
    maskrt.benchmarks  -- ``maskrt bench`` and the kernel / pre-post / soak benchmarks (may use all three)
"""

__version__ = "0.1.0"

__all__ = ["DEFAULT_CHECKPOINT", "__version__"]


def __getattr__(name: str):
    """``DEFAULT_CHECKPOINT``: the embedded default checkpoint (a ``pathlib.Path``; committed,
    docs/results.md has the command that made it). Its one definition: the training side, the
    exporter, the demo, the benchmarks and the tests import it. Made on first use, so that
    ``import maskrt`` (every ``maskrt`` command) stays as light as the command table."""
    if name == "DEFAULT_CHECKPOINT":
        from pathlib import Path

        return Path(__file__).resolve().parent / "assets" / "default.pt"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
