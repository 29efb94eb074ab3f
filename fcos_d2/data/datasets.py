"""Registration of the synthetic shapes dataset and of dataset specs with matched class names,
COCO files of any dataset for evaluation, and dataset/config consistency checks."""

import logging
import os
import re
from typing import List, Optional, Sequence

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

from ..config import AnyConfig, inference_settings
from .formats import DatasetSpec, is_dataset_spec, register_dataset_spec

__all__ = [
    "register_shapes",
    "check_num_classes",
    "check_dataset_classes",
    "dataset_metadata",
    "coco_json_file",
    "register_config_datasets",
    "register_dataset_specs",
    "dataset_classes",
]

logger = logging.getLogger(__name__)


def register_shapes(root: Optional[str] = None, replace: bool = True) -> None:
    """
    Register ``shapes_train`` and ``shapes_val`` (made by ``python -m fcos_d2.data.shapes``) under
    ``root``, by default ``$DETECTRON2_DATASETS/shapes`` like detectron2's built-in datasets.
    A dataset already registered under one of these names is replaced, or with
    ``replace=False`` kept (with a log line).
    """
    root = root or os.path.join(os.getenv("DETECTRON2_DATASETS", "datasets"), "shapes")
    for split in ("train", "val"):
        name = f"shapes_{split}"
        if name in DatasetCatalog.list():
            if not replace:
                logger.info("Dataset %r is already registered; fcos_d2 keeps it", name)
                continue
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        json_file = os.path.join(root, f"{split}.json")
        register_coco_instances(name, {}, json_file, os.path.join(root, split))


def check_num_classes(cfg: CfgNode) -> None:
    """
    Raise if a training dataset has more categories than ``MODEL.FCOS.NUM_CLASSES``.
    Call after the datasets were loaded (loading COCO JSON fills ``thing_classes``).
    """
    check_dataset_classes(cfg.DATASETS.TRAIN, cfg.MODEL.FCOS.NUM_CLASSES)


def check_dataset_classes(
    names: Sequence[str], num_classes: int, key: str = "MODEL.FCOS.NUM_CLASSES"
) -> None:
    """Raise (naming ``key``) if a dataset of ``names`` has more categories than
    ``num_classes``, or a dataset spec (whose classes come from its files) another number;
    datasets whose categories are not known yet are not checked."""
    for name in names:
        classes = MetadataCatalog.get(name).get("thing_classes", None)
        if classes is not None and is_dataset_spec(name) and len(classes) != num_classes:
            raise ValueError(
                f"{key}={num_classes} but dataset {name!r} has {len(classes)} classes "
                f"({', '.join(classes)}): set {key} {len(classes)}"
            )
        if classes is not None and len(classes) > num_classes:
            raise ValueError(
                f"{key}={num_classes} is smaller than the "
                f"{len(classes)} categories of training dataset {name!r}"
            )


def dataset_metadata(name: str):
    """
    The metadata of dataset ``name``. A dataset registered with ``register_coco_instances`` has
    its class names and category ids only once loaded, so it is loaded here if they are missing
    (a dataset whose files are not there keeps its metadata as it is, with a log line).
    """
    register_dataset_specs([name])  # a spec is registered on first use
    metadata = MetadataCatalog.get(name)
    if not hasattr(metadata, "thing_classes") and name in DatasetCatalog.list():
        try:
            DatasetCatalog.get(name)  # detectron2's loader fills in the metadata
        except (OSError, ValueError, KeyError) as e:
            logger.warning(f"dataset {name!r} could not be loaded, no class names: {e}")
    return metadata


def coco_json_file(name: str, cache_dir: str) -> str:
    """
    The COCO file of dataset ``name``'s ground truth: its metadata's ``json_file`` if there is
    one, else the dataset converted by detectron2's ``convert_to_coco_json`` into ``cache_dir``
    (under a file name made of the dataset name, whose ``/`` and ``:`` a spec has), which becomes
    its ``json_file`` (what ``COCOEvaluator`` reads).
    """
    from detectron2.data.datasets.coco import convert_to_coco_json

    metadata = dataset_metadata(name)
    json_file = metadata.get("json_file", None)
    if json_file and os.path.isfile(json_file):
        return json_file
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")
    json_file = os.path.join(cache_dir, f"{safe}_coco_format.json")
    os.makedirs(cache_dir, exist_ok=True)
    convert_to_coco_json(name, json_file, allow_cached=False)  # never another run's stale copy
    metadata.set(json_file=json_file)
    return json_file


def register_config_datasets(cfg: AnyConfig, train: bool = True) -> None:
    """Register the dataset specs among the config's test (and with ``train``, training)
    datasets, with the classes of its first training dataset (see
    :func:`~fcos_d2.data.formats.register_dataset_specs`)."""
    settings = inference_settings(cfg)
    names = (settings.train_datasets if train else ()) + settings.test_datasets
    first = settings.train_datasets[0] if settings.train_datasets else None
    register_dataset_specs(names, classes_from=first)


def dataset_classes(name: str) -> Optional[List[str]]:
    """The class names of dataset ``name``: a spec's from its files, else the registered
    metadata's (loading the dataset if its loader fills them); None where unknown."""
    if is_dataset_spec(name):
        return DatasetSpec.parse(name).classes()
    classes = dataset_metadata(name).get("thing_classes", None)
    return None if classes is None else list(classes)


def register_dataset_specs(
    names: Sequence[str],
    classes_from: Optional[str] = None,
    classes: Optional[Sequence[str]] = None,
) -> None:
    """
    Register the specs among ``names`` (other names are left as they are), with the class
    names ``classes`` (e.g. an exported model's), or those of dataset ``classes_from`` (the
    run's first training dataset: a spec, or a registered dataset whose metadata has them)
    where they can be read, else each with its own.
    """
    specs = [n for n in names if is_dataset_spec(n)]
    if not specs:
        return
    reference = list(classes) if classes else None
    if classes_from and reference is None:
        try:
            reference = dataset_classes(classes_from)
        except (OSError, ValueError) as e:  # e.g. evaluating where the training data is not
            if classes_from in specs:
                raise
            logger.warning(
                f"classes of training dataset {classes_from!r} unknown ({e}): datasets "
                f"{', '.join(specs)} keep their own class order"
            )
    for name in specs:
        register_dataset_spec(name, reference)
