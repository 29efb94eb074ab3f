"""Training machinery for reliable runs: exact resume, atomic checkpoints, CPU DDP."""

from .checkpointer import (
    CheckpointReadError,
    FCOSCheckpointer,
    IncompleteCheckpointError,
    load_for_inference,
)
from .ddp import create_ddp_model
from .sampler import ResumableBatchSampler, build_resumable_loader
from .trainer import FCOSTrainer, hold_fcos_messages, setup_fcos_logger

__all__ = [
    "CheckpointReadError",
    "FCOSCheckpointer",
    "IncompleteCheckpointError",
    "load_for_inference",
    "create_ddp_model",
    "ResumableBatchSampler",
    "build_resumable_loader",
    "FCOSTrainer",
    "hold_fcos_messages",
    "setup_fcos_logger",
]
