"""``fcos-d2 evaluate``: COCO AP of a trained model (its config and weights) or of an exported
one (``--exported DIR``) on a registered dataset."""

import argparse

from .common import (
    CommandError,
    add_config_arguments,
    add_output_argument,
    add_overrides,
    check_config_datasets,
    check_datasets,
    load_command_config,
)
from .train import add_launch_arguments, launch_args, launch_run

HELP = "COCO AP of a trained model on the config's test datasets, or of an exported model"
EXAMPLES = [
    "fcos-d2 evaluate --config-file demo/FCOS_R18_shapes_demo.yaml "
    "--weights output/demo/model_final.pth",
    "fcos-d2 evaluate --config-file configs/FCOS_R_50_FPN_1x.yaml --weights model.pth "
    "--dataset coco_2017_val --output out/eval",
    "fcos-d2 evaluate --exported out/onnx --dataset shapes_val",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, required=False)
    parser.add_argument(
        "--exported", metavar="DIR", help="a folder written by fcos-d2 export (instead of a config)"
    )
    parser.add_argument(
        "--dataset",
        metavar="NAME",
        help="registered dataset to evaluate on (default: the config's test datasets)",
    )
    add_output_argument(
        parser, required=False, help="folder for the evaluator's files (default: OUTPUT_DIR)"
    )
    add_launch_arguments(parser)
    add_overrides(parser)


def _run_exported(args: argparse.Namespace) -> int:
    if args.config_file or args.weights or args.device or args.opts:
        raise CommandError("--exported takes no --config-file, --weights, --device or overrides")
    if not args.dataset:
        raise CommandError("--exported needs --dataset NAME (a registered dataset)")
    from detectron2.evaluation import print_csv_format

    from ..export.evaluate import evaluate_exported
    from ..utils import setup_command_logger

    setup_command_logger(name="fcos_d2")
    setup_command_logger(name="detectron2")
    check_datasets([args.dataset])
    print_csv_format(evaluate_exported(args.exported, args.dataset, args.output))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.exported:
        return _run_exported(args)
    if not args.config_file:
        raise CommandError("give --config-file (with --weights) or --exported DIR")
    cfg = load_command_config(args)
    if args.dataset:
        check_datasets([args.dataset])
    else:
        check_config_datasets(cfg)
    names = (args.dataset,) if args.dataset else ()
    launch_run(launch_args(args, eval_only=True, test_datasets=names))
    return 0
