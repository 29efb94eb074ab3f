"""
FCOS inference: decoding, thresholds, top-k and NMS (pure functions).

Shape shorthand: L levels, Ri locations of level i, K classes, C candidates after thresholding,
D final detections.
"""

import math
from typing import List, Sequence, Tuple

import torch
from detectron2.structures import Boxes, Instances
from torch import Tensor
from torchvision.ops import nms

__all__ = [
    "decode_boxes", "select_candidates", "classwise_nms", "fcos_inference_single_image"
]


def decode_boxes(locations: Tensor, distances: Tensor) -> Tensor:
    """(R, 2) points and (R, 4) pixel distances (l, t, r, b) -> (R, 4) XYXY boxes."""
    return torch.cat([locations - distances[:, :2], locations + distances[:, 2:]], dim=1)


def _logit_lower_bound(p: float) -> float:
    """A logit below which sigmoid(x) > p is impossible (with a margin for rounding)."""
    if p <= 0:
        return -math.inf
    if p >= 1:
        return math.inf
    return math.log(p / (1 - p)) - 1e-3


def select_candidates(
    cls_logits: Tensor, ctr_logits: Tensor, score_thresh: float, topk: int, thresh_with_ctr: bool
) -> Tuple[Tensor, Tensor, Tensor]:
    """
    Candidate (location, class) pairs of one level.

    Args:
        cls_logits: (K, Ri) class logits (channel-first, as the head produces them, so no
            transposed copy of the map is needed); ctr_logits: (Ri,) centre-ness logits.
    Returns:
        location indices (C,), class indices (C,) and cls * ctr probabilities (C,), at most
        ``topk`` pairs: those above ``score_thresh`` (on cls, or on cls * ctr), best by cls * ctr.
    """
    # cls > t and cls * ctr > t both need cls > t, i.e. a logit above logit(t): one comparison
    # on the raw map drops nearly all pairs; the exact test then runs on the few left.
    pairs = (cls_logits > _logit_lower_bound(score_thresh)).nonzero().flip(1)  # (C', 2) loc, cls
    cls = cls_logits[pairs[:, 1], pairs[:, 0]].sigmoid()
    joint = cls * ctr_logits[pairs[:, 0]].sigmoid()
    keep = (joint if thresh_with_ctr else cls) > score_thresh
    pairs, scores = pairs[keep], joint[keep]
    if len(scores) > topk:
        scores, order = scores.topk(topk)
        pairs = pairs[order]
    return pairs[:, 0], pairs[:, 1], scores


def classwise_nms(boxes: Tensor, scores: Tensor, classes: Tensor, iou_threshold: float) -> Tensor:
    """
    Indices kept by per-class NMS, by decreasing score: the same result as detectron2's
    ``batched_nms``, which on the CPU scans all candidates once per class; here candidates are
    sorted by class once and NMS runs on contiguous slices (a few times faster for 80 classes).
    """
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.argsort(classes, stable=True)
    counts = torch.unique_consecutive(classes[order], return_counts=True)[1].tolist()
    kept, start = [], 0
    for count in counts:
        idx = order[start : start + count]
        kept.append(idx[nms(boxes[idx], scores[idx], iou_threshold)])
        start += count
    keep = torch.cat(kept)
    return keep[scores[keep].argsort(descending=True)]


def fcos_inference_single_image(
    locations: Sequence[Tensor],
    strides: Sequence[int],
    logits: Sequence[Tensor],
    box_reg: Sequence[Tensor],
    ctr_logits: Sequence[Tensor],
    image_size: Tuple[int, int],
    *,
    score_thresh: float,
    topk: int,
    nms_thresh: float,
    max_detections: int,
    thresh_with_ctr: bool = False,
) -> Instances:
    """
    Detections of one image from per-level outputs: locations (Ri, 2), logits (K, Ri),
    box_reg (4, Ri) in strides, ctr_logits (Ri,). Score = sqrt(cls * ctr); class-wise NMS on the
    unclipped boxes; the best ``max_detections`` are kept (clipping is left to
    ``detector_postprocess``).
    """
    boxes_all: List[Tensor] = []
    scores_all: List[Tensor] = []
    classes_all: List[Tensor] = []
    for loc, stride, cls_l, reg_l, ctr_l in zip(locations, strides, logits, box_reg, ctr_logits):
        loc_idx, cls_idx, joint = select_candidates(
            cls_l, ctr_l, score_thresh, topk, thresh_with_ctr
        )
        boxes_all.append(decode_boxes(loc[loc_idx], reg_l[:, loc_idx].t() * stride))
        scores_all.append(torch.sqrt(joint))
        classes_all.append(cls_idx)
    boxes, scores, classes = (torch.cat(x) for x in (boxes_all, scores_all, classes_all))
    keep = classwise_nms(boxes.float(), scores.float(), classes, nms_thresh)[:max_detections]
    return Instances(
        image_size,
        pred_boxes=Boxes(boxes[keep].float()),
        scores=scores[keep].float(),
        pred_classes=classes[keep],
    )
