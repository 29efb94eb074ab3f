"""Annotation formats read by name: COCO JSON, Pascal VOC folders and Ultralytics YOLO data
files, registered from a dataset spec (``coco:...``, ``voc:...``, ``yolo:...``) on first use."""

from .spec import (
    DatasetSpec,
    is_dataset_spec,
    register_dataset_spec,
    unregister_dataset_spec,
)

__all__ = [
    "DatasetSpec",
    "is_dataset_spec",
    "register_dataset_spec",
    "unregister_dataset_spec",
]
