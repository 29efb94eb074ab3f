"""
The Ultralytics YOLO layout: a data YAML (``path``, ``train`` / ``val`` / ``test``, ``names`` as a
list or a mapping), images under ``.../images/...`` and one ``.../labels/....txt`` beside each,
with a line ``class cx cy w h`` per box (normalised to the image; a polygon ``class x1 y1 x2 y2
...`` gives its enclosing box). An image without a label file has no boxes.
"""

import glob
import os
from typing import Any, Dict, List, Sequence, Tuple

import yaml

from .common import IMAGE_SUFFIXES, BadLines, box_record, image_size

__all__ = ["yolo_classes", "load_yolo", "check_yolo_split"]

SPLITS = ("train", "val", "test")


def _read_yaml(data_yaml: str) -> Dict[str, Any]:
    if not os.path.isfile(data_yaml):
        raise FileNotFoundError(f"YOLO data file {data_yaml!r} does not exist")
    try:
        with open(data_yaml) as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ValueError(f"YOLO data file {data_yaml!r} is not YAML: {str(e).splitlines()[0]}")
    if not isinstance(data, dict):
        raise ValueError(f"YOLO data file {data_yaml!r} is not a mapping of keys")
    return data


def yolo_classes(data_yaml: str) -> List[str]:
    """The class names of ``names`` (a list, or a mapping of 0..K-1 to names)."""
    names = _read_yaml(data_yaml).get("names")
    if isinstance(names, dict):
        try:
            index = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError):
            index = {}
        if sorted(index) != list(range(len(names))):
            raise ValueError(
                f"YOLO data file {data_yaml!r}: 'names' maps {sorted(names)}, not 0..{len(names)-1}"
            )
        return [index[i] for i in range(len(index))]
    if isinstance(names, list) and names:
        return [str(n) for n in names]
    raise ValueError(f"YOLO data file {data_yaml!r} has no class 'names' (a list or a mapping)")


def _root(data_yaml: str, data: Dict[str, Any]) -> str:
    # a relative 'path' is taken beside the data file, else (Ultralytics' own rule) from the
    # working directory; no 'path': the data file's folder
    here = os.path.dirname(os.path.abspath(data_yaml))
    path = data.get("path")
    if not path:
        return here
    path = os.path.expanduser(str(path))
    if os.path.isabs(path) or not os.path.exists(path):
        return os.path.join(here, path)
    return path if not os.path.exists(os.path.join(here, path)) else os.path.join(here, path)


def _split_entries(data_yaml: str, split: str) -> List[str]:
    """The paths (folders or image lists) of ``split``; an error naming what is missing."""
    data = _read_yaml(data_yaml)
    entries = data.get(split)
    if not entries:
        present = [s for s in SPLITS if data.get(s)]
        raise ValueError(
            f"YOLO data file {data_yaml!r} has no split {split!r} (it has {', '.join(present)})"
        )
    root = os.path.normpath(_root(data_yaml, data))
    paths = [
        os.path.normpath(os.path.join(root, str(e)))
        for e in (entries if isinstance(entries, list) else [entries])
    ]
    for path in paths:
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"YOLO data file {data_yaml!r}: {split} {path!r} does not exist"
            )
    return paths


def check_yolo_split(data_yaml: str, split: str) -> None:
    """Raise, naming it, if ``split`` or its folder is missing."""
    _split_entries(data_yaml, split)


def _split_images(data_yaml: str, split: str) -> List[str]:
    images: List[str] = []
    for path in _split_entries(data_yaml, split):
        if os.path.isdir(path):
            found = glob.glob(os.path.join(path, "**", "*"), recursive=True)
            images += sorted(p for p in found if p.lower().endswith(IMAGE_SUFFIXES))
        else:  # a list of image files, relative to the list's folder
            with open(path, encoding="utf-8-sig") as f:
                lines = [line.strip() for line in f if line.strip()]
            base = os.path.dirname(path)
            images += [line if os.path.isabs(line) else os.path.join(base, line) for line in lines]
    return images


def label_file(image: str) -> str:
    """The label file of ``image``: its last ``images`` folder swapped for ``labels``, ``.txt``."""
    sep = os.sep
    head, found, tail = image.rpartition(f"{sep}images{sep}")
    path = f"{head}{sep}labels{sep}{tail}" if found else image
    return os.path.splitext(path)[0] + ".txt"


def _parse_line(line: str, num_classes: int) -> Tuple[Tuple[float, ...], int]:
    """(normalised XYXY box, class) of one label line; ValueError saying what is wrong."""
    fields = line.split()
    if len(fields) < 5 or (len(fields) > 5 and len(fields) % 2 == 0):
        raise ValueError(f"{len(fields)} values, expected 5 (class cx cy w h) or a polygon")
    try:
        category = float(fields[0])
        values = [float(v) for v in fields[1:]]
    except ValueError:
        raise ValueError(f"not numbers: {line.strip()!r}") from None
    if category != int(category) or not 0 <= category < num_classes:
        raise ValueError(f"class {fields[0]} is not one of 0..{num_classes - 1}")
    if any(not (-0.01 <= v <= 1.01) for v in values):  # a rounding's width past the edge
        raise ValueError("coordinates outside 0..1 (they are normalised to the image)")
    if len(values) == 4:
        cx, cy, w, h = values
        box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    else:
        xs, ys = values[0::2], values[1::2]
        box = (min(xs), min(ys), max(xs), max(ys))
    return tuple(min(max(v, 0.0), 1.0) for v in box), int(category)


def load_yolo(data_yaml: str, split: str, dataset_name: str) -> List[Dict[str, Any]]:
    """The records of ``split`` (contiguous classes in the order of ``names``); malformed label
    lines are dropped and named (file and line) in one warning."""
    num_classes = len(yolo_classes(data_yaml))
    bad = BadLines(dataset_name)
    records = []
    for image_id, image in enumerate(_split_images(data_yaml, split)):
        height, width = image_size(image)
        boxes: List[Tuple[Sequence[float], int, int]] = []
        labels = label_file(image)
        if os.path.isfile(labels):
            with open(labels, encoding="utf-8-sig") as f:
                for number, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        (x0, y0, x1, y1), category = _parse_line(line, num_classes)
                    except ValueError as e:
                        bad.add(labels, number, str(e))
                        continue
                    boxes.append(((x0 * width, y0 * height, x1 * width, y1 * height), category, 0))
        records.append(box_record(image, image_id, height, width, boxes))
    bad.report()
    if not records:
        raise ValueError(f"YOLO data file {data_yaml!r}: split {split!r} has no images")
    return records
