"""Decoding, thresholds, top-k, NMS and the per-image cap against hand-computed values."""

import math

import pytest
import torch
from detectron2.structures import Boxes, Instances

from fcos_d2.modeling.postprocess import (
    FCOSPostprocess,
    apply_class_thresholds,
    decode_boxes,
    fcos_detections,
    fcos_inference_single_image,
    select_candidates,
)


def _post(score_thresh=0.05, topk=1000, nms_thresh=0.6, max_detections=100, **flags):
    return FCOSPostprocess(
        score_thresh=score_thresh,
        topk=topk,
        nms_thresh=nms_thresh,
        max_detections=max_detections,
        thresh_with_ctr=flags.get("thresh_with_ctr", False),
        legacy_conventions=flags.get("legacy_conventions", False),
    )


def _logit(p):
    p = torch.as_tensor(p, dtype=torch.float32)
    return torch.log(p / (1 - p))


def test_decode_boxes():
    out = decode_boxes(torch.tensor([[10.0, 20.0]]), torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    assert out.tolist() == [[9, 18, 13, 24]]


def test_select_candidates_threshold_and_topk():
    cls = torch.tensor([[0.9, 0.01], [0.04, 0.6], [0.3, 0.2]])
    ctr = torch.tensor([0.5, 1.0, 0.1])
    cls, ctr = _logit(cls).t(), _logit(ctr)  # (K, R) layout
    loc, k, joint = select_candidates(cls, ctr, 0.05, 1000, False)
    assert sorted(zip(loc.tolist(), k.tolist())) == [(0, 0), (1, 1), (2, 0), (2, 1)]
    loc, k, joint = select_candidates(cls, ctr, 0.05, 2, False)  # best two by cls * ctr
    assert list(zip(loc.tolist(), k.tolist())) == [(1, 1), (0, 0)]
    assert torch.allclose(joint, torch.tensor([0.6, 0.45]))
    loc, k, _ = select_candidates(cls, ctr, 0.5, 1000, True)  # threshold on cls * ctr
    assert list(zip(loc.tolist(), k.tolist())) == [(1, 1)]


def _two_level_outputs():
    # Level 0 (stride 8): A at (4, 4), B at (12, 4), both (1,1,1,1) strides -> 16 px boxes.
    # Level 1 (stride 16): C at (8, 8) with (0.75, 0.75, 0.25, 0.25) -> the same box as A.
    locations = [torch.tensor([[4.0, 4.0], [12.0, 4.0]]), torch.tensor([[8.0, 8.0]])]
    logits = [_logit([[0.9, 0.01], [0.81, 0.01]]).t(), _logit([[0.64, 0.49]]).t()]  # (K, R)
    box_reg = [torch.ones(4, 2), torch.tensor([[0.75, 0.75, 0.25, 0.25]]).t()]  # (4, R)
    ctr = [torch.zeros(2), torch.zeros(1)]  # centre-ness 0.5 everywhere
    return locations, logits, box_reg, ctr


def _infer_two_levels(score_thresh=0.05, nms_thresh=0.6, max_detections=100):
    locations, logits, box_reg, ctr = _two_level_outputs()
    return fcos_inference_single_image(
        locations,
        [8, 16],
        logits,
        box_reg,
        ctr,
        _post(score_thresh=score_thresh, nms_thresh=nms_thresh, max_detections=max_detections),
        (40, 50),
    )


def test_inference_nms_and_cap():
    out = _infer_two_levels()
    # C's class-0 box equals A's (IoU 1): suppressed. A and B overlap with IoU 1/3: both kept.
    # C's class-1 box is another class: kept.
    expected_scores = [math.sqrt(0.9 * 0.5), math.sqrt(0.81 * 0.5), math.sqrt(0.49 * 0.5)]
    assert torch.allclose(out.scores, torch.tensor(expected_scores))
    assert out.pred_classes.tolist() == [0, 0, 1]
    # Boxes are not clipped here (A starts at -4).
    expected_boxes = [[-4, -4, 12, 12], [4, -4, 20, 12], [-4, -4, 12, 12]]
    assert torch.allclose(out.pred_boxes.tensor, torch.tensor(expected_boxes, dtype=torch.float32))
    capped = _infer_two_levels(max_detections=2)
    assert capped.pred_classes.tolist() == [0, 0] and len(capped) == 2


def test_inference_lower_nms_threshold_suppresses_more():
    out = _infer_two_levels(nms_thresh=0.3)
    assert out.pred_classes.tolist() == [0, 1]  # B (IoU 1/3 with A) is now suppressed


def test_inference_with_nothing_above_threshold():
    out = _infer_two_levels(score_thresh=0.95)
    assert len(out) == 0 and out.pred_boxes.tensor.shape == (0, 4)


@pytest.mark.parametrize("thresh_with_ctr", [False, True])
def test_fast_path_equals_plain_reference(thresh_with_ctr):
    """The optimised decoding equals the plain recipe: sigmoid everywhere, threshold, top-k,
    decode, detectron2's batched_nms, cap."""
    from detectron2.layers import batched_nms

    gen = torch.Generator().manual_seed(3)
    sizes, strides, k = [(40, 60), (20, 30), (10, 15)], [8, 16, 32], 20
    locations, logits, box_reg, ctr = [], [], [], []
    for (h, w), s in zip(sizes, strides):
        xs, ys = torch.meshgrid(
            torch.arange(h) * s + s // 2, torch.arange(w) * s + s // 2, indexing="ij"
        )
        locations.append(torch.stack([ys.reshape(-1), xs.reshape(-1)], 1).float())
        logits.append(torch.randn(k, h * w, generator=gen) * 2 - 3)
        box_reg.append(torch.rand(4, h * w, generator=gen) * 6)
        ctr.append(torch.randn(h * w, generator=gen))
    kw = dict(score_thresh=0.1, topk=300, nms_thresh=0.6, max_detections=100)
    post = _post(thresh_with_ctr=thresh_with_ctr, **kw)
    out = fcos_inference_single_image(locations, strides, logits, box_reg, ctr, post, (320, 480))
    boxes, scores, classes = [], [], []
    for loc, s, lg, rg, ct in zip(locations, strides, logits, box_reg, ctr):
        cls = lg.t().sigmoid()  # (R, K)
        joint = cls * ct.sigmoid()[:, None]
        mask = (joint if thresh_with_ctr else cls) > 0.1
        val, (r, c) = joint[mask], mask.nonzero().unbind(1)
        val, top = val.topk(min(300, len(val)))
        r, c = r[top], c[top]
        d = rg.t()[r] * s
        boxes.append(torch.cat([loc[r] - d[:, :2], loc[r] + d[:, 2:]], 1))
        scores.append(val.sqrt())
        classes.append(c)
    boxes, scores, classes = torch.cat(boxes), torch.cat(scores), torch.cat(classes)
    keep = batched_nms(boxes, scores, classes, 0.6)[:100]
    assert len(keep) == 100 and len(out) == 100
    assert torch.equal(out.pred_classes, classes[keep])
    assert torch.equal(out.scores, scores[keep])
    assert torch.equal(out.pred_boxes.tensor, boxes[keep])


@pytest.mark.parametrize("thresh_with_ctr", [False, True])
def test_prefilter_keeps_every_pair_at_the_threshold_edge(thresh_with_ctr):
    """Logits a few ulps either side of the per-location bound: the logit prefilter must not
    change which pairs pass the exact float32 test (checked densely, pair by pair)."""
    t = 0.05
    ctr = torch.tensor([0.0, -1.0, 2.0, -2.9444, -2.9445, -30.0, 5.0, 1.0])  # p near t, p ~ 0
    p = ctr.sigmoid()
    base = torch.where(p > t, torch.log((t / p) / (1 - t / p)), torch.full_like(p, 30.0))
    if not thresh_with_ctr:
        base = torch.full_like(p, math.log(t / (1 - t)))
    steps = torch.tensor([-1e-5, -1e-6, -2e-7, 0.0, 2e-7, 1e-6, 1e-5, 50.0])
    cls = base[None, :] + steps[:, None]  # (K=8, R=8)
    loc, k, joint = select_candidates(cls, ctr, t, 1000, thresh_with_ctr)
    prob = cls.t().sigmoid()  # (R, K)
    dense = prob * p[:, None]
    expected = ((dense if thresh_with_ctr else prob) > t).nonzero()  # row-major (loc, class)
    assert 0 < len(expected) < 64
    assert list(zip(loc.tolist(), k.tolist())) == [tuple(x) for x in expected.tolist()]
    assert torch.equal(joint, dense[expected[:, 0], expected[:, 1]])


def _legacy_case(legacy: bool):
    # One level, stride 8, one class. A = [0, 0, 10, 10] and B = [5, 0, 15, 10] overlap with
    # IoU 50 / 150 = 0.333 on plain areas but 66 / 176 = 0.375 on "+1" areas ([0, 0, 11, 11] and
    # [5, 0, 16, 11]); of a 40 x 70 image, C = [52, 12, 76, 28] crosses the right edge and
    # D = [72, 40, 78, 46] (a location of the padding) lies beyond the bottom-right corner.
    locations = [torch.tensor([[5.0, 5.0], [10.0, 5.0], [60.0, 20.0], [74.0, 42.0]])]
    logits = [torch.tensor([[3.0, 2.0, 1.0, 0.5]])]  # (K, R): A best, then B, C, D
    distances = torch.tensor([[5.0, 5, 5, 5], [5, 5, 5, 5], [8, 8, 16, 8], [2, 2, 4, 4]])
    return fcos_detections(
        locations,
        [8],
        logits,
        [distances.t() / 8],
        [torch.zeros(4)],
        _post(nms_thresh=0.35, legacy_conventions=legacy),
        (40, 70),
    )


def test_legacy_conventions_clip_to_the_last_pixel_and_count_both_end_pixels_in_nms():
    boxes, scores, _ = _legacy_case(legacy=True)
    # B suppressed by A (0.375 > 0.35); C and D clipped to x <= w - 1 = 69, y <= h - 1 = 39
    assert boxes.tolist() == [[0, 0, 10, 10], [52, 12, 69, 28], [69, 39, 69, 39]]
    logits = (3.0, 1.0, 0.5)
    expected = [math.sqrt(torch.sigmoid(torch.tensor(x)).item() * 0.5) for x in logits]
    assert torch.allclose(scores, torch.tensor(expected))
    boxes, _, _ = _legacy_case(legacy=False)  # plain: IoU 0.333 keeps B; no clipping here
    expected = [[0, 0, 10, 10], [5, 0, 15, 10], [52, 12, 76, 28], [72, 40, 78, 46]]
    assert boxes.tolist() == expected


def test_class_thresholds_keep_scores_at_or_above_their_class_threshold():
    results = Instances(
        (10, 10),
        pred_boxes=Boxes(torch.zeros(4, 4)),
        scores=torch.tensor([0.5, 0.25, 0.75, 0.875]),
        pred_classes=torch.tensor([0, 1, 1, 1]),
    )
    kept = apply_class_thresholds(results, torch.tensor([0.5, 0.875]))
    assert kept.scores.tolist() == [0.5, 0.875]  # equal to the threshold is kept
