"""The Python-backend model of a maskrt Triton repository (copied there as ``<name>/1/model.py``).

Triton's Python-backend stub imports this file on its own (``triton_python_backend_utils`` exists
only there), so it imports maskrt itself, from the site-packages folders that ``maskrt serve``
wrote into the config's ``maskrt.site_dirs`` parameter, put ahead of the stub's own ``sys.path``.

``initialize`` opens ``OrtBackend`` on ``model.onnx`` beside this file (intra-op threads from
``maskrt.intra_op_threads``) and checks that the graph's ModelConfig is the one the config
publishes. ``execute`` gets the requests Triton's dynamic batcher gathered: their images are
concatenated into one batch, run once, and the outputs split back per request, in request order.
A failure answers every request of that batch with the error (one line); the model stays loaded.
Triton itself refuses requests whose dtype or shape break the config, and batches over
``max_batch_size``, before they reach this file.

NOTE: tensors cross the stub boundary by DLPack (``np.from_dlpack`` in, ``Tensor.from_dlpack``
out), never ``as_numpy()`` / ``Tensor(name, array)``: the stub of Triton 2.51 (nvidia-pytriton
0.7.0) reads numpy's dtype struct with numpy 1's layout, so under numpy 2 ``as_numpy()`` returns
zeros and ``Tensor(name, array)`` carries 0 bytes, silently. DLPack does not depend on that
layout. The stub renames a consumed capsule to "used_dlpack" (DLPack says "used_dltensor"), so
numpy's capsule destructor reports an unraisable ``ValueError`` (it leaves the tensor to the stub,
which frees it); that one report is filtered out of the log.
"""

from __future__ import annotations

import json
import site
import sys
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils  # only inside Triton's Python-backend stub

OUTPUTS = ("num_detections", "boxes", "scores", "classes", "masks")


def _add_site_dirs(dirs: list[str]) -> None:
    # NOTE: site.addsitedir also runs the folders' .pth files (an editable maskrt install is one);
    # the new entries go first so that this environment's packages win over the stub's own ones.
    before = list(sys.path)
    for d in dirs:
        site.addsitedir(d)
    added = [p for p in sys.path if p not in before]
    sys.path[:] = added + before


_CAPSULE_NOISE = "PyCapsule_GetPointer called with incorrect name"


def _quiet_capsule_noise() -> None:
    """Filters the stub's capsule report (module docstring) out of the hooks that print it."""
    unraisable, excepthook = sys.unraisablehook, sys.excepthook

    def on_unraisable(u) -> None:
        if not (isinstance(u.exc_value, ValueError) and _CAPSULE_NOISE in str(u.exc_value)):
            unraisable(u)

    def on_exception(kind, value, tb) -> None:
        if not (kind is ValueError and _CAPSULE_NOISE in str(value)):
            excepthook(kind, value, tb)

    sys.unraisablehook, sys.excepthook = on_unraisable, on_exception


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        cfg = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in cfg.get("parameters", {}).items()}
        _add_site_dirs(json.loads(params.get("maskrt.site_dirs", "[]")))
        from maskrt.runtime.backends.ort import OrtBackend
        from maskrt.runtime.config import ModelConfig

        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        threads = int(params.get("maskrt.intra_op_threads", "0") or 0) or None
        backend = OrtBackend(path, intra_op_threads=threads)
        published = ModelConfig.from_json(params["maskrt.model_config"])
        if backend.config != published:
            raise pb_utils.TritonModelException(f"{path}: the graph's ModelConfig differs from the one config.pbtxt "
                                                "publishes (maskrt.model_config): write the repository again")
        _quiet_capsule_noise()
        self.backend = backend.open()
        self.name = cfg.get("name", "maskrt")

    def execute(self, requests: list) -> list:
        images = [np.from_dlpack(pb_utils.get_input_tensor_by_name(r, "images")) for r in requests]
        sizes = [int(a.shape[0]) for a in images]
        try:
            batch = images[0] if len(images) == 1 else np.concatenate(images, axis=0)
            out = self.backend.infer(np.ascontiguousarray(batch))
        except Exception as e:  # every request of the batch gets the error; the model stays loaded
            text = (str(e).strip().splitlines() or [type(e).__name__])[0]
            err = pb_utils.TritonError(f"{self.name}: {type(e).__name__}: {text}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=err) for _ in requests]
        # NOTE: the contract's num_detections is [B]; the config publishes one [1] per item.
        out["num_detections"] = out["num_detections"].reshape(-1, 1)
        responses, start = [], 0
        for n in sizes:
            tensors = [pb_utils.Tensor.from_dlpack(k, np.ascontiguousarray(out[k][start:start + n])) for k in OUTPUTS]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += n
        return responses

    def finalize(self) -> None:
        backend = getattr(self, "backend", None)
        if backend is not None:
            backend.close()
