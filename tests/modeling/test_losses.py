"""IoU-family and FCOS losses against hand-computed values."""

import math

import pytest
import torch

from fcos_d2.modeling.losses import fcos_losses, iou_loss


def _t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_identical_boxes_have_zero_loss():
    for kind in ("iou", "linear_iou", "giou"):
        assert iou_loss(_t([1, 1, 1, 1]), _t([1, 1, 1, 1]), kind).item() == pytest.approx(
            0, abs=1e-6
        )


def test_nested_boxes():
    # pred area 16, target 4, I = 4, U = 16: IoU = (4 + 1) / (16 + 1); C = U.
    pred, target = _t([2, 2, 2, 2]), _t([1, 1, 1, 1])
    assert iou_loss(pred, target, "iou").item() == pytest.approx(-math.log(5 / 17))
    assert iou_loss(pred, target, "linear_iou").item() == pytest.approx(12 / 17)
    assert iou_loss(pred, target, "giou").item() == pytest.approx(12 / 17)


def test_giou_enclosing_term():
    # pred (l,t,r,b) = (1,0,1,2), target (0,1,2,1): both area 4, I = 1*1, U = 7,
    # IoU = 2/8, C = 3*3 = 9, GIoU = 1/4 - 2/9 = 1/36.
    pred, target = _t([1, 0, 1, 2]), _t([0, 1, 2, 1])
    assert iou_loss(pred, target, "giou").item() == pytest.approx(35 / 36, rel=1e-5)
    assert iou_loss(pred, target, "linear_iou").item() == pytest.approx(0.75)


def test_unknown_loss_type():
    # The pure function names its argument; the config check names MODEL.FCOS.BOX_LOSS_TYPE.
    with pytest.raises(ValueError, match="loss_type='l1' is not one of"):
        iou_loss(_t([1, 1, 1, 1]), _t([1, 1, 1, 1]), "l1")


def test_fcos_losses_by_hand():
    # One image, 3 locations, K = 1; zero logits (p = 0.5). Locations 0 and 1 positive.
    logits = torch.zeros(1, 3, 1)
    box_reg = _t([2, 2, 2, 2], [1, 2, 3, 6], [1, 1, 1, 1])[None]
    ctr = torch.zeros(1, 3)
    labels = torch.tensor([[0, 0, 1]])
    reg_targets = _t([1, 1, 1, 1], [1, 2, 3, 6], [0, 0, 0, 0])[None]
    out = fcos_losses(logits, box_reg, ctr, labels, reg_targets)
    ln2 = math.log(2)
    # focal: positive 0.25 * 0.5^2 * ln2 each, negative 0.75 * 0.5^2 * ln2; / 2 positives
    assert out["loss_fcos_cls"].item() == pytest.approx((2 * 0.0625 + 0.1875) * ln2 / 2)
    # ctr targets 1 and 1/3; BCE(0, y) = ln2 for any y; / 2 positives
    assert out["loss_fcos_ctr"].item() == pytest.approx(ln2)
    # GIoU losses 12/17 (weight 1) and 0 (weight 1/3), / (1 + 1/3)
    assert out["loss_fcos_loc"].item() == pytest.approx((12 / 17) / (4 / 3), rel=1e-5)
    # A positive count given by the caller (e.g. averaged over 4 workers to 4.0) replaces the
    # local one (2) for the cls and ctr losses; the box loss keeps its centre-ness normaliser.
    given = fcos_losses(logits, box_reg, ctr, labels, reg_targets, num_pos=torch.tensor(4.0))
    assert given["loss_fcos_cls"].item() == pytest.approx((2 * 0.0625 + 0.1875) * ln2 / 4)
    assert given["loss_fcos_ctr"].item() == pytest.approx(ln2 / 2)
    assert given["loss_fcos_loc"].item() == pytest.approx((12 / 17) / (4 / 3), rel=1e-5)


def test_fcos_losses_without_positives_are_finite_and_differentiable():
    logits = torch.zeros(2, 5, 3, requires_grad=True)
    box_reg = torch.ones(2, 5, 4, requires_grad=True)
    ctr = torch.zeros(2, 5, requires_grad=True)
    out = fcos_losses(logits, box_reg, ctr, torch.full((2, 5), 3), torch.zeros(2, 5, 4))
    assert out["loss_fcos_loc"].item() == 0 and out["loss_fcos_ctr"].item() == 0
    # 30 negatives, each 0.75 * 0.25 * ln2, divided by max(0, 1)
    assert out["loss_fcos_cls"].item() == pytest.approx(30 * 0.1875 * math.log(2))
    sum(out.values()).backward()
    assert torch.isfinite(box_reg.grad).all() and torch.isfinite(logits.grad).all()


def test_fcos_losses_gradients_do_not_depend_on_earlier_calls():
    # Training numerics must not depend on what ran earlier in the process (a scripted loss
    # switches its gradient formula after its first, profiling, call: ~6e-8 differences).
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3000, 3, generator=g, requires_grad=True)
    labels = torch.randint(0, 4, (2, 3000), generator=g)
    reg_targets = torch.rand(2, 3000, 4, generator=g) * 50 + 1
    box_reg = (torch.rand(2, 3000, 4, generator=g) * 50 + 1).requires_grad_()
    ctr = torch.randn(2, 3000, generator=g, requires_grad=True)

    def grads():
        loss = sum(fcos_losses(logits, box_reg, ctr, labels, reg_targets).values())
        return torch.autograd.grad(loss, (logits, box_reg, ctr))

    first = grads()
    for _ in range(3):
        for a, b in zip(first, grads()):
            assert torch.equal(a, b)


def test_iou_quality_branch_learns_the_detached_box_iou():
    # BOX_QUALITY "iou": the quality logit is trained towards the predicted box's IoU with its
    # target (a target: no gradient flows through it into the box regression). Location 0 is
    # test_giou_enclosing_term's pair (IoU 2/8 = 0.25, GIoU 1/36), location 1 a perfect box.
    logits = torch.zeros(1, 2, 1)
    box_reg = _t([1, 0, 1, 2], [1, 1, 1, 1])[None].requires_grad_(True)
    labels = torch.tensor([[0, 0]])
    reg_targets = _t([0, 1, 2, 1], [1, 1, 1, 1])[None]
    quality = torch.full((1, 2), 2.0, requires_grad=True)
    out = fcos_losses(logits, box_reg, quality, labels, reg_targets, box_quality="iou")
    # BCE(x, y) = softplus(x) - x * y with x = 2, y = 0.25 and 1; / 2 positives
    sp = math.log1p(math.exp(2.0))
    expected = ((sp - 2 * 0.25) + (sp - 2 * 1.0)) / 2
    assert out["loss_fcos_iou"].item() == pytest.approx(expected, rel=1e-6)
    (grad,) = torch.autograd.grad(out["loss_fcos_iou"], box_reg, allow_unused=True)
    assert grad is None or torch.count_nonzero(grad) == 0
