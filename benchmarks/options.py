"""What ``maskrt bench`` measures and how it is asked: the stage names, :class:`BenchOptions`
(validated by :meth:`BenchOptions.check`) and :class:`BenchError`."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BACKENDS", "DEFAULT_FRAME_SIZE", "INFER_STAGES", "MODEL_SUFFIXES", "PRECISIONS", "RESULT_FORMAT", "STAGES",
           "STAGE_LABELS", "BenchError", "BenchOptions", "argv_of"]

RESULT_FORMAT = "maskrt.bench/1"
BACKENDS = ("ort", "trt", "torch")
PRECISIONS = ("fp32", "fp16", "int8")
STAGES = ("prepare", "infer", "finish", "paste_rle")
INFER_STAGES = ("backbone_fpn", "rpn", "box_branch", "mask_branch", "other")
STAGE_LABELS = {"prepare": "prepare (letterbox)", "infer": "infer", "finish": "finish (Detections)",
                "paste_rle": "paste + RLE (native)", "backbone_fpn": "backbone+FPN", "rpn": "RPN",
                "box_branch": "box branch", "mask_branch": "mask branch", "other": "other (I/O, glue)"}
DEFAULT_FRAME_SIZE = (720, 1280)
MODEL_SUFFIXES = {".onnx": "onnx", ".engine": "engine", ".plan": "engine", ".trt": "engine", ".pt": "checkpoint",
                  ".pth": "checkpoint"}


class BenchError(ValueError):
    """A benchmark cannot run as asked (bad argument, a model/backend combination that cannot work)."""


@dataclass
class BenchOptions:
    """What to benchmark (the ``maskrt bench`` arguments)."""

    model: str | None = None  # .onnx | .pt | engine | preset name (random weights) | None (embedded default)
    backend: str = "ort"
    batches: tuple[int, ...] = (1,)
    size: tuple[int, int] | None = None
    precision: str = "fp32"
    iters: int = 20
    warmup: int = 3
    threads: int = 2
    detections: int | None = None
    out_dir: str | None = None  # --out-dir
    compare: bool = False
    frame_size: tuple[int, int] = DEFAULT_FRAME_SIZE
    device: str = "cpu"
    profile_runs: int = 3
    pipeline_frames: int | None = None
    post_repeats: int = 10
    gemm_sizes: tuple[int, ...] = (256, 512, 1024, 2048)
    seed: int = 0
    name: str | None = None
    progress: bool = True
    plots: bool = True

    def check(self) -> None:
        """Raises :class:`BenchError` naming the first bad option."""
        if self.backend not in BACKENDS:
            raise BenchError(f"--backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.precision not in PRECISIONS:
            raise BenchError(f"--precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not self.batches or any(b < 1 for b in self.batches) or len(set(self.batches)) != len(self.batches):
            raise BenchError(f"--batches must list distinct positive batch sizes, got {list(self.batches)}")
        for name, v, lo in (("--iters", self.iters, 1), ("--warmup", self.warmup, 0), ("--threads", self.threads, 1),
                            ("--profile-runs", self.profile_runs, 0), ("--post-repeats", self.post_repeats, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise BenchError(f"{name} must be an integer >= {lo}, got {v!r}")
        if self.size is not None and (len(self.size) != 2 or any(s <= 0 or s % 32 for s in self.size)):
            raise BenchError(f"--size must be H W, positive multiples of 32, got {list(self.size)}")
        if len(self.frame_size) != 2 or any(s <= 0 for s in self.frame_size):
            raise BenchError(f"--frame-size must be two positive integers H W, got {list(self.frame_size)}")
        if self.detections is not None and self.detections < 1:
            raise BenchError(f"--detections must be >= 1, got {self.detections}")
        if self.pipeline_frames is not None and self.pipeline_frames < 0:
            raise BenchError(f"--pipeline-frames must be >= 0, got {self.pipeline_frames}")
        if self.precision != "fp32" and self.backend != "trt":
            raise BenchError(f"--precision {self.precision} needs a TensorRT engine built with it (--backend trt); "
                             f"the {self.backend} backend runs the fp32 graph")
        if self.compare and self.backend == "torch":
            raise BenchError("--compare runs PyTorch eager beside ONNX Runtime / TensorRT; with --backend torch "
                             "there is nothing to compare")


def argv_of(opts: BenchOptions) -> list[str]:
    a = []
    if opts.model:
        a += ["--model", opts.model]
    a += ["--backend", opts.backend, "--batches", ",".join(map(str, opts.batches))]
    if opts.size:
        a += ["--size", *map(str, opts.size)]
    a += ["--precision", opts.precision, "--iters", str(opts.iters), "--warmup", str(opts.warmup),
          "--threads", str(opts.threads)]
    if opts.detections:
        a += ["--detections", str(opts.detections)]
    if opts.compare:
        a.append("--compare")
    return a
