"""
Datasets and data checks. Nothing is registered on import: the commands that use the synthetic
``shapes_{train,val}`` datasets (``train_net.py``, demo, export, benchmark) call
:func:`register_shapes`, as a user's own script can.
"""

from .datasets import check_dataset_classes, check_num_classes, dataset_metadata, register_shapes

__all__ = ["check_dataset_classes", "check_num_classes", "dataset_metadata", "register_shapes"]
