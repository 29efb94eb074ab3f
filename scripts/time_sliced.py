"""
Seconds per image of a model on whole images and sliced (fcos_d2.slicing), min of 3 passes over
the images of a folder, one process, on this machine's CPU (the figures of docs/benchmarks.md):

    python scripts/time_sliced.py --config-file configs/demo/FCOS_R18_shapes_demo.yaml \\
        --weights output/demo/model_final.pth --images datasets/shapes_mosaic/val --slice 256 256
"""

import argparse
import glob
import os
import time

import cv2

from fcos_d2.config import load_config, set_weights
from fcos_d2.predictor import Predictor
from fcos_d2.slicing import SlicedPredictor, SliceSettings
from fcos_d2.utils import describe_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--images", required=True, help="a folder of images")
    parser.add_argument("--slice", nargs=2, type=int, required=True, metavar=("H", "W"))
    parser.add_argument("--overlap", type=float, default=0.2)
    args = parser.parse_args()
    cfg = load_config(args.config_file, [])
    set_weights(cfg, args.weights)
    whole = Predictor(cfg)
    sliced = SlicedPredictor(whole, SliceSettings(*args.slice, overlap=args.overlap))
    paths = sorted(glob.glob(os.path.join(args.images, "*")))
    images = [cv2.imread(p) for p in paths]
    print(f"{describe_cpu()}; {len(images)} images of {images[0].shape[1]}x{images[0].shape[0]}")
    for name, predictor in (("whole image", whole), (f"sliced {args.slice}", sliced)):
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for image in images:
                predictor(image)
            best = min(best, (time.perf_counter() - start) / len(images))
        print(f"{name}: {best:.3f} s per image")


if __name__ == "__main__":
    main()
