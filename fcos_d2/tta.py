"""
Test-time augmentation for FCOS with the semantics of the original FCOS ``bbox_aug``: run the
model on every ``TEST.AUG.MIN_SIZES`` scale, each also flipped when ``TEST.AUG.FLIP`` is on, map
the boxes back to the original image, pool all detections, then class-wise NMS at
``MODEL.FCOS.NMS_THRESH_TEST`` and keep the best ``TEST.DETECTIONS_PER_IMAGE``. Like the model's
own NMS, the merging NMS sees unclipped boxes; boxes are clipped to the image last, as
detectron2's ``detector_postprocess`` does. So one scale equal to the test size without flip
gives the model's own detections.

Shape shorthand: A augmented copies of one image, D detections pooled over them.
"""

import copy
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from detectron2.config import CfgNode, configurable
from detectron2.data.detection_utils import read_image
from detectron2.data.transforms import ResizeTransform, TransformList
from detectron2.modeling import DatasetMapperTTA, GeneralizedRCNN, GeneralizedRCNNWithTTA
from detectron2.structures import Boxes, Instances
from fvcore.transforms import HFlipTransform, NoOpTransform, VFlipTransform
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from .layers import classwise_nms

__all__ = ["FCOSWithTTA", "merge_detections", "tta_model", "unflip_boxes"]

# Transforms undone by rescaling boxes to the original "height" x "width" (flips are mirrored).
_RESIZES = (ResizeTransform, NoOpTransform)


def unflip_boxes(boxes: Tensor, transforms: TransformList, height: int, width: int) -> Tensor:
    """
    Boxes (D, 4) XYXY detected on a resized and flipped copy, already rescaled to the original
    ``height`` x ``width`` image, mirrored back into that image. ``transforms`` may hold only
    resizes and flips (what :class:`DatasetMapperTTA` makes); anything else is a ValueError.
    """
    hflips = vflips = 0
    for t in transforms.transforms:
        if isinstance(t, HFlipTransform):
            hflips += 1
        elif isinstance(t, VFlipTransform):
            vflips += 1
        elif not isinstance(t, _RESIZES):
            raise ValueError(
                f"FCOSWithTTA maps boxes back through resizes and flips only, not "
                f"{type(t).__name__} (from the TTA mapper)"
            )
    x0, y0, x1, y1 = boxes.unbind(1)
    if hflips % 2:
        x0, x1 = width - x1, width - x0
    if vflips % 2:
        y0, y1 = height - y1, height - y0
    return torch.stack([x0, y0, x1, y1], dim=1)


def merge_detections(
    boxes: Tensor,
    scores: Tensor,
    classes: Tensor,
    image_size: Tuple[int, int],
    nms_thresh: float,
    max_detections: int,
) -> Instances:
    """
    Pooled detections of all augmented copies, boxes (D, 4) XYXY in the original image,
    scores (D,), classes (D,) -> Instances of the class-wise NMS survivors (by decreasing score),
    at most ``max_detections``.
    """
    keep = classwise_nms(boxes, scores, classes, nms_thresh)[:max_detections]  # the model's NMS
    return Instances(
        image_size, pred_boxes=Boxes(boxes[keep]), scores=scores[keep], pred_classes=classes[keep]
    )


