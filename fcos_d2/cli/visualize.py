"""``fcos-d2 visualize``: a trained model's detections drawn on a few test images, and the last
bbox AP its training recorded."""

import argparse

from .common import (
    add_config_arguments,
    add_output_argument,
    add_overrides,
    check_config_datasets,
    load_command_config,
)

HELP = "draw a trained model's detections on test images; print its last recorded AP"
EXAMPLES = [
    "fcos-d2 visualize --config-file demo/FCOS_R18_shapes_demo.yaml "
    "--weights output/demo/model_final.pth --output output/demo",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    add_output_argument(
        parser,
        required=True,
        help="the pictures go to DIR/vis/; a training's OUTPUT_DIR also gives its last AP",
    )
    parser.add_argument("--num", type=int, default=4, metavar="N", help="images to draw")
    add_overrides(parser)


def run(args: argparse.Namespace) -> int:
    from ..visualize import visualize

    cfg = load_command_config(args)
    check_config_datasets(cfg)
    visualize(cfg, args.output, args.num)
    return 0
