"""
Bad-data policy for training: invalid box annotations are dropped with a warning naming the
annotation id and the image file (never rewritten into another box), and an image that cannot
be read stops the run with an error naming the file.
"""

import json
import logging
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

from detectron2.data import DatasetMapper
from detectron2.structures import BoxMode

__all__ = [
    "FCOSDatasetMapper",
    "invalid_box_reason",
    "drop_invalid_annotations",
    "annotation_ids",
]

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
    records: Sequence[Dict[str, Any]], *, filter_empty: bool = True, json_files: Sequence[str] = ()
) -> List[Dict[str, Any]]:
    """
    Copies of ``records`` (detectron2 dataset dicts) without their invalid box annotations, with
    one warning listing them (annotation id, image file, reason: the first few one per line, and a
    count). With ``filter_empty``, a record left without annotations is removed too, as detectron2's
    ``DATALOADER.FILTER_EMPTY_ANNOTATIONS`` removes images without annotations. Valid annotations
    are passed on unchanged; ``records`` are not modified.

    detectron2's COCO loader does not keep annotation ids; for an invalid annotation without
    ``"id"``, the id is looked up (by image id and bbox) in ``json_files``, the COCO files the
    records came from, read only when such an annotation is found.
    """
    invalid, out, removed = [], [], 0  # invalid: (record, annotation, reason)
    for record in records:
        annotations = record.get("annotations")
        if not annotations:
            out.append(record)
            continue
        size = (
            (record["height"], record["width"])
            if "width" in record and "height" in record
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
                invalid.append((record, ann, reason))
        if len(kept) == len(annotations):
            out.append(record)
        elif kept or not filter_empty:
            out.append({**record, "annotations": kept})
        else:
            removed += 1
    if invalid:
        _warn_dropped(invalid, removed, json_files)
    return out


def _bbox_key(image_id: Any, bbox: Any) -> Tuple[str, ...]:
    values = bbox if isinstance(bbox, (list, tuple)) else [bbox]
    return (str(image_id),) + tuple(repr(float(v)) if _is_number(v) else repr(v) for v in values)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _coco_ids(json_files: Sequence[str], wanted: set) -> Dict[Tuple[str, ...], Any]:
    found = {}
    for path in json_files:
        with open(path) as f:
            for ann in json.load(f).get("annotations", []):
                key = _bbox_key(ann.get("image_id"), ann.get("bbox"))
                if key in wanted and "id" in ann:
                    found.setdefault(key, ann["id"])
    return found


def annotation_ids(
    pairs: Sequence[Tuple[Dict[str, Any], Dict[str, Any]]], json_files: Sequence[str] = ()
) -> List[Any]:
    """
    The COCO annotation id of each (record, annotation) pair of detectron2 dataset dicts: the
    annotation's ``"id"``, else looked up by image id and bbox in ``json_files`` (detectron2's
    COCO loader does not keep ids), else "?".
    """
    keys = [_bbox_key(r.get("image_id"), a.get("bbox")) for r, a in pairs]
    wanted = {k for k, (_, a) in zip(keys, pairs) if "id" not in a}
    ids = _coco_ids(json_files, wanted) if wanted and json_files else {}
    return [a.get("id", ids.get(k, "?")) for k, (_, a) in zip(keys, pairs)]


def _warn_dropped(invalid, removed: int, json_files: Sequence[str]) -> None:
    shown = invalid[:_SHOWN]
    ids = annotation_ids([(r, a) for r, a, _ in shown], json_files)
    lines = []
    for (record, ann, reason), ann_id in zip(shown, ids):
        where = f"annotation id {ann_id} in {record.get('file_name')!r}"
        lines.append(f"{where}: bbox {ann.get('bbox')} {reason}")
    if len(invalid) > _SHOWN:
        lines.append(f"... and {len(invalid) - _SHOWN} more")
    tail = f"; {removed} image(s) left without annotations were removed" if removed else ""
    logger.warning(
        f"Dropped {len(invalid)} invalid box annotation(s){tail}:\n  " + "\n  ".join(lines)
    )


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
