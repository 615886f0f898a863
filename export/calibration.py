"""INT8 calibration input: the images of a folder, letterboxed as the runtime does, for
``onnxruntime.quantization`` (``maskrt export --precision int8 --calib DIR``).

:class:`CalibrationImages` lists and hashes the images; :class:`OrtCalibrationReader` is the
``CalibrationDataReader`` that feeds them to ONNX Runtime's calibrator one image at a time, with a
progress bar. The calibration *math* (ranges, scales) is onnxruntime.quantization's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from maskrt.runtime.backends.base import INPUT_NAME
from maskrt.runtime.engine_meta import file_sha256
from maskrt.runtime.letterbox import letterbox

__all__ = ["CalibrationImages", "DEFAULT_CALIB_IMAGES", "IMAGE_EXTENSIONS", "OrtCalibrationReader",
           "list_calibration_images"]

log = logging.getLogger("maskrt.calibration")

DEFAULT_CALIB_IMAGES = 64
IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".pbm", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")


def list_calibration_images(folder: str | os.PathLike) -> list[Path]:
    """The image files of ``folder`` (not recursive), sorted by name. Other files are skipped
    with a warning; a missing folder or one without images is a ValueError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"calibration folder {folder}: not a directory")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
    others = [p.name for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS]
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        log.warning("calibration: skipping %d file(s) that are not images: %s", len(others), shown)
    if not images:
        raise ValueError(f"calibration folder {folder} has no images ({', '.join(IMAGE_EXTENSIONS)})")
    return images


class CalibrationImages:
    """Batches of calibration input from the images of a folder.

    Each batch is uint8 ``[batch_size, H, W, 3]`` BGR, every image read with ``cv2.imread`` and
    letterboxed into ``input_size`` (H, W) exactly as the runtime does. Images are taken in name
    order; unreadable ones are skipped with a warning; at most ``max_batches`` batches, only
    full ones (a trailing partial batch is dropped).
    """

    def __init__(self, folder: str | os.PathLike, input_size: Sequence[int], *, batch_size: int = 1,
                 max_batches: int = DEFAULT_CALIB_IMAGES):
        for name, v in (("batch_size", batch_size), ("max_batches", max_batches)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name}: expected a positive integer, got {v!r}")
        self.folder = Path(folder)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.batch_size = batch_size
        self.max_batches = max_batches
        self.files = list_calibration_images(self.folder)

    @property
    def batch_nbytes(self) -> int:
        return self.batch_size * self.input_size[0] * self.input_size[1] * 3

    def sha256(self) -> str:
        """Hash of everything that decides the calibration: the files' names and bytes, the input
        size, the batch size and count."""
        h = hashlib.sha256(json.dumps({"input_size": list(self.input_size), "batch_size": self.batch_size,
                                       "max_batches": self.max_batches, "letterbox": 1}).encode())
        for p in self.files:
            h.update(p.name.encode("utf-8") + b"\0" + file_sha256(p).encode("ascii"))
        return h.hexdigest()

    def batches(self) -> Iterator[np.ndarray]:
        """Yield uint8 ``[batch_size, H, W, 3]`` arrays (a new array each time)."""
        produced, n = 0, 0
        batch = np.empty((self.batch_size, *self.input_size, 3), np.uint8)
        for p in self.files:
            image = cv2.imread(str(p), cv2.IMREAD_COLOR)  # BGR uint8 [h, w, 3], or None
            if image is None:
                log.warning("calibration: skipping %s: not a readable image", p.name)
                continue
            letterbox(image, self.input_size, out=batch[n])
            n += 1
            if n == self.batch_size:
                yield batch
                produced, n = produced + 1, 0
                if produced == self.max_batches:
                    return
                batch = np.empty_like(batch)
        if produced == 0:
            raise ValueError(f"calibration folder {self.folder}: fewer readable images than one batch "
                             f"({self.batch_size})")
        if n:
            log.info("calibration: dropped a partial batch of %d image(s)", n)




class OrtCalibrationReader:
    """onnxruntime.quantization ``CalibrationDataReader`` over :class:`CalibrationImages`:
    ``{"images": uint8 [batch, H, W, 3]}`` per call, a tqdm bar over the batches, ``rewind()``
    to start again (the calibrator may read the data more than once)."""

    def __init__(self, source: CalibrationImages, *, progress: bool = True, desc: str = "calibration"):
        self.source = source
        self.progress = progress
        self.desc = desc
        self.batches_read = 0
        self._it: Iterator[np.ndarray] | None = None
        self._bar = None

    def __len__(self) -> int:
        return min(self.source.max_batches, len(self.source.files) // self.source.batch_size)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._it is None:
            self._it = self.source.batches()
            if self.progress:
                from tqdm import tqdm

                self._bar = tqdm(total=len(self), desc=self.desc, unit="batch", leave=False)
        batch = next(self._it, None)
        if batch is None:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            return None
        self.batches_read += 1
        if self._bar is not None:
            self._bar.update(1)
        return {INPUT_NAME: batch}

    def rewind(self) -> None:
        self._it = None

    def set_range(self, start_index: int, end_index: int) -> None:  # the ABC's; strided calibration is not used
        raise NotImplementedError("OrtCalibrationReader reads all batches in order")
