"""
Checkpoints: the pure layout table of other FCOS implementations (``layouts``), the one load
hook that converts them (``model_hook``), fcos_d2's checkpointer (atomic writes, strict loading,
resume fall-back: ``checkpointer``) and the conversion CLI (``python -m fcos_d2.checkpoint.convert``).
Imports point one way: layouts <- model_hook, layouts <- convert; the checkpointer needs neither.
"""

import warnings

from .checkpointer import (
    CheckpointReadError,
    FCOSCheckpointer,
    IncompleteCheckpointError,
    atomic_write,
    load_for_inference,
)
from .layouts import LAYOUTS, describe_layout, detect_layout, from_native, to_native
from .model_hook import install_foreign_checkpoint_hook

__all__ = [
    "LAYOUTS",
    "detect_layout",
    "describe_layout",
    "to_native",
    "from_native",
    "install_foreign_checkpoint_hook",
    "CheckpointReadError",
    "IncompleteCheckpointError",
    "FCOSCheckpointer",
    "atomic_write",
    "load_for_inference",
]

# Names of the previous release (kept for one release, with a DeprecationWarning).
_RENAMED = {
    "FORMATS": "LAYOUTS",
    "detect_format": "detect_layout",
    "describe_format": "describe_layout",
}


def __getattr__(name: str):
    if name in _RENAMED:
        new = _RENAMED[name]
        warnings.warn(f"fcos_d2.checkpoint.{name} is now {new}", DeprecationWarning, stacklevel=2)
        if name == "FORMATS":  # its old spelling of the maskrcnn-benchmark layout
            return ("adelaidet", "d2", "official")
        return globals()[new]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
