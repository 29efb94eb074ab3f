"""
Datasets named by where they are: a dataset name that is a spec is registered (in detectron2's
``DatasetCatalog`` and ``MetadataCatalog``, under the spec itself) the first time fcos_d2 meets it.

    coco:ANNOTATIONS.json:IMAGE_DIR    a COCO instances file and its images
    voc:ROOT:SPLIT                      a Pascal VOC folder (fcos_d2.data.formats.voc)
    yolo:DATA.yaml:SPLIT                an Ultralytics YOLO data file (fcos_d2.data.formats.yolo)

Class names come from the data. A test dataset is registered with the classes of the run's
(first) training dataset, matched by name, so a model's class k means the same class in both
whatever each format's own order; a class the training data lacks is a one-line error.
"""

import json
import logging
import os
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog

from .voc import check_voc_split, load_voc, voc_classes
from .yolo import check_yolo_split, load_yolo, yolo_classes

__all__ = [
    "DatasetSpec",
    "is_dataset_spec",
    "register_dataset_spec",
    "unregister_dataset_spec",
]

logger = logging.getLogger(__name__)

KINDS = ("coco", "voc", "yolo")
FORMS = "coco:ANNOTATIONS.json:IMAGE_DIR, voc:ROOT:SPLIT or yolo:DATA.yaml:SPLIT"

# spec name -> the classes it was registered with (a user's own registration is left alone)
_registered: Dict[str, Tuple[str, ...]] = {}


class DatasetSpec(NamedTuple):
    """A parsed spec: ``kind`` (coco, voc, yolo), ``path`` (JSON file, VOC root, data YAML)
    and ``part`` (image folder or split)."""

    kind: str
    path: str
    part: str

    @classmethod
    def parse(cls, name: str) -> "DatasetSpec":
        kind, _, rest = name.partition(":")
        path, _, part = rest.rpartition(":")
        if kind not in KINDS or not path or not part:
            raise ValueError(f"dataset {name!r} is not a spec of the form {FORMS}")
        return cls(kind, path, part)

    def classes(self) -> List[str]:
        """Class names in the data's own order (COCO: by category id); read once per process
        while the files they come from are unchanged (a run asks at each step that registers
        its datasets, and a VOC folder's are every annotation file's)."""
        if self.kind == "voc":
            stamps = (os.path.join(self.path, "labels.txt"), os.path.join(self.path, "Annotations"))
            return list(_cached(("voc", self.path), stamps, lambda: voc_classes(self.path)))
        if self.kind == "yolo":
            return list(_cached(("yolo", self.path), (self.path,), lambda: yolo_classes(self.path)))
        return [c["name"] for c in _coco_categories(self.path)]

    def check(self) -> None:
        """Raise, naming it, if a file or folder the spec names is missing (cheap: nothing
        beyond the class names and the split's listing is read)."""
        if self.kind == "voc":
            check_voc_split(self.path, self.part)
        elif self.kind == "yolo":
            check_yolo_split(self.path, self.part)
        elif not os.path.isdir(self.part):
            raise FileNotFoundError(f"image folder {self.part!r} of {self.path!r} does not exist")

    def load(self, name: str) -> List[Dict[str, Any]]:
        """Records with contiguous classes in :meth:`classes` order."""
        if self.kind == "voc":
            return load_voc(self.path, self.part, name)
        if self.kind == "yolo":
            return load_yolo(self.path, self.part, name)
        return _load_coco(self.path, self.part)


def is_dataset_spec(name: str) -> bool:
    """Whether ``name`` has a spec's form (a kind of :data:`KINDS`, then two fields)."""
    try:
        DatasetSpec.parse(name)
    except ValueError:
        return False
    return True


# (kind, path) -> (modification times of the files it was read from, value)
_cache: Dict[Tuple[str, str], Tuple[Tuple[float, ...], Any]] = {}


def _cached(key: Tuple[str, str], stamps: Sequence[str], compute: Callable[[], Any]) -> Any:
    """``compute()``, again only when a file of ``stamps`` changed (or appeared or went)."""
    times = tuple(os.path.getmtime(p) if os.path.exists(p) else -1.0 for p in stamps)
    if key not in _cache or _cache[key][0] != times:
        _cache[key] = (times, compute())
    return _cache[key][1]


