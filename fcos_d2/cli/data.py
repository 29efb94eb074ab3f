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
    "fcos-d2 data mosaic --dataset shapes_val --size 1024 --split val "
    "--output datasets/shapes_mosaic",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="what", metavar="WHAT", required=True)
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
    mosaic = sub.add_parser(
        "mosaic", help="large images made of a dataset's small ones, as COCO (small objects)"
    )
    mosaic.add_argument("--dataset", required=True, metavar="NAME", help="e.g. shapes_val")
    mosaic.add_argument("--size", type=int, default=1024, metavar="PX", help="mosaic side")
    mosaic.add_argument("--grid", type=int, default=4, metavar="N", help="N x N images each")
    mosaic.add_argument("--split", default="val", metavar="NAME")
    add_output_argument(mosaic, required=True, help="folder of the mosaics")


def run(args: argparse.Namespace) -> int:
    if args.what == "shapes":
        from ..data.shapes import generate_shapes_dataset

        generate_shapes_dataset(args.output, args.num_train, args.num_val, args.seed)
    elif args.what == "coco-like":
        from ..data.coco_like import write_coco_like

        write_coco_like(os.path.join(args.output, "train.json"), args.images, args.seed)
    elif args.what == "mosaic":
        _mosaic(args)
    else:
        _convert(args)
    return 0


def _records_and_classes(name: str):
    from detectron2.data import DatasetCatalog

    from ..data import dataset_metadata
    from .common import check_datasets

    check_datasets([name])
    classes = dataset_metadata(name).get("thing_classes", None)
    if classes is None:
        raise ValueError(f"dataset {name!r} has no class names (thing_classes)")
    return DatasetCatalog.get(name), classes


def _mosaic(args: argparse.Namespace) -> None:
    from ..data.mosaic import write_mosaics

    records, classes = _records_and_classes(args.dataset)
    spec = write_mosaics(records, classes, args.output, args.split, args.size, args.grid)
    print(f"wrote {-(-len(records) // args.grid**2)} mosaics of {args.dataset} as {spec}")


def _convert(args: argparse.Namespace) -> None:
    from ..data.formats.write import write_dataset

    records, classes = _records_and_classes(args.dataset)
    spec = write_dataset(records, classes, args.format, args.output, args.split)
    print(f"wrote {len(records)} images of {args.dataset} as {spec}")
