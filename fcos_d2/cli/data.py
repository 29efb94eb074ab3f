"""``fcos-d2 data``: the synthetic datasets of the demo and the analyses (``shapes``: images of
three shape classes with COCO json; ``coco-like``: a COCO-sized annotation file, no images)."""

import argparse
import os

from .common import add_output_argument

HELP = "make the synthetic datasets: shapes (demo images) or coco-like (annotations only)"
EXAMPLES = [
    "fcos-d2 data shapes --output datasets/shapes",
    "fcos-d2 data coco-like --output datasets/coco_like --images 2000",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    shapes = sub.add_parser(
        "shapes", help="train/ and val/ images with train.json and val.json (the demo's data)"
    )
    add_output_argument(shapes, required=True, help="folder to write (datasets/shapes: the demo's)")
    shapes.add_argument("--num-train", type=int, default=400, metavar="N")
    shapes.add_argument("--num-val", type=int, default=100, metavar="N")
    shapes.add_argument("--seed", type=int, default=0)
    coco = sub.add_parser(
        "coco-like", help="train.json with COCO's image sizes and box mix (no images)"
    )
    add_output_argument(coco, required=True, help="folder for train.json")
    coco.add_argument("--images", type=int, default=14000, metavar="N")
    coco.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    if args.dataset == "shapes":
        from ..data.shapes import generate_shapes_dataset

        generate_shapes_dataset(args.output, args.num_train, args.num_val, args.seed)
    else:
        from ..data.coco_like import write_coco_like

        write_coco_like(os.path.join(args.output, "train.json"), args.images, args.seed)
    return 0
