"""Training machinery for reliable runs (YAML and LazyConfig configs): exact resume, CPU DDP,
fcos_d2's log set-up."""

import warnings

from .ddp import create_ddp_model
from .lazy import FCOSLazyTrainer, lazy_main, lazy_test
from .loader import build_fcos_train_loader, training_records
from .sampler import ResumableBatchSampler, build_resumable_loader
from .trainer import FCOSTrainer, hold_fcos_messages, setup_fcos_logger

__all__ = [
    "build_fcos_train_loader",
    "create_ddp_model",
    "FCOSLazyTrainer",
    "lazy_main",
    "lazy_test",
    "training_records",
    "ResumableBatchSampler",
    "build_resumable_loader",
    "FCOSTrainer",
    "hold_fcos_messages",
    "setup_fcos_logger",
]

# Checkpoint names this package re-exported in the previous release; their home is
# fcos_d2.checkpoint (kept for one release, with a DeprecationWarning).
_MOVED = (
    "CheckpointReadError",
    "FCOSCheckpointer",
    "IncompleteCheckpointError",
    "load_for_inference",
)


def __getattr__(name: str):
    if name in _MOVED:
        warnings.warn(
            f"fcos_d2.engine.{name} moved to fcos_d2.checkpoint.{name}",
            DeprecationWarning,
            stacklevel=2,
        )
        from .. import checkpoint

        return getattr(checkpoint, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
