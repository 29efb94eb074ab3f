"""One-to-one matching of two detection sets (exported graph vs eager model)."""

from typing import Tuple

import torch
from torch import Tensor
from torchvision.ops import box_iou

__all__ = ["matched_fractions"]


def matched_fractions(
    a: Tuple[Tensor, Tensor, Tensor],
    b: Tuple[Tensor, Tensor, Tensor],
    min_iou: float = 0.999,
    max_score_diff: float = 1e-4,
) -> Tuple[float, float]:
    """
    Greedy one-to-one matching of detections ``a`` = (boxes (Da, 4), scores (Da,), classes
    (Da,)) with ``b``: a pair matches when the classes are equal, the IoU is at least ``min_iou``
    and the scores differ by at most ``max_score_diff``. Returns (matched / Da, matched / Db),
    1.0 for an empty side.
    """
    boxes_a, scores_a, classes_a = (torch.as_tensor(x) for x in a)
    boxes_b, scores_b, classes_b = (torch.as_tensor(x) for x in b)
    ok = (
        (box_iou(boxes_a.float(), boxes_b.float()) >= min_iou)
        & (classes_a[:, None] == classes_b[None, :])
        & ((scores_a[:, None].float() - scores_b[None, :].float()).abs() <= max_score_diff)
    )
    used = torch.zeros(len(boxes_b), dtype=torch.bool)
    matched = 0
    for i in range(len(boxes_a)):
        free = (ok[i] & ~used).nonzero()
        if len(free):
            used[free[0, 0]] = True
            matched += 1
    return matched / max(len(boxes_a), 1), matched / max(len(boxes_b), 1)
