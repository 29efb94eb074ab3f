"""
The model behind ``fcos-d2 serve``, free of any serving framework: built from a config (with
weights and overrides) or an exported folder, it detects on a list of images and writes the
HTTP answer of each.
"""

import logging
import time
from typing import Any, Dict, List, NamedTuple, Sequence, Tuple

import numpy as np
from detectron2.structures import Instances

__all__ = ["ModelSource", "ServedModel", "answer"]

logger = logging.getLogger(__name__)


class ModelSource(NamedTuple):
    """Where the served model comes from: ``exported`` (a folder of ``fcos-d2 export``), or
    ``config_file`` with ``opts`` (overrides), ``weights`` and ``device``."""

    config_file: str = ""
    opts: Tuple[str, ...] = ()
    weights: str = ""
    device: str = ""
    exported: str = ""


def answer(
    instances: Instances,
    image_size: Tuple[int, int],
    classes: Sequence[str],
    category_ids: Dict[int, int],
    score_threshold: float = 0.0,
) -> Dict[str, Any]:
    """The ``POST /v1/detect`` answer: ``{"width", "height", "detections": [{"bbox": [x0, y0,
    x1, y1], "score", "category_id", "category"}]}``, boxes in the image's pixels, sorted by
    decreasing score, those below ``score_threshold`` left out."""
    scores = instances.scores.cpu()
    order = scores.argsort(descending=True)
    keep = order[scores[order] >= score_threshold]
    boxes = instances.pred_boxes.tensor.cpu()[keep].tolist()
    labels = instances.pred_classes.cpu()[keep].tolist()
    detections = [
        {
            "bbox": [round(v, 3) for v in box],
            "score": round(float(score), 6),
            "category_id": int(category_ids.get(k, k)),
            "category": classes[k] if k < len(classes) else str(k),
        }
        for box, score, k in zip(boxes, scores[keep].tolist(), labels)
    ]
    height, width = image_size
    return {"width": int(width), "height": int(height), "detections": detections}


class ServedModel:
    """
    The predictor of ``source`` with what the answers need: ``classes`` (names), ``category_ids``
    (class index -> the test dataset's category id, where it has ids) and ``info`` (the
    ``GET /v1/model`` answer: classes, runtime, precision, config).
    """

    def __init__(self, source: ModelSource):
        if source.exported:
            self._init_exported(source.exported)
        else:
            self._init_config(source)
        self.batched = hasattr(self.predictor, "predict_batch")

    def _init_exported(self, directory: str) -> None:
        from ..export.predictor import ExportedPredictor
        from ..export.writers import RUNTIMES

        self.predictor = ExportedPredictor(directory)
        info = self.predictor.info
        self.classes = list(self.predictor.class_names or [])
        self.category_ids: Dict[int, int] = {}
        self.device = "cpu"
        self.info = {
            "classes": self.classes,
            "runtime": RUNTIMES.get(info["format"], info["format"]),
            "precision": info.get("precision", "float32"),
            "config": info.get("config", ""),
        }

    def _init_config(self, source: ModelSource) -> None:
        from ..config import config_text, inference_settings, load_config, set_device, set_weights
        from ..data import dataset_metadata, register_config_datasets, register_shapes
        from ..demo import dataset_ids
        from ..predictor import Predictor

        register_shapes(replace=False)  # the demo's datasets, as every command has them
        cfg = load_config(source.config_file, list(source.opts))
        if source.weights:
            set_weights(cfg, source.weights)
        if source.device:
            set_device(cfg, source.device)
        register_config_datasets(cfg, train=False)
        settings = inference_settings(cfg)
        self.predictor = Predictor(cfg)
        name = settings.test_dataset
        metadata = dataset_metadata(name) if name else None
        self.classes = list(metadata.get("thing_classes", [])) if metadata else []
        self.category_ids = dataset_ids(metadata)[0] if metadata else {}
        self.device = settings.device
        dtype = getattr(self.predictor.model, "inference_dtype", None)
        self.info = {
            "classes": self.classes,
            "runtime": f"pytorch ({settings.device})",
            "precision": str(dtype).replace("torch.", "") if dtype else "float32",
            "config": config_text(cfg),
        }

    def detect(self, images: Sequence[np.ndarray]) -> List[Instances]:
        """Detections of each (H, W, 3) BGR image, in its pixels: one forward pass per padded
        size for the eager model (the same detections as one by one), one call per image for
        an exported one."""
        if self.batched:
            return [o["instances"] for o in self.predictor.predict_batch(list(images))]
        return [self.predictor(image)["instances"] for image in images]

    def best_batch_size(self, limit: int, size: Tuple[int, int] = (480, 640)) -> int:
        """
        The batch size (1 or ``limit``) that gives the most images per second on this device,
        measured on a ``size`` image: on a CUDA device ``limit``; on a CPU, 1 when an image
        takes over a second (fixed per-call costs are then negligible and batching does not
        pay), else the faster of the two per image.
        """
        if limit <= 1 or not self.batched:
            return 1
        if str(self.device).startswith("cuda"):
            return limit
        image = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
        self.detect([image])  # warm-up
        one = _seconds(lambda: self.detect([image]))
        if one > 1.0:
            return 1
        many = _seconds(lambda: self.detect([image] * limit)) / limit
        choice = limit if many < 0.95 * one else 1
        logger.info(
            f"batching: {one:.3f} s per image alone, {many:.3f} s in batches of {limit}: "
            f"batches of up to {choice}"
        )
        return choice


def _seconds(run) -> float:
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best
