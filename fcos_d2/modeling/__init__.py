"""
FCOS model parts; importing this module registers the meta-architecture, the backbone and the
"FCOS" proposal generator.
"""

from .backbone import build_fcos_resnet_fpn_backbone
from .head import FCOSHead, Scale
from .meta_arch import FCOS
from .proposal_generator import FCOSProposalGenerator

__all__ = [
    "FCOS",
    "FCOSHead",
    "FCOSProposalGenerator",
    "Scale",
    "build_fcos_resnet_fpn_backbone",
]
