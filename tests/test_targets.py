"""Locations, matching and centre-ness targets against hand-computed values."""

import math

import pytest
import torch

from fcos_d2.modeling import targets as T

INF_RANGE = [-1.0, math.inf]


def _match(points, boxes, stride=8.0, size_range=INF_RANGE, radius=0.0):
    pts = torch.tensor(points, dtype=torch.float32)
    strides = torch.full((len(pts),), stride)
    ranges = torch.tensor([size_range] * len(pts))
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return T.match_locations(pts, strides, ranges, boxes, radius).tolist()


def test_locations_per_level():
    loc = T.compute_locations([(2, 3), (1, 2)], [8, 16], torch.device("cpu"))
    assert loc[0].tolist() == [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]]
    assert loc[1].tolist() == [[8, 8], [24, 8]]


def test_level_size_ranges_and_wrong_count():
    assert T.level_size_ranges([64, 128], 3) == [[-1, 64], [64, 128], [128, math.inf]]
    with pytest.raises(ValueError, match="SIZES_OF_INTEREST"):
        T.level_size_ranges([64, 128], 5)


def test_flatten_levels():
    loc = T.compute_locations([(1, 2), (1, 1)], [8, 16], torch.device("cpu"))
    pts, strides, ranges = T.flatten_levels(loc, [8, 16], [[-1, 64], [64, math.inf]])
    assert pts.tolist() == [[4, 4], [12, 4], [8, 8]]
    assert strides.tolist() == [8, 8, 16]
    assert ranges.tolist() == [[-1, 64], [-1, 64], [64, math.inf]]


def test_inside_box_is_strict():
    # (5, 5) inside; (10, 5) on the right edge (r* = 0); (11, 5) outside.
    assert _match([[5, 5], [10, 5], [11, 5]], [[0, 0, 10, 10]]) == [0, -1, -1]


def test_center_region():
    # Box centre (50, 50), stride 8, radius 1.5: region x, y in (38, 62), open interval.
    points = [[50, 50], [39, 50], [37, 50], [61, 50], [62, 50], [50, 63]]
    assert _match(points, [[0, 0, 100, 100]], radius=1.5) == [0, 0, -1, 0, -1, -1]
    # Without centre sampling every interior point is a candidate.
    assert _match(points, [[0, 0, 100, 100]], radius=0) == [0, 0, 0, 0, 0, 0]


def test_center_region_clipped_to_box():
    # Thin box: region x = [max(5 - 12, 0), min(5 + 12, 10)] = [0, 10], y = [38, 62].
    assert _match([[1, 50], [9, 50], [1, 37]], [[0, 0, 10, 100]], radius=1.5) == [0, 0, -1]


def test_size_range_boundaries_inclusive():
    # Location (50, 30) in box [0, 0, 100, 100]: l*=50, t*=30, r*=50, b*=70 -> max 70.
    box = [[0, 0, 100, 100]]
    assert _match([[50, 30]], box, size_range=[-1, 70]) == [0]
    assert _match([[50, 30]], box, size_range=[70, 140]) == [0]
    assert _match([[50, 30]], box, size_range=[70.5, 140]) == [-1]
    assert _match([[50, 30]], box, size_range=[-1, 69.5]) == [-1]


def test_size_test_uses_full_box_not_center_region():
    # With radius 1.5 the region is small, but max distance is to the full box: 70.
    assert _match([[50, 50]], [[0, 0, 100, 120]], size_range=[-1, 69], radius=1.5) == [-1]
    assert _match([[50, 50]], [[0, 0, 100, 120]], size_range=[-1, 70], radius=1.5) == [0]


def test_smallest_area_wins_and_first_on_ties():
    assert _match([[50, 50]], [[0, 0, 100, 100], [40, 40, 60, 60]]) == [1]
    assert _match([[50, 50]], [[40, 40, 60, 60], [0, 0, 100, 100]]) == [0]
    # Equal areas (200): the first box in annotation order.
    assert _match([[5, 5]], [[0, 0, 20, 10], [0, 0, 10, 20]]) == [0]
    assert _match([[5, 5]], [[0, 0, 10, 20], [0, 0, 20, 10]]) == [0]


