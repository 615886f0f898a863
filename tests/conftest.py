"""Suite-wide test settings.

* Hypothesis: one bounded, derandomized profile (``maskrt``) so that every run, CI included, tries
  the same examples and takes the same time; no example database on disk. Another profile can be
  chosen with ``MASKRT_HYPOTHESIS_PROFILE`` (``maskrt-long``: many more examples, for a local hunt).
* ``onnx_model`` / ``predictor``: the embedded default checkpoint exported once per session to an
  "ort" graph, and an ONNX Runtime Predictor on it (2 threads), for the runtime-side tests;
  ``zero_detection_model``: the same weights with a threshold nothing passes, exported once.
* ``MASKRT_NATIVE_DIR``: a folder holding other builds of the native modules (``_native`` and
  ``_core``, e.g. the AddressSanitizer build of ``make sanitize`` in ``build/asan/lib``). They are
  loaded here, before any test module imports ``maskrt._native`` / ``maskrt._core``, and replace
  the installed ones for the whole session. A missing module there is an error, not a fallback.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "maskrt", max_examples=50, deadline=None, derandomize=True, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "maskrt-long", max_examples=2000, deadline=None, derandomize=False, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("MASKRT_HYPOTHESIS_PROFILE", "maskrt"))

NATIVE_MODULES = ("_native", "_core")


def _load_native_overrides(folder: str) -> dict[str, str]:
    """Import maskrt._native and maskrt._core from ``folder``; returns {name: file}."""
    import maskrt

    root = Path(folder)
    if not root.is_dir():
        raise RuntimeError(f"MASKRT_NATIVE_DIR={folder!r} is not a folder")
    loaded = {}
    for name in NATIVE_MODULES:
        full = f"maskrt.{name}"
        if full in sys.modules and not sys.modules[full].__file__.startswith(str(root.resolve())):
            raise RuntimeError(f"{full} was imported before conftest.py could replace it")
        candidates = [root / f"{name}{suffix}" for suffix in importlib.machinery.EXTENSION_SUFFIXES]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise RuntimeError(f"MASKRT_NATIVE_DIR={folder!r} holds no {name} module ({candidates[0].name})")
        spec = importlib.util.spec_from_file_location(full, path.resolve())
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[full] = module
        setattr(maskrt, name, module)
        loaded[name] = str(path.resolve())
    return loaded


_OVERRIDES = _load_native_overrides(os.environ["MASKRT_NATIVE_DIR"]) if os.environ.get("MASKRT_NATIVE_DIR") else {}


def pytest_report_header(config):
    if _OVERRIDES:
        return [f"native modules from MASKRT_NATIVE_DIR: {', '.join(_OVERRIDES.values())}"]
    return None


@pytest.fixture(scope="session")
def onnx_model(tmp_path_factory):
    """The embedded default checkpoint as an "ort" ONNX graph (exported once per session)."""
    from maskrt.export.onnx_export import export_model
    from maskrt.train.demo import DEFAULT_CHECKPOINT
    from maskrt.train.model.checkpoint import load_checkpoint

    model, _ = load_checkpoint(DEFAULT_CHECKPOINT)
    path = tmp_path_factory.mktemp("default_onnx") / "m.onnx"
    export_model(model, path, "ort")
    return path


@pytest.fixture(scope="session")
def zero_detection_model(tmp_path_factory):
    """(model, "ort" ONNX path) of the embedded checkpoint with a score threshold no detection
    passes (0.999999): the zero-detection case, exported once per session."""
    from maskrt.export.onnx_export import export_model
    from maskrt.train.demo import DEFAULT_CHECKPOINT
    from maskrt.train.model.checkpoint import load_checkpoint
    from maskrt.train.model.mask_rcnn import MaskRCNN

    model, _ = load_checkpoint(DEFAULT_CHECKPOINT)
    strict = MaskRCNN(model.cfg.replace(box_score_thresh=0.999999))
    strict.load_state_dict(model.state_dict())
    strict.eval()
    path = tmp_path_factory.mktemp("zero_detections") / "strict.onnx"
    export_model(strict, path, "ort")
    return strict, path


@pytest.fixture(scope="module")
def predictor(onnx_model):
    """An ONNX Runtime Predictor on ``onnx_model`` (2 intra-op threads), one per test module."""
    from maskrt.runtime.predictor import Predictor

    with Predictor.open(onnx_model, intra_op_threads=2) as p:
        yield p
