"""
Know your data and your model, with the FCOS paper's own analyses.

    python -m fcos_d2.analyze data --config-file CFG [--dataset NAME ...] [--coco-json FILE ...]
        [--output DIR] [--sizes-of-interest "[a,b,...]" ...] [KEY VALUE ...]
    python -m fcos_d2.analyze results --config-file CFG --dataset NAME [--output DIR]
        [--predictions coco_instances_results.json | --exported EXPORT_DIR] [KEY VALUE ...]

``data``: best possible recall, ambiguous samples and level usage of the config's matching on
its training datasets (DIR/data_analysis.json, DIR/data_analysis.png). ``results``: COCO AP, per
class AP and the score threshold of best F1 at IoU 0.5 (DIR/class_thresholds.json, for
``--class-thresholds`` of the demo, ``MODEL.FCOS.CLASS_THRESHOLDS_FILE``, the export), curves,
and a breakdown of errors (DIR/results_analysis.json, DIR/*.png). Exit status 2 with one line
for a usage or set-up error.
"""

import argparse
import ast
import math
import os
import sys
import warnings
from typing import List, Optional, Sequence

from detectron2.data import DatasetCatalog
from detectron2.data.datasets import register_coco_instances

import fcos_d2
from fcos_d2.config import inference_settings
from fcos_d2.data import register_dataset_specs, register_shapes
from fcos_d2.utils.errors import CommandError
from fcos_d2.utils.jsonio import write_json

__all__ = ["main", "get_parser"]


# The command line's one error type (the name of the previous release).
AnalyzeError = CommandError


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fcos_d2.analyze", description=__doc__.strip().splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    data = sub.add_parser("data", help="best possible recall, ambiguity, level usage")
    results = sub.add_parser("results", help="AP per class, F1 thresholds, error breakdown")
    for p in (data, results):
        p.add_argument("--config-file", required=True)
        p.add_argument("--output", default="output/analysis", help="directory to write")
        p.add_argument(
            "--coco-json",
            action="append",
            default=[],
            metavar="FILE",
            help="a COCO-format file to analyse, registered as FOLDER_STEM (images in FOLDER/STEM/ "
            "if there is one, else in FOLDER/)",
        )
        p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
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
        metavar="[a,b,...]",
        help="alternative MODEL.FCOS.SIZES_OF_INTEREST, shown next to the config's (repeatable)",
    )
    results.add_argument("--dataset", required=False, help="registered dataset to evaluate on")
    source = results.add_mutually_exclusive_group()
    source.add_argument("--predictions", help="coco_instances_results.json of an evaluation")
    source.add_argument("--exported", help="a directory written by python -m fcos_d2.export")
    return parser


def register_json_files(files: Sequence[str]) -> List[str]:
    names = []
    for path in files:
        if not os.path.isfile(path):
            raise AnalyzeError(f"--coco-json {path!r}: no such file")
        folder, stem = os.path.split(os.path.abspath(path))
        stem = os.path.splitext(stem)[0]
        name = f"{os.path.basename(folder)}_{stem}"
        # images next to the file, or in a folder of its name (the shapes layout: val.json, val/)
        image_root = (
            os.path.join(folder, stem) if os.path.isdir(os.path.join(folder, stem)) else folder
        )
        if name not in DatasetCatalog.list():
            register_coco_instances(name, {}, path, image_root)
        names.append(name)
    return names


def _parse_sizes(values: Sequence[str], num_levels: int) -> List[List[float]]:
    out = []
    for text in values:
        try:
            sizes = [float(v) for v in ast.literal_eval(text)]
        except (ValueError, SyntaxError, TypeError):
            raise AnalyzeError(f"--sizes-of-interest {text!r} is not a list of numbers") from None
        if (
            len(sizes) != num_levels - 1
            or sorted(sizes) != sizes
            or not all(math.isfinite(v) and v > 0 for v in sizes)
        ):
            raise AnalyzeError(
                f"--sizes-of-interest {text!r}: needs {num_levels - 1} increasing positive numbers "
                f"for the {num_levels} levels of MODEL.FCOS.IN_FEATURES"
            )
        out.append(sizes)
    return out


def _check_datasets(names: Sequence[str]) -> None:
    register_dataset_specs(names)
    unknown = [n for n in names if n not in DatasetCatalog.list()]
    if unknown:
        raise AnalyzeError(
            f"dataset(s) {unknown} not registered; registered: {sorted(DatasetCatalog.list())}"
        )


def run_data(args: argparse.Namespace, cfg) -> None:
    from .data import (
        analyse_data,
        data_setup,
        format_data_report,
        load_image_boxes,
        plot_data_report,
    )

    names = list(args.dataset) + register_json_files(args.coco_json)
    names = names or list(inference_settings(cfg).train_datasets)
    _check_datasets(names)
    setup = data_setup(cfg)
    alternatives = _parse_sizes(args.sizes_of_interest, len(setup.level_names))
    images, json_files = load_image_boxes(names)
    report, centre_sizes = analyse_data(images, setup, alternatives, json_files, progress=True)
    report = {"config_file": args.config_file, "datasets": names, **report}
    os.makedirs(args.output, exist_ok=True)
    write_json(os.path.join(args.output, "data_analysis.json"), report)
    plot_data_report(report, centre_sizes, os.path.join(args.output, "data_analysis.png"))
    print(format_data_report(report))
    print(f"\nwrote {args.output}/data_analysis.json and data_analysis.png")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Deprecated: ``fcos-d2 analyze`` (this form goes in the next release)."""
    warnings.warn(
        "python -m fcos_d2.analyze is deprecated: use fcos-d2 analyze", DeprecationWarning
    )
    args = get_parser().parse_args(argv)
    register_shapes(replace=False)
    try:
        if not os.path.isfile(args.config_file):
            raise AnalyzeError(f"config file {args.config_file!r} not found")
        cfg = fcos_d2.load_config(args.config_file, list(args.opts))
        if args.command == "data":
            run_data(args, cfg)
        else:
            from .results import run_results

            run_results(args, cfg, register_json_files(args.coco_json), AnalyzeError)
    except (AnalyzeError, ValueError, KeyError, AssertionError, OSError, RuntimeError) as e:
        # AssertionError: yacs's "Non-existent key" for a bad override
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
