"""The `maskrt` command line.

Errors are one readable line on stderr and a non-zero exit; ``--debug`` shows the traceback.
Commands that need training-side packages (torch) import them only when they run, so the
runtime-only install still answers ``maskrt --help``.
"""

from __future__ import annotations

import argparse
import sys


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="run the model on a generated image and print the output contract")
    p.add_argument("--config", default="r18-small", help="model preset without --checkpoint (default: r18-small)")
    p.add_argument("--checkpoint", default=None, help="a maskrt checkpoint (.pt) to run instead of random weights")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated image and of random weights")
    p.add_argument("--top", type=int, default=5, help="detections to print")

    def run(args) -> int:
        from maskrt.train.demo import run_demo

        return run_demo(config=args.config, checkpoint=args.checkpoint, seed=args.seed, top=args.top)

    p.set_defaults(func=run)


def _add_data(sub) -> None:
    p = sub.add_parser("data", help="data sets")
    dsub = p.add_subparsers(dest="data_command", required=True)
    synth = dsub.add_parser("synth", help="generate the synthetic COCO-format instance set")
    try:
        from maskrt.train.data.synthetic import add_synth_arguments, run_synth
    except ImportError as e:  # runtime-only install
        missing = str(e)

        def run_synth(args) -> int:
            raise RuntimeError(f"`maskrt data synth` needs the training extras: pip install 'maskrt[train]' "
                               f"({missing})")
    else:
        add_synth_arguments(synth)
    synth.set_defaults(func=run_synth)


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train Mask R-CNN on a COCO-format data set (torchrun for several processes)")
    try:
        from maskrt.train.trainer import add_train_arguments, run_train
    except ImportError as e:  # runtime-only install
        missing = str(e)

        def run_train(args) -> int:
            raise RuntimeError(f"`maskrt train` needs the training extras: pip install 'maskrt[train]' ({missing})")
    else:
        add_train_arguments(p)
    p.set_defaults(func=run_train)


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="COCO bbox/segm AP of a checkpoint on a COCO-format data set")
    try:
        from maskrt.train.evaluate import add_eval_arguments, run_eval
    except ImportError as e:  # runtime-only install
        missing = str(e)

        def run_eval(args) -> int:
            raise RuntimeError(f"`maskrt eval` needs the training extras: pip install 'maskrt[train]' ({missing})")
    else:
        add_eval_arguments(p)
    p.set_defaults(func=run_eval)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maskrt", description="Mask R-CNN: train, export, deploy, stream.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_demo(sub)
    _add_data(sub)
    _add_train(sub)
    _add_eval(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
