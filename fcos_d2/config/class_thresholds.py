"""
Per-class score thresholds (``MODEL.FCOS.CLASS_THRESHOLDS_FILE``): the file
``python -m fcos_d2.analyze results`` writes, read here for the detector, the demo and the export.

The file is JSON: ``{"classes": [name of class 0, name of class 1, ...], "thresholds": {name:
value, ...}, ...}``; ``classes`` gives the model's class order (the dataset's ``thing_classes``)
and a detection of class k is kept when its score (sqrt(cls * centre-ness), what the results
report) is >= the threshold of ``classes[k]``. Other keys (how the thresholds were chosen) are
ignored here.
"""

import json
import math
import os
from typing import List

__all__ = ["read_class_thresholds"]


def read_class_thresholds(path: str, num_classes: int) -> List[float]:
    """
    The (K,) thresholds of the file at ``path``, in class order; a one-line ``ValueError``
    naming the file for anything else than K classes with one threshold in [0, 1] each.
    """
    where = f"class thresholds file {path!r}"
    if not os.path.isfile(path):
        raise ValueError(f"{where} not found")
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{where} is not readable JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("thresholds"), dict):
        raise ValueError(f"{where} has no 'thresholds' object")
    classes, thresholds = data.get("classes"), data["thresholds"]
    if not isinstance(classes, list) or len(classes) != num_classes:
        count = len(classes) if isinstance(classes, list) else "no"
        raise ValueError(
            f"{where} lists {count} 'classes'; the model has MODEL.FCOS.NUM_CLASSES={num_classes}"
        )
    missing = [c for c in classes if c not in thresholds]
    if missing:
        raise ValueError(f"{where} has no threshold for class(es) {missing}")
    unknown = [c for c in thresholds if c not in classes]
    if unknown:
        raise ValueError(f"{where} has thresholds for class(es) {unknown} not in its 'classes'")
    values = []
    for name in classes:
        value = thresholds[name]
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not (0 <= value <= 1)
            or math.isnan(value)
        ):
            raise ValueError(f"{where}: threshold {value!r} of class {name!r} is not in [0, 1]")
        values.append(float(value))
    return values
