"""classwise_nms, in each of its forms, against per-class NMS and detectron2's batched_nms."""

import pytest
import torch
from detectron2.layers import batched_nms
from torchvision.ops import nms

import fcos_d2.layers.nms as nms_module
from fcos_d2.layers import classwise_nms


def _random_nms_input(n, num_classes, seed):
    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=gen) * 500
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=gen) * 80 + 1], dim=1)
    scores = torch.rand(n, generator=gen)
    classes = torch.randint(0, num_classes, (n,), generator=gen)
    return boxes, scores, classes


def _traced_classwise_nms():
    """classwise_nms as a TorchScript trace (the path of exported graphs), traced on other
    data than it is then given."""
    return torch.jit.trace(
        lambda b, s, c: classwise_nms(b, s, c, 0.6), _random_nms_input(50, 3, seed=9)
    )


def _per_class_reference(boxes, scores, classes, threshold):
    """torchvision's plain ``nms`` class by class, merged by decreasing score."""
    kept = []
    for c in classes.unique():
        idx = (classes == c).nonzero()[:, 0]
        kept.append(idx[nms(boxes[idx], scores[idx], threshold)])
    kept = torch.cat(kept)
    return kept[scores[kept].argsort(descending=True)]


def _dense_boxes(n: int, gen: torch.Generator):
    """n boxes of 40-60 px in a 160 px square (chains of suppression) and their scores."""
    xy = torch.rand(n, 2, generator=gen) * 100
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=gen) * 20 + 40], dim=1)
    return boxes, torch.rand(n, generator=gen)


def _crowded_input(largest: int, n: int, seed: int = 0):
    """n dense boxes: class 0 holds ``largest`` of them, classes 1-20 the rest."""
    boxes, scores = _dense_boxes(n, torch.Generator().manual_seed(seed))
    classes = torch.cat([torch.zeros(largest), torch.arange(n - largest) % 20 + 1]).long()
    return boxes, scores, classes


@pytest.mark.parametrize(
    "largest, n, grouped",
    # the measured rule: the grouped form for >= 1000 boxes with <= 64 in the largest class
    [(64, 1000, True), (65, 1000, False), (64, 999, False), (30, 3000, False)],
)
def test_cpu_classwise_nms_equals_per_class_nms_on_both_sides_of_the_rule(
    largest, n, grouped, monkeypatch
):
    calls = []
    form = nms_module._classwise_nms_grouped
    monkeypatch.setattr(
        nms_module, "_classwise_nms_grouped", lambda *a: calls.append(1) or form(*a)
    )
    boxes, scores, classes = _crowded_input(largest, n)
    expected = _per_class_reference(boxes, scores, classes, 0.5)
    assert n // 10 < len(expected) < 3 * n // 4  # suppression within classes, not across
    assert torch.equal(classwise_nms(boxes, scores, classes, 0.5), expected)
    assert bool(calls) == grouped


@pytest.mark.parametrize("num_classes", [80, 1])
def test_traced_classwise_nms_equals_detectron2_batched_nms(num_classes):
    boxes, scores, classes = _random_nms_input(3000, num_classes, seed=0)
    expected = batched_nms(boxes, scores, classes, 0.6)
    assert 100 < len(expected) < 3000
    assert torch.equal(_traced_classwise_nms()(boxes, scores, classes), expected)


def test_traced_classwise_nms_takes_an_empty_input():
    out = _traced_classwise_nms()(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0).long())
    assert out.shape == (0,)


def test_scripted_classwise_nms_equals_detectron2_batched_nms():
    scripted = torch.jit.script(classwise_nms)  # the eager CPU grouping is not scripted
    boxes, scores, classes = _random_nms_input(500, 5, seed=1)
    expected = batched_nms(boxes, scores, classes, 0.5)
    assert 10 < len(expected) < 500
    assert torch.equal(scripted(boxes, scores, classes, 0.5), expected)


def test_eager_classwise_nms_takes_an_empty_input():
    out = classwise_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0).long(), 0.5)
    assert out.shape == (0,) and out.dtype == torch.long


def test_a_suppressed_box_suppresses_nothing_in_every_form():
    # A chain of one class: A suppresses B (IoU 60 / 140 = 0.43); B would suppress C (0.43) but
    # is gone, and A and C overlap by 20 / 180 = 0.11: A and C are kept.
    boxes = torch.tensor([[0.0, 0, 10, 10], [4, 0, 14, 10], [8, 0, 18, 10]])
    scores, classes = torch.tensor([0.9, 0.8, 0.7]), torch.zeros(3, dtype=torch.long)
    assert batched_nms(boxes, scores, classes, 0.4).tolist() == [0, 2]
    assert nms_module._classwise_nms_grouped(boxes, scores, classes, 0.4).tolist() == [0, 2]
    traced = torch.jit.trace(lambda b, s, c: classwise_nms(b, s, c, 0.4), (boxes, scores, classes))
    assert traced(boxes, scores, classes).tolist() == [0, 2]
    assert torch.jit.script(classwise_nms)(boxes, scores, classes, 0.4).tolist() == [0, 2]


def test_grouped_form_equals_batched_nms_on_crowded_classes():
    # Dense boxes (many chains of suppression) in classes of about 37 boxes each
    gen = torch.Generator().manual_seed(4)
    boxes, scores = _dense_boxes(3000, gen)
    classes = torch.randint(0, 80, (3000,), generator=gen)
    expected = batched_nms(boxes, scores, classes, 0.5)
    assert 500 < len(expected) < 2000  # about half of the boxes suppressed
    assert torch.equal(nms_module._classwise_nms_grouped(boxes, scores, classes, 0.5), expected)
