"""
Export an FCOS model, whole (post-processing included), to ONNX, AOTInductor, OpenVINO or
TorchScript.

    python -m fcos_d2.export --config-file CFG --format {onnx,aoti,openvino,torchscript} \
        --output DIR \
        [--quantize int8 (ONNX) | --precision {fp32,bf16,int8} (OpenVINO)] \
        [--calibration-dataset NAME] [--calibration-images 64] \
        [--eval DATASET] [--class-thresholds FILE] [KEY VALUE ...]

Writes DIR/model.onnx, DIR/model.pt2, DIR/model.xml (+ model.bin) or DIR/model.ts, and
DIR/export.json;
``--eval`` then prints the exported model's COCO bbox AP on a registered dataset.
"""

import argparse
import json
import sys
import warnings

from detectron2.evaluation import print_csv_format

import fcos_d2
from fcos_d2.config import set_class_thresholds
from fcos_d2.data import register_shapes
from fcos_d2.utils import setup_command_logger

from .writers import FORMATS, export_model


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fcos_d2.export", description=__doc__.strip().splitlines()[0]
    )
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--output", required=True, help="directory to write")
    parser.add_argument("--quantize", choices=["int8"], default=None, help="ONNX only")
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16", "int8"],
        default=None,
        help="OpenVINO only: float32 (default), bfloat16 inference, or NNCF int8",
    )
    parser.add_argument("--calibration-dataset", default=None, help="default: DATASETS.TRAIN[0]")
    parser.add_argument("--calibration-images", type=int, default=64)
    parser.add_argument("--eval", default=None, metavar="DATASET", help="evaluate after export")
    parser.add_argument(
        "--class-thresholds",
        metavar="FILE",
        help="per-class score thresholds (python -m fcos_d2.analyze results), built into the "
        "graph (sets MODEL.FCOS.CLASS_THRESHOLDS_FILE)",
    )
    parser.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        help="config overrides: KEY VALUE (YAML), key=value (Python configs)",
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """The command; exit status 2 with one line for a usage or set-up error."""
    warnings.warn("python -m fcos_d2.export is deprecated: use fcos-d2 export", DeprecationWarning)
    args = parse_args(argv)
    try:
        _run(args)
    except (ValueError, KeyError, AssertionError, OSError, RuntimeError, ImportError) as e:
        print(f"python -m fcos_d2.export: error: {e}", file=sys.stderr)
        return 2
    return 0


def _run(args: argparse.Namespace) -> None:
    setup_command_logger(name="fcos_d2")
    register_shapes(replace=False)  # for --eval / calibration on the demo's datasets
    cfg = fcos_d2.load_config(args.config_file, args.opts)
    if args.class_thresholds:
        set_class_thresholds(cfg, args.class_thresholds)
    info = export_model(
        cfg,
        args.format,
        args.output,
        quantize=args.quantize,
        precision=args.precision,
        calibration_dataset=args.calibration_dataset,
        calibration_images=args.calibration_images,
    )
    summary = {k: v for k, v in info.items() if k != "config"}
    print(json.dumps(summary, indent=2))
    if args.eval:
        from .evaluate import evaluate_exported

        setup_command_logger(name="detectron2")
        print_csv_format(evaluate_exported(args.output, args.eval))


if __name__ == "__main__":
    sys.exit(main())
