"""
COCO evaluation that does not crawl without detectron2's compiled ops: detectron2's
``COCOEvaluator`` runs pycocotools' ``COCOeval`` in Python when ``detectron2._C`` is missing (as in
the PyPI wheel), slow on COCO val's 5,000 images x 100 detections. Where faster-coco-eval is
installed (``pip install 'fcos_d2[eval]'``), :class:`FCOSCOCOEvaluator` runs its C++
``COCOeval_faster`` instead: same matching, same AP.
"""

import itertools
import logging
import tempfile
from typing import Optional

from detectron2.evaluation import COCOEvaluator
from detectron2.evaluation.coco_evaluation import _evaluate_predictions_on_coco

from .data import coco_json_file, is_dataset_spec

__all__ = ["FCOSCOCOEvaluator", "faster_cocoeval"]


def faster_cocoeval():
    """faster-coco-eval's ``COCOeval_faster`` class, or None where it is not installed."""
    try:
        from faster_coco_eval.core.faster_eval_api import COCOeval_faster
    except ImportError:
        return None
    return COCOeval_faster


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


class FCOSCOCOEvaluator(COCOEvaluator):
    """
    detectron2's ``COCOEvaluator`` (same arguments, outputs, results file), evaluating with
    faster-coco-eval's ``COCOeval_faster`` where it is installed and detectron2's own fast
    evaluation is not available; ``use_faster_coco_eval=False`` keeps pycocotools.
    Attribute ``backend``: the evaluation that runs ("faster-coco-eval", "detectron2 fast",
    "pycocotools").
    """

    def __init__(self, dataset_name: str, *args, use_faster_coco_eval: bool = True, **kwargs):
        if is_dataset_spec(dataset_name):
            # a VOC or YOLO spec's ground truth converted under a file name without its ':'
            # and '/' (detectron2 would write into folders named after the spec's path)
            output_dir = kwargs.get("output_dir", args[2] if len(args) > 2 else None)
            coco_json_file(dataset_name, output_dir or tempfile.mkdtemp(prefix="fcos_d2_eval_"))
        super().__init__(dataset_name, *args, **kwargs)
        self._faster = faster_cocoeval() if use_faster_coco_eval else None
        if self._use_fast_impl:  # detectron2's compiled evaluation exists: it is fast already
            self._faster = None
        self.backend = (
            "faster-coco-eval"
            if self._faster
            else ("detectron2 fast" if self._use_fast_impl else "pycocotools")
        )

    def _eval_predictions(self, predictions, img_ids: Optional[list] = None):
        if self._faster is None:
            return super()._eval_predictions(predictions, img_ids)
        # detectron2's pass maps the class ids back to the dataset's (on these result dicts)
        # and writes the results file; evaluation is then ours.
        do_evaluation, self._do_evaluation = self._do_evaluation, False
        quiet = _DropMessage("Annotations are not available")  # they are: evaluation follows
        self._logger.addFilter(quiet)
        try:
            super()._eval_predictions(predictions, img_ids)
        finally:
            self._do_evaluation = do_evaluation
            self._logger.removeFilter(quiet)
        if not do_evaluation:
            return
        coco_results = list(itertools.chain(*[x["instances"] for x in predictions]))
        tasks = self._tasks or self._tasks_from_predictions(coco_results)
        self._logger.info("Evaluating predictions with faster-coco-eval ...")
        for task in sorted(tasks):
            coco_eval = (
                _evaluate_predictions_on_coco(
                    self._coco_api,
                    coco_results,
                    task,
                    kpt_oks_sigmas=self._kpt_oks_sigmas,
                    cocoeval_fn=self._faster,
                    img_ids=img_ids,
                    max_dets_per_image=self._max_dets_per_image,
                )
                if coco_results
                else None
            )
            self._results[task] = self._derive_coco_results(
                coco_eval, task, class_names=self._metadata.get("thing_classes")
            )
