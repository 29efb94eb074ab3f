"""
The score threshold of best F1 for one class (the original FCOS demo's rule for its per-class
thresholds), and the file that carries them (read by
:func:`fcos_d2.config.read_class_thresholds`).

Shape shorthand: D detections of the class.
"""

from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional, Sequence

import numpy as np

from ..utils.jsonio import write_json

__all__ = ["F1Point", "best_f1_threshold", "write_class_thresholds"]


@dataclass(frozen=True)
class F1Point:
    """Keeping the detections with score >= ``threshold`` gives ``precision``, ``recall`` and
    ``f1``. Where F1 is 0 at every threshold (``reason`` says why): a class whose detections
    were all wrong gets 1.0 (drop them), a class with neither boxes nor detections 0.0."""

    threshold: float
    precision: float
    recall: float
    f1: float
    reason: Optional[str] = None


def best_f1_threshold(scores: np.ndarray, is_tp: np.ndarray, num_gt: int) -> F1Point:
    """
    Args:
        scores: (D,) scores of one class's detections over the dataset; is_tp: (D,) bool, each a
            true positive (matched, e.g. by COCO's rule at IoU 0.5); num_gt: the class's ground
            truth boxes.
    Returns:
        the threshold among the scores that maximises F1 = 2PR / (P + R) of the detections with
        score >= threshold (equal scores are kept or dropped together; on equal F1 the higher
        threshold).
    """
    scores, is_tp = np.asarray(scores, np.float64), np.asarray(is_tp, bool)
    if num_gt == 0 and len(scores) == 0:
        return F1Point(0.0, 0.0, 0.0, 0.0, "no ground truth, no detection")
    if num_gt == 0:
        return F1Point(1.0, 0.0, 0.0, 0.0, "no ground truth: every detection is wrong")
    if not is_tp.any():
        return F1Point(1.0, 0.0, 0.0, 0.0, "no true positive")
    order = np.argsort(-scores, kind="stable")
    scores, is_tp = scores[order], is_tp[order]
    tp = np.cumsum(is_tp)
    kept = np.arange(1, len(scores) + 1)
    last_of_tie = np.append(scores[1:] != scores[:-1], True)  # cuts between distinct scores
    precision = tp / kept
    recall = tp / num_gt
    f1 = np.where(tp > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    f1 = np.where(last_of_tie, f1, -1.0)
    best = int(np.argmax(f1))  # the first maximum: the highest threshold
    return F1Point(
        float(scores[best]), float(precision[best]), float(recall[best]), float(f1[best])
    )


def write_class_thresholds(
    path: str,
    class_names: Sequence[str],
    points: Sequence[F1Point],
    extra: Optional[Dict[str, Any]] = None,
) -> None:
    """The thresholds file: ``classes`` (the model's class order), ``thresholds`` {name: value}
    and, per class, the precision / recall / F1 the threshold gives on the data it was chosen on."""
    data = {
        "classes": list(class_names),
        "thresholds": {n: p.threshold for n, p in zip(class_names, points)},
        "rule": "per class, the score threshold of best F1 at IoU 0.5 (COCO matching)",
        "per_class": {n: asdict(p) for n, p in zip(class_names, points)},
        **(extra or {}),
    }
    write_json(path, data)
