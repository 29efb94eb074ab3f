"""
Deformable ResNet stages on torchvision (no detectron2._C). Every shipped config, the dcnv2 one
included, builds and trains one step in test_config.py.
"""

import glob
import math
import os

import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import build_model
from detectron2.modeling.backbone.resnet import BottleneckBlock

import fcos_d2
from fcos_d2.modeling.deform_resnet import (
    DeformConvWithNorm,
    TorchvisionDeformBottleneckBlock,
    build_resnet_backbone_torchvision_dcn,
)
from tests.common_utils import REPO

CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True))


def _bilinear_zero_outside(image, y, x):
    """Value of a (H, W) image at real (y, x): bilinear over the 4 neighbours, 0 outside."""
    height, width = image.shape
    y0, x0 = math.floor(y), math.floor(x)
    total = 0.0
    for yy in (y0, y0 + 1):
        for xx in (x0, x0 + 1):
            if 0 <= yy < height and 0 <= xx < width:
                total += (1 - abs(y - yy)) * (1 - abs(x - xx)) * float(image[yy, xx])
    return total


def _reference_deform_conv(x, offset, mask, weight, stride, padding, dilation, offset_groups):
    """
    Modulated deformable convolution written out tap by tap (DCNv2, Zhu et al. 2019): output
    (n, o, oy, ox) = sum over input channels c of o's group and taps (i, j) of
    weight[o, c, i, j] * mask * x[n, c] sampled at (oy*s - p + i*d + dy, ox*s - p + j*d + dx).
    Offsets of tap t = i*kw + j in offset group g: channel g*2*kh*kw + 2t is dy, the next dx;
    the mask has channel g*kh*kw + t; channel c is in offset group c // (C / offset_groups).
    """
    n_img, channels = x.shape[:2]
    out_ch, ch_per_group, kh, kw = weight.shape
    groups = channels // ch_per_group
    out_h, out_w = offset.shape[-2:]
    out = torch.zeros(n_img, out_ch, out_h, out_w, dtype=torch.float64)
    for n in range(n_img):
        for o in range(out_ch):
            group = o // (out_ch // groups)
            for oy in range(out_h):
                for ox in range(out_w):
                    acc = 0.0
                    for ci in range(ch_per_group):
                        c = group * ch_per_group + ci
                        og = c // (channels // offset_groups)
                        for i in range(kh):
                            for j in range(kw):
                                t = i * kw + j
                                dy = float(offset[n, og * 2 * kh * kw + 2 * t, oy, ox])
                                dx = float(offset[n, og * 2 * kh * kw + 2 * t + 1, oy, ox])
                                m = (
                                    1.0
                                    if mask is None
                                    else float(mask[n, og * kh * kw + t, oy, ox])
                                )
                                y = oy * stride - padding + i * dilation + dy
                                xx = ox * stride - padding + j * dilation + dx
                                value = _bilinear_zero_outside(x[n, c], y, xx)
                                acc += float(weight[o, ci, i, j]) * m * value
                    out[n, o, oy, ox] = acc
    return out


