"""FCOSHead shapes, Scale, initialisation and checkpoint key layout."""

import math

import pytest
import torch
from detectron2.layers import ShapeSpec

from fcos_d2.modeling.head import FCOSHead

SIZES = [(13, 17), (7, 9), (4, 5)]


def _head(**kw):
    torch.manual_seed(0)
    shapes = [ShapeSpec(channels=32, stride=s) for s in (8, 16, 32)]
    args = dict(input_shape=shapes, num_classes=5, num_cls_convs=2, num_box_convs=2)
    args.update(kw)
    return FCOSHead(**args)


def _features():
    torch.manual_seed(1)
    return [torch.randn(2, 32, h, w) for h, w in SIZES]


def test_output_shapes():
    logits, reg, ctr = _head()(_features())
    for (h, w), lg, rg, ct in zip(SIZES, logits, reg, ctr):
        assert lg.shape == (2, 5, h, w) and rg.shape == (2, 4, h, w) and ct.shape == (2, 1, h, w)
        assert (rg >= 0).all()


def test_initialisation():
    head = _head()
    assert torch.allclose(head.cls_logits.bias, torch.full((5,), -math.log(99)))
    assert head.cls_tower[0].weight.std().item() == pytest.approx(0.01, rel=0.1)
    assert [s.scale.item() for s in head.scales] == [1.0, 1.0, 1.0]


def test_scale_multiplies_regression_per_level():
    head, feats = _head(), _features()
    with torch.no_grad():
        _, reg1, _ = head(feats)
        head.scales[1].scale.fill_(2.0)
        _, reg2, _ = head(feats)
    assert torch.equal(reg2[0], reg1[0]) and torch.equal(reg2[2], reg1[2])
    assert torch.allclose(reg2[1], 2 * reg1[1])


def test_no_scale():
    head = _head(use_scale=False)
    assert head.scales is None
    assert not any("scales" in k for k in head.state_dict())


def test_key_layout_gn_and_per_level_bn():
    keys = set(_head().state_dict())
    # (conv, norm, ReLU) blocks: convs at 0 and 3, GroupNorms at 1 and 4.
    for k in [
        "cls_tower.0.weight",
        "cls_tower.1.weight",
        "cls_tower.3.bias",
        "bbox_tower.4.bias",
        "cls_logits.weight",
        "bbox_pred.weight",
        "ctrness.weight",
        "scales.2.scale",
    ]:
        assert k in keys, k
    bn_keys = set(_head(norm="BN").state_dict())
    assert {"cls_tower.1.0.weight", "cls_tower.1.2.running_var", "bbox_tower.4.1.bias"} <= bn_keys
    none_keys = set(_head(norm="").state_dict())
    assert "cls_tower.2.weight" in none_keys  # conv, ReLU, conv


def test_per_level_bn_uses_level_statistics():
    head = _head(norm="BN", num_share_convs=0)
    head.train()
    feats = _features()
    feats[2] = feats[2] * 10 + 5
    head(feats)
    bns = head.cls_tower[1]
    assert not torch.allclose(bns[0].running_mean, bns[2].running_mean)


def test_each_level_runs_through_its_own_batchnorm():
    # In eval mode a BN with weight 0 outputs its bias; give each level's BN another bias, so
    # a tower applying one level's norm to every level (or the wrong one) gives other values.
    head = _head(norm="BN", num_share_convs=0, num_cls_convs=1, num_box_convs=1).eval()
    bns = head.cls_tower[1]
    assert len(bns) == 3
    with torch.no_grad():
        for level, bn in enumerate(bns):
            bn.weight.zero_()
            bn.bias.fill_(100.0 * (level + 1))
    for level, x in enumerate(_features()):
        out = head.cls_tower(x, level)  # conv -> this level's BN -> ReLU
        torch.testing.assert_close(out, torch.full_like(out, 100.0 * (level + 1)))


def test_centreness_branch_runs_on_the_box_tower():
    # FCOS's improved layout (AdelaiDet's CTR_ON_REG): centre-ness from the regression tower.
    head, feats = _head(), _features()
    with torch.no_grad():
        logits1, _, ctr1 = head(feats)
        gen = torch.Generator().manual_seed(5)
        noise = torch.randn(head.cls_tower[0].weight.shape, generator=gen) * 0.05
        head.cls_tower[0].weight.add_(noise)  # changes the class branch only
        logits2, _, ctr2 = head(feats)
        head.bbox_tower[0].weight.add_(noise)
        _, _, ctr3 = head(feats)
    assert not torch.allclose(logits1[0], logits2[0])
    assert all(torch.equal(a, b) for a, b in zip(ctr1, ctr2))
    assert not torch.allclose(ctr2[0], ctr3[0])


def test_group_norm_has_32_groups_as_in_fcos():
    norms = [m for m in _head().modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(norms) == 4 and all(m.num_groups == 32 for m in norms)  # 2 convs x 2 towers
