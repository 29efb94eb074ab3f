"""
Deformable ResNet bottleneck blocks on torchvision's ``deform_conv2d``: detectron2's
``DeformBottleneckBlock`` needs detectron2's compiled ops (``detectron2._C``), these do not.
Parameter names are detectron2's (``conv2_offset``, ``conv2.weight``, ``conv2.norm.*``), so
detectron2 and AdelaiDet DCN checkpoints load unchanged.

Offset layout (detectron2's compiled op and torchvision's are the same): for deformable group g
and kernel tap t = i * kw + j, channel g * 2 * kh * kw + 2 * t is the vertical (y) offset and the
next channel the horizontal (x) one; the mask has channel g * kh * kw + t.

Shape shorthand: N images, C channels, H x W feature size, G deformable groups.
"""

from typing import Optional

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode
from detectron2.layers import CNNBlockBase, Conv2d, ShapeSpec
from detectron2.modeling.backbone.resnet import BottleneckBlock, ResNet, build_resnet_backbone
from torch import Tensor, nn
from torch.nn.modules.utils import _pair
from torchvision.ops import deform_conv2d

__all__ = [
    "DeformConvWithNorm",
    "TorchvisionDeformBottleneckBlock",
    "build_resnet_backbone_torchvision_dcn",
]


class DeformConvWithNorm(nn.Module):
    """
    A (modulated) deformable conv followed by an optional norm, holding ``weight``, ``bias``
    (None without bias) and ``norm`` as detectron2's ``DeformConv`` / ``ModulatedDeformConv`` do.
    ``forward(x, offset, mask=None)``: x (N, C, H, W), offset (N, 2 * G * kh * kw, H', W'),
    mask (N, G * kh * kw, H', W') or None (unmodulated).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = False,
        norm: Optional[nn.Module] = None,
    ):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"deformable conv: channels {in_channels}->{out_channels} not divisible by "
                f"groups={groups}"
            )
        self.stride, self.padding, self.dilation = _pair(stride), _pair(padding), _pair(dilation)
        self.weight = nn.Parameter(
            torch.empty(out_channels, in_channels // groups, *_pair(kernel_size))
        )
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.norm = norm
        nn.init.kaiming_uniform_(self.weight, nonlinearity="relu")

    def forward(self, x: Tensor, offset: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        # torchvision's order: input, offset, weight, bias, stride, padding, dilation, mask.
        args = (self.weight, self.bias, self.stride, self.padding, self.dilation, mask)
        x = deform_conv2d(x, offset, *args)
        return x if self.norm is None else self.norm(x)


class TorchvisionDeformBottleneckBlock(CNNBlockBase):
    """
    detectron2's ``DeformBottleneckBlock`` (same constructor arguments, parameters and results)
    with the 3x3 conv on torchvision: 1x1 conv1, deformable 3x3 conv2 whose offsets (and, when
    modulated, mask logits) come from the plain 3x3 conv ``conv2_offset``, 1x1 conv3, shortcut.
    ``conv2_offset`` starts at zero: zero offsets (and, modulated, a mask of 0.5), as detectron2.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        bottleneck_channels: int,
        stride: int = 1,
        num_groups: int = 1,
        norm: str = "BN",
        stride_in_1x1: bool = False,
        dilation: int = 1,
        deform_modulated: bool = False,
        deform_num_groups: int = 1,
    ):
        super().__init__(in_channels, out_channels, stride)
        # The plain block builds and initialises conv1, conv3, the shortcut and the 3x3 weights.
        plain = BottleneckBlock(
            in_channels,
            out_channels,
            bottleneck_channels=bottleneck_channels,
            stride=stride,
            num_groups=num_groups,
            norm=norm,
            stride_in_1x1=stride_in_1x1,
            dilation=dilation,
        )
        self.deform_modulated = deform_modulated
        self.num_offsets = 2 * 9 * deform_num_groups  # (y, x) per 3x3 tap and group
        self.shortcut = plain.shortcut
        self.conv1 = plain.conv1
        stride_3x3 = plain.conv2.stride
        per_tap = 3 if deform_modulated else 2  # y, x (and mask)
        self.conv2_offset = Conv2d(
            bottleneck_channels,
            per_tap * 9 * deform_num_groups,
            kernel_size=3,
            stride=stride_3x3,
            padding=dilation,
            dilation=dilation,
        )
        self.conv2 = DeformConvWithNorm(
            bottleneck_channels,
            bottleneck_channels,
            3,
            stride=stride_3x3,
            padding=dilation,
            dilation=dilation,
            groups=num_groups,
            norm=plain.conv2.norm,
        )
        with torch.no_grad():
            self.conv2.weight.copy_(plain.conv2.weight)
        self.conv3 = plain.conv3
        nn.init.zeros_(self.conv2_offset.weight)
        nn.init.zeros_(self.conv2_offset.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu_(self.conv1(x))
        offset = self.conv2_offset(out)
        mask = None
        if self.deform_modulated:
            # detectron2's split: the first two thirds are offsets, the last third mask logits.
            offset, mask = offset[:, : self.num_offsets], offset[:, self.num_offsets :].sigmoid()
        out = F.relu_(self.conv2(out, offset, mask))
        out = self.conv3(out)
        out = out + (x if self.shortcut is None else self.shortcut(x))
        return F.relu_(out)


def _deformable_like(block: CNNBlockBase, resnets: CfgNode) -> TorchvisionDeformBottleneckBlock:
    """A deformable block with the channels, stride and dilation of a plain bottleneck block."""
    return TorchvisionDeformBottleneckBlock(
        block.in_channels,
        block.out_channels,
        bottleneck_channels=block.conv1.out_channels,
        stride=block.stride,
        num_groups=resnets.NUM_GROUPS,
        norm=resnets.NORM,
        stride_in_1x1=resnets.STRIDE_IN_1X1,
        dilation=block.conv2.dilation[0],
        deform_modulated=resnets.DEFORM_MODULATED,
        deform_num_groups=resnets.DEFORM_NUM_GROUPS,
    )


def build_resnet_backbone_torchvision_dcn(cfg: CfgNode, input_shape: ShapeSpec) -> ResNet:
    """
    detectron2's ``build_resnet_backbone``, except that the stages switched on in
    ``MODEL.RESNETS.DEFORM_ON_PER_STAGE`` (res2..res5) are made of
    :class:`TorchvisionDeformBottleneckBlock` (``DEFORM_MODULATED``, ``DEFORM_NUM_GROUPS``).
    """
    resnets = cfg.MODEL.RESNETS
    deform = list(resnets.DEFORM_ON_PER_STAGE)
    if not any(deform):
        return build_resnet_backbone(cfg, input_shape)
    if len(deform) != 4:
        raise ValueError(f"MODEL.RESNETS.DEFORM_ON_PER_STAGE={deform} needs 4 entries (res2..res5)")
    if resnets.DEPTH < 50:
        raise ValueError(
            f"MODEL.RESNETS.DEFORM_ON_PER_STAGE={deform}: deformable stages need bottleneck "
            f"blocks (DEPTH >= 50), got DEPTH={resnets.DEPTH}"
        )
    plain_cfg = cfg.clone()
    plain_cfg.defrost()
    plain_cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE = [False] * 4
    plain = build_resnet_backbone(plain_cfg, input_shape)
    stages = [
        [_deformable_like(b, resnets) for b in stage] if on else list(stage)
        for stage, on in zip(plain.stages, deform)
    ]
    return ResNet(
        plain.stem,
        stages,
        out_features=list(resnets.OUT_FEATURES),
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
    )
