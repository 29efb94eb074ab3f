"""
fcos_d2: FCOS as a Detectron2 extension. ``import fcos_d2`` registers the ``FCOS``
meta-architecture and the ``build_fcos_resnet_fpn_backbone`` backbone;
``add_fcos_config(cfg)`` adds the ``MODEL.FCOS`` keys.
"""

from . import data  # registers the synthetic shapes dataset
from .config import add_fcos_config
from .config_loader import load_config
from .modeling import FCOS, FCOSHead, build_fcos_resnet_fpn_backbone
from .predictor import Predictor, check_image

__version__ = "0.1.0"
__all__ = ["add_fcos_config", "load_config", "FCOS", "FCOSHead", "build_fcos_resnet_fpn_backbone"]
__all__ += ["Predictor", "check_image"]
