"""
A COCO-format annotation file with COCO-like box statistics and no images, for the analyses
that read annotations only (``python -m fcos_d2.analyze data --coco-json FILE``).

    python -m fcos_d2.data.coco_like --output datasets/coco_like/train.json [--images 14000]

The statistics are COCO train2017's, approximately: image sizes of the common COCO shapes (640
on the long side, most of them), 7.3 boxes per image on average with a long tail (negative
binomial), sqrt(area) log-normal with 41 % of boxes under 32 x 32 and 75 % under 96 x 96 (COCO's
small / medium / large split: 41 / 34 / 24 %), log-normal aspect ratios, 80 classes with a long
tail (the first one, as "person", about 30 % of the boxes) and 1 % crowd boxes. Boxes are placed
uniformly at random, so their overlaps are not COCO's.
"""

import argparse
import json
import math
import os
import warnings
from typing import Any, Dict

import numpy as np

__all__ = ["coco_like_annotations"]

# (width, height, weight) of COCO's most common image shapes
_SHAPES = (
    (640, 480, 0.45),
    (480, 640, 0.15),
    (640, 427, 0.15),
    (640, 424, 0.1),
    (500, 375, 0.1),
    (640, 640, 0.05),
)
# log-normal sqrt(area): P(< 32) = 0.41, P(< 96) = 0.75
_SIGMA = (math.log(96) - math.log(32)) / (0.6745 + 0.2275)
_MU = math.log(32) + 0.2275 * _SIGMA


def coco_like_annotations(num_images: int, seed: int = 0, num_classes: int = 80) -> Dict[str, Any]:
    """A COCO dict (images, annotations, categories) with the statistics above."""
    rng = np.random.default_rng(seed)
    shapes = np.array([s[:2] for s in _SHAPES])
    weights = np.array([s[2] for s in _SHAPES])
    class_p = 1.0 / np.arange(1, num_classes + 1) ** 0.9
    class_p[0] *= 3.0
    class_p /= class_p.sum()
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        width, height = (int(v) for v in shapes[rng.choice(len(shapes), p=weights / weights.sum())])
        images.append(
            {"id": image_id, "file_name": f"{image_id:012d}.jpg", "width": width, "height": height}
        )
        count = int(rng.negative_binomial(1.2, 1.2 / (1.2 + 7.3)))
        side = np.exp(rng.normal(_MU, _SIGMA, count))
        ratio = np.exp(rng.normal(0.0, 0.6, count))  # w / h
        w = np.minimum(side * np.sqrt(ratio), width)
        h = np.minimum(side / np.sqrt(ratio), height)
        x0 = rng.uniform(0, 1, count) * (width - w)
        y0 = rng.uniform(0, 1, count) * (height - h)
        classes = rng.choice(num_classes, size=count, p=class_p) + 1
        crowd = rng.uniform(0, 1, count) < 0.01
        for j in range(count):
            bbox = [round(float(v), 2) for v in (x0[j], y0[j], w[j], h[j])]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(classes[j]),
                    "bbox": bbox,
                    "area": round(float(w[j] * h[j]), 2),
                    "iscrowd": int(crowd[j]),
                }
            )
    categories = [{"id": i, "name": f"class_{i}"} for i in range(1, num_classes + 1)]
    return {"images": images, "annotations": annotations, "categories": categories}


def write_coco_like(path: str, images: int = 14000, seed: int = 0) -> None:
    """Write :func:`coco_like_annotations` to the JSON file ``path`` and print its box mix."""
    data = coco_like_annotations(images, seed)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f)
    sides = np.sqrt([a["area"] for a in data["annotations"]])
    print(
        f"wrote {path}: {len(data['images'])} images, {len(sides)} boxes "
        f"(small / medium / large {100 * np.mean(sides < 32):.1f} / "
        f"{100 * np.mean((sides >= 32) & (sides < 96)):.1f} / {100 * np.mean(sides >= 96):.1f} %)"
    )


def main(argv=None) -> None:
    """Deprecated: ``fcos-d2 data coco-like`` (this form goes in the next release)."""
    warnings.warn(
        "python -m fcos_d2.data.coco_like is deprecated: use fcos-d2 data coco-like",
        DeprecationWarning,
    )
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--output", required=True, help="the JSON file to write")
    parser.add_argument("--images", type=int, default=14000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    write_coco_like(args.output, args.images, args.seed)


if __name__ == "__main__":
    main()
