"""
Large images of small objects from a dataset of small images: each mosaic is a grid of the
dataset's images (as they are, each in a cell of ``size / grid`` pixels, grey around it) with
their boxes moved along, written as a COCO dataset (``fcos-d2 data mosaic``). What sliced
inference is measured on.
"""

import json
import os
from typing import Any, Dict, List, Sequence

import cv2
import numpy as np
from detectron2.structures import BoxMode

__all__ = ["write_mosaics"]


def write_mosaics(
    records: Sequence[Dict[str, Any]],
    classes: Sequence[str],
    output: str,
    split: str,
    size: int = 1024,
    grid: int = 4,
) -> str:
    """Write ``output/split/*.png`` and ``output/split.json`` (one mosaic per ``grid``^2 records,
    in order); return the dataset spec ``coco:...``."""
    if grid < 1 or size < grid:
        raise ValueError(f"mosaic of {size} px in a {grid} x {grid} grid: need 1 <= grid <= size")
    cell = size // grid
    too_big = [r["file_name"] for r in records if r["height"] > cell or r["width"] > cell]
    if too_big:
        raise ValueError(f"image {too_big[0]!r} is larger than a {cell}-pixel mosaic cell")
    os.makedirs(os.path.join(output, split), exist_ok=True)
    images: List[Dict[str, Any]] = []
    annotations: List[Dict[str, Any]] = []
    per = grid * grid
    for m in range(0, len(records), per):
        canvas = np.full((size, size, 3), 127, np.uint8)
        image_id = len(images) + 1
        for k, record in enumerate(records[m : m + per]):
            x, y = (k % grid) * cell, (k // grid) * cell
            tile = cv2.imread(record["file_name"], cv2.IMREAD_COLOR)
            if tile is None:
                raise FileNotFoundError(f"cannot read image {record['file_name']!r}")
            canvas[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
            for ann in record.get("annotations", ()):
                mode = ann.get("bbox_mode", BoxMode.XYWH_ABS)
                x0, y0, w, h = BoxMode.convert(list(ann["bbox"]), mode, BoxMode.XYWH_ABS)
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": int(ann["category_id"]) + 1,
                        "bbox": [x0 + x, y0 + y, w, h],
                        "area": w * h,
                        "iscrowd": int(ann.get("iscrowd", 0)),
                    }
                )
        name = f"{image_id:06d}.png"
        cv2.imwrite(os.path.join(output, split, name), canvas)
        images.append({"id": image_id, "file_name": name, "height": size, "width": size})
    path = os.path.join(output, f"{split}.json")
    categories = [{"id": i + 1, "name": c} for i, c in enumerate(classes)]
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return f"coco:{path}:{os.path.join(output, split)}"
