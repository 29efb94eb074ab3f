"""Registration of the synthetic shapes dataset, and dataset/config consistency checks."""

import logging
import os
from typing import Optional, Sequence

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

__all__ = ["register_shapes", "check_num_classes", "check_dataset_classes", "dataset_metadata"]

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
    ``num_classes``; datasets whose categories are not known yet are not checked."""
    for name in names:
        classes = MetadataCatalog.get(name).get("thing_classes", None)
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
    metadata = MetadataCatalog.get(name)
    if not hasattr(metadata, "thing_classes") and name in DatasetCatalog.list():
        try:
            DatasetCatalog.get(name)  # detectron2's loader fills in the metadata
        except (OSError, ValueError, KeyError) as e:
            logger.warning(f"dataset {name!r} could not be loaded, no class names: {e}")
    return metadata
