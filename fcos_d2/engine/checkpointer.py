"""Deprecated: ``fcos_d2.checkpoint`` (this alias goes in the next release)."""

import warnings

from ..checkpoint.checkpointer import *  # noqa: F401,F403
from ..checkpoint.checkpointer import __all__  # noqa: F401

warnings.warn(
    "fcos_d2.engine.checkpointer moved to fcos_d2.checkpoint", DeprecationWarning, stacklevel=2
)
