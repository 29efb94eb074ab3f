"""``fcos-d2 evaluate``: COCO AP of a trained model (its config and weights) or of an exported
one (``--exported DIR``) on a registered dataset."""

import argparse

from .common import (
    CommandError,
    add_config_arguments,
    add_output_argument,
    add_overrides,
    add_slice_arguments,
    check_config_datasets,
    check_datasets,
    load_command_config,
    sliced,
)
from .train import add_launch_arguments, launch_args, launch_run

HELP = "COCO AP of a trained model on the config's test datasets, or of an exported model"
EXAMPLES = [
    "fcos-d2 evaluate --config-file demo/FCOS_R18_shapes_demo.yaml "
    "--weights output/demo/model_final.pth",
    "fcos-d2 evaluate --config-file configs/FCOS_R_50_FPN_1x.yaml --weights model.pth "
    "--dataset coco_2017_val --output out/eval",
    "fcos-d2 evaluate --exported out/onnx --dataset shapes_val",
    "fcos-d2 evaluate --config-file demo/FCOS_R18_shapes_demo.yaml "
    "--weights output/demo/model_final.pth --dataset 'coco:mosaics/val.json:mosaics/val' "
    "--slice 256 256",
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
    add_slice_arguments(parser)
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
    from ..export.predictor import ExportedPredictor
    from ..export.writers import read_export_json

    try:  # the dataset's classes matched to the exported model's
        names = read_export_json(args.exported).get("class_names")
    except (OSError, ValueError):
        names = None  # ExportedPredictor names what is wrong with the folder
    check_datasets([args.dataset], classes=names)
    if args.slice:
        predictor = sliced(ExportedPredictor(args.exported), args)
        return _print_sliced(predictor, [args.dataset], args.output)
    print_csv_format(evaluate_exported(args.exported, args.dataset, args.output))
    return 0


def _print_sliced(predictor, datasets, output) -> int:
    from detectron2.evaluation import print_csv_format

    from ..slicing import evaluate_sliced

    for name in datasets:
        print_csv_format(evaluate_sliced(predictor, name, output))
    return 0


def _run_sliced(args: argparse.Namespace, cfg) -> int:
    """Evaluation of the config's model on tiles, in this process (--slice)."""
    import os

    from ..config import inference_settings
    from ..predictor import Predictor
    from ..utils import setup_command_logger

    setup_command_logger(name="fcos_d2")
    setup_command_logger(name="detectron2")
    settings = inference_settings(cfg)
    names = (args.dataset,) if args.dataset else settings.test_datasets
    output = args.output or os.path.join(settings.output_dir, "inference_sliced")
    return _print_sliced(sliced(Predictor(cfg), args), names, output)


def run(args: argparse.Namespace) -> int:
    if args.exported:
        return _run_exported(args)
    if not args.config_file:
        raise CommandError("give --config-file (with --weights) or --exported DIR")
    cfg = load_command_config(args)
    if args.dataset:
        check_datasets([args.dataset], cfg=cfg)
    else:
        check_config_datasets(cfg)
    if args.slice:
        return _run_sliced(args, cfg)
    names = (args.dataset,) if args.dataset else ()
    launch_run(launch_args(args, eval_only=True, test_datasets=names))
    return 0
