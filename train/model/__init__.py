"""The Mask R-CNN model in PyTorch."""
