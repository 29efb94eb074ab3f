"""``fcos-d2 train``: train a model (detectron2's launcher: several GPUs, machines or CPU
processes), with exact ``--resume``."""

import argparse

from .common import (
    add_config_arguments,
    add_output_argument,
    add_overrides,
    check_config_datasets,
    load_command_config,
    resolve_config_file,
)

HELP = "train a model (YAML or Python config); --resume continues the last checkpoint"
EXAMPLES = [
    "fcos-d2 train --config-file demo/FCOS_R18_shapes_demo.yaml --output output/demo",
    "fcos-d2 train --config-file configs/FCOS_R_50_FPN_1x.yaml --num-gpus 8 --output out/r50",
    "fcos-d2 train --config-file configs/FCOS_R_50_FPN_1x.yaml --resume --output out/r50",
    "fcos-d2 train --config-file configs/lazy/fcos_R18_shapes_demo.py train.max_iter=100",
]


def add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    """detectron2's ``default_argument_parser`` options for processes and machines."""
    parser.add_argument("--num-gpus", type=int, default=1, help="processes per machine")
    parser.add_argument("--num-machines", type=int, default=1)
    parser.add_argument("--machine-rank", type=int, default=0)
    parser.add_argument(
        "--dist-url", default="auto", help="URL of the first machine's process group (auto: local)"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    add_output_argument(
        parser, required=False, help="folder for checkpoints, logs, metrics (OUTPUT_DIR)"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from the last checkpoint in --output"
    )
    add_launch_arguments(parser)
    add_overrides(parser)


def launch_args(
    args: argparse.Namespace, *, eval_only: bool, test_datasets=()
) -> argparse.Namespace:
    """detectron2's ``default_argument_parser`` namespace for ``args``, with the settings of
    ``--output``, ``--weights``, ``--device`` (and ``test_datasets``) that ``train_main`` sets on
    the config it loads (of either kind)."""
    return argparse.Namespace(
        config_file=resolve_config_file(args.config_file),
        opts=list(args.opts or []),
        eval_only=eval_only,
        resume=getattr(args, "resume", False),
        num_gpus=args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        output=args.output,
        weights=args.weights,
        device=args.device,
        test_datasets=tuple(test_datasets),
    )


def _train_process(args: argparse.Namespace):
    """One launched process's run: with freed memory kept for reuse, as in every ``fcos-d2``
    command (the workers of a multi-process run are started anew, not forked)."""
    from ..engine.main import train_main
    from ..utils import keep_freed_memory

    keep_freed_memory()
    return train_main(args)


def launch_run(args: argparse.Namespace) -> None:
    """``train_main(args)`` under detectron2's ``launch`` (processes and machines of ``args``)."""
    from detectron2.engine import launch

    launch(
        _train_process,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


def run(args: argparse.Namespace) -> int:
    cfg = load_command_config(args)  # every mistake in the config named before any process
    check_config_datasets(cfg, train=True)
    launch_run(launch_args(args, eval_only=False))
    return 0
