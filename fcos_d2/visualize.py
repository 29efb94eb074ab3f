"""
Draw a trained model's detections on a few images of a test dataset, and print the last bbox
AP that training recorded in ``OUTPUT/metrics.json``.

    python -m fcos_d2.visualize --config-file CFG --output DIR [--num 4] MODEL.WEIGHTS W.pth
"""

import argparse
import json
import os
import warnings
from typing import Dict, List, Optional

from detectron2.data import DatasetCatalog
from tabulate import tabulate

import fcos_d2
from fcos_d2.config import AnyConfig, inference_settings
from fcos_d2.data import dataset_metadata, register_shapes
from fcos_d2.demo import run_on_images
from fcos_d2.predictor import Predictor
from fcos_d2.utils.errors import CommandError

__all__ = ["draw_predictions", "last_bbox_metrics", "visualize"]


def draw_predictions(
    cfg: AnyConfig, dataset: str, out_dir: str, num: int = 4, min_score: float = 0.5
) -> List[str]:
    """
    Write ``num`` images of ``dataset`` with the detections scoring ``min_score`` or more drawn
    (the demo CLI's drawing, :func:`fcos_d2.demo.run_on_images`, and its strictly loading
    :class:`~fcos_d2.predictor.Predictor`); return their paths.
    """
    predictor = Predictor(cfg)

    def confident(image):
        instances = predictor(image)["instances"]
        return {"instances": instances[instances.scores >= min_score]}

    metadata = dataset_metadata(dataset)  # registers a dataset spec
    paths = [record["file_name"] for record in DatasetCatalog.get(dataset)[:num]]
    os.makedirs(out_dir, exist_ok=True)
    if run_on_images(confident, metadata, paths, out_dir, None):
        raise FileNotFoundError(f"cannot read every image of {dataset!r}: {paths}")
    return [os.path.join(out_dir, os.path.basename(p)) for p in paths]


def last_bbox_metrics(output_dir: str) -> Optional[Dict[str, float]]:
    """The last ``bbox/*`` values in detectron2's ``metrics.json``, or None."""
    path = os.path.join(output_dir, "metrics.json")
    if not os.path.exists(path):
        return None
    found = None
    with open(path) as f:
        for line in f:
            record = json.loads(line)
            bbox = {k[5:]: v for k, v in record.items() if k.startswith("bbox/")}
            if bbox:
                found = bbox
    return found


def visualize(cfg: AnyConfig, output: str, num: int = 4) -> List[str]:
    """Draw ``num`` images of the config's first test dataset into ``output``/vis and print
    them, with the last bbox AP recorded in ``output``/metrics.json (a training's folder)."""
    dataset = inference_settings(cfg).test_dataset
    if dataset is None:
        raise CommandError("the config names no test dataset to draw images of")
    paths = draw_predictions(cfg, dataset, os.path.join(output, "vis"), num)
    metrics = last_bbox_metrics(output)
    if metrics:
        keys = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
        print(f"\nbbox AP on {dataset}:")
        print(
            tabulate(
                [[f"{metrics[k]:.2f}" for k in keys if k in metrics]], headers=keys, tablefmt="pipe"
            )
        )
    print(f"\nPredictions drawn on {len(paths)} {dataset} images:")
    for p in paths:
        print("  " + p)
    return paths


def main(argv=None) -> None:
    """Deprecated: ``fcos-d2 visualize`` (this form goes in the next release)."""
    warnings.warn(
        "python -m fcos_d2.visualize is deprecated: use fcos-d2 visualize", DeprecationWarning
    )
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--output", required=True, help="training output folder")
    parser.add_argument("--num", type=int, default=4)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides")
    args = parser.parse_args(argv)
    register_shapes(replace=False)
    visualize(fcos_d2.load_config(args.config_file, args.opts), args.output, args.num)


if __name__ == "__main__":
    main()
