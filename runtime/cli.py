"""The `maskrt` command line: one table of commands, each command's module imported only when it runs.

:data:`COMMANDS` lists every command as (name, help, ``module:stem``, extra): the module provides
``add_<stem>_arguments(parser)`` and ``run_<stem>(args) -> int``. ``maskrt --help`` reads only the
table; ``maskrt video ...`` (``--help`` included) imports ``maskrt.runtime.video_cli`` and nothing
of the other commands. A new command is one more row (and its module).

Errors are one readable line on stderr (``maskrt <command>: error: ...``) and exit 1; ``--debug``
shows the traceback. An option that was renamed fails with one line naming the new spelling
(:func:`renamed_option`). On a runtime-only install a training-side command still parses and says
which extra it needs.

NOTE: this module imports the standard library only (it is what every ``maskrt`` call imports).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections import namedtuple

__all__ = ["COMMANDS", "Command", "build_parser", "main", "renamed_option", "run_parser"]


class Command(namedtuple("Command", "name help target extra", defaults=(None,))):
    """One row of the command table: ``name`` ("bench", or "data synth" for a command inside a
    group), ``help``, ``target`` ("module:stem": ``module.add_<stem>_arguments(parser)`` and
    ``module.run_<stem>(args)``), ``extra`` (the pip extra its imports need, named in the error of a
    runtime-only install). A named tuple, not a dataclass: ``dataclasses`` imports ``inspect``,
    which costs more than the rest of ``maskrt --help``."""

    __slots__ = ()


COMMANDS: tuple[Command, ...] = (
    Command("demo", "the whole chain on the embedded default: checkpoint -> ONNX -> ONNX Runtime -> video pipeline -> "
                    "annotated video + latency summary", "maskrt.runtime.cli:demo", "export"),
    Command("data synth", "generate the synthetic COCO-format instance set", "maskrt.train.data.synthetic:synth",
            "train"),
    Command("data clip", "generate a synthetic video clip with ground truth (COCO + MOT, track ids)",
            "maskrt.train.data.clips:clip", "train"),
    Command("train", "train Mask R-CNN on a COCO-format data set (torchrun for several processes)",
            "maskrt.train.trainer:train", "train"),
    Command("eval", "COCO bbox/segm AP of a checkpoint on a COCO-format data set", "maskrt.train.evaluate:eval",
            "train"),
    Command("export", "export a checkpoint to ONNX (ort: standard ops; trt: maskrt plugin nodes for TensorRT)",
            "maskrt.export.commands:export", "export"),
    Command("parity", "compare PyTorch eager with the exported graphs (detections, masks, COCO AP, batching)",
            "maskrt.export.commands:parity", "export"),
    Command("build", "build a TensorRT engine (+ sidecar JSON) from a trt-flavour ONNX model",
            "maskrt.export.build_engine:build", "export"),
    Command("infer", "detections (JSON with RLE masks) + overlay PNG for an image or a folder",
            "maskrt.runtime.video_cli:infer"),
    Command("video", "segment a video file, camera, stream or image folder in real time",
            "maskrt.runtime.video_cli:video"),
    Command("track-eval", "MOTA / IDF1 / ID switches of tracked JSON lines against MOT ground truth (motmetrics, "
                          "mask-IoU matching)", "maskrt.runtime.tracking.evaluate:track_eval"),
    Command("bench", "latency benchmark: per-stage p50/p90/p99, FPS, FLOP cost model, plots",
            "maskrt.benchmarks.cli:bench"),
    Command("serve", "Triton model repository for a model (--start: serve it on the bundled tritonserver)",
            "maskrt.runtime.serving.cli:serve"),
)
GROUPS = {"data": "data sets"}  # help of the groups that hold commands named "<group> <command>"


# ====================================================================== renamed options
def renamed_option(parser: argparse.ArgumentParser, old: str, new: str) -> None:
    """Adds ``old`` to ``parser`` as a hidden option whose use prints one line naming ``new``
    (``<prog>: error: --out was renamed: use --out-dir DIR``) and exits 2, argparse's status for
    usage errors, in any parser (the ``maskrt`` commands and the benchmark scripts alike); e.g.
    ``renamed_option(p, "--out", "--out-dir DIR")``. It also keeps ``old`` from being read as an
    abbreviation of a longer option (argparse's prefix matching)."""

    class _Renamed(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            parser.exit(2, f"{parser.prog}: error: {old} was renamed: use {new}\n")

    parser.add_argument(old, nargs="?", action=_Renamed, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


# ====================================================================== the demo's arguments
def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="run this preset with random weights instead")
    p.add_argument("--checkpoint", default=None, help="a maskrt checkpoint (.pt); default: the embedded one")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated clip and of random weights")
    p.add_argument("--top", type=int, default=5, help="detections of the first frame to print")
    p.add_argument("--out-dir", default="out/demo", metavar="DIR", help="output folder (default out/demo)")
    renamed_option(p, "--out", "--out-dir DIR (the demo writes a folder)")
    p.add_argument("--frames", type=int, default=60, help="frames in the generated clip (default 60)")
    p.add_argument("--frame-size", type=int, nargs=2, default=(300, 400), metavar=("H", "W"),
                   help="frame size of the generated clip (default 300 400)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for PyTorch and ONNX Runtime (default 2)")
    p.add_argument("--min-score", type=float, default=0.3,
                   help="leave detections scoring below this out of the video and JSON lines (default 0.3)")


def run_demo(args: argparse.Namespace) -> int:
    if args.config is not None:  # a bad preset name fails before torch and onnx load (the same error)
        from maskrt.runtime.config import preset

        preset(args.config)
    from maskrt.export.demo import run_demo as demo

    return demo(config=args.config, checkpoint=args.checkpoint, seed=args.seed, top=args.top, out_dir=args.out_dir,
                frames=args.frames, frame_size=tuple(args.frame_size), threads=args.threads, min_score=args.min_score)


# ====================================================================== the parser
def _selected(argv: list[str]) -> Command | None:
    """The command ``argv`` names (its first one or two words that are not options), if any."""
    words = [a for a in argv if not a.startswith("-")]
    for c in COMMANDS:
        parts = c.name.split()
        if words[:len(parts)] == parts:
            return c
    return None


def _missing_extra(c: Command, err: ModuleNotFoundError):
    def run(args: argparse.Namespace) -> int:
        extra = f"pip install 'maskrt[{c.extra}]'" if c.extra else "a complete maskrt install"
        raise RuntimeError(f"`maskrt {c.name}` needs {extra} ({err})")
    return run


def _wire(c: Command, parser: argparse.ArgumentParser) -> None:
    """Imports ``c``'s module and adds its arguments and command to ``parser``."""
    module, stem = c.target.split(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] == "maskrt":
            raise  # our own module is missing: a broken install, not a missing extra
        parser.set_defaults(func=_missing_extra(c, e), _any_arguments=True)  # its arguments are unknown here
        return
    getattr(mod, f"add_{stem}_arguments")(parser)
    parser.set_defaults(func=getattr(mod, f"run_{stem}"))


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The ``maskrt`` parser: every command of the table by name and help; the arguments of the
    one command ``argv`` names (none when ``argv`` is None)."""
    parser = argparse.ArgumentParser(prog="maskrt", description="Mask R-CNN: train, export, deploy, stream.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    chosen = _selected(argv) if argv is not None else None
    for c in COMMANDS:
        parts = c.name.split()
        where = sub
        if len(parts) == 2:
            if parts[0] not in groups:
                g = sub.add_parser(parts[0], help=GROUPS.get(parts[0]))
                groups[parts[0]] = g.add_subparsers(dest=f"{parts[0]}_command", required=True, metavar="COMMAND")
            where = groups[parts[0]]
        p = where.add_parser(parts[-1], help=c.help, description=c.help)
        p.set_defaults(command=c.name)
        if c is chosen:
            _wire(c, p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_parser(build_parser(argv), argv)


def run_parser(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parses ``argv`` and runs the chosen command's ``func``: errors are one line on stderr and
    exit 1 (``--debug``: the traceback), Ctrl-C exits 130; usage errors are argparse's
    (``SystemExit(2)``; a renamed option: one line). Shared by every ``maskrt`` entry point."""
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "_any_arguments", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")  # what parse_args does
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"maskrt {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one readable line unless --debug
        if args.debug:
            raise
        msg = str(e).strip() or type(e).__name__
        print(f"maskrt {args.command}: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
