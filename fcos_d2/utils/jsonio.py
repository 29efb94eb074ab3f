"""
Strict JSON files (the analyses', the benchmark's): a value that is not a number (a fraction of
zero boxes, the AP of a class without boxes, a goal with no target) is written as null.
"""

import json
import math
from typing import Any

__all__ = ["write_json"]


def _strict(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def write_json(path: str, data: Any) -> None:
    """``data`` to ``path`` as indented strict JSON (NaN and infinities as null)."""
    with open(path, "w") as f:
        json.dump(_strict(data), f, indent=2, allow_nan=False)
