"""``fcos-d2 predict``: detect objects in images, folders, globs or a video; write the drawn
pictures and the detections (COCO results, ``detections.json``) into ``--output``."""

import argparse
import json
import logging
import os
import re

from .common import (
    CommandError,
    add_config_arguments,
    add_output_argument,
    add_overrides,
    add_slice_arguments,
    check_model_source,
    load_command_config,
    sliced,
)

HELP = "detect objects in images or a video: drawn pictures and detections.json in --output"
EXAMPLES = [
    "fcos-d2 predict --config-file demo/FCOS_R18_shapes_demo.yaml "
    "--weights output/demo/model_final.pth --input datasets/shapes/val --output output/predict",
    "fcos-d2 predict --config-file configs/FCOS_R_50_FPN_1x.yaml --weights model.pth "
    "--input 'photos/*.jpg' --score-threshold 0.3 --output out/photos",
    "fcos-d2 predict --exported out/onnx --video-input clip.mp4 --output out/clip",
    "fcos-d2 predict --config-file configs/FCOS_R_50_FPN_1x.yaml --weights model.pth "
    "--input aerial.tif --slice 512 512 --overlap 0.25 --output out/aerial",
]

# Detections drawn and written: class probability above this, unless per-class thresholds or
# --score-threshold decide.
DEFAULT_THRESHOLD = 0.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, required=False)
    parser.add_argument(
        "--exported", metavar="DIR", help="run the model exported to DIR by fcos-d2 export"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--input", nargs="+", metavar="PATH", help="image files, folders or quoted glob patterns"
    )
    source.add_argument("--video-input", metavar="FILE", help="a video file")
    add_output_argument(parser, required=True, help="folder for the pictures and detections.json")
    parser.add_argument(
        "--score-threshold",
        type=float,
        metavar="F",
        help="minimum class probability of a detection (MODEL.FCOS.SCORE_THRESH_TEST; default "
        f"{DEFAULT_THRESHOLD}, or the config's with --class-thresholds; an exported model keeps "
        "the threshold it was exported with)",
    )
    parser.add_argument(
        "--class-thresholds",
        metavar="FILE",
        help="per-class score thresholds (written by fcos-d2 analyze results)",
    )
    add_slice_arguments(parser)
    add_overrides(parser)


def _config_predictor(args: argparse.Namespace):
    from ..config import (
        inference_settings,
        set_class_thresholds,
        set_score_thresh,
    )
    from ..data import dataset_metadata
    from ..predictor import Predictor

    cfg = load_command_config(args)
    threshold = args.score_threshold
    if threshold is None:
        configured = inference_settings(cfg).score_thresh
        threshold = configured if args.class_thresholds else DEFAULT_THRESHOLD
    try:
        set_score_thresh(cfg, threshold)
        if args.class_thresholds:
            set_class_thresholds(cfg, args.class_thresholds)
    except ValueError as e:
        raise CommandError(f"--score-threshold: {e}") from None
    predictor = Predictor(cfg)
    name = inference_settings(cfg).test_dataset
    return predictor, dataset_metadata(name) if name else None


# A word of --input that is a config override (KEY.SUB, or key=value), not a path.
_OVERRIDE = re.compile(r"^([A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+|[\w.+]+=.*)$")


def _check_no_overrides_in(inputs) -> None:
    """argparse gives ``--input`` every word up to the next option: overrides written after it
    would be taken for images (and silently not applied)."""
    for word in inputs:
        if _OVERRIDE.match(word) and not os.path.exists(word):
            raise CommandError(
                f"--input {word!r} looks like a config override: write the overrides after "
                "every option (--input ... --output DIR KEY VALUE)"
            )


def set_up(args: argparse.Namespace):
    """The predictor and the metadata (class names, dataset ids) to draw and write with."""
    from detectron2.data.catalog import Metadata

    check_model_source(args)
    if args.exported:
        from ..demo import exported_predictor

        predictor, names = exported_predictor(
            args.exported, args.class_thresholds, args.score_threshold
        )
        return predictor, Metadata(name=args.exported, thing_classes=names)
    predictor, metadata = _config_predictor(args)
    return predictor, metadata or Metadata(name="__unused")


def run(args: argparse.Namespace) -> int:
    from ..demo import expand_inputs, run_on_images, run_on_video
    from ..utils import setup_command_logger

    logger = logging.getLogger("fcos_d2.predict")
    setup_command_logger(name="fcos_d2")
    _check_no_overrides_in(args.input or [])
    predictor, metadata = set_up(args)
    predictor = sliced(predictor, args)
    os.makedirs(args.output, exist_ok=True)
    results = []
    if args.input:
        paths, unmatched = expand_inputs(args.input)
        for pattern in unmatched:
            logger.error(f"no image found for --input {pattern!r}")
        failed = len(unmatched) + run_on_images(predictor, metadata, paths, args.output, results)
    else:
        failed = int(run_on_video(predictor, metadata, args.video_input, args.output, results) < 0)
    path = os.path.join(args.output, "detections.json")
    with open(path, "w") as f:
        json.dump(results, f)
    logger.info(f"{len(results)} detections written to {path}")
    if failed:
        logger.error(f"{failed} input(s) could not be read or opened (named above)")
    return 1 if failed else 0
