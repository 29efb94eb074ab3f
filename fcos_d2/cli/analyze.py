"""``fcos-d2 analyze``: the paper's analyses of a dataset under a config (``data``: best
possible recall, ambiguity, level usage) and of a model's results (``results``: AP per class,
F1 thresholds, error breakdown)."""

import argparse

from omegaconf import DictConfig

from .common import (
    CommandError,
    add_config_arguments,
    add_output_argument,
    add_overrides,
    check_datasets,
    load_command_config,
)

HELP = "analyze a dataset under a config (data) or a model's results (results)"
EXAMPLES = [
    "fcos-d2 analyze data --config-file demo/FCOS_R18_shapes_demo.yaml --output out/data",
    "fcos-d2 analyze data --config-file configs/FCOS_R_50_FPN_1x.yaml --coco-json "
    "datasets/coco_like/train.json --sizes-of-interest [48,96,192,384] --output out/data",
    "fcos-d2 analyze results --config-file demo/FCOS_R18_shapes_demo.yaml "
    "--weights output/demo/model_final.pth --output out/results",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="analysis", metavar="ANALYSIS", required=True)
    data = sub.add_parser("data", help="best possible recall, ambiguity, level usage")
    results = sub.add_parser("results", help="AP per class, F1 thresholds, error breakdown")
    for p in (data, results):
        add_config_arguments(p, weights=p is results)
        add_output_argument(p, required=True, help="folder for the report (JSON and plots)")
        p.add_argument(
            "--coco-json",
            action="append",
            default=[],
            metavar="FILE",
            help="a COCO-format file to analyse, registered as FOLDER_STEM (images in "
            "FOLDER/STEM/ if there is one, else in FOLDER/); repeatable",
        )
    data.add_argument(
        "--dataset",
        action="append",
        default=[],
        metavar="NAME",
        help="registered dataset (repeatable); default: the config's DATASETS.TRAIN",
    )
    data.add_argument(
        "--sizes-of-interest",
        action="append",
        default=[],
        metavar="LIST",
        help="alternative MODEL.FCOS.SIZES_OF_INTEREST, e.g. [48,96,192,384] (repeatable)",
    )
    results.add_argument("--dataset", metavar="NAME", help="registered dataset to evaluate on")
    source = results.add_mutually_exclusive_group()
    source.add_argument(
        "--predictions", metavar="FILE", help="coco_instances_results.json of an evaluation"
    )
    source.add_argument("--exported", metavar="DIR", help="a folder written by fcos-d2 export")
    for p in (data, results):
        add_overrides(p)


def run(args: argparse.Namespace) -> int:
    from ..analyze.__main__ import register_json_files, run_data

    cfg = load_command_config(args)
    if isinstance(cfg, DictConfig):
        raise CommandError(
            f"analyze reads YAML configs; {args.config_file} is a Python config (give the YAML "
            "recipe it mirrors, e.g. configs/demo/FCOS_R18_shapes_demo.yaml)"
        )
    if args.analysis == "data" and args.dataset:
        check_datasets(args.dataset, cfg=cfg)
    if args.analysis == "data":
        run_data(args, cfg)
    else:
        from ..analyze.results import run_results

        run_results(args, cfg, register_json_files(args.coco_json), CommandError)
    return 0
