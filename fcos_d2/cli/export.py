"""``fcos-d2 export``: the whole model (post-processing included) as ONNX, an AOTInductor
package, OpenVINO or TorchScript, with its settings in ``export.json``."""

import argparse
import json

from .common import (
    CommandError,
    add_config_arguments,
    add_output_argument,
    add_overrides,
    check_datasets,
    load_command_config,
)

HELP = "export a model (NMS included) to ONNX, AOTInductor, OpenVINO or TorchScript"
EXAMPLES = [
    "fcos-d2 export --config-file demo/FCOS_R18_shapes_demo.yaml "
    "--weights output/demo/model_final.pth --format onnx --output out/onnx",
    "fcos-d2 export --config-file demo/FCOS_R18_shapes_demo.yaml "
    "--weights output/demo/model_final.pth --format onnx --quantize int8 --output out/int8 "
    "--eval shapes_val",
    "fcos-d2 export --config-file configs/FCOS_R_50_FPN_1x.yaml --weights model.pth "
    "--format aoti --output out/aoti",
    "fcos-d2 export --config-file configs/FCOS_R_50_FPN_1x.yaml --weights model.pth "
    "--format openvino --precision bf16 --output out/ov",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..export.writers import FORMATS

    add_config_arguments(parser, device=False)
    parser.add_argument("--format", required=True, choices=FORMATS)
    add_output_argument(parser, required=True, help="folder for the model and export.json")
    parser.add_argument("--quantize", choices=["int8"], help="ONNX: int8 (ONNX Runtime)")
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16", "int8"],
        help="OpenVINO: float32 (default), bfloat16 inference, or NNCF int8",
    )
    parser.add_argument(
        "--calibration-dataset", metavar="NAME", help="int8 calibration (default DATASETS.TRAIN[0])"
    )
    parser.add_argument("--calibration-images", type=int, default=64, metavar="N")
    parser.add_argument("--eval", metavar="DATASET", help="COCO AP of the export on a dataset")
    parser.add_argument(
        "--class-thresholds",
        metavar="FILE",
        help="per-class score thresholds (fcos-d2 analyze results), built into the graph",
    )
    add_overrides(parser)


def run(args: argparse.Namespace) -> int:
    from ..config import inference_settings, set_class_thresholds
    from ..utils import setup_command_logger

    setup_command_logger(name="fcos_d2")
    cfg = load_command_config(args, check_device=False)  # exports run on the CPU
    if not inference_settings(cfg).weights:
        raise CommandError("no weights to export: give --weights FILE")
    if args.eval:
        check_datasets([args.eval], "--eval", cfg=cfg)
    if args.class_thresholds:
        set_class_thresholds(cfg, args.class_thresholds)
    from ..export.writers import export_model

    try:
        info = export_model(
            cfg,
            args.format,
            args.output,
            quantize=args.quantize,
            precision=args.precision,
            calibration_dataset=args.calibration_dataset,
            calibration_images=args.calibration_images,
        )
    except (RuntimeError, OSError, KeyError) as e:  # a runtime refusing this CPU, a bad dataset
        raise CommandError(str(e).strip().splitlines()[0] if str(e).strip() else repr(e))
    print(json.dumps({k: v for k, v in info.items() if k != "config"}, indent=2))
    if args.eval:
        from detectron2.evaluation import print_csv_format

        from ..export.evaluate import evaluate_exported

        setup_command_logger(name="detectron2")
        print_csv_format(evaluate_exported(args.output, args.eval))
    return 0
