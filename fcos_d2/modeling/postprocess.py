"""
FCOS inference: decoding, thresholds, top-k and NMS (pure functions).

Shape shorthand: L levels, Ri locations of level i, K classes, C candidates after thresholding,
D final detections.
"""

import math
from typing import List, NamedTuple, Tuple

import torch
from detectron2.structures import Boxes, Instances
from torch import Tensor

from ..layers import classwise_nms, topk_at_most

__all__ = [
    "FCOSPostprocess",
    "decode_boxes",
    "select_candidates",
    "fcos_detections",
    "fcos_inference_single_image",
    "legacy_rescale",
    "apply_class_thresholds",
]


class FCOSPostprocess(NamedTuple):
    """
    Settings of one image's detections (:func:`fcos_detections`): candidates whose class
    probability (times centre-ness with ``thresh_with_ctr``) exceeds ``score_thresh``, the
    ``topk`` best of each level, score sqrt(cls * ctr), class-wise NMS at ``nms_thresh``, the best
    ``max_detections``; ``legacy_conventions``: the original FCOS's clipping and "+1" NMS areas.

    A ``NamedTuple`` (immutable; ``post._replace(score_thresh=0.3)`` gives a changed copy) so that
    a scripted model can hold it and pass it on as one object.
    """

    score_thresh: float
    topk: int
    nms_thresh: float
    max_detections: int
    thresh_with_ctr: bool
    legacy_conventions: bool


def decode_boxes(locations: Tensor, distances: Tensor) -> Tensor:
    """(R, 2) points and (R, 4) pixel distances (l, t, r, b) -> (R, 4) XYXY boxes."""
    return torch.cat([locations - distances[:, :2], locations + distances[:, 2:]], dim=1)


def _logit_lower_bound(p: Tensor) -> Tensor:
    """
    Logits below which sigmoid(x) > p is impossible, elementwise, with slack for float rounding
    (p lowered by 1e-4 relative, then 1e-3 off the logit); +inf where p >= 1, -inf where p <= 0.
    """
    p = p * (1 - 1e-4)
    bound = torch.log(p / (1 - p)) - 1e-3
    bound = torch.where(p <= 0, -math.inf, bound)
    return torch.where(p >= 1, math.inf, bound)


def select_candidates(
    cls_logits: Tensor,
    quality_logits: Tensor,
    score_thresh: float,
    topk: int,
    thresh_with_ctr: bool,
) -> Tuple[Tensor, Tensor, Tensor]:
    """
    Candidate (location, class) pairs of one level.

    Args:
        cls_logits: (K, Ri) class logits (channel-first, as the head produces them, so no
            transposed copy of the map is needed); quality_logits: (Ri,) centre-ness (or IoU) logits.
    Returns:
        location indices (C,), class indices (C,) and cls * ctr probabilities (C,), at most
        ``topk`` pairs: those above ``score_thresh`` (on cls, or on cls * ctr), best by cls * ctr,
        in (location, class) row-major order before top-k (detectron2's order).
    """
    ctr = quality_logits.sigmoid()  # (Ri,)
    # One comparison on the raw logits drops nearly all pairs: cls > t needs a logit above
    # logit(t), and cls * ctr > t one above logit(t / ctr) at each location. The exact test
    # then runs on the few pairs left.
    thresh = torch.full_like(ctr, score_thresh)
    bound = _logit_lower_bound(thresh / ctr if thresh_with_ctr else thresh)  # (Ri,)
    locs = (cls_logits.amax(dim=0) > bound).nonzero()[:, 0]  # locations with any candidate
    maybe = cls_logits[:, locs] > bound[locs]  # (K, len(locs))
    pairs = maybe.t().nonzero()  # (C', 2): (index into locs, class), row-major
    loc_idx, cls_idx = locs[pairs[:, 0]], pairs[:, 1]
    cls = cls_logits[cls_idx, loc_idx].sigmoid()
    joint = cls * ctr[loc_idx]
    keep = (joint if thresh_with_ctr else cls) > score_thresh
    scores, order = topk_at_most(joint[keep], topk)
    return loc_idx[keep][order], cls_idx[keep][order], scores


