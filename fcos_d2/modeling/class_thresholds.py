"""Deprecated: ``fcos_d2.config.class_thresholds`` (this alias goes in the next release)."""

import warnings

from ..config.class_thresholds import *  # noqa: F401,F403
from ..config.class_thresholds import __all__  # noqa: F401

warnings.warn(
    "fcos_d2.modeling.class_thresholds moved to fcos_d2.config.class_thresholds",
    DeprecationWarning,
    stacklevel=2,
)
