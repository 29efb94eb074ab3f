"""Training and checkpoint machinery for reliable runs (exact resume, atomic checkpoints, CPU DDP)."""

from .checkpointer import (
    CheckpointReadError,
    FCOSCheckpointer,
    IncompleteCheckpointError,
    load_for_inference,
)

__all__ = [
    "CheckpointReadError",
    "FCOSCheckpointer",
    "IncompleteCheckpointError",
    "load_for_inference",
]
