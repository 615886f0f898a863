"""maskrt: Mask R-CNN from PyTorch training to ONNX Runtime / TensorRT and real-time video.

Subpackages (each a top-level folder of the repository):
    maskrt.train    -- the PyTorch model, data, training loop, evaluation (needs torch)
    maskrt.export   -- ONNX export and TensorRT engine builder (needs torch, onnx)
    maskrt.runtime  -- backends, native pre/post-processing, video pipeline (no torch, no onnx)
"""

__version__ = "0.1.0"
