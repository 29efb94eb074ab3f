"""COCO AP of a predictor (sliced or not) on a registered dataset, image by image at the
images' own resolution."""

import logging
import time
from typing import Any, Callable, Dict, Optional

import numpy as np
from detectron2.data import DatasetCatalog
from detectron2.data.detection_utils import read_image

from ..evaluation import FCOSCOCOEvaluator

__all__ = ["evaluate_sliced"]

logger = logging.getLogger(__name__)


def evaluate_sliced(
    predictor: Callable[[np.ndarray], Dict[str, Any]],
    dataset: str,
    output_dir: Optional[str] = None,
    max_images: int = 0,
) -> Dict[str, Any]:
    """detectron2's result dict (``{"bbox": {"AP": ...}}``) of ``predictor`` (a BGR image in,
    ``{"instances": ...}`` out, e.g. a :class:`~fcos_d2.slicing.SlicedPredictor`) on
    ``dataset``; ``max_images`` > 0: the first images only. Logs the time per image."""
    records = DatasetCatalog.get(dataset)
    if max_images:
        records = records[:max_images]
    evaluator = FCOSCOCOEvaluator(
        dataset, tasks=("bbox",), output_dir=output_dir, distributed=False
    )
    evaluator.reset()
    start = time.perf_counter()
    for i, record in enumerate(records):
        image = read_image(record["file_name"], format="BGR")
        evaluator.process([{"image_id": record["image_id"]}], [predictor(image)])
        if (i + 1) % 20 == 0 or i + 1 == len(records):
            seconds = (time.perf_counter() - start) / (i + 1)
            logger.info(f"evaluated {i + 1}/{len(records)} images, {seconds:.3f} s per image")
    return evaluator.evaluate()
