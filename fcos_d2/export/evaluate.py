"""
COCO evaluation of an exported directory on a registered dataset, with detectron2's data loader
(the same test-time resize) and ``COCOEvaluator``.

    python -m fcos_d2.export.evaluate --exported DIR --dataset NAME [--output EVAL_DIR]
"""

import argparse
import sys
import warnings
from typing import Any, Dict, List, Optional

from detectron2.data import (
    DatasetCatalog,
    build_detection_test_loader,
    get_detection_dataset_dicts,
)
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.modeling.postprocessing import detector_postprocess

from ..data import register_dataset_specs, register_shapes
from ..evaluation import FCOSCOCOEvaluator
from ..utils import setup_command_logger
from .predictor import ExportedPredictor
from .settings import test_mapper

__all__ = ["evaluate_exported"]


class _AsModel:
    """An exported predictor called like a detectron2 model on a test loader's batches."""

    def __init__(self, predictor: ExportedPredictor):
        self.predictor = predictor

    def __call__(self, batched_inputs: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        outputs = []
        for x in batched_inputs:
            instances = self.predictor.run_resized(x["image"].numpy())
            height = x.get("height", instances.image_size[0])
            width = x.get("width", instances.image_size[1])
            outputs.append({"instances": detector_postprocess(instances, height, width)})
        return outputs


def evaluate_exported(
    directory: str, dataset: str, output_dir: Optional[str] = None, max_images: int = 0
) -> Dict[str, Any]:
    """bbox AP (detectron2's result dict) of the exported model in ``directory`` on ``dataset``;
    ``max_images`` > 0 evaluates the first images only."""
    register_dataset_specs([dataset])
    if dataset not in DatasetCatalog.list():
        raise KeyError(f"dataset {dataset!r} is not registered")
    predictor = ExportedPredictor(directory)
    resize = predictor.info["resize"]
    # export.json's rule: what the graph is fed, for a YAML or a Python config alike
    mapper = test_mapper(
        resize["min_size_test"], resize["max_size_test"], predictor.info["input"]["format"]
    )
    records = get_detection_dataset_dicts([dataset], filter_empty=False)
    loader = build_detection_test_loader(records, mapper=mapper, num_workers=2)
    if max_images:
        loader = _FirstBatches(loader, max_images)
    evaluator = FCOSCOCOEvaluator(dataset, tasks=("bbox",), output_dir=output_dir)
    return inference_on_dataset(_AsModel(predictor), loader, evaluator)


class _FirstBatches:
    """The first ``n`` items of a data loader, with a length (for progress logs)."""

    def __init__(self, loader, n: int):
        self.loader, self.n = loader, n

    def __len__(self) -> int:
        return min(self.n, len(self.loader))

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if i >= self.n:
                return
            yield batch


def main(argv=None) -> int:
    """Deprecated: ``fcos-d2 evaluate --exported`` (this form goes in the next release)."""
    warnings.warn(
        "python -m fcos_d2.export.evaluate is deprecated: use fcos-d2 evaluate --exported",
        DeprecationWarning,
    )
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--exported", required=True, help="directory written by fcos_d2.export")
    parser.add_argument("--dataset", required=True, help="a registered dataset")
    parser.add_argument("--output", default=None, help="where COCOEvaluator writes its files")
    args = parser.parse_args(argv)
    setup_command_logger(name="fcos_d2")
    setup_command_logger(name="detectron2")
    register_shapes(replace=False)  # the demo's datasets

    try:
        results = evaluate_exported(args.exported, args.dataset, args.output)
    except (KeyError, OSError, RuntimeError, ImportError) as e:
        print(f"python -m fcos_d2.export.evaluate: error: {e}", file=sys.stderr)
        return 2
    print_csv_format(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
