"""
Bad-data policy for training: invalid box annotations are dropped with a warning naming the
annotation id and the image file (never rewritten into another box), and an image that cannot
be read stops the run with an error naming the file.
"""

import logging
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

from detectron2.data import DatasetMapper
from detectron2.structures import BoxMode

__all__ = ["FCOSDatasetMapper", "invalid_box_reason", "drop_invalid_annotations"]

logger = logging.getLogger(__name__)

_SHOWN = 10  # invalid annotations listed one per line; the rest are counted


def invalid_box_reason(
    bbox: Any, mode: BoxMode, image_size: Optional[Tuple[int, int]] = None
) -> Optional[str]:
    """
    Why ``bbox`` (in ``mode``, XYXY_ABS or XYWH_ABS) is not a valid box, or None if it is.
    Invalid: not 4 numbers, NaN/inf, zero or negative width/height, or (with ``image_size``
    (H, W)) entirely outside the image. Boxes partly outside are valid (training clips them).
    """
    try:
        values = [float(v) for v in bbox]
    except (TypeError, ValueError):
        return "is not a list of numbers"
    if len(values) != 4:
        return f"has {len(values)} numbers, not 4"
    if not all(math.isfinite(v) for v in values):
        return "has a NaN or infinite coordinate"
    if mode == BoxMode.XYWH_ABS:
        x0, y0, w, h = values
        x1, y1 = x0 + w, y0 + h
    elif mode == BoxMode.XYXY_ABS:
        x0, y0, x1, y1 = values
        w, h = x1 - x0, y1 - y0
    else:
        return None  # other modes (rotated boxes) are not checked here
    if w <= 0 or h <= 0:
        return f"has width {w:g} and height {h:g} ({mode.name}); both must be positive"
    if image_size is not None:
        height, width = image_size
        if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
            return f"lies entirely outside the {width}x{height} image"
    return None


def drop_invalid_annotations(
    records: Sequence[Dict[str, Any]], *, filter_empty: bool = True
) -> List[Dict[str, Any]]:
    """
    Copies of ``records`` (detectron2 dataset dicts) without their invalid box annotations, with
    one warning listing them (annotation id, image file, reason: the first few one per line, and a
    count). With ``filter_empty``, a record left without annotations is removed too, as detectron2's
    ``DATALOADER.FILTER_EMPTY_ANNOTATIONS`` removes images without annotations. Valid annotations
    are passed on unchanged; ``records`` are not modified.
    """
    problems, out, removed = [], [], 0
    for record in records:
        annotations = record.get("annotations")
        if not annotations:
            out.append(record)
            continue
        size = (
            (record["height"], record["width"])
            if "height" in record and "width" in record
            else None
        )
        kept = []
        for ann in annotations:
            reason = invalid_box_reason(
                ann.get("bbox"), ann.get("bbox_mode", BoxMode.XYXY_ABS), size
            )
            if reason is None:
                kept.append(ann)
            else:
                problems.append(
                    f"annotation id {ann.get('id', '?')} in {record.get('file_name')!r}: bbox "
                    f"{ann.get('bbox')} {reason}"
                )
        if len(kept) == len(annotations):
            out.append(record)
        elif kept or not filter_empty:
            out.append({**record, "annotations": kept})
        else:
            removed += 1
    if problems:
        lines = problems[:_SHOWN]
        if len(problems) > _SHOWN:
            lines.append(f"... and {len(problems) - _SHOWN} more")
        tail = f"; {removed} image(s) left without annotations were removed" if removed else ""
        logger.warning(
            f"Dropped {len(problems)} invalid box annotation(s){tail}:\n  " + "\n  ".join(lines)
        )
    return out


class FCOSDatasetMapper(DatasetMapper):
    """
    detectron2's ``DatasetMapper`` whose read errors (missing, truncated or corrupt image files)
    are re-raised as ``OSError`` naming the record's file.
    """

    def __call__(self, dataset_dict: Dict[str, Any]) -> Dict[str, Any]:
        try:
            return super().__call__(dataset_dict)
        except OSError as e:  # PIL's UnidentifiedImageError and truncation errors are OSErrors
            name = dataset_dict.get("file_name")
            raise OSError(f"cannot read image {name!r}: {type(e).__name__}: {e}") from e
