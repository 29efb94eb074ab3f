"""``fcos-d2 data``: the synthetic datasets of the demo and the analyses (``shapes``: images of
three shape classes with COCO json; ``coco-like``: a COCO-sized annotation file, no images), and
``convert``: a dataset (registered, or a spec) written as COCO, Pascal VOC or YOLO."""

import argparse
import os

from .common import add_output_argument

HELP = "make the synthetic datasets (shapes, coco-like) or convert a dataset to COCO/VOC/YOLO"
EXAMPLES = [
    "fcos-d2 data shapes --output datasets/shapes",
    "fcos-d2 data coco-like --output datasets/coco_like --images 2000",
    "fcos-d2 data convert --dataset shapes_val --format yolo --split val "
    "--output datasets/shapes_yolo",
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
    convert = sub.add_parser(
        "convert", help="write a dataset (a registered name or a spec) as COCO, VOC or YOLO"
    )
    convert.add_argument(
        "--dataset", required=True, metavar="NAME", help="e.g. shapes_val or yolo:data.yaml:val"
    )
    convert.add_argument("--format", required=True, choices=("coco", "voc", "yolo"))
    convert.add_argument(
        "--split", required=True, metavar="NAME", help="the split to write (train, val ...)"
    )
    add_output_argument(convert, required=True, help="folder of the converted dataset")


def run(args: argparse.Namespace) -> int:
    if args.dataset == "shapes":
        from ..data.shapes import generate_shapes_dataset

        generate_shapes_dataset(args.output, args.num_train, args.num_val, args.seed)
    elif args.dataset == "coco-like":
        from ..data.coco_like import write_coco_like

        write_coco_like(os.path.join(args.output, "train.json"), args.images, args.seed)
    else:
        _convert(args)
    return 0


def _convert(args: argparse.Namespace) -> None:
    from detectron2.data import DatasetCatalog

    from ..data import dataset_metadata
    from ..data.formats.write import write_dataset
    from .common import check_datasets

    check_datasets([args.dataset])
    classes = dataset_metadata(args.dataset).get("thing_classes", None)
    records = DatasetCatalog.get(args.dataset)
    if classes is None:
        raise ValueError(f"dataset {args.dataset!r} has no class names (thing_classes)")
    spec = write_dataset(records, classes, args.format, args.output, args.split)
    print(f"wrote {len(records)} images of {args.dataset} as {spec}")
