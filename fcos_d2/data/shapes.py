"""
A deterministic synthetic detection dataset (circles, squares, triangles on noisy backgrounds)
in COCO JSON format, for demos and tests that cannot download data.

    python -m fcos_d2.data.shapes --root datasets/shapes
"""

import argparse
import json
import os
import warnings
from typing import Dict, List, Tuple

import cv2
import numpy as np

__all__ = ["SHAPE_CLASSES", "generate_split", "generate_shapes_dataset", "render_image"]

SHAPE_CLASSES = ["circle", "square", "triangle"]


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    # A smooth, muted colour gradient plus pixel noise: shapes are drawn in saturated colours,
    # so they stay visible while the background is never uniform.
    corners = rng.uniform(60, 170, size=(2, 2, 3)).astype(np.float32)
    image = cv2.resize(corners, (width, height), interpolation=cv2.INTER_LINEAR)
    image += rng.normal(0, 12, size=image.shape).astype(np.float32)
    return image


def _saturated_color(rng: np.random.Generator) -> Tuple[float, float, float]:
    # Full saturation and value, random hue: far from the muted background.
    hsv = np.array([[[rng.integers(0, 180), 255, rng.integers(200, 256)]]], dtype=np.uint8)
    return tuple(float(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def _draw(image: np.ndarray, cls: int, box: Tuple[int, int, int, int], color, rng) -> List[float]:
    """Draw one filled shape inside ``box`` (x0, y0, size, size); return its tight XYWH box."""
    x0, y0, size, _ = box
    if cls == 0:
        r = size / 2
        cv2.circle(image, (int(round(x0 + r)), int(round(y0 + r))), int(round(r)), color, -1)
        return [x0, y0, size, size]
    if cls == 1:
        cv2.rectangle(image, (x0, y0), (x0 + size - 1, y0 + size - 1), color, -1)
        return [x0, y0, size, size]
    apex = x0 + int(rng.integers(0, size))
    pts = np.array([[apex, y0], [x0, y0 + size - 1], [x0 + size - 1, y0 + size - 1]], np.int32)
    cv2.fillPoly(image, [pts], color)
    return [x0, y0, size, size]


def _overlap(a: List[float], b: List[float], margin: int = 2) -> bool:
    """Whether two XYWH boxes, grown by ``margin`` pixels, intersect."""
    return not (
        a[0] + a[2] + margin <= b[0]
        or b[0] + b[2] + margin <= a[0]
        or a[1] + a[3] + margin <= b[1]
        or b[1] + b[3] + margin <= a[1]
    )


def render_image(
    rng: np.random.Generator, height: int, width: int, max_shapes: int, size_range=(12, 160)
) -> Tuple[np.ndarray, List[Dict]]:
    """One BGR uint8 image and its annotations (category index 0..2, XYWH bbox)."""
    image = _background(rng, height, width)
    annotations: List[Dict] = []
    wanted = int(rng.integers(1, max_shapes + 1))
    for _ in range(wanted * 10):  # a few placement attempts per shape
        if len(annotations) == wanted:
            break
        size = int(rng.integers(size_range[0], min(size_range[1], height, width) + 1))
        box = [int(rng.integers(0, width - size + 1)), int(rng.integers(0, height - size + 1))]
        box += [size, size]
        if any(_overlap(box, a["bbox"]) for a in annotations):
            continue  # occluded shapes would make the ground truth ambiguous
        cls = int(rng.integers(0, len(SHAPE_CLASSES)))
        color = _saturated_color(rng)
        annotations.append({"category": cls, "bbox": _draw(image, cls, tuple(box), color, rng)})
    return np.clip(image, 0, 255).astype(np.uint8), annotations


def generate_split(
    root: str,
    split: str,
    num_images: int,
    seed: int,
    image_size: Tuple[int, int] = (192, 256),
    max_shapes: int = 6,
    size_range: Tuple[int, int] = (12, 160),
) -> str:
    """Write ``root/split/*.png`` and ``root/split.json``; return the JSON path."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, split), exist_ok=True)
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        height, width = (int(rng.integers(image_size[0], image_size[1] + 1)) for _ in range(2))
        image, annos = render_image(rng, height, width, max_shapes, size_range)
        file_name = f"{image_id:06d}.png"
        cv2.imwrite(os.path.join(root, split, file_name), image)
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        for a in annos:
            x, y, w, h = a["bbox"]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": a["category"] + 1,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(SHAPE_CLASSES)]
    json_path = os.path.join(root, f"{split}.json")
    with open(json_path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return json_path


def generate_shapes_dataset(root: str, num_train: int = 400, num_val: int = 100, seed: int = 0):
    """
    Both splits, unless they already exist with these parameters. Training images are 224 x 224
    (batches then need no padding, which saves CPU time); validation images vary from 192 to 256
    on each side, so evaluation sees odd sizes and aspect ratios.
    """
    stamp = os.path.join(root, "params.json")
    params = {"num_train": num_train, "num_val": num_val, "seed": seed, "version": 4}
    if os.path.exists(stamp) and json.load(open(stamp)) == params:
        print(f"[shapes] {root} is up to date")
        return
    generate_split(root, "train", num_train, seed, image_size=(224, 224))
    generate_split(root, "val", num_val, seed + 1)
    with open(stamp, "w") as f:
        json.dump(params, f)
    print(f"[shapes] wrote {num_train} train and {num_val} val images to {root}")


if __name__ == "__main__":
    warnings.warn(
        "python -m fcos_d2.data.shapes is deprecated: use fcos-d2 data shapes", DeprecationWarning
    )
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--root", default="datasets/shapes")
    parser.add_argument("--num-train", type=int, default=400)
    parser.add_argument("--num-val", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    generate_shapes_dataset(args.root, args.num_train, args.num_val, args.seed)