def fcos_detections(
    locations: List[Tensor],
    strides: List[int],
    logits: List[Tensor],
    box_reg: List[Tensor],
    quality_logits: List[Tensor],
    post: FCOSPostprocess,
    image_size: Tuple[int, int],
) -> Tuple[Tensor, Tensor, Tensor]:
    """
    Detections of one image from per-level outputs: locations (Ri, 2), logits (K, Ri),
    box_reg (4, Ri) in strides, quality_logits (Ri,), decoded as ``post`` says. Score =
    sqrt(cls * ctr); class-wise NMS on the unclipped boxes; the best ``max_detections`` are kept
    (clipping is left to ``detector_postprocess``). Returns boxes (D, 4) XYXY, scores (D,) and
    classes (D,), by decreasing score; traceable (the same graph serves any input).

    With ``post.legacy_conventions``, maskrcnn-benchmark's conventions instead, as the original
    FCOS: boxes clipped to [0, w - 1] x [0, h - 1] of ``image_size`` (h, w) before the NMS, whose
    box areas and intersections count both end pixels (+1).
    """
    boxes_all: List[Tensor] = []
    scores_all: List[Tensor] = []
    classes_all: List[Tensor] = []
    for loc, stride, cls_l, reg_l, ctr_l in zip(
        locations, strides, logits, box_reg, quality_logits
    ):
        loc_idx, cls_idx, joint = select_candidates(
            cls_l, ctr_l, post.score_thresh, post.topk, post.thresh_with_ctr
        )
        boxes_all.append(decode_boxes(loc[loc_idx], reg_l[:, loc_idx].t() * stride))
        scores_all.append(torch.sqrt(joint))
        classes_all.append(cls_idx)
    boxes, scores, classes = torch.cat(boxes_all), torch.cat(scores_all), torch.cat(classes_all)
    nms_boxes = boxes
    if post.legacy_conventions:
        height, width = image_size
        boxes = torch.stack(
            [
                boxes[:, 0].clamp(0, width - 1),
                boxes[:, 1].clamp(0, height - 1),
                boxes[:, 2].clamp(0, width - 1),
                boxes[:, 3].clamp(0, height - 1),
            ],
            dim=1,
        )
        # "+1" areas and intersections are those of the boxes grown by one pixel to the bottom
        # right.
        one = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=boxes.dtype, device=boxes.device)
        nms_boxes = boxes + one
    keep = classwise_nms(nms_boxes, scores, classes, post.nms_thresh)[: post.max_detections]
    return boxes[keep], scores[keep], classes[keep]


def fcos_inference_single_image(
    locations: List[Tensor],
    strides: List[int],
    logits: List[Tensor],
    box_reg: List[Tensor],
    quality_logits: List[Tensor],
    post: FCOSPostprocess,
    image_size: Tuple[int, int],
) -> Instances:
    """:func:`fcos_detections` as ``Instances`` of ``image_size`` (pred_boxes, scores,
    pred_classes)."""
    boxes, scores, classes = fcos_detections(
        locations, strides, logits, box_reg, quality_logits, post, image_size
    )
    return Instances(image_size, pred_boxes=Boxes(boxes), scores=scores, pred_classes=classes)


def legacy_rescale(results: Instances, height: int, width: int) -> Instances:
    """
    Detections of the (resized) input image mapped to an output of ``height`` x ``width`` as
    maskrcnn-benchmark does (``BoxList.resize``: coordinates times the size ratio). Unlike
    ``detector_postprocess`` it neither clips again nor drops boxes that clipping left empty:
    the original FCOS reports them.
    """
    scale = torch.tensor(
        [width / results.image_size[1], height / results.image_size[0]] * 2,
        device=results.pred_boxes.device,
    )
    return Instances(
        (height, width),
        pred_boxes=Boxes(results.pred_boxes.tensor * scale),
        scores=results.scores,
        pred_classes=results.pred_classes,
    )


def apply_class_thresholds(results: Instances, thresholds: Tensor) -> Instances:
    """The detections of ``results`` whose score is >= ``thresholds[class]``, (K,) thresholds."""
    keep = results.scores >= thresholds[results.pred_classes]
    return results[keep]
