"""
Datasets and data checks. Nothing is registered on import: the commands that use the synthetic
``shapes_{train,val}`` datasets (``train_net.py``, demo, export, benchmark) call
:func:`register_shapes`, as a user's own script can. Dataset specs (``coco:...``, ``voc:...``,
``yolo:...``, :mod:`fcos_d2.data.formats`) are registered by fcos_d2 where it meets them.
"""

from .datasets import (
    check_dataset_classes,
    check_num_classes,
    coco_json_file,
    dataset_classes,
    dataset_metadata,
    register_config_datasets,
    register_dataset_specs,
    register_shapes,
)
from .formats import is_dataset_spec, register_dataset_spec

__all__ = [
    "check_dataset_classes",
    "check_num_classes",
    "coco_json_file",
    "dataset_classes",
    "dataset_metadata",
    "is_dataset_spec",
    "register_config_datasets",
    "register_dataset_spec",
    "register_dataset_specs",
    "register_shapes",
]
