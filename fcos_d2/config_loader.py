"""Deprecated: ``fcos_d2.config.loader`` and ``fcos_d2.config.adelaidet`` (this alias goes in
the next release)."""

import warnings

from .config.adelaidet import is_adelaidet_config, translate_adelaidet
from .config.loader import is_lazy_config, load_config

__all__ = ["load_config", "is_lazy_config", "is_adelaidet_config", "translate_adelaidet"]

warnings.warn(
    "fcos_d2.config_loader moved to fcos_d2.config (loader, adelaidet)",
    DeprecationWarning,
    stacklevel=2,
)
