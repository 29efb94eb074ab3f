"""Locations, matching and centre-ness targets against hand-computed values."""

import math

import pytest
import torch

from fcos_d2.modeling import targets as T

INF_RANGE = [-1.0, math.inf]


def _grid(points, stride=8.0, size_range=INF_RANGE):
    """A one-level grid of arbitrary points (dense matching does not use the level's shape)."""
    pts = torch.tensor(points, dtype=torch.float32).reshape(-1, 2)
    return T.LevelGrid(
        sizes=((1, len(pts)),),
        strides=(int(stride),),
        size_ranges=(tuple(size_range),),
        points=pts,
        point_strides=torch.full((len(pts),), float(stride)),
        point_ranges=torch.tensor([size_range] * len(pts)).reshape(-1, 2),
    )


def _match(points, boxes, stride=8.0, size_range=INF_RANGE, radius=0.0):
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return T.match_locations(_grid(points, stride, size_range), boxes, radius, "dense").tolist()


def _image_grid(sizes, strides, sizes_of_interest=(64, 128)):
    ranges = T.level_size_ranges(list(sizes_of_interest), len(sizes))
    return T.LevelGrid.build(sizes, strides, ranges, torch.device("cpu"))


def test_locations_per_level():
    loc = T.compute_locations([(2, 3), (1, 2)], [8, 16], torch.device("cpu"))
    assert loc[0].tolist() == [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]]
    assert loc[1].tolist() == [[8, 8], [24, 8]]


def test_level_size_ranges_and_wrong_count():
    assert T.level_size_ranges([64, 128], 3) == [[-1, 64], [64, 128], [128, math.inf]]
    with pytest.raises(ValueError, match="sizes_of_interest has 2 values; 5 levels need 4"):
        T.level_size_ranges([64, 128], 5)


def test_level_grid_flattens_levels():
    grid = T.LevelGrid.build([(1, 2), (1, 1)], [8, 16], [[-1, 64], [64, math.inf]], "cpu")
    assert grid.points.tolist() == [[4, 4], [12, 4], [8, 8]]
    assert grid.point_strides.tolist() == [8, 8, 16]
    assert grid.point_ranges.tolist() == [[-1, 64], [-1, 64], [64, math.inf]]
    assert grid.sizes == ((1, 2), (1, 1)) and grid.strides == (8, 16) and len(grid) == 3


def test_level_grid_needs_one_stride_and_range_per_level():
    with pytest.raises(ValueError, match="2 level sizes, 1 strides and 2 size ranges"):
        T.LevelGrid.build([(1, 2), (1, 1)], [8], [[-1, 64], [64, math.inf]], "cpu")


def test_sparse_matching_refuses_radius_zero():
    with pytest.raises(ValueError, match="sparse matching needs a centre-sampling radius > 0"):
        T.match_locations(_grid([[5, 5]]), torch.tensor([[0.0, 0, 10, 10]]), 0.0, "sparse")
    with pytest.raises(ValueError, match="method='fast' is not one of"):
        T.match_locations(_grid([[5, 5]]), torch.tensor([[0.0, 0, 10, 10]]), 1.5, "fast")


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
        _grid([[5.0, 5.0]]), torch.zeros((0, 4)), torch.zeros((0,), dtype=torch.long), 3, 1.5
    )
    assert labels.tolist() == [3] and reg.tolist() == [[0, 0, 0, 0]]


def test_zero_size_box_gets_no_location():
    assert _match([[10, 10], [10, 5]], [[10, 0, 10, 20]], radius=1.5) == [-1, -1]


def test_compute_targets_values():
    # Location (30, 40), stride 8, box [10, 20, 70, 100]: ltrb (20, 20, 40, 60) / 8.
    labels, reg = T.compute_targets(
        _grid([[30.0, 40.0], [200.0, 200.0]]),
        torch.tensor([[10.0, 20.0, 70.0, 100.0]]),
        torch.tensor([2]),
        5,
        0.0,
        "dense",
    )
    assert labels.tolist() == [2, 5]
    assert reg.tolist() == [[2.5, 2.5, 5.0, 7.5], [0, 0, 0, 0]]


@pytest.mark.parametrize("bad_class", [3, -1])
def test_class_id_out_of_range_is_an_error(bad_class):
    from detectron2.modeling import build_model
    from detectron2.structures import Boxes, Instances

    from tests.common_utils import tiny_cfg

    model = build_model(tiny_cfg(num_classes=3))
    gt = Instances((64, 64), gt_boxes=Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 2)))
    gt.gt_classes = torch.tensor([0, bad_class])
    with pytest.raises(ValueError, match=f"class id {bad_class} .*NUM_CLASSES=3"):
        model.label_locations([(8, 8), (4, 4), (2, 2)], [gt])


def test_centerness_targets():
    reg = torch.tensor([[2.0, 4.0, 8.0, 4.0], [1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 6.0]])
    # sqrt(2/8 * 4/4) = 0.5; 1; sqrt(1/3 * 2/6) = 1/3
    assert torch.allclose(T.centerness_targets(reg), torch.tensor([0.5, 1.0, 1 / 3]))


def test_chunked_matching_equals_unchunked(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    grid = _image_grid([(25, 31), (13, 16), (7, 8)], [8, 16, 32])
    xy = torch.rand(50, 2, generator=gen) * 200
    boxes = torch.cat([xy, xy + torch.rand(50, 2, generator=gen) * 150 + 1], dim=1)
    full = T.match_locations(grid, boxes, 1.5, "dense")
    monkeypatch.setattr(T, "_MATCH_CHUNK_ELEMENTS", 333)
    assert torch.equal(T.match_locations(grid, boxes, 1.5, "dense"), full)
    assert (full >= 0).sum() > 0


@pytest.mark.parametrize("radius", [1.5, 1.0, 2.5])
def test_sparse_matching_equals_dense(radius):
    # Integer-aligned boxes put many locations exactly on region borders: the tests must agree.
    gen = torch.Generator().manual_seed(int(radius * 10))
    grid = _image_grid([(25, 31), (13, 16), (7, 8)], [8, 16, 32])
    xy = torch.randint(-20, 230, (300, 2), generator=gen).float()
    wh = torch.randint(0, 180, (300, 2), generator=gen).float()
    boxes = torch.cat([xy, xy + wh], dim=1)
    boxes[:5] = boxes[5]  # exact duplicates: equal areas, first index must win
    dense = T.match_locations(grid, boxes, radius, "dense")
    sparse = T.match_locations(grid, boxes, radius, "sparse")
    assert torch.equal(dense, sparse)
    assert (dense >= 0).sum() > 50 and not (dense == 5).any()
