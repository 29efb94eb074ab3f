"""SOLVER.OPTIMIZER: detectron2's SGD, or AdamW with detectron2's per-parameter rules."""

import pytest
import torch
from detectron2.modeling import build_model
from torch import nn

from fcos_d2.solver import build_optimizer
from tests.common_utils import tiny_cfg


def _adamw_cfg():
    cfg = tiny_cfg()
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    cfg.SOLVER.BASE_LR, cfg.SOLVER.WEIGHT_DECAY, cfg.SOLVER.WEIGHT_DECAY_NORM = 1e-3, 0.05, 0.0
    return cfg


def test_default_optimizer_is_detectron2_sgd():
    cfg = tiny_cfg()
    opt = build_optimizer(cfg, build_model(cfg))
    assert type(opt).__name__ == "SGD" and opt.defaults["momentum"] == cfg.SOLVER.MOMENTUM


def test_adamw_first_step_by_hand():
    cfg = _adamw_cfg()
    model = build_model(cfg)
    opt = build_optimizer(cfg, model)
    assert isinstance(opt, torch.optim.AdamW)
    conv = model.head.cls_logits.weight
    norm = next(m for m in model.modules() if isinstance(m, nn.GroupNorm)).weight
    before_conv, before_norm = conv.detach().clone(), norm.detach().clone()
    g = torch.Generator().manual_seed(0)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g)
    opt.step()
    # Adam's first step moves each weight by lr * g / (|g| + eps) = lr * sign(g) (bias-corrected
    # moments are g and g^2); AdamW shrinks the weight by lr * wd first, norms get no decay.
    lr, wd = 1e-3, 0.05
    expected_conv = before_conv * (1 - lr * wd) - lr * torch.sign(conv.grad)
    expected_norm = before_norm - lr * torch.sign(norm.grad)
    torch.testing.assert_close(conv.detach(), expected_conv, atol=1e-7, rtol=0)
    torch.testing.assert_close(norm.detach(), expected_norm, atol=1e-7, rtol=0)


def test_unknown_optimizer_is_a_one_line_error():
    cfg = tiny_cfg()
    cfg.SOLVER.OPTIMIZER = "ADAM"
    with pytest.raises(
        ValueError, match=r"SOLVER.OPTIMIZER='ADAM' is not one of \['SGD', 'ADAMW'\]"
    ):
        build_optimizer(cfg, build_model(cfg))
