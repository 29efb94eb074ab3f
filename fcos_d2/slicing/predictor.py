"""Sliced inference: a predictor run on overlapping tiles of an image (and on the whole image),
its detections merged in the image's coordinates."""

from typing import Any, Callable, Dict, List, Sequence

import numpy as np
import torch
from detectron2.structures import Boxes, Instances

from .tiles import SliceSettings, cut_by_tile_border, merge_detections, tile_boxes

__all__ = ["SlicedPredictor"]


class SlicedPredictor:
    """
    ``SlicedPredictor(predictor, SliceSettings(512, 512))(image)`` -> ``{"instances": ...}``:
    ``predictor`` (:class:`fcos_d2.Predictor`, :class:`fcos_d2.export.ExportedPredictor`, or any
    callable of a BGR (H, W, 3) uint8 array returning ``{"instances": Instances}``) run on each
    tile of ``image`` (each tile resized by the predictor's own test-time rule: small objects
    are enlarged) and, with ``settings.whole_image``, on the whole image; the detections are
    shifted into the image's pixels, those cut by a tile border left out, and the rest merged
    by class-wise NMS (see :class:`~fcos_d2.slicing.SliceSettings`).
    A predictor with ``predict_batch(images)`` gets the tiles ``batch_size`` at a time.

    ``max_detections``: detections kept per image (default: the predictor's
    ``settings.max_detections`` where it has one, else 100).
    """

    def __init__(
        self,
        predictor: Callable[[np.ndarray], Dict[str, Any]],
        settings: SliceSettings,
        *,
        batch_size: int = 4,
        max_detections: int = 0,
    ):
        self.predictor = predictor
        self.settings = settings.check()
        self.batch_size = max(1, int(batch_size))
        own = getattr(getattr(predictor, "settings", None), "max_detections", 0)
        self.max_detections = int(max_detections or own or 100)

    def _run(self, images: Sequence[np.ndarray]) -> List[Instances]:
        batch = getattr(self.predictor, "predict_batch", None)
        if batch is None:
            return [self.predictor(image)["instances"] for image in images]
        out = []
        for i in range(0, len(images), self.batch_size):
            out += [o["instances"] for o in batch(images[i : i + self.batch_size])]
        return out

    def __call__(self, image: np.ndarray) -> Dict[str, Any]:
        height, width = image.shape[:2]
        tiles = tile_boxes(height, width, self.settings)
        crops = [np.ascontiguousarray(image[y0:y1, x0:x1]) for x0, y0, x1, y1 in tiles.tolist()]
        found = self._run(crops)
        counts = torch.tensor([len(i) for i in found])
        boxes = torch.cat([i.pred_boxes.tensor.cpu() for i in found]).reshape(-1, 4)
        source = tiles.repeat_interleave(counts, dim=0)  # (N, 4) each detection's tile
        boxes = boxes + source[:, :2].repeat(1, 2).to(boxes)
        scores = torch.cat([i.scores.cpu() for i in found])
        classes = torch.cat([i.pred_classes.cpu().long() for i in found])
        whole = ~cut_by_tile_border(boxes, source, height, width, self.settings.edge_margin)
        boxes, scores, classes = boxes[whole], scores[whole], classes[whole]
        if self.settings.whole_image and len(crops) > 1:
            (full,) = self._run([image])
            boxes = torch.cat([boxes, full.pred_boxes.tensor.cpu()])
            scores = torch.cat([scores, full.scores.cpu()])
            classes = torch.cat([classes, full.pred_classes.cpu().long()])
        boxes, scores, classes = merge_detections(
            boxes, scores, classes, self.settings.nms_threshold, self.max_detections
        )
        instances = Instances((height, width))
        instances.pred_boxes = Boxes(boxes)
        instances.scores = scores
        instances.pred_classes = classes
        return {"instances": instances}
