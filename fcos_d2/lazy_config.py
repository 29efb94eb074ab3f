"""Deprecated: ``fcos_d2.config.lazy`` (this alias goes in the next release)."""

import warnings

from .config.lazy import *  # noqa: F401,F403
from .config.lazy import __all__  # noqa: F401

warnings.warn("fcos_d2.lazy_config moved to fcos_d2.config.lazy", DeprecationWarning, stacklevel=2)
