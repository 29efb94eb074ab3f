"""Deprecated: ``fcos_d2.layers`` (this alias goes in the next release)."""

import warnings

from ..layers.frozen_bn import *  # noqa: F401,F403
from ..layers.frozen_bn import __all__  # noqa: F401

warnings.warn(
    "fcos_d2.modeling.frozen_bn moved to fcos_d2.layers", DeprecationWarning, stacklevel=2
)
