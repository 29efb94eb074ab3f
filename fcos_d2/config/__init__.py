"""
fcos_d2's configuration, in one package:

- :mod:`.keys`: the vocabulary (``add_fcos_config``: the ``MODEL.FCOS`` and ``MODEL.TIMM`` keys,
  their choices and ranges, and the checks);
- :mod:`.adelaidet`: AdelaiDet FCOS YAML files in fcos_d2's keys;
- :mod:`.loader`: ``load_config`` for YAML and Python (LazyConfig) files with overrides;
- :mod:`.lazy`: what a Python config holds where a YAML file has keys;
- :mod:`.inference`: :class:`InferenceSettings`, what a run needs for inference, read from either
  kind, and the settings commands set on either kind;
- :mod:`.class_thresholds`: the per-class thresholds file.

It imports nothing of fcos_d2 outside itself: the model code reads its vocabulary from here.
"""

from .class_thresholds import read_class_thresholds
from .inference import (
    AnyConfig,
    InferenceSettings,
    build_inference_model,
    class_threshold_values,
    config_text,
    inference_settings,
    set_class_thresholds,
    set_device,
    set_output_dir,
    set_score_thresh,
    set_test_datasets,
    set_weights,
    test_augmentations,
)
from .keys import (
    FCOS_CHOICES,
    INPUT_FORMATS,
    TIMM_NORMS,
    add_fcos_config,
    check_fcos_config,
    check_top_block_config,
    check_values,
)
from .loader import is_lazy_config, load_config

__all__ = [
    "AnyConfig",
    "FCOS_CHOICES",
    "INPUT_FORMATS",
    "InferenceSettings",
    "TIMM_NORMS",
    "add_fcos_config",
    "build_inference_model",
    "check_fcos_config",
    "class_threshold_values",
    "config_text",
    "check_top_block_config",
    "check_values",
    "inference_settings",
    "is_lazy_config",
    "load_config",
    "read_class_thresholds",
    "set_class_thresholds",
    "set_device",
    "set_output_dir",
    "set_score_thresh",
    "set_test_datasets",
    "set_weights",
    "test_augmentations",
]
