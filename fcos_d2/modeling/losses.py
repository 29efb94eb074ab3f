"""
FCOS losses and their normalisers.

Shape shorthand: N images, R locations per image, K classes, P positive locations.
"""

from typing import Dict, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from detectron2.utils import comm
from fvcore.nn import sigmoid_focal_loss
from torch import Tensor

from ..config import FCOS_CHOICES
from .targets import centerness_targets

__all__ = ["box_ious", "iou_loss", "reduce_mean", "positive_count", "fcos_losses"]


def box_ious(pred: Tensor, target: Tensor) -> Tuple[Tensor, Tensor]:
    """
    IoU and GIoU of (P, 4) predicted and target (l, t, r, b) distances from the same points,
    each (P,). IoU = (I + 1) / (U + 1), as in FCOS (smooths tiny boxes);
    GIoU = IoU - (C - U) / C with C the enclosing box area.
    """
    pred_area = (pred[:, 0] + pred[:, 2]) * (pred[:, 1] + pred[:, 3])
    target_area = (target[:, 0] + target[:, 2]) * (target[:, 1] + target[:, 3])
    inner = torch.minimum(pred, target)
    intersection = (inner[:, 0] + inner[:, 2]) * (inner[:, 1] + inner[:, 3])
    union = pred_area + target_area - intersection
    ious = (intersection + 1.0) / (union + 1.0)
    outer = torch.maximum(pred, target)
    enclosing = (outer[:, 0] + outer[:, 2]) * (outer[:, 1] + outer[:, 3]) + 1e-7
    return ious, ious - (enclosing - union) / enclosing


def iou_loss(pred: Tensor, target: Tensor, loss_type: str) -> Tensor:
    """
    (P,) IoU-family losses of (P, 4) (l, t, r, b) predictions and targets: "iou" is -log(IoU),
    "linear_iou" 1 - IoU, "giou" 1 - GIoU (see :func:`box_ious`).
    """
    ious, gious = box_ious(pred, target)
    if loss_type == "iou":
        return -torch.log(ious)
    if loss_type == "linear_iou":
        return 1.0 - ious
    if loss_type == "giou":
        return 1.0 - gious
    raise ValueError(f"loss_type={loss_type!r} is not one of {list(FCOS_CHOICES['BOX_LOSS_TYPE'])}")


def reduce_mean(value: Tensor) -> Tensor:
    """Mean of a scalar tensor over all workers (identity without torch.distributed)."""
    if comm.get_world_size() == 1:
        return value
    value = value.clone()
    dist.all_reduce(value)
    return value / comm.get_world_size()


def positive_count(labels: Tensor, num_classes: int) -> Tensor:
    """Locations of labels (N, R) that are not background (``num_classes``), averaged over
    workers and at least 1: the normaliser of FCOS's losses."""
    return reduce_mean((labels != num_classes).sum().to(torch.float32)).clamp(min=1.0)


def fcos_losses(
    logits: Tensor,
    box_reg: Tensor,
    quality_logits: Tensor,
    labels: Tensor,
    reg_targets: Tensor,
    *,
    box_loss_type: str = "giou",
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
    box_quality: str = "ctrness",
    num_pos: Optional[Tensor] = None,
    cls_normalizer: Optional[float] = None,
) -> Dict[str, Tensor]:
    """
    Args:
        logits: (N, R, K); box_reg: (N, R, 4) stride-normalised; quality_logits: (N, R) centre-ness
        (or IoU-quality) logits; labels: (N, R), K for background; reg_targets: (N, R, 4)
        stride-normalised; num_pos: the positive count averaged over workers, if the caller
        has it already (computed here otherwise); cls_normalizer: divides the focal loss
        instead of the positive count.
    Returns:
        ``loss_fcos_cls`` (focal, / positives); with ``box_quality="ctrness"``: ``loss_fcos_loc``
        (IoU loss weighted by the centre-ness target, / sum of those targets) and
        ``loss_fcos_ctr`` (BCE, / positives); with ``"iou"``: ``loss_fcos_loc`` (/ positives) and
        ``loss_fcos_iou`` (BCE against the detached IoU, / positives).
        Normalisers are averaged over workers so the loss does not depend on the GPU count.
    """
    if box_quality not in FCOS_CHOICES["BOX_QUALITY"]:
        raise ValueError(
            f"box_quality={box_quality!r} is not one of {list(FCOS_CHOICES['BOX_QUALITY'])}"
        )
    num_classes = logits.shape[-1]
    fg = labels != num_classes  # (N, R)
    if num_pos is None:
        num_pos = positive_count(labels, num_classes)
    onehot = F.one_hot(labels, num_classes + 1)[..., :num_classes].to(logits.dtype)
    # The eager focal loss, not fvcore's scripted one: TorchScript's profiling executor switches
    # the gradient's formula after the first call in a process, so training numerics would depend
    # on what ran before.
    loss_cls = sigmoid_focal_loss(
        logits, onehot, alpha=focal_alpha, gamma=focal_gamma, reduction="sum"
    )
    losses = {"loss_fcos_cls": loss_cls / (num_pos if cls_normalizer is None else cls_normalizer)}

    pos_reg, pos_targets = box_reg[fg], reg_targets[fg]  # (P, 4)
    pos_quality = quality_logits[fg]  # (P,)
    box_losses = iou_loss(pos_reg, pos_targets, box_loss_type)
    if box_quality == "iou":
        ious = box_ious(pos_reg, pos_targets)[0].detach()
        losses["loss_fcos_loc"] = box_losses.sum() / num_pos
        bce = F.binary_cross_entropy_with_logits(pos_quality, ious, reduction="sum")
        losses["loss_fcos_iou"] = bce / num_pos
        return losses
    ctr_targets = centerness_targets(pos_targets)  # (P,)
    ctr_norm = reduce_mean(ctr_targets.sum()).clamp(min=1e-6)
    losses["loss_fcos_loc"] = (box_losses * ctr_targets).sum() / ctr_norm
    bce = F.binary_cross_entropy_with_logits(pos_quality, ctr_targets, reduction="sum")
    losses["loss_fcos_ctr"] = bce / num_pos
    return losses
