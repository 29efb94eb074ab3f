"""
Datasets and data checks. Importing this registers the synthetic ``shapes_{train,val}`` demo
datasets, unless datasets of those names are registered already (those are kept).
"""

from .datasets import check_num_classes, register_shapes

register_shapes(replace=False)

__all__ = ["check_num_classes", "register_shapes"]
