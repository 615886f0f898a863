"""Parity of the exported graphs with PyTorch eager: detections, masks, COCO AP, batching.

Used by the tests and by ``maskrt parity``. Every comparison is on the deployment contract
(fixed-size outputs with a count) for identical uint8 inputs.

Matching rule (the only tolerance beyond float error): detections are paired by class, box and
score; two detections whose scores are within ``score_atol`` may appear in either order (NMS and
top-K score ties), and a detection may be missing from one side only if its score ties the
lowest score kept (a tie at the top-K cut). Masks are compared pasted; two discontinuities of the
paste are ties too: pixels whose reference probability lies within ``MASK_TIE`` of 0.5, and a
pair whose boxes (equal within ``BOX_RTOL``) truncate to different integer paste boxes, which is
compared in the reference's box. The raw IoU (without either) is reported beside it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from maskrt.runtime.postprocess import expand_boxes_int, paste_masks

Runner = Callable[[np.ndarray], dict[str, np.ndarray]]  # uint8 [B, H, W, 3] -> contract (numpy)

BOX_RTOL = 1e-3
SCORE_ATOL = 1e-4
MASK_IOU_MIN = 0.99
# Pasted pixels whose reference probability lies within this of the 0.5 threshold are threshold
# ties: float32 differences of ~1e-5 between backends may flip them (random-weight heads make
# many tiny masks where one flipped pixel costs 1-2 % IoU). They are left out of the IoU, the
# mask analogue of NMS score ties; the raw IoU is reported beside it.
MASK_TIE = 1e-3
AP_ATOL = 1e-3


# ----------------------------------------------------------------------------- runners
def torch_runner(model) -> Runner:
    """PyTorch eager (eval mode, inference_mode) on a uint8 [B, H, W, 3] batch."""
    from maskrt.train.evaluate import torch_infer

    model.eval()
    return torch_infer(model)


def onnx_runner(path: str | Path, threads: int = 2) -> Runner:
    """``OrtBackend`` (CPU execution provider) on an exported graph of either flavour; the trt
    flavour's plugin nodes run on our native CPU kernels (export/plugin_ops.py) from a sibling
    file ``<name>.cpu.onnx`` holding the rewritten graph."""
    from maskrt.runtime.backends.ort import OrtBackend
    from maskrt.runtime.model_meta import META_FLAVOUR

    from .onnx_export import load_plugin_table, read_metadata

    path = Path(path)
    kwargs: dict[str, Any] = {}
    model = onnx.load(str(path))
    if read_metadata(model).get(META_FLAVOUR) == "trt":
        from .plugin_ops import cpu_runnable, register_plugin_ops

        kwargs["custom_op_library"] = register_plugin_ops()
        cpu_path = path.with_name(path.stem + ".cpu.onnx")
        onnx.save(cpu_runnable(model, load_plugin_table()), str(cpu_path))
        path = cpu_path
    backend = OrtBackend(path, intra_op_threads=threads, inter_op_threads=1, **kwargs).open()
    return backend.infer


# ----------------------------------------------------------------------------- comparison
@dataclass
class ImageParity:
    n_ref: int
    n_out: int
    matched: int
    tie_explained: int  # unmatched detections explained by a score tie at the top-K cut
    max_box_rel: float
    max_score_abs: float
    min_mask_iou: float  # threshold ties excluded (MASK_TIE)
    min_mask_iou_raw: float
    paste_ties: int = 0  # matched pairs whose integer paste boxes differ (compared in the reference's box)

    @property
    def ok(self) -> bool:
        unexplained = max(self.n_ref, self.n_out) - self.matched - self.tie_explained
        return (self.n_ref == self.n_out and unexplained == 0 and self.max_box_rel <= BOX_RTOL
                and self.max_score_abs <= SCORE_ATOL and self.min_mask_iou >= MASK_IOU_MIN)


def _box_rel(a: np.ndarray, b: np.ndarray) -> float:
    """Largest coordinate difference relative to the coordinate (at least 1 pixel)."""
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1.0)))


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.logical_and(a, b).sum()
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(inter / union)


def compare_image(ref: dict[str, np.ndarray], out: dict[str, np.ndarray], i: int,
                  input_size: Sequence[int]) -> ImageParity:
    """Compares image ``i`` of two contract outputs (see the module docstring)."""
    nr, no = int(ref["num_detections"][i]), int(out["num_detections"][i])
    rb, rs, rc = ref["boxes"][i, :nr], ref["scores"][i, :nr], ref["classes"][i, :nr]
    ob, os_, oc = out["boxes"][i, :no], out["scores"][i, :no], out["classes"][i, :no]
    used = np.zeros(no, dtype=bool)
    pairs = []
    for r in range(nr):
        cand = np.nonzero(~used & (oc == rc[r]) & (np.abs(os_ - rs[r]) <= SCORE_ATOL))[0]
        if cand.size == 0:
            continue
        errs = [_box_rel(rb[r], ob[j]) for j in cand]
        j = int(cand[int(np.argmin(errs))])
        if min(errs) <= BOX_RTOL:
            used[j] = True
            pairs.append((r, j))
    matched = len(pairs)
    # Unmatched detections whose score ties the lowest kept score on either side: top-K ties.
    lowest = min(float(rs[-1]) if nr else np.inf, float(os_[-1]) if no else np.inf)
    r_un = set(range(nr)) - {p[0] for p in pairs}
    o_un = set(range(no)) - {p[1] for p in pairs}
    tie = sum(1 for r in r_un if abs(float(rs[r]) - lowest) <= SCORE_ATOL)
    tie = max(tie, sum(1 for j in o_un if abs(float(os_[j]) - lowest) <= SCORE_ATOL))
    box_rel = max([_box_rel(rb[r], ob[j]) for r, j in pairs], default=0.0)
    score = max([abs(float(rs[r] - os_[j])) for r, j in pairs], default=0.0)
    miou = miou_raw = 1.0
    paste_ties = 0
    if pairs:
        r_idx = [p[0] for p in pairs]
        o_idx = [p[1] for p in pairs]
        rm, rbx = ref["masks"][i][r_idx], rb[r_idx]
        om, obx = out["masks"][i][o_idx], ob[o_idx]
        mr = paste_masks(rm, rbx, input_size)
        mo = paste_masks(om, obx, input_size)
        # NOTE (paste ties): the paste truncates the expanded box to integers, so two boxes equal
        # to 1e-5 px can land one pixel apart when a corner sits on an integer, shifting the whole
        # mask. Such pairs are compared in the reference's integer box (the raw IoU keeps the shift).
        m = rm.shape[-1]
        tied = (expand_boxes_int(rbx, m) != expand_boxes_int(obx, m)).any(axis=1)
        paste_ties = int(tied.sum())
        mo_same_box = paste_masks(om, np.where(tied[:, None], rbx, obx), input_size) if paste_ties else mo
        ambiguous = paste_masks(rm, rbx, input_size, 0.5 - MASK_TIE) & ~paste_masks(rm, rbx, input_size, 0.5 + MASK_TIE)
        miou_raw = min(_mask_iou(a, b) for a, b in zip(mr, mo, strict=True))
        miou = min(_mask_iou(a & ~t, b & ~t) for a, b, t in zip(mr, mo_same_box, ambiguous, strict=True))
    return ImageParity(nr, no, matched, tie, box_rel, score, miou, miou_raw, paste_ties)


def compare_batches(ref: dict[str, np.ndarray], out: dict[str, np.ndarray],
                    input_size: Sequence[int]) -> list[ImageParity]:
    return [compare_image(ref, out, i, input_size) for i in range(len(ref["num_detections"]))]


def batch_equals_singles(run: Runner, images: np.ndarray, input_size: Sequence[int],
                         batched: dict[str, np.ndarray] | None = None) -> list[ImageParity]:
    """The batch run vs one run per image, compared with the same rules. ``batched``: the outputs
    of ``run(images)`` when the caller has them already (not run again)."""
    if batched is None:
        batched = run(images)
    out = []
    for i in range(images.shape[0]):
        single = run(images[i : i + 1])
        sub = {k: v[i : i + 1] for k, v in batched.items()}
        out.append(compare_image(single, sub, 0, input_size))
    return out


# ----------------------------------------------------------------------------- report
@dataclass
class BackendParity:
    name: str
    images: list[ImageParity] = field(default_factory=list)
    batch: list[ImageParity] = field(default_factory=list)
    seconds_per_image: float = 0.0
    ap: dict[str, float] | None = None

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.images) and all(p.ok for p in self.batch)

    def summary(self) -> dict[str, Any]:
        imgs = self.images
        return {
            "backend": self.name,
            "ok": self.ok,
            "images": len(imgs),
            "detections_ref": sum(p.n_ref for p in imgs),
            "detections": sum(p.n_out for p in imgs),
            "count_mismatches": sum(p.n_ref != p.n_out for p in imgs),
            "tie_explained": sum(p.tie_explained for p in imgs),
            "max_box_rel": max([p.max_box_rel for p in imgs], default=0.0),
            "max_score_abs": max([p.max_score_abs for p in imgs], default=0.0),
            "min_mask_iou": min([p.min_mask_iou for p in imgs], default=1.0),
            "min_mask_iou_raw": min([p.min_mask_iou_raw for p in imgs], default=1.0),
            "paste_ties": sum(p.paste_ties for p in imgs),
            "zero_detection_images": sum(p.n_ref == 0 for p in imgs),
            "batch_equals_singles": all(p.ok for p in self.batch) if self.batch else None,
            "seconds_per_image": self.seconds_per_image,
            "ap": self.ap,
        }


def format_report(rows: list[dict[str, Any]]) -> str:
    head = ("| backend | ok | images (0 det) | detections ref/out | count mismatches | ties | max box rel | "
            "max score abs | min mask IoU (raw) | batch==singles | s/img | bbox AP | segm AP |")
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        ap = r.get("ap") or {}
        lines.append(
            f"| {r['backend']} | {'yes' if r['ok'] else 'NO'} | {r['images']} ({r['zero_detection_images']}) | "
            f"{r['detections_ref']}/{r['detections']} | {r['count_mismatches']} | {r['tie_explained']} | "
            f"{r['max_box_rel']:.1e} | {r['max_score_abs']:.1e} | "
            f"{r['min_mask_iou']:.4f} ({r['min_mask_iou_raw']:.4f}) | "
            f"{r['batch_equals_singles']} | {r['seconds_per_image']:.3f} | "
            f"{ap.get('bbox', float('nan')):.4f} | {ap.get('segm', float('nan')):.4f} |")
    return "\n".join(lines)


def run_parity(model, images: np.ndarray, out_dir: str | Path, *, flavours: Sequence[str] = ("ort", "trt"),
               threads: int = 2, batch: int = 4, dataset=None, progress: Callable[[str], None] = print
               ) -> list[dict[str, Any]]:
    """Exports ``model`` in each flavour to ``out_dir``, runs eager and every graph on ``images``
    (uint8 [N, H, W, 3] at the config's input size) in batches of ``batch``, compares, checks
    batch == singles on the first ``batch`` images, and (with a COCO ``dataset``) COCO AP of
    every backend. Returns one summary row per backend (eager first)."""
    import torch

    from .onnx_export import export_model

    torch.set_num_threads(threads)
    cfg = model.cfg
    out_dir = Path(out_dir)
    runners: dict[str, Runner] = {"torch": torch_runner(model)}
    for fl in flavours:
        path = out_dir / f"model_{fl}.onnx"
        s = export_model(model, path, fl)
        progress(f"exported {s.line()}")
        runners[f"onnxruntime-{fl}" if fl == "ort" else "trt-graph-cpu"] = onnx_runner(path, threads)

    results: dict[str, BackendParity] = {}
    ref: dict[str, np.ndarray] | None = None
    for name, run in runners.items():
        bp = BackendParity(name)
        t0 = time.perf_counter()
        outs = [run(images[s : s + batch]) for s in range(0, len(images), batch)]
        bp.seconds_per_image = (time.perf_counter() - t0) / max(len(images), 1)
        merged = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
        if ref is None:
            ref = merged
        bp.images = compare_batches(ref, merged, cfg.input_size)
        bp.batch = batch_equals_singles(run, images[:batch], cfg.input_size)
        if dataset is not None:
            from maskrt.train.evaluate import coco_evaluate, predict_coco

            res = predict_coco(dataset, run, cfg.input_size, batch_size=batch, pad_to_input=True, progress=False)
            m = coco_evaluate(dataset.coco, res, img_ids=list(dataset.ids))
            bp.ap = {"bbox": m["bbox"]["AP"], "segm": m["segm"]["AP"]}
        results[name] = bp
        progress(f"{name}: {'ok' if bp.ok else 'MISMATCH'} ({bp.seconds_per_image:.3f} s/img)")
    rows = [r.summary() for r in results.values()]
    if dataset is not None:
        ref_ap = rows[0]["ap"]
        for r in rows:
            r["ap_diff"] = max(abs(r["ap"][k] - ref_ap[k]) for k in ref_ap)
            r["ok"] = r["ok"] and r["ap_diff"] <= AP_ATOL
    return rows


def write_json(rows: list[dict[str, Any]], path: str | Path, **context: Any) -> None:
    Path(path).write_text(json.dumps({"context": context, "backends": rows}, indent=2, default=float))

