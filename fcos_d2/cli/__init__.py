"""
``fcos-d2`` (and ``python -m fcos_d2``): one command line for everything a user runs, with one
set of conventions (:mod:`.common`)::

    fcos-d2 COMMAND [OPTIONS] [OVERRIDES]

Each command is a module of this package with ``HELP``, ``EXAMPLES``, ``add_arguments(parser)``
and ``run(args) -> exit status``; what only running needs (runtimes, the trainer, the optional
extras) is imported in ``run``.
"""

import argparse
import importlib
import sys
from typing import Optional, Sequence

from .common import CommandError, first_line, quiet_third_party

__all__ = ["COMMANDS", "CommandError", "build_parser", "main"]

# In the order ``fcos-d2 --help`` lists them.
COMMANDS = (
    "train",
    "evaluate",
    "predict",
    "export",
    "serve",
    "analyze",
    "visualize",
    "benchmark",
    "convert",
    "data",
)

_DESCRIPTION = (
    "FCOS object detection on detectron2: train, evaluate, predict, export, serve, analyze."
)


def _epilog(examples: Sequence[str]) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in examples)


def command_module(name: str):
    return importlib.import_module(f"{__name__}.{name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fcos-d2",
        description=_DESCRIPTION,
        epilog=_epilog(
            [
                "fcos-d2 data shapes --output datasets/shapes",
                "fcos-d2 train --config-file demo/FCOS_R18_shapes_demo.yaml --output output/demo",
                "fcos-d2 COMMAND --help",
            ]
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = command_module(name)
        command = sub.add_parser(
            name,
            help=module.HELP,
            description=module.HELP,
            epilog=_epilog(module.EXAMPLES),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one command; 0 on success, 2 (one line on stderr) for a user's mistake."""
    quiet_third_party()
    args = build_parser().parse_args(argv)
    from ..checkpoint import CheckpointReadError, IncompleteCheckpointError
    from ..data import register_shapes
    from ..utils import keep_freed_memory

    # Each command runs networks over and over in its own process: freed tensors' memory is
    # reused rather than mapped anew (FCOS_D2_KEEP_FREED_MEMORY=0 leaves malloc as it is).
    keep_freed_memory()

    # The demo's datasets (shapes_train / shapes_val under $DETECTRON2_DATASETS), for every
    # command that names a dataset; ones the user registered under those names are kept.
    register_shapes(replace=False)

    user_errors = (
        CommandError,
        ValueError,
        FileNotFoundError,
        CheckpointReadError,
        IncompleteCheckpointError,
        ImportError,
    )
    try:
        return int(args._run(args) or 0)
    except user_errors as e:
        print(f"fcos-d2 {args.command}: error: {first_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fcos-d2 {args.command}: interrupted", file=sys.stderr)
        return 130