def _coco_categories(json_file: str) -> List[Dict[str, Any]]:
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"COCO annotation file {json_file!r} does not exist")
    return _cached(("coco", json_file), (json_file,), lambda: _read_categories(json_file))


def _read_categories(json_file: str) -> List[Dict[str, Any]]:
    """The categories of a COCO file, sorted by id; a one-line error for a bad file."""
    try:
        with open(json_file) as f:
            categories = json.load(f).get("categories")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
        raise ValueError(f"COCO annotation file {json_file!r} is not COCO JSON: {e}") from None
    if not categories:
        raise ValueError(f"COCO annotation file {json_file!r} has no 'categories'")
    bad = [c for c in categories if not isinstance(c, dict) or "id" not in c or "name" not in c]
    if bad:
        raise ValueError(f"COCO annotation file {json_file!r}: category {bad[0]!r} lacks id/name")
    return sorted(categories, key=lambda c: c["id"])


def _load_coco(json_file: str, image_root: str) -> List[Dict[str, Any]]:
    from detectron2.data.datasets import load_coco_json

    if not os.path.isdir(image_root):
        raise FileNotFoundError(f"image folder {image_root!r} of {json_file!r} does not exist")
    ids = {c["id"]: i for i, c in enumerate(_coco_categories(json_file))}
    records = load_coco_json(json_file, image_root)  # no dataset name: the file's category ids
    if not records:
        raise ValueError(f"COCO annotation file {json_file!r} has no images")
    for record in records:
        for ann in record.get("annotations", ()):
            if ann["category_id"] not in ids:
                raise ValueError(
                    f"COCO annotation file {json_file!r}: an annotation of image "
                    f"{record.get('image_id')!r} has category_id {ann['category_id']}, which "
                    "'categories' does not list"
                )
            ann["category_id"] = ids[ann["category_id"]]
    return records


def _remapped(spec: DatasetSpec, name: str, index: Optional[List[int]]) -> List[Dict[str, Any]]:
    records = spec.load(name)
    if index is not None:
        for record in records:
            for ann in record["annotations"]:
                ann["category_id"] = index[ann["category_id"]]
    return records


def register_dataset_spec(name: str, classes: Optional[Sequence[str]] = None) -> None:
    """
    Register the spec ``name`` (see the module's docstring) with class names ``classes`` (by
    default the data's own); the data's classes are matched to them by name, and one of them
    missing from ``classes`` is a ValueError naming it. Registering again with other classes
    replaces the earlier registration (without ``classes``, it is kept); a dataset of this name
    the user registered is kept.
    """
    if classes is None and name in _registered:
        return
    spec = DatasetSpec.parse(name)
    own = spec.classes()
    spec.check()
    classes = tuple(own if classes is None else classes)
    if _registered.get(name) == classes:
        return
    if name in DatasetCatalog.list():
        if name not in _registered:
            return  # the user's own registration under this name
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    missing = [c for c in own if c not in classes]
    if missing:
        raise ValueError(
            f"dataset {name!r} has class {missing[0]!r}, which the training data "
            f"({', '.join(classes)}) does not have"
        )
    index = None if tuple(own) == classes else [classes.index(c) for c in own]
    DatasetCatalog.register(name, lambda: _remapped(spec, name, index))
    metadata: Dict[str, Any] = {"thing_classes": list(classes), "evaluator_type": "coco"}
    if spec.kind == "coco" and set(own) == set(classes):
        # evaluation against the file itself, with its category ids (they map onto every
        # class: detectron2's evaluator needs that); a file lacking classes is converted instead
        categories = _coco_categories(spec.path)
        metadata.update(
            json_file=spec.path,
            image_root=spec.part,
            thing_dataset_id_to_contiguous_id={
                c["id"]: classes.index(c["name"]) for c in categories
            },
        )
    MetadataCatalog.get(name).set(**metadata)
    _registered[name] = classes
    logger.info(f"registered dataset {name!r}: {len(classes)} classes ({', '.join(classes)})")


def unregister_dataset_spec(name: str) -> None:
    """Remove the spec ``name`` registered by fcos_d2 (its files are read again on next use)."""
    if _registered.pop(name, None) is not None:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
