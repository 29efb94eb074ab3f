"""FrozenBatchNorm2d folded into the conv before it: same outputs, gradients and checkpoints."""

import copy

import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d, FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import build_model, build_resnet_backbone

from fcos_d2.layers import FrozenBNConv2d, fold_frozen_batchnorm
from tests.common_utils import randomize_head, tiny_cfg


def _conv_bn(bias: bool, stride: int = 1, seed: int = 0) -> Conv2d:
    gen = torch.Generator().manual_seed(seed)
    norm = FrozenBatchNorm2d(6)
    norm.weight.copy_(torch.rand(6, generator=gen) + 0.5)
    norm.bias.copy_(torch.randn(6, generator=gen))
    norm.running_mean.copy_(torch.randn(6, generator=gen))
    norm.running_var.copy_(torch.rand(6, generator=gen) + 0.1)
    conv = Conv2d(4, 6, 3, stride=stride, padding=1, bias=bias, norm=norm, activation=F.relu)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(6, 4, 3, 3, generator=gen))
        if bias:
            conv.bias.copy_(torch.randn(6, generator=gen))
    return conv


def _by_hand(conv: Conv2d, x: torch.Tensor) -> torch.Tensor:
    """conv, then (y - mean) / sqrt(var + eps) * gamma + beta, then ReLU: the BN definition."""
    n = conv.norm
    y = F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding)
    y = (y - n.running_mean.view(1, -1, 1, 1)) / (n.running_var.view(1, -1, 1, 1) + n.eps).sqrt()
    return F.relu(y * n.weight.view(1, -1, 1, 1) + n.bias.view(1, -1, 1, 1))


def test_folded_conv_equals_conv_then_batchnorm():
    x = torch.randn(2, 4, 9, 11, generator=torch.Generator().manual_seed(1))
    for bias in (False, True):
        for stride in (1, 2):
            conv = _conv_bn(bias, stride)
            expected = _by_hand(conv, x)
            assert fold_frozen_batchnorm(conv) == 1 and type(conv) is FrozenBNConv2d
            with torch.no_grad():
                assert torch.allclose(conv(x), expected, atol=1e-5)
            assert torch.allclose(conv(x), expected, atol=1e-5)  # the training path


def test_folded_conv_gives_the_same_gradients():
    x = torch.randn(2, 4, 9, 11, generator=torch.Generator().manual_seed(2), requires_grad=True)
    plain = _conv_bn(bias=True)
    folded = copy.deepcopy(plain)
    fold_frozen_batchnorm(folded)
    x2 = x.detach().clone().requires_grad_(True)
    (_by_hand(plain, x) ** 2).sum().backward()
    (folded(x2) ** 2).sum().backward()
    assert torch.allclose(x.grad, x2.grad, atol=1e-4)
    assert torch.allclose(plain.weight.grad, folded.weight.grad, rtol=1e-4, atol=1e-4)
    assert torch.allclose(plain.bias.grad, folded.bias.grad, rtol=1e-4, atol=1e-4)


def test_cached_fold_follows_every_weight_change():
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    conv = _conv_bn(bias=False)
    fold_frozen_batchnorm(conv)
    with torch.no_grad():
        conv(x)  # fills the cache
        other = _conv_bn(bias=False, seed=5)
        conv.load_state_dict(other.state_dict())  # new BN statistics and weights, in place
        assert torch.allclose(conv(x), _by_hand(other, x), atol=1e-5)
        conv.weight.mul_(2.0)  # as an optimizer step would
        conv.norm.running_var.add_(1.0)
        assert torch.allclose(conv(x), _by_hand(conv, x), atol=1e-5)
    with torch.inference_mode():
        conv(x)
    frozen = conv.requires_grad_(False)  # a frozen stage, trained after an inference-mode eval
    out = frozen(x.requires_grad_(True))
    out.sum().backward()
    assert x.grad is not None