class FCOSWithTTA(nn.Module):
    """
    An FCOS model (any detectron2 ``DenseDetector``: the detections are read where its
    ``forward_inference`` returns them) with test-time augmentation; called like the model in
    inference:
    a list of input dicts ("image" CHW in the model's input format or "file_name"; optional
    "height", "width") -> a list of {"instances": Instances} in the original resolution.
    """

    @configurable
    def __init__(
        self,
        *,
        model: nn.Module,
        tta_mapper,
        nms_thresh: float,
        max_detections_per_image: int,
        batch_size: int = 3,
    ):
        """
        Args:
            model: an FCOS model (or a DistributedDataParallel around one), in eval mode.
            tta_mapper: dataset dict -> list of augmented dataset dicts, each with a
                "transforms" entry (resizes and flips), e.g. :class:`DatasetMapperTTA`.
            nms_thresh: IoU threshold of the class-wise NMS over the pooled detections.
            max_detections_per_image: detections kept per image after that NMS.
            batch_size: augmented copies of the same size run through the model together.
        """
        super().__init__()
        if isinstance(model, DistributedDataParallel):
            model = model.module
        if not hasattr(model, "forward_inference"):
            raise ValueError(
                f"FCOSWithTTA needs a dense detector such as FCOS, not {type(model).__name__} "
                "(use tta_model(cfg, model), which picks the wrapper)"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1")
        self.model = model
        self.tta_mapper = tta_mapper
        self.nms_thresh = nms_thresh
        self.max_detections_per_image = max_detections_per_image
        self.batch_size = batch_size

    @classmethod
    def from_config(cls, cfg: CfgNode, model: nn.Module, tta_mapper=None, batch_size: int = 3):
        if not cfg.TEST.AUG.MIN_SIZES:
            raise ValueError("TEST.AUG.MIN_SIZES is empty: test-time augmentation needs a scale")
        return {
            "model": model,
            "tta_mapper": tta_mapper or DatasetMapperTTA(cfg),
            "nms_thresh": cfg.MODEL.FCOS.NMS_THRESH_TEST,
            "max_detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "batch_size": batch_size,
        }

    def forward(self, batched_inputs: List[Dict]) -> List[Dict[str, Instances]]:
        return [
            {"instances": self._inference_one_image(self._with_image(x))} for x in batched_inputs
        ]

    def _with_image(self, dataset_dict: Dict) -> Dict:
        """A shallow copy that has "image" (read from "file_name" if needed), "height", "width"."""
        ret = copy.copy(dataset_dict)
        if "image" not in ret:
            image = read_image(ret["file_name"], self.model.input_format)
            ret["image"] = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        ret.setdefault("height", ret["image"].shape[1])
        ret.setdefault("width", ret["image"].shape[2])
        return ret

    @torch.no_grad()
    def _inference_one_image(self, dataset_dict: Dict) -> Instances:
        height, width = dataset_dict["height"], dataset_dict["width"]
        augmented = self.tta_mapper(dataset_dict)
        outputs = self._batch_inference([{"image": a["image"]} for a in augmented])
        boxes, scores, classes = [], [], []
        for aug, out in zip(augmented, outputs):
            # Rescaled exactly as detectron2's detector_postprocess does, but not clipped yet:
            # like the model's own NMS, the merging NMS sees unclipped boxes.
            out.pred_boxes.scale(width / out.image_size[1], height / out.image_size[0])
            boxes.append(unflip_boxes(out.pred_boxes.tensor, aug["transforms"], height, width))
            scores.append(out.scores)
            classes.append(out.pred_classes)
        merged = merge_detections(
            torch.cat(boxes),
            torch.cat(scores),
            torch.cat(classes),
            (height, width),
            self.nms_thresh,
            self.max_detections_per_image,
        )
        merged.pred_boxes.clip(merged.image_size)
        return merged[merged.pred_boxes.nonempty()]

    def _batch_inference(self, inputs: List[Dict]) -> List[Instances]:
        """
        The model's detections of each input in that input's own coordinates, unclipped; run in
        batches of equal-sized images only (so that no copy is padded to another's size, which
        would change its detections).
        """
        raw: List[Instances] = []
        for batch in _same_size_batches(inputs, self.batch_size):
            raw.extend(self.model.inference(batch, do_postprocess=False))
        return raw


def tta_model(cfg: CfgNode, model: nn.Module) -> nn.Module:
    """
    ``model`` with test-time augmentation: :class:`FCOSWithTTA` for FCOS, detectron2's
    ``GeneralizedRCNNWithTTA`` for R-CNN models (FCOS as their proposal generator included).
    """
    inner = model.module if isinstance(model, DistributedDataParallel) else model
    if isinstance(inner, GeneralizedRCNN):
        return GeneralizedRCNNWithTTA(cfg, model)
    return FCOSWithTTA(cfg, model)


def _same_size_batches(inputs: Sequence[Dict], batch_size: int) -> List[List[Dict]]:
    batches: List[List[Dict]] = []
    for x in inputs:
        last = batches[-1] if batches else None
        if last and len(last) < batch_size and last[0]["image"].shape == x["image"].shape:
            last.append(x)
        else:
            batches.append([x])
    return batches
