"""
The matching statistics of ``fcos_d2.analyze`` on hand-built boxes whose answers are worked out
by hand in the comments (one level of stride 8 unless said: its locations sit at 4, 12, 20, ...
on both axes), and against a plain-Python reference on random boxes.
"""

import math

import numpy as np
import pytest
import torch
from detectron2.modeling import build_backbone

from fcos_d2.analyze.matching import REASONS, analyse_matching, centre_sizes, level_sizes
from fcos_d2.modeling.core import FCOSMatcher
from tests.fcos_reference import RANGES, reference_candidates

INF = math.inf


def matcher(radius=0.0, ranges=((-1, INF),), strides=(8,)):
    return FCOSMatcher(
        strides=tuple(strides),
        size_ranges=tuple(ranges),
        center_sampling_radius=radius,
        legacy_areas=False,
    )


def analyse(m, boxes, classes, size=(64, 64)):
    grid = m.grid(level_sizes(size, m.strides, 32), torch.device("cpu"))
    result = analyse_matching(
        m, grid, torch.tensor(boxes, dtype=torch.float32), torch.tensor(classes, dtype=torch.long)
    )
    return result, [REASONS[i] for i in result.reasons.tolist()]


@pytest.mark.parametrize("classes, different", [([0, 0], 0), ([0, 1], 4)])
def test_nested_boxes_share_the_inner_locations(classes, different):
    # outer 32 x 32: locations {4, 12, 20, 28}^2 = 16 inside; inner 16 x 16: {4, 12}^2 = 4, all
    # also inside the outer one, and the smaller inner box wins them: 12 + 4 positives, the 4
    # shared ones ambiguous (between two classes when the classes differ).
    r, reasons = analyse(matcher(), [[0, 0, 32, 32], [0, 0, 16, 16]], classes)
    assert reasons == ["recalled", "recalled"]
    assert r.positives == 16 and r.level_boxes.tolist() == [2]
    assert r.ambiguous == 4
    assert r.ambiguous_different_class == different


def test_box_smaller_than_the_stride_is_not_recalled():
    # 3 x 3 at the origin: the first location (4, 4) is outside it
    r, reasons = analyse(matcher(), [[0, 0, 3, 3]], [0])
    assert reasons == ["smaller_than_stride"] and r.positives == 0


def test_box_larger_than_every_range_is_not_recalled():
    # one level whose range stops at 10: a 64 x 64 box has max(l, t, r, b) >= 32 everywhere
    r, reasons = analyse(matcher(ranges=((-1, 10),)), [[0, 0, 64, 64]], [0])
    assert reasons == ["outside_ranges"] and r.positives == 0


def test_large_box_whose_locations_all_go_to_smaller_boxes():
    # the 16 x 16 box holds the 4 locations {4, 12}^2; each 8 x 8 quarter holds one of them and
    # is smaller: all 4 go to the quarters, each location ambiguous between 2 boxes
    quarters = [[0, 0, 8, 8], [8, 0, 16, 8], [0, 8, 8, 16], [8, 8, 16, 16]]
    r, reasons = analyse(matcher(), [[0, 0, 16, 16]] + quarters, [0] * 5)
    assert reasons == ["taken_by_smaller_boxes"] + ["recalled"] * 4
    assert r.positives == 4 and r.ambiguous == 4


@pytest.mark.parametrize("radius, positives", [(0.0, 64), (1.5, 4)])
def test_centre_sampling_on_and_off(radius, positives):
    # 64 x 64: off, all of {4, ..., 60}^2 = 64 locations; on, the centre region 32 +- 12 holds
    # x, y in {28, 36}: 4 locations
    r, reasons = analyse(matcher(radius), [[0, 0, 64, 64]], [0])
    assert reasons == ["recalled"] and r.positives == positives


def test_centre_sampling_separates_nested_boxes():
    # with radius 1.5 the outer 48 x 48 box (centre 24) keeps {20, 28}^2 and the inner 16 x 16
    # at (16, 16) (centre 24 too) the same {20, 28}^2: all 4 ambiguous, all to the inner box
    r, reasons = analyse(matcher(1.5), [[0, 0, 48, 48], [16, 16, 32, 32]], [0, 1])
    assert reasons == ["taken_by_smaller_boxes", "recalled"]
    assert r.positives == 4 and r.ambiguous == 4 and r.ambiguous_different_class == 4


def test_image_without_boxes():
    r, reasons = analyse(matcher(1.5), np.zeros((0, 4)), np.zeros(0))
    assert reasons == [] and r.positives == 0 and r.ambiguous == 0


def test_counts_match_a_plain_python_reference_on_random_boxes():
    gen = np.random.default_rng(3)
    strides, h, w = (8, 16, 32), 96, 128
    m = matcher(1.5, [(float(a), float(b)) for a, b in RANGES], strides)
    for _ in range(5):
        n = 12
        xy = gen.uniform(0, [w - 4, h - 4], (n, 2))
        wh = gen.uniform(2, 90, (n, 2))
        boxes = np.concatenate([xy, np.minimum(xy + wh, [w, h])], axis=1).round(1)
        classes = gen.integers(0, 3, n)
        r, reasons = analyse(m, boxes.tolist(), classes.tolist(), size=(h, w))
        ref = reference_candidates(h, w, strides, boxes.tolist(), 1.5, RANGES)
        winners = {wnr for _, wnr in ref if wnr is not None}
        positives = [(found, wnr) for found, wnr in ref if wnr is not None]
        assert r.positives == len(positives)
        assert r.ambiguous == sum(len(found) >= 2 for found, _ in positives)
        assert r.ambiguous_different_class == sum(
            len({classes[i] for i in found}) >= 2 for found, _ in positives
        )
        assert [i for i, x in enumerate(reasons) if x == "recalled"] == sorted(winners)
        with_candidates = {i for found, _ in ref for i in found}
        taken = [i for i, x in enumerate(reasons) if x == "taken_by_smaller_boxes"]
        assert taken == sorted(with_candidates - winners)


def test_level_sizes_are_the_feature_sizes_of_the_backbone(cfg):
    # cfg: the tests' R-18 P3-P5 model; an odd image size, padded to 32 first
    backbone = build_backbone(cfg).eval()
    h, w = 97, 131
    with torch.no_grad():
        features = backbone(torch.zeros(1, 3, 128, 160))  # 97 x 131 padded up to 32
    names = cfg.MODEL.FCOS.IN_FEATURES
    strides = [backbone.output_shape()[n].stride for n in names]
    expected = [tuple(features[n].shape[-2:]) for n in names]
    assert level_sizes((h, w), strides, backbone.size_divisibility) == expected


def test_centre_size_is_half_the_longer_side():
    assert centre_sizes(torch.tensor([[0.0, 0.0, 10.0, 30.0], [5.0, 5.0, 9.0, 6.0]])).tolist() == [
        15.0,
        2.0,
    ]
