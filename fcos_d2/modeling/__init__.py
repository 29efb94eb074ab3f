"""FCOS model parts; importing this module registers the meta-architecture and the backbone."""

from .backbone import build_fcos_resnet_fpn_backbone
from .head import FCOSHead, Scale
from .meta_arch import FCOS

__all__ = ["FCOS", "FCOSHead", "Scale", "build_fcos_resnet_fpn_backbone"]
