"""
Class-wise NMS, one function with the implementation that suits where it runs.

Shape shorthand: N boxes, G classes present, n the largest class's box count.
"""

from typing import Tuple

import torch
from torch import Tensor
from torchvision.ops import batched_nms, nms

from .graph import exporting

__all__ = ["classwise_nms"]


def _pairwise_iou(boxes: Tensor) -> Tensor:
    """(..., n, 4) -> (..., n, n) IoU, with the operations in torchvision's CPU NMS order."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    area = (x2 - x1) * (y2 - y1)
    w = (
        torch.minimum(x2[..., :, None], x2[..., None, :])
        - torch.maximum(x1[..., :, None], x1[..., None, :])
    ).clamp(min=0)
    h = (
        torch.minimum(y2[..., :, None], y2[..., None, :])
        - torch.maximum(y1[..., :, None], y1[..., None, :])
    ).clamp(min=0)
    inter = w * h
    return inter / (area[..., :, None] + area[..., None, :] - inter)


def classwise_nms(boxes: Tensor, scores: Tensor, classes: Tensor, iou_threshold: float) -> Tensor:
    """
    Indices of (N, 4) XYXY ``boxes`` kept by per-class greedy NMS, by decreasing score: the
    result of detectron2's and torchvision's ``batched_nms``, computed by it on GPUs, by a
    branch-free form of it while tracing or scripting (one graph for any input, empty included),
    and on the CPU by :func:`_cpu_classwise_nms`.
    """
    if torch.jit.is_scripting() or torch.jit.is_tracing():  # a graph for any input
        return _batched_nms_in_graph(boxes, scores, classes, iou_threshold)
    if exporting():  # torch.export: the box count is a symbol
        return _batched_nms_exported(boxes, scores, classes, iou_threshold)
    if boxes.device.type == "cpu":
        return _cpu_classwise_nms(boxes, scores, classes, iou_threshold)
    return batched_nms(boxes, scores, classes, iou_threshold)


# Measured on a 2-core AMD EPYC (AVX-512), 2 threads, torchvision 0.29.1 (milliseconds, grouped
# vs batched_nms): N=3000, G=80 (n=52) 3.99 vs 5.43; N=2000, G=80 (n=37) 1.60 vs 4.98; N=1000,
# G=40 (n=37) 1.01 vs 1.15; but N=1000, G=20 (n=66) 1.68 vs 1.29, N=3000, G=20 (n=165) 5.40 vs
# 3.52, N=300, G=1 4.2 vs 0.15. The benchmark's post-processing (80 classes, ~3000 candidates at
# 800x1216) takes 4.8 ms with the grouped form, 8.3 ms without.
_GROUPED_MIN_BOXES = 1000
_GROUPED_MAX_PER_CLASS = 64


@torch.jit.unused  # eager CPU only: scripted and traced graphs take _batched_nms_in_graph
def _cpu_classwise_nms(
    boxes: Tensor, scores: Tensor, classes: Tensor, iou_threshold: float
) -> Tensor:
    """The grouped suppression where it was measured faster (many classes of few boxes each, as
    on COCO); torchvision's ``batched_nms`` otherwise."""
    if len(boxes) >= _GROUPED_MIN_BOXES:
        largest = int(torch.unique(classes, return_counts=True)[1].max())  # any class ids
        if largest <= _GROUPED_MAX_PER_CLASS:
            return _classwise_nms_grouped(boxes, scores, classes, iou_threshold)
    return batched_nms(boxes, scores, classes, iou_threshold)


def _batched_nms_in_graph(
    boxes: Tensor, scores: Tensor, classes: Tensor, iou_threshold: float
) -> Tensor:
    """
    torchvision's coordinate trick (each class shifted to its own region, then one ``nms``)
    without a branch on the count: the shift comes from max(|coordinate|, 0) so that an empty
    input also works. ``nms`` exports to ONNX's NonMaxSuppression.
    """
    return nms(_shifted_by_class(boxes, classes)[0], scores, iou_threshold)


def _shifted_by_class(boxes: Tensor, classes: Tensor) -> Tuple[Tensor, Tensor]:
    """(N, 4) boxes moved so that boxes of different classes never overlap, and the largest
    |coordinate| (0 when N = 0) the shift was made from."""
    largest = torch.cat([boxes.reshape(-1).abs(), boxes.new_zeros(1)]).max()
    return boxes + (classes.to(boxes) * (2 * largest + 1))[:, None], largest


def _batched_nms_exported(
    boxes: Tensor, scores: Tensor, classes: Tensor, iou_threshold: float
) -> Tensor:
    """
    :func:`_batched_nms_in_graph` for ``torch.export``, where torchvision's shape rule for
    ``nms`` says that at least 2 boxes survive (and the exported graph asserts it, failing on
    images with 0 or 1 detection): two sentinel boxes that always survive (below every shifted
    box, apart, of the lowest score, so last) are added, then dropped from the result.
    """
    count = boxes.shape[0]
    shifted, largest = _shifted_by_class(boxes, classes)
    corners = torch.tensor([[3.0, 3, 2, 2], [5, 5, 4, 4]], dtype=boxes.dtype, device=boxes.device)
    sentinels = -(largest + corners)  # x0 = y0 = -(largest + 3), x1 = y1 = -(largest + 2), ...
    low = scores.new_full((2,), -1.0)  # scores are >= 0
    kept = nms(torch.cat([shifted, sentinels]), torch.cat([scores, low]), iou_threshold)
    return kept[kept < count]


def _classwise_nms_grouped(
    boxes: Tensor, scores: Tensor, classes: Tensor, iou_threshold: float
) -> Tensor:
    """
    Class-wise NMS of N > 0 boxes as one suppression for all classes at once: candidates grouped
    by class into a padded (G, n, n) IoU block, n steps in all, instead of one NMS per class.
    """
    order = scores.argsort(descending=True)
    order = order[torch.argsort(classes[order], stable=True)]  # by class, then score
    _, counts = torch.unique_consecutive(classes[order], return_counts=True)
    n = int(counts.max())
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(len(order), device=boxes.device) - starts.repeat_interleave(counts)
    group = torch.arange(len(counts), device=boxes.device).repeat_interleave(counts)
    padded = boxes.new_zeros(len(counts), n, 4)
    padded[group, slot] = boxes[order]
    valid = torch.zeros(len(counts), n, dtype=torch.bool, device=boxes.device)
    valid[group, slot] = True
    over = _pairwise_iou(padded) > iou_threshold  # (G, n, n)
    keep = valid.clone()
    for i in range(n - 1):
        keep[:, i + 1 :] &= ~(over[:, i, i + 1 :] & keep[:, i : i + 1])
    kept = order[keep[group, slot]]
    return kept[scores[kept].argsort(descending=True)]
