"""ResNet-FPN backbone with the P6/P7 levels FCOS uses, and that FPN for other backbones."""

from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, FPN, Backbone
from detectron2.modeling.backbone.fpn import LastLevelP6P7

from ..config import check_top_block_config
from .deform_resnet import build_resnet_backbone_torchvision_dcn

__all__ = ["build_fcos_fpn", "build_fcos_resnet_fpn_backbone"]


@BACKBONE_REGISTRY.register()
def build_fcos_resnet_fpn_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> Backbone:
    """
    detectron2's ResNet + FPN, with P6 and P7 computed from ``MODEL.FCOS.TOP_BLOCK_IN_FEATURE``:
    "p5" (the FPN output, as in the FCOS paper), "res5" (C5, as in RetinaNet) or "" (no P6/P7,
    e.g. for FCOS-RT).
    """
    check_top_block_config(cfg)  # the rest of MODEL.FCOS: the detector's from_config
    # Deformable stages (MODEL.RESNETS.DEFORM_ON_PER_STAGE) on torchvision, not detectron2._C.
    bottom_up = build_resnet_backbone_torchvision_dcn(cfg, input_shape)
    return build_fcos_fpn(cfg, bottom_up)


def build_fcos_fpn(cfg: CfgNode, bottom_up: Backbone) -> FPN:
    """
    detectron2's FPN (``MODEL.FPN``) on ``bottom_up``, with P6/P7 from
    ``MODEL.FCOS.TOP_BLOCK_IN_FEATURE``: the one FPN of every fcos_d2 backbone builder.
    """
    source = cfg.MODEL.FCOS.TOP_BLOCK_IN_FEATURE
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    top_block = None
    if source == "p5":
        top_block = LastLevelP6P7(out_channels, out_channels, in_feature="p5")
    elif source == "res5":
        in_channels = bottom_up.output_shape()["res5"].channels
        top_block = LastLevelP6P7(in_channels, out_channels, in_feature="res5")
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=out_channels,
        norm=cfg.MODEL.FPN.NORM,
        top_block=top_block,
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
