"""
FCOS inference: decoding, thresholds, top-k and NMS (pure functions).

Shape shorthand: L levels, Ri locations of level i, K classes, C candidates after thresholding,
D final detections.
"""

from typing import List, Sequence, Tuple

import torch
from detectron2.layers import batched_nms
from detectron2.structures import Boxes, Instances
from torch import Tensor

__all__ = ["decode_boxes", "select_candidates", "fcos_inference_single_image"]


def decode_boxes(locations: Tensor, distances: Tensor) -> Tensor:
    """(R, 2) points and (R, 4) pixel distances (l, t, r, b) -> (R, 4) XYXY boxes."""
    return torch.cat([locations - distances[:, :2], locations + distances[:, 2:]], dim=1)


def select_candidates(
    cls_prob: Tensor, ctr_prob: Tensor, score_thresh: float, topk: int, thresh_with_ctr: bool
) -> Tuple[Tensor, Tensor, Tensor]:
    """
    Candidate (location, class) pairs of one level.

    Args:
        cls_prob: (Ri, K) class probabilities; ctr_prob: (Ri,) centre-ness probabilities.
    Returns:
        location indices (C,), class indices (C,) and cls * ctr (C,), at most ``topk`` pairs:
        those above ``score_thresh`` (on cls, or on cls * ctr), best by cls * ctr.
    """
    joint = cls_prob * ctr_prob[:, None]  # (Ri, K)
    keep = (joint if thresh_with_ctr else cls_prob) > score_thresh
    scores = joint[keep]
    pairs = keep.nonzero()  # (C, 2) in row-major order
    if len(scores) > topk:
        scores, order = scores.topk(topk)
        pairs = pairs[order]
    return pairs[:, 0], pairs[:, 1], scores


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
    Detections of one image from per-level outputs: locations (Ri, 2), logits (Ri, K),
    box_reg (Ri, 4) in strides, ctr_logits (Ri,). Score = sqrt(cls * ctr); class-wise NMS on the
    unclipped boxes; the best ``max_detections`` are kept (clipping is left to
    ``detector_postprocess``).
    """
    boxes_all: List[Tensor] = []
    scores_all: List[Tensor] = []
    classes_all: List[Tensor] = []
    for loc, stride, cls_l, reg_l, ctr_l in zip(locations, strides, logits, box_reg, ctr_logits):
        loc_idx, cls_idx, joint = select_candidates(
            cls_l.sigmoid(), ctr_l.sigmoid(), score_thresh, topk, thresh_with_ctr
        )
        boxes_all.append(decode_boxes(loc[loc_idx], reg_l[loc_idx] * stride))
        scores_all.append(torch.sqrt(joint))
        classes_all.append(cls_idx)
    boxes, scores, classes = (torch.cat(x) for x in (boxes_all, scores_all, classes_all))
    keep = batched_nms(boxes.float(), scores.float(), classes, nms_thresh)[:max_detections]
    return Instances(
        image_size,
        pred_boxes=Boxes(boxes[keep].float()),
        scores=scores[keep].float(),
        pred_classes=classes[keep],
    )