def test_resnet50_folds_all_53_norms_and_keeps_its_checkpoint_keys():
    cfg = tiny_cfg()
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.MODEL.RESNETS.NORM = "FrozenBN"
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 256
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = True
    resnet = build_resnet_backbone(cfg, ShapeSpec(channels=3))
    keys = list(resnet.state_dict())
    # stem 1 + (3 + 4 + 6 + 3) blocks x 3 convs + 4 shortcuts = 53 conv + BN pairs
    assert fold_frozen_batchnorm(resnet) == 53
    assert list(resnet.state_dict()) == keys
    assert fold_frozen_batchnorm(resnet) == 0  # already folded


def test_model_with_and_without_folding_detects_the_same():
    cfg = tiny_cfg()
    cfg.MODEL.RESNETS.NORM = "FrozenBN"
    cfg.MODEL.BACKBONE.FREEZE_AT = 2
    torch.manual_seed(0)
    folded = build_model(cfg).eval()
    cfg.MODEL.FCOS.FOLD_FROZEN_BN = False
    plain = build_model(cfg).eval()
    plain.load_state_dict(folded.state_dict())
    assert any(type(m) is FrozenBNConv2d for m in folded.modules())
    assert not any(type(m) is FrozenBNConv2d for m in plain.modules())
    with torch.no_grad():
        for model in (folded, plain):
            randomize_head(model, cls_bias=0.0)
        image = {"image": torch.rand(3, 97, 131, generator=torch.Generator().manual_seed(4)) * 255}
        a, b = plain([image])[0]["instances"], folded([image])[0]["instances"]
    assert len(a) == len(b) > 0
    assert torch.equal(a.pred_classes, b.pred_classes)
    assert torch.allclose(a.scores, b.scores, atol=1e-5, rtol=0)
    assert torch.allclose(a.pred_boxes.tensor, b.pred_boxes.tensor, atol=1e-3, rtol=0)


def test_cached_fold_follows_conversions_that_replace_the_weights():
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(6))
    conv = _conv_bn(bias=True)
    fold_frozen_batchnorm(conv)
    with torch.no_grad():
        conv(x)
        conv.half().float()  # new memory twice; values rounded to float16 on the way
        assert conv.weight.dtype == torch.float32
        assert torch.allclose(conv(x), _by_hand(conv, x), atol=1e-5)
        conv.double()
        assert conv(x.double()).dtype == torch.float64


def test_a_traced_folded_conv_reads_the_weights_it_holds_not_a_cached_fold():
    # Eager inference caches the fold; a graph must fold from its parameters, or the weights
    # loaded after tracing (or a graph traced once and reused) would never reach it.
    x = torch.randn(1, 4, 7, 9, generator=torch.Generator().manual_seed(3))
    conv = _conv_bn(bias=True)
    fold_frozen_batchnorm(conv)
    with torch.no_grad():
        conv(x)  # fills the eager cache
        traced = torch.jit.trace(conv, (x,))
        conv.norm.weight.mul_(2.0)
        conv.weight.add_(0.5)
        assert torch.allclose(traced(x), _by_hand(conv, x), atol=1e-5)


def test_a_compiled_folded_conv_is_one_graph_that_follows_weight_changes():
    # Dynamo cannot read the eager cache's keys (tensor versions, inference mode): under
    # torch.compile the conv folds from its parameters, in one graph (fullgraph), and an update
    # of a weight in place reaches the next call.
    x = torch.randn(1, 4, 7, 9, generator=torch.Generator().manual_seed(4))
    conv = _conv_bn(bias=True)
    fold_frozen_batchnorm(conv)
    compiled = torch.compile(conv, backend="eager", fullgraph=True)
    with torch.no_grad():
        conv(x)  # fills the eager cache
        assert torch.allclose(compiled(x), _by_hand(conv, x), atol=1e-5)
        conv.norm.weight.mul_(2.0)
        conv.weight.add_(0.5)
        assert torch.allclose(compiled(x), _by_hand(conv, x), atol=1e-5)