def test_empty_image():
    assert _match([[5, 5], [7, 7]], []) == [-1, -1]
    labels, reg = T.compute_targets(
        torch.tensor([[5.0, 5.0]]),
        torch.tensor([8.0]),
        torch.tensor([INF_RANGE]),
        torch.zeros((0, 4)),
        torch.zeros((0,), dtype=torch.long),
        3,
        1.5,
    )
    assert labels.tolist() == [3] and reg.tolist() == [[0, 0, 0, 0]]


def test_zero_size_box_gets_no_location():
    assert _match([[10, 10], [10, 5]], [[10, 0, 10, 20]], radius=1.5) == [-1, -1]


def test_compute_targets_values():
    # Location (30, 40), stride 8, box [10, 20, 70, 100]: ltrb (20, 20, 40, 60) / 8.
    labels, reg = T.compute_targets(
        torch.tensor([[30.0, 40.0], [200.0, 200.0]]),
        torch.tensor([8.0, 8.0]),
        torch.tensor([INF_RANGE, INF_RANGE]),
        torch.tensor([[10.0, 20.0, 70.0, 100.0]]),
        torch.tensor([2]),
        5,
        0.0,
    )
    assert labels.tolist() == [2, 5]
    assert reg.tolist() == [[2.5, 2.5, 5.0, 7.5], [0, 0, 0, 0]]


def test_class_id_out_of_range_is_an_error():
    with pytest.raises(ValueError, match="NUM_CLASSES=3"):
        T.compute_targets(
            torch.tensor([[5.0, 5.0]]),
            torch.tensor([8.0]),
            torch.tensor([INF_RANGE]),
            torch.tensor([[0.0, 0.0, 10.0, 10.0]]),
            torch.tensor([3]),
            3,
            0.0,
        )


def test_centerness_targets():
    reg = torch.tensor([[2.0, 4.0, 8.0, 4.0], [1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 6.0]])
    # sqrt(2/8 * 4/4) = 0.5; 1; sqrt(1/3 * 2/6) = 1/3
    assert torch.allclose(T.centerness_targets(reg), torch.tensor([0.5, 1.0, 1 / 3]))


def test_chunked_matching_equals_unchunked(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    loc = T.compute_locations([(25, 31), (13, 16), (7, 8)], [8, 16, 32], torch.device("cpu"))
    pts, strides, ranges = T.flatten_levels(loc, [8, 16, 32], T.level_size_ranges([64, 128], 3))
    xy = torch.rand(50, 2, generator=gen) * 200
    boxes = torch.cat([xy, xy + torch.rand(50, 2, generator=gen) * 150 + 1], dim=1)
    full = T.match_locations(pts, strides, ranges, boxes, 1.5)
    monkeypatch.setattr(T, "_MATCH_CHUNK_ELEMENTS", 333)
    assert torch.equal(T.match_locations(pts, strides, ranges, boxes, 1.5), full)
    assert (full >= 0).sum() > 0


@pytest.mark.parametrize("radius", [1.5, 1.0, 2.5])
def test_sparse_matching_equals_dense(radius):
    # Integer-aligned boxes put many locations exactly on region borders: the tests must agree.
    gen = torch.Generator().manual_seed(int(radius * 10))
    sizes, strides = [(25, 31), (13, 16), (7, 8)], [8, 16, 32]
    loc = T.compute_locations(sizes, strides, torch.device("cpu"))
    pts, st, ranges = T.flatten_levels(loc, strides, T.level_size_ranges([64, 128], 3))
    xy = torch.randint(-20, 230, (300, 2), generator=gen).float()
    wh = torch.randint(0, 180, (300, 2), generator=gen).float()
    boxes = torch.cat([xy, xy + wh], dim=1)
    boxes[:5] = boxes[5]  # exact duplicates: equal areas, first index must win
    dense = T.match_locations(pts, st, ranges, boxes, radius)
    sparse = T.match_locations(pts, st, ranges, boxes, radius, level_sizes=sizes)
    assert torch.equal(dense, sparse)
    assert (dense >= 0).sum() > 50 and not (dense == 5).any()