@pytest.mark.parametrize("stride,dilation,groups,offset_groups", [(1, 1, 1, 1), (2, 2, 2, 2)])
def test_zero_offsets_and_unit_mask_give_the_plain_conv(stride, dilation, groups, offset_groups):
    torch.manual_seed(0)
    conv = DeformConvWithNorm(
        4, 6, 3, stride=stride, padding=dilation, dilation=dilation, groups=groups
    )
    x = torch.randn(2, 4, 9, 7)
    expected = F.conv2d(x, conv.weight, None, stride, dilation, dilation, groups)
    h, w = expected.shape[-2:]
    offset = torch.zeros(2, 18 * offset_groups, h, w)
    mask = torch.ones(2, 9 * offset_groups, h, w)
    torch.testing.assert_close(conv(x, offset, mask), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(conv(x, offset), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("stride,dilation,groups,offset_groups", [(1, 1, 1, 1), (2, 1, 2, 2)])
def test_modulated_deform_conv_matches_tap_by_tap_reference(
    stride, dilation, groups, offset_groups
):
    torch.manual_seed(1)
    conv = DeformConvWithNorm(4, 4, 3, stride=stride, padding=1, dilation=dilation, groups=groups)
    x = torch.randn(1, 4, 5, 6)
    out_h, out_w = (5 - 1) // stride + 1, (6 - 1) // stride + 1
    # Offsets up to 2.5 px: many taps land between pixels and some outside the image.
    offset = (torch.rand(1, 18 * offset_groups, out_h, out_w) - 0.5) * 5
    mask = torch.rand(1, 9 * offset_groups, out_h, out_w)
    expected = _reference_deform_conv(
        x, offset, mask, conv.weight.detach(), stride, 1, dilation, offset_groups
    )
    torch.testing.assert_close(conv(x, offset, mask).double(), expected, atol=1e-4, rtol=1e-4)
    unmodulated = _reference_deform_conv(
        x, offset, None, conv.weight.detach(), stride, 1, dilation, offset_groups
    )
    torch.testing.assert_close(conv(x, offset).double(), unmodulated, atol=1e-4, rtol=1e-4)


def test_one_tap_offset_by_hand():
    # 1x1 kernel of weight 1 on a 2x2 image [[1, 2], [3, 4]]: an offset of (dy, dx) = (0.5, 0.25)
    # at output (0, 0) samples (0.5, 0.25): rows 1 and 3 -> 1.25 and 3.25, midway -> 2.25.
    conv = DeformConvWithNorm(1, 1, 1)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    offset = torch.zeros(1, 2, 2, 2)
    offset[0, 0, 0, 0], offset[0, 1, 0, 0] = 0.5, 0.25
    mask = torch.full((1, 1, 2, 2), 0.5)
    out = conv(x, offset, mask)
    assert out[0, 0, 0, 0].item() == pytest.approx(0.5 * 2.25)
    assert out[0, 0, 1, 1].item() == pytest.approx(0.5 * 4.0)


def test_block_splits_offsets_and_mask_as_detectron2():
    # detectron2: offset_mask (27 G channels) -> chunk in 3, offsets = first two, mask = sigmoid
    # of the third. With a zero-weight conv2_offset whose bias is 0.01 * channel, the deformable
    # conv must get offsets 0.01 * [0, 18G) and mask sigmoid(0.01 * [18G, 27G)).
    torch.manual_seed(2)
    block = TorchvisionDeformBottleneckBlock(
        8,
        8,
        bottleneck_channels=4,
        num_groups=1,
        norm="FrozenBN",
        deform_modulated=True,
        deform_num_groups=2,
    )
    with torch.no_grad():
        block.conv2_offset.weight.zero_()
        block.conv2_offset.bias.copy_(0.01 * torch.arange(54.0))
    seen = {}
    block.conv2.register_forward_hook(lambda m, args, out: seen.update(args=args, out=out.clone()))
    block(torch.randn(1, 8, 5, 5))
    inp, offset, mask = seen["args"]
    assert offset.shape[1] == 36 and mask.shape[1] == 18
    torch.testing.assert_close(offset[0, :, 2, 3], 0.01 * torch.arange(36.0))
    torch.testing.assert_close(mask[0, :, 2, 3], torch.sigmoid(0.01 * torch.arange(36.0, 54.0)))
    reference = _reference_deform_conv(
        inp.detach(), offset.detach(), mask.detach(), block.conv2.weight.detach(), 1, 1, 1, 2
    )
    torch.testing.assert_close(
        block.conv2.norm(reference.float()), seen["out"].detach(), atol=1e-4, rtol=1e-4
    )


def test_block_parameters_are_detectron2s():
    # detectron2's DeformBottleneckBlock = BottleneckBlock's parameters + conv2_offset (a 3x3 conv
    # with bias, 27 * G outputs modulated, 18 * G otherwise).
    for modulated, per_tap in ((True, 27), (False, 18)):
        kwargs = dict(bottleneck_channels=8, stride=2, num_groups=2, norm="FrozenBN")
        plain = BottleneckBlock(16, 32, **kwargs)
        block = TorchvisionDeformBottleneckBlock(
            16, 32, deform_modulated=modulated, deform_num_groups=2, **kwargs
        )
        shapes = {k: v.shape for k, v in block.state_dict().items()}
        expected = {k: v.shape for k, v in plain.state_dict().items()}
        expected["conv2_offset.weight"] = torch.Size([per_tap * 2, 8, 3, 3])
        expected["conv2_offset.bias"] = torch.Size([per_tap * 2])
        assert shapes == expected
        # The plain block's weights load into it: zero offsets and a unit mask make it the same.
        block.load_state_dict(plain.state_dict(), strict=False)
        if modulated:
            with torch.no_grad():
                block.conv2_offset.bias[36:] = 50.0  # sigmoid(50) == 1 in float32
        x = torch.randn(2, 16, 9, 7)
        torch.testing.assert_close(block(x), plain(x), atol=1e-5, rtol=1e-5)


def _detectron2_deform_conv_runs() -> bool:
    """detectron2's compiled deformable convs exist only in builds with ``_C`` and run only on
    CUDA (its modulated op raises NotImplementedError on the CPU)."""
    if not torch.cuda.is_available():
        return False
    try:
        from detectron2 import _C  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(
    not _detectron2_deform_conv_runs(),
    reason="needs CUDA and detectron2's compiled ops (detectron2._C), the only place its "
    "deformable conv runs",
)
@pytest.mark.parametrize("modulated", [False, True])
def test_block_equals_detectron2_compiled_block_on_cuda(modulated):
    # Where detectron2's compiled op is present, its block and fcos_d2's are interchangeable: the
    # same state dict (random, non-zero offsets) gives the same output.
    from detectron2.modeling.backbone.resnet import DeformBottleneckBlock

    torch.manual_seed(0)
    kwargs = dict(bottleneck_channels=8, stride=2, num_groups=2, norm="FrozenBN")
    kwargs.update(deform_modulated=modulated, deform_num_groups=2)
    ref = DeformBottleneckBlock(16, 32, **kwargs).cuda()
    with torch.no_grad():
        ref.conv2_offset.weight.normal_(0, 0.3)
        ref.conv2_offset.bias.normal_(0, 1.0)
    block = TorchvisionDeformBottleneckBlock(16, 32, **kwargs).cuda()
    block.load_state_dict(ref.state_dict())
    x = torch.randn(2, 16, 13, 17, device="cuda")
    torch.testing.assert_close(block(x), ref(x), atol=1e-4, rtol=1e-4)


def _r50_cfg(deform_on, modulated=True, num_groups=1, freeze_at=2):
    cfg = fcos_d2.load_config(os.path.join(REPO, "configs", "FCOS_R_50_FPN_1x.yaml"))
    cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE = deform_on
    cfg.MODEL.RESNETS.DEFORM_MODULATED = modulated
    cfg.MODEL.RESNETS.DEFORM_NUM_GROUPS = num_groups
    cfg.MODEL.BACKBONE.FREEZE_AT = freeze_at
    return cfg


def test_deformable_stages_are_built_where_asked():
    torch.manual_seed(0)
    cfg = _r50_cfg([False, True, False, True], modulated=False, num_groups=2, freeze_at=3)
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    resnet = build_resnet_backbone_torchvision_dcn(cfg, ShapeSpec(channels=3))
    kinds = {name: {type(b) for b in getattr(resnet, name)} for name in resnet.stage_names}
    assert kinds["res2"] == kinds["res4"] == {BottleneckBlock}
    assert kinds["res3"] == kinds["res5"] == {TorchvisionDeformBottleneckBlock}
    assert resnet.res3[0].conv2_offset.out_channels == 18 * 2
    assert resnet.res5[0].conv2.stride == (2, 2)  # stride on the 3x3 (STRIDE_IN_1X1 False)
    # FREEZE_AT 3: res3 (deformable) is frozen, res5 is not.
    assert isinstance(resnet.res3[1].conv2.norm, FrozenBatchNorm2d)
    assert not any(p.requires_grad for p in resnet.res3.parameters())
    assert all(p.requires_grad for p in resnet.res5.parameters())
    plain = build_resnet_backbone_torchvision_dcn(_r50_cfg([False] * 4), ShapeSpec(channels=3))
    assert resnet.output_shape() == plain.output_shape()
    out = resnet(torch.randn(1, 3, 64, 96))
    assert out["res5"].shape == (1, 2048, 2, 3)


def test_deformable_stages_on_resnet18_name_the_key():
    cfg = fcos_d2.load_config(os.path.join(REPO, "configs", "demo", "FCOS_R18_shapes_demo.yaml"))
    cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE = [False, False, True, True]
    with pytest.raises(ValueError, match="DEFORM_ON_PER_STAGE.*DEPTH=18"):
        build_model(cfg)
