"""
The Pascal VOC layout: ``ROOT/ImageSets/Main/SPLIT.txt`` (image ids), ``ROOT/Annotations/ID.xml``
and the image ``ROOT/JPEGImages/ID.*`` (any suffix). Class names: ``ROOT/labels.txt`` (one per
line) if present, else every ``<name>`` of ``ROOT/Annotations``, sorted, so all splits of one
root share them. Boxes are VOC's 1-based inclusive pixels, turned into detectron2's 0-based
corners as detectron2's own VOC reader does (x0 - 1, y0 - 1); ``<difficult>1`` boxes are kept
as crowd boxes (ignored by COCO evaluation and by training, as VOC's evaluation ignores them).

Written here rather than with ``detectron2.data.datasets.load_voc_instances``, which reads only
``.jpg`` images, needs the class list up front (VOC's 20 by default) and stops at the first bad
element; the box convention is the same.
"""

import glob
import os
import xml.parsers.expat
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .common import IMAGE_SUFFIXES, BadLines, box_record, image_size

__all__ = ["voc_classes", "load_voc", "check_voc_split"]


class _Node:
    """An XML element: tag, text, children and the line it starts on."""

    def __init__(self, tag: str, line: int):
        self.tag, self.line, self.text, self.children = tag, line, "", []

    def find(self, tag: str) -> Optional["_Node"]:
        return next((c for c in self.children if c.tag == tag), None)

    def findall(self, tag: str) -> List["_Node"]:
        return [c for c in self.children if c.tag == tag]

    def value(self, tag: str) -> Optional[str]:
        node = self.find(tag)
        return None if node is None else node.text.strip()


def _parse_xml(path: str) -> _Node:
    """The root element of ``path`` with line numbers (ElementTree does not keep them);
    ValueError naming the file and line for XML that does not parse."""
    parser = xml.parsers.expat.ParserCreate()
    stack: List[_Node] = []
    roots: List[_Node] = []

    def start(tag, _attrs):
        node = _Node(tag, parser.CurrentLineNumber)
        (stack[-1].children if stack else roots).append(node)
        stack.append(node)

    def end(_tag):
        stack.pop()

    def text(data):
        if stack:
            stack[-1].text += data

    parser.StartElementHandler, parser.EndElementHandler = start, end
    parser.CharacterDataHandler = text
    try:
        with open(path, "rb") as f:
            parser.ParseFile(f)
    except xml.parsers.expat.ExpatError as e:
        raise ValueError(
            f"{path}:{e.lineno}: not valid XML ({xml.parsers.expat.errors.messages[e.code]})"
        )
    return roots[0]


def _label_file(root: str) -> str:
    return os.path.join(root, "labels.txt")


def voc_classes(root: str) -> List[str]:
    """The class names of the VOC folder ``root`` (see the module's docstring)."""
    if os.path.isfile(_label_file(root)):
        with open(_label_file(root), encoding="utf-8-sig") as f:
            names = [line.strip() for line in f if line.strip()]
        if len(set(names)) != len(names):
            raise ValueError(f"{_label_file(root)} names a class twice")
        return names
    names = set()
    for path in glob.glob(os.path.join(root, "Annotations", "*.xml")):
        try:
            tree = _parse_xml(path)
        except ValueError:
            continue  # reported when its split is read
        names.update(n for n in (o.value("name") for o in tree.findall("object")) if n)
    if not names:
        raise ValueError(
            f"VOC folder {root!r}: no labels.txt and no <object><name> in Annotations/"
        )
    return sorted(names)


def _split_ids(root: str, split: str) -> List[str]:
    path = os.path.join(root, "ImageSets", "Main", f"{split}.txt")
    if not os.path.isfile(path):
        have = sorted(
            os.path.splitext(os.path.basename(p))[0]
            for p in glob.glob(os.path.join(root, "ImageSets", "Main", "*.txt"))
        )
        raise FileNotFoundError(f"VOC split file {path!r} does not exist (splits: {have})")
    with open(path, encoding="utf-8-sig") as f:
        return [line.split()[0] for line in f if line.strip()]


def check_voc_split(root: str, split: str) -> None:
    """Raise, naming it, if the split file is missing."""
    _split_ids(root, split)


def _images(root: str) -> Dict[str, str]:
    """Image files of ``JPEGImages`` by id (file name without suffix)."""
    found = glob.glob(os.path.join(root, "JPEGImages", "*"))
    return {
        os.path.splitext(os.path.basename(p))[0]: p
        for p in sorted(found)
        if p.lower().endswith(IMAGE_SUFFIXES)
    }


def _box(obj: _Node, classes: Sequence[str]) -> Tuple[Tuple[float, ...], int, int]:
    name = obj.value("name")
    if not name:
        raise ValueError("<object> without <name>")
    if name not in classes:
        raise ValueError(f"class {name!r} is not one of the dataset's classes")
    box = obj.find("bndbox")
    if box is None:
        raise ValueError(f"<object> {name!r} without <bndbox>")
    try:
        x0, y0, x1, y1 = (float(box.value(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
    except (TypeError, ValueError):
        raise ValueError(f"<bndbox> of {name!r} lacks a number among xmin, ymin, xmax, ymax")
    difficult = obj.value("difficult") == "1"
    return (x0 - 1.0, y0 - 1.0, x1, y1), classes.index(name), int(difficult)


def load_voc(root: str, split: str, dataset_name: str) -> List[Dict[str, Any]]:
    """The records of ``split`` (contiguous classes in :func:`voc_classes` order); a malformed
    ``<object>`` is dropped and named (file and line); an annotation file that does not parse
    drops its image (its boxes are unknown), named too."""
    classes = voc_classes(root)
    images = _images(root)
    bad = BadLines(dataset_name)
    records = []
    for number, image_id in enumerate(_split_ids(root, split)):
        xml_path = os.path.join(root, "Annotations", f"{image_id}.xml")
        if image_id not in images:
            raise FileNotFoundError(
                f"VOC image {image_id!r} of split {split!r} is not in JPEGImages/"
            )
        try:
            tree = _parse_xml(xml_path)
        except FileNotFoundError:
            raise FileNotFoundError(f"VOC annotation file {xml_path!r} does not exist") from None
        except ValueError as e:
            bad.add(xml_path, None, f"{e}; image {image_id!r} left out")
            continue
        try:
            height, width = int(tree.find("size").value("height")), int(
                tree.find("size").value("width")
            )
        except (AttributeError, TypeError, ValueError):
            height, width = 0, 0
        if height <= 0 or width <= 0:  # no usable <size>: the image's header has it
            height, width = image_size(images[image_id])
        boxes = []
        for obj in tree.findall("object"):
            try:
                boxes.append(_box(obj, classes))
            except ValueError as e:
                bad.add(xml_path, obj.line, str(e))
        # integer image ids: COCO evaluation (faster-coco-eval's) takes no others
        records.append(box_record(images[image_id], number, height, width, boxes))
    bad.report()
    if not records:
        raise ValueError(f"VOC split {split!r} of {root!r} has no images")
    return records
