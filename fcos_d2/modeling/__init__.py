"""
FCOS model parts; importing this module registers the meta-architecture, the backbones (ResNet,
and timm, which needs timm only when built) and the "FCOS" proposal generator.
"""

from .backbone import build_fcos_resnet_fpn_backbone
from .head import FCOSHead, Scale
from .meta_arch import FCOS
from .proposal_generator import FCOSProposalGenerator
from .timm_backbone import build_fcos_timm_fpn_backbone

__all__ = [
    "FCOS",
    "FCOSHead",
    "FCOSProposalGenerator",
    "Scale",
    "build_fcos_resnet_fpn_backbone",
    "build_fcos_timm_fpn_backbone",
]
