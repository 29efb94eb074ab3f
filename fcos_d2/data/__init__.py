"""Datasets and data checks. Importing this registers the synthetic ``shapes_{train,val}``."""

from .datasets import check_num_classes, register_shapes

register_shapes()

__all__ = ["check_num_classes", "register_shapes"]
