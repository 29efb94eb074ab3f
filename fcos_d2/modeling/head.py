"""
The FCOS head: classification and box towers shared across levels, with per-level Scale.

Shape shorthand: N images, K classes, C channels, Hi x Wi the size of level i.
"""

import math
from typing import List, Tuple

import torch
from detectron2.config import CfgNode, configurable
from detectron2.layers import ShapeSpec
from torch import Tensor, nn
from torchvision.ops import DeformConv2d

from ..config import FCOS_CHOICES, check_values

__all__ = ["FCOSHead", "Scale", "DeformConv3x3"]


class Scale(nn.Module):
    """Multiplies its input by one learnable scalar."""

    def __init__(self, init_value: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([float(init_value)]))

    def forward(self, x: Tensor) -> Tensor:
        # In x's dtype: a float32 scalar must not promote low-precision (autocast) outputs.
        return x * self.scale.to(x.dtype)


class PerLevel(nn.ModuleList):
    """One module per level; ``forward(x, level)`` applies that level's (TorchScript-friendly:
    no indexing of a ModuleList by a variable)."""

    def forward(self, x: Tensor, level: int) -> Tensor:
        for i, module in enumerate(self):
            if i == level:
                x = module(x)
        return x


class Tower(nn.ModuleList):
    """Blocks run in turn on one level's feature; ``PerLevel`` blocks get the level index."""

    def forward(self, x: Tensor, level: int) -> Tensor:
        for layer in self:
            if isinstance(layer, PerLevel):
                x = layer(x, level)
            else:
                x = layer(x)
        return x


def _make_norm(norm: str, channels: int, num_levels: int) -> nn.Module:
    if norm == "GN":
        return nn.GroupNorm(32, channels)
    # "BN"/"SyncBN" use one norm per level: statistics of P3 and P7 differ too much to share.
    bn_classes = {"BN": nn.BatchNorm2d, "SyncBN": nn.SyncBatchNorm}
    if norm not in bn_classes:
        raise ValueError(f"norm={norm!r} is not one of {list(FCOS_CHOICES['NORM'])}")
    return PerLevel([bn_classes[norm](channels) for _ in range(num_levels)])


class DeformConv3x3(nn.Module):
    """
    Modulated deformable 3x3 conv (DCNv2) from torchvision: ``offset`` predicts 18 offsets and
    9 mask logits per location; ``conv`` holds the weights (AdelaiDet's DFConv2d key layout).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.offset = nn.Conv2d(channels, 27, kernel_size=3, padding=1)
        self.conv = DeformConv2d(channels, channels, kernel_size=3, padding=1, bias=True)
        nn.init.zeros_(self.offset.weight)  # start as a plain conv (zero offsets)
        nn.init.zeros_(self.offset.bias)

    def forward(self, x: Tensor) -> Tensor:
        offset_mask = self.offset(x)
        offset, mask = offset_mask[:, :18], offset_mask[:, 18:].sigmoid()
        return self.conv(x, offset, mask)


def _make_tower(
    num_convs: int, channels: int, norm: str, num_levels: int, deformable: bool = False
) -> Tower:
    # Layout (conv, [norm], ReLU) per block, so indices match AdelaiDet's checkpoint keys.
    layers: List[nn.Module] = []
    for i in range(num_convs):
        if deformable and i == num_convs - 1:
            layers.append(DeformConv3x3(channels))
        else:
            layers.append(nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=True))
        if norm:
            layers.append(_make_norm(norm, channels, num_levels))
        layers.append(nn.ReLU(inplace=True))
    return Tower(layers)


class FCOSHead(nn.Module):
    """
    Shared towers and predictors. For each level returns class logits (N, K, Hi, Wi), box
    regression (N, 4, Hi, Wi) as non-negative (l, t, r, b) distances in units of the level's
    stride, and centre-ness logits (N, 1, Hi, Wi).
    """

    @configurable
    def __init__(
        self,
        *,
        input_shape: List[ShapeSpec],
        num_classes: int,
        num_cls_convs: int = 4,
        num_box_convs: int = 4,
        num_share_convs: int = 0,
        norm: str = "GN",
        use_scale: bool = True,
        prior_prob: float = 0.01,
        use_deformable: bool = False,
    ):
        super().__init__()
        check_values(
            num_classes=num_classes,
            num_cls_convs=num_cls_convs,
            num_box_convs=num_box_convs,
            num_share_convs=num_share_convs,
            prior_prob=prior_prob,
        )
        channels = {s.channels for s in input_shape}
        if len(channels) != 1:
            raise ValueError(f"FCOSHead needs equal channels on all levels, got {channels}")
        ch, num_levels = channels.pop(), len(input_shape)
        self.num_classes = num_classes
        self.in_channels, self.num_levels = ch, num_levels  # checked against the backbone
        self.share_tower = _make_tower(num_share_convs, ch, norm, num_levels)
        self.cls_tower = _make_tower(num_cls_convs, ch, norm, num_levels, use_deformable)
        self.bbox_tower = _make_tower(num_box_convs, ch, norm, num_levels, use_deformable)
        self.cls_logits = nn.Conv2d(ch, num_classes, kernel_size=3, padding=1)
        self.bbox_pred = nn.Conv2d(ch, 4, kernel_size=3, padding=1)
        self.ctrness = nn.Conv2d(ch, 1, kernel_size=3, padding=1)
        self.scales = PerLevel([Scale(1.0) for _ in range(num_levels)]) if use_scale else None
        self._init_weights(prior_prob)

    def _init_weights(self, prior_prob: float) -> None:
        # Offset predictors keep their zero init: deformable convs start as plain convs.
        offsets = {id(m.offset) for m in self.modules() if isinstance(m, DeformConv3x3)}
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, DeformConv2d)) and id(module) not in offsets:
                nn.init.normal_(module.weight, std=0.01)
                nn.init.constant_(module.bias, 0.0)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: List[ShapeSpec]):
        return {
            "input_shape": input_shape,
            "num_classes": cfg.MODEL.FCOS.NUM_CLASSES,
            "num_cls_convs": cfg.MODEL.FCOS.NUM_CLS_CONVS,
            "num_box_convs": cfg.MODEL.FCOS.NUM_BOX_CONVS,
            "num_share_convs": cfg.MODEL.FCOS.NUM_SHARE_CONVS,
            "norm": cfg.MODEL.FCOS.NORM,
            "use_scale": cfg.MODEL.FCOS.USE_SCALE,
            "prior_prob": cfg.MODEL.FCOS.PRIOR_PROB,
            "use_deformable": cfg.MODEL.FCOS.USE_DEFORMABLE,
        }

    def forward(self, features: List[Tensor]) -> Tuple[List[Tensor], List[Tensor], List[Tensor]]:
        logits, box_reg, ctrness = [], [], []
        for level, feature in enumerate(features):
            x = self.share_tower(feature, level)
            cls_x = self.cls_tower(x, level)
            box_x = self.bbox_tower(x, level)
            reg = self.bbox_pred(box_x)
            if self.scales is not None:
                reg = self.scales(reg, level)
            logits.append(self.cls_logits(cls_x))
            box_reg.append(torch.relu(reg))
            ctrness.append(self.ctrness(box_x))
        return logits, box_reg, ctrness
