"""ResNet stages with conv + ReLU / conv + residual add fused: detectron2's results, and only where
the fused ops may run."""

import copy

import pytest
import torch
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import build_model, build_resnet_backbone
from torch.profiler import profile

from fcos_d2.layers import fold_frozen_batchnorm, fuse_resnet_blocks
from fcos_d2.layers.fused_resnet import FusedBasicStem, FusedResNetStage
from tests.common_utils import tiny_cfg

FUSED_OP = "mkldnn::_convolution_pointwise"


def _resnet(depth: int = 50, seed: int = 0, stem_channels: int = 8):
    """A narrow detectron2 ResNet (bottleneck width 8) with random weights and frozen-BN stats;
    all stages' outputs and, with ``stem_channels`` 32, a res2 whose first block has no
    projection (its input is the stem's output, kept as a feature)."""
    cfg = tiny_cfg()
    cfg.MODEL.RESNETS.DEPTH = depth
    cfg.MODEL.RESNETS.NORM = "FrozenBN"
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 32 if depth >= 50 else 64  # detectron2's R-18 rule
    cfg.MODEL.RESNETS.WIDTH_PER_GROUP = 8
    cfg.MODEL.RESNETS.STEM_OUT_CHANNELS = stem_channels
    cfg.MODEL.RESNETS.OUT_FEATURES = ["stem", "res2", "res3", "res4", "res5"]
    torch.manual_seed(seed)
    model = build_resnet_backbone(cfg, ShapeSpec(channels=3)).eval()
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, FrozenBatchNorm2d):
            c = m.weight.numel()
            m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
            m.bias.copy_(torch.randn(c, generator=gen) * 0.1)
            m.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
    return model


def _fused(model):
    model = copy.deepcopy(model)
    fold_frozen_batchnorm(model)
    fuse_resnet_blocks(model)
    return model


def _fused_ops(fn) -> int:
    with profile() as prof:
        fn()
    return sum(e.count for e in prof.key_averages() if e.key.startswith(FUSED_OP))


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("shape", [(1, 3, 61, 83), (2, 3, 45, 37)])
@pytest.mark.parametrize("stem_channels", [8, 32])
def test_fused_resnet_equals_detectron2_resnet(layout, shape, stem_channels):
    plain = _resnet(stem_channels=stem_channels)
    assert (plain.res2[0].shortcut is None) == (stem_channels == 32)
    fused = _fused(plain)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    x = x.contiguous(memory_format=layout)
    before = x.clone()
    with torch.no_grad():
        expected = plain(x)  # detectron2's own blocks: unfolded BN, separate ReLU and add
        got = fused(x)
        assert _fused_ops(lambda: fused(x)) > 0
    assert torch.equal(x, before)  # the input is never written into
    # every stage's output, kept and passed on: the stem's is also res2's first block's shortcut
    for name in ("stem", "res2", "res3", "res4", "res5"):
        scale = expected[name].abs().max()
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-5 * scale)


def test_fused_resnet_gives_the_same_output_after_a_weight_update():
    plain = _resnet()
    fused = _fused(plain)
    x = torch.randn(1, 3, 40, 56, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        fused(x)  # fills the folded-weight cache
        for model in (plain, fused):
            model.res3[1].conv2.weight.mul_(-2.0)
            model.stem.conv1.norm.running_mean.add_(0.5)
        expected, got = plain(x)["res5"], fused(x)["res5"]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * expected.abs().max())


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_fused_ops_run_only_in_cpu_float32_inference_without_hooks_or_modes(layout):
    fused = _fused(_resnet())
    x = torch.randn(1, 3, 33, 47, generator=torch.Generator().manual_seed(3))
    x = x.contiguous(memory_format=layout)
    with torch.no_grad():
        everything = _fused_ops(lambda: fused(x))
    # stem 1, then 3 per block (conv1, conv2, conv3 with the add) and 1 per projection shortcut
    assert everything == 1 + (3 + 4 + 6 + 3) * 3 + 4
    with torch.inference_mode():
        assert _fused_ops(lambda: fused(x)) > 0
    assert _fused_ops(lambda: fused(x)) == 0  # gradients enabled: autograd must see the convs
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert _fused_ops(lambda: fused(x)) == 0  # autocast must pick the convs' dtype
        assert _fused_ops(lambda: copy.deepcopy(fused).double()(x.double())) == 0
        with torch.backends.mkldnn.flags(enabled=False):  # what F.conv2d honours too
            assert _fused_ops(lambda: fused(x)) == 0
        everywhere = torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: None)
        try:
            assert _fused_ops(lambda: fused(x)) == 0
        finally:
            everywhere.remove()
        hooked = copy.deepcopy(fused)
        seen = []
        hooked.res3[1].register_forward_hook(lambda m, i, o: seen.append(o.shape))
        # the hooked block's stage (res3: 4 blocks, one projection) runs detectron2's forward
        assert _fused_ops(lambda: hooked(x)) == everything - (4 * 3 + 1) and len(seen) == 1
        traced = torch.jit.trace(fused, x, strict=False)
        assert FUSED_OP.split("::")[1] not in str(traced.inlined_graph)


def test_fused_stage_and_stem_script_to_detectron2s_outputs():
    plain = _resnet()
    fused = _fused(plain)
    x = torch.randn(1, 3, 37, 29, generator=torch.Generator().manual_seed(4))
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        res2_out = plain.res2(plain.stem(x))
        for name, inputs in (("stem", x), ("res3", res2_out)):
            scripted = torch.jit.script(getattr(fused, name))  # TorchScript: the unfused forward
            expected = getattr(plain, name)(inputs)
            atol = 1e-5 * expected.abs().max()
            torch.testing.assert_close(scripted(inputs), expected, rtol=1e-5, atol=atol)


def test_only_folded_bottleneck_stages_and_the_stem_are_fused():
    resnet50 = _resnet(50)
    assert fuse_resnet_blocks(copy.deepcopy(resnet50)) == 0  # BN not folded: nothing to fuse
    fused = _fused(resnet50)
    stages = [m for m in fused.modules() if type(m) is FusedResNetStage]
    assert len(stages) == 4 and type(fused.stem) is FusedBasicStem
    resnet18 = _fused(_resnet(18))  # basic blocks stay as they are; the stem is fused
    assert not any(type(m) is FusedResNetStage for m in resnet18.modules())
    assert type(resnet18.stem) is FusedBasicStem


def test_fuse_resnet_blocks_config_key_applies_to_the_built_backbone():
    cfg = tiny_cfg()
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.MODEL.RESNETS.NORM = "FrozenBN"
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 32
    cfg.MODEL.RESNETS.WIDTH_PER_GROUP = 8
    for on in (True, False):
        cfg.MODEL.FCOS.FUSE_RESNET_BLOCKS = on
        model = build_model(cfg)
        stages = [m for m in model.backbone.modules() if type(m) is FusedResNetStage]
        assert len(stages) == (4 if on else 0)
