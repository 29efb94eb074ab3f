"""
Writing a dataset's records in one of the formats read by name (``fcos-d2 data convert``): the
images are copied, the boxes written in the format's own convention (COCO: XYWH pixels; VOC:
1-based inclusive integer pixels; YOLO: normalised centre and size).
"""

import json
import os
import shutil
from typing import Any, Dict, List, Sequence

import yaml
from detectron2.structures import BoxMode

__all__ = ["write_dataset", "FORMATS"]

FORMATS = ("coco", "voc", "yolo")


def _boxes(record: Dict[str, Any]):
    """(XYXY box, class, iscrowd) of a record's annotations."""
    for ann in record.get("annotations", ()):
        box = BoxMode.convert(
            list(ann["bbox"]), ann.get("bbox_mode", BoxMode.XYWH_ABS), BoxMode.XYXY_ABS
        )
        yield box, int(ann["category_id"]), int(ann.get("iscrowd", 0))


def _copy(src: str, folder: str, name: str) -> str:
    os.makedirs(folder, exist_ok=True)
    dst = os.path.join(folder, name)
    shutil.copyfile(src, dst)
    return dst


def _unique_names(records: Sequence[Dict[str, Any]]) -> List[str]:
    """File names for the copies: the original's, with the record's index where two clash."""
    names = [os.path.basename(r["file_name"]) for r in records]
    if len(set(names)) == len(names):
        return names
    return [f"{i:06d}_{n}" for i, n in enumerate(names)]


def _write_coco(records, classes, output: str, split: str) -> str:
    images, annotations = [], []
    for image_id, (record, name) in enumerate(zip(records, _unique_names(records)), 1):
        _copy(record["file_name"], os.path.join(output, split), name)
        images.append(
            {
                "id": image_id,
                "file_name": name,
                "height": record["height"],
                "width": record["width"],
            }
        )
        for (x0, y0, x1, y1), category, crowd in _boxes(record):
            w, h = x1 - x0, y1 - y0
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category + 1,
                    "bbox": [x0, y0, w, h],
                    "area": w * h,
                    "iscrowd": crowd,
                }
            )
    path = os.path.join(output, f"{split}.json")
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(classes)]
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return f"coco:{path}:{os.path.join(output, split)}"


def _voc_object(name: str, box, crowd: int) -> str:
    x0, y0, x1, y1 = box
    # VOC's pixels are 1-based and inclusive: detectron2's x0 = xmin - 1, x1 = xmax
    xmin, ymin, xmax, ymax = round(x0) + 1, round(y0) + 1, round(x1), round(y1)
    return (
        f"  <object>\n    <name>{name}</name>\n    <difficult>{crowd}</difficult>\n"
        f"    <bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax>"
        f"<ymax>{ymax}</ymax></bndbox>\n  </object>\n"
    )


def _write_voc(records, classes, output: str, split: str) -> str:
    ids = []
    for record, name in zip(records, _unique_names(records)):
        _copy(record["file_name"], os.path.join(output, "JPEGImages"), name)
        stem = os.path.splitext(name)[0]
        ids.append(stem)
        objects = "".join(_voc_object(classes[c], b, crowd) for b, c, crowd in _boxes(record))
        os.makedirs(os.path.join(output, "Annotations"), exist_ok=True)
        with open(os.path.join(output, "Annotations", f"{stem}.xml"), "w") as f:
            f.write(
                f"<annotation>\n  <filename>{name}</filename>\n  <size><width>{record['width']}"
                f"</width><height>{record['height']}</height><depth>3</depth></size>\n"
                f"{objects}</annotation>\n"
            )
    os.makedirs(os.path.join(output, "ImageSets", "Main"), exist_ok=True)
    with open(os.path.join(output, "ImageSets", "Main", f"{split}.txt"), "w") as f:
        f.write("".join(f"{i}\n" for i in ids))
    with open(os.path.join(output, "labels.txt"), "w") as f:
        f.write("".join(f"{c}\n" for c in classes))
    return f"voc:{output}:{split}"


def _write_yolo(records, classes, output: str, split: str) -> str:
    crowded = 0
    for record, name in zip(records, _unique_names(records)):
        _copy(record["file_name"], os.path.join(output, "images", split), name)
        w, h = record["width"], record["height"]
        lines = []
        for (x0, y0, x1, y1), category, crowd in _boxes(record):
            if crowd:  # the YOLO format has no crowd boxes
                crowded += 1
                continue
            cx, cy, bw, bh = (x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h
            lines.append(f"{category} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}\n")
        os.makedirs(os.path.join(output, "labels", split), exist_ok=True)
        with open(
            os.path.join(output, "labels", split, os.path.splitext(name)[0] + ".txt"), "w"
        ) as f:
            f.write("".join(lines))
    data_yaml = os.path.join(output, "data.yaml")
    data = {}
    if os.path.isfile(data_yaml):  # another split written before
        with open(data_yaml) as f:
            data = yaml.safe_load(f) or {}
    data.update({"path": ".", split: f"images/{split}", "names": list(classes)})
    with open(data_yaml, "w") as f:
        yaml.safe_dump(data, f, sort_keys=False)
    if crowded:
        import logging

        logging.getLogger(__name__).warning(f"{crowded} crowd boxes left out (YOLO has none)")
    return f"yolo:{data_yaml}:{split}"


def write_dataset(
    records: Sequence[Dict[str, Any]], classes: Sequence[str], fmt: str, output: str, split: str
) -> str:
    """Write ``records`` (detectron2 dataset dicts, contiguous classes naming ``classes``) as
    split ``split`` of a ``fmt`` dataset in ``output``; return its dataset spec."""
    writers = {"coco": _write_coco, "voc": _write_voc, "yolo": _write_yolo}
    if fmt not in writers:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    return writers[fmt](records, list(classes), output, split)
