"""
Locations and location-to-target matching (pure functions).

Shape shorthand:
    N: images, L: levels, R: locations over all levels of one image, Hi x Wi: size of level i,
    M: ground-truth boxes of one image, K: classes.
Boxes are XYXY in pixels of the (padded) input; regression targets are (l, t, r, b) distances.
"""

import math
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import torch
from torch import Tensor

__all__ = [
    "compute_locations",
    "level_size_ranges",
    "LevelGrid",
    "MATCHING_METHODS",
    "match_locations",
    "candidate_pairs",
    "compute_targets",
    "batch_targets",
    "centerness_targets",
]

# Locations x boxes handled at once in matching: bounds memory when an image has many boxes.
_MATCH_CHUNK_ELEMENTS = 1 << 20


def compute_locations(
    sizes: List[Tuple[int, int]],
    strides: List[int],
    device: torch.device,
) -> List[Tensor]:
    """
    Image coordinates of the feature-map cells: cell (x, y) of a level with stride s sits at
    (x * s + s // 2, y * s + s // 2). Returns one (Hi * Wi, 2) tensor of (x, y) per level, in
    row-major order (the order of a flattened (Hi, Wi) map).
    """
    locations = []
    for (height, width), stride in zip(sizes, strides):
        shift = stride // 2
        xs = torch.arange(width, dtype=torch.float32, device=device) * stride + shift
        ys = torch.arange(height, dtype=torch.float32, device=device) * stride + shift
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        locations.append(torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=1))
    return locations


def level_size_ranges(sizes_of_interest: Sequence[float], num_levels: int) -> List[List[float]]:
    """[lo, hi] of max(l*, t*, r*, b*) per level: [-1, s0], [s0, s1], ..., [s_{L-2}, inf]."""
    if len(sizes_of_interest) != num_levels - 1:
        raise ValueError(
            f"sizes_of_interest has {len(sizes_of_interest)} values; "
            f"{num_levels} levels need {num_levels - 1}"
        )
    bounds = [-1.0] + [float(s) for s in sizes_of_interest] + [math.inf]
    return [[bounds[i], bounds[i + 1]] for i in range(num_levels)]


@dataclass(frozen=True)
class LevelGrid:
    """
    The locations of all levels of one (padded) input size, with what matching needs of each.

    Attributes:
        sizes: (Hi, Wi) per level; strides: per level; size_ranges: inclusive [lo, hi] of
            max(l*, t*, r*, b*) per level;
        points: (R, 2) (x, y) of every location, level after level, each level row-major;
        point_strides: (R,) and point_ranges: (R, 2): the stride and size range of each point.
    """

    sizes: Tuple[Tuple[int, int], ...]
    strides: Tuple[int, ...]
    size_ranges: Tuple[Tuple[float, float], ...]
    points: Tensor
    point_strides: Tensor
    point_ranges: Tensor

    @classmethod
    def build(
        cls,
        sizes: Sequence[Tuple[int, int]],
        strides: Sequence[int],
        size_ranges: Sequence[Sequence[float]],
        device: torch.device,
    ) -> "LevelGrid":
        """The grid of levels of sizes (Hi, Wi), with the given strides and size ranges."""
        if not len(sizes) == len(strides) == len(size_ranges):
            raise ValueError(
                f"{len(sizes)} level sizes, {len(strides)} strides and {len(size_ranges)} size "
                "ranges: need one of each per level"
            )
        counts = torch.tensor([h * w for h, w in sizes], device=device)
        stride_t = torch.tensor(strides, dtype=torch.float32, device=device)
        range_t = torch.tensor(size_ranges, dtype=torch.float32, device=device)
        return cls(
            sizes=tuple((int(h), int(w)) for h, w in sizes),
            strides=tuple(int(s) for s in strides),
            size_ranges=tuple((float(lo), float(hi)) for lo, hi in size_ranges),
            points=torch.cat(compute_locations(sizes, strides, device), dim=0),
            point_strides=stride_t.repeat_interleave(counts),
            point_ranges=range_t.repeat_interleave(counts, dim=0),
        )

    def __len__(self) -> int:
        return len(self.points)


MATCHING_METHODS = ("sparse", "dense")


def _pair_tests(grid: LevelGrid, boxes, loc_idx, box_idx, radius: float) -> Tuple[Tensor, Tensor]:
    """
    (P,) bool pair tests: ``inside``, the location lies strictly inside the box's centre region
    (the box itself with ``radius`` 0), and ``in_range``, its largest distance to the box's
    sides is in its level's size range.
    """
    pts, b = grid.points[loc_idx], boxes[box_idx]  # (P, 2), (P, 4)
    ltrb = torch.cat([pts - b[:, :2], b[:, 2:] - pts], dim=1)
    max_dist = ltrb.amax(dim=1)
    ranges = grid.point_ranges[loc_idx]
    in_range = (max_dist >= ranges[:, 0]) & (max_dist <= ranges[:, 1])
    if radius <= 0:
        return ltrb.amin(dim=1) > 0, in_range
    centers = (b[:, :2] + b[:, 2:]) / 2
    half = grid.point_strides[loc_idx, None] * radius
    lo = torch.maximum(centers - half, b[:, :2])
    hi = torch.minimum(centers + half, b[:, 2:])
    return torch.cat([pts - lo, hi - pts], dim=1).amin(dim=1) > 0, in_range


def _pair_ok(grid: LevelGrid, boxes, loc_idx, box_idx, radius: float) -> Tensor:
    """(P,) bool: the (location, box) pairs that pass the centre-region and size tests."""
    inside, in_range = _pair_tests(grid, boxes, loc_idx, box_idx, radius)
    return inside & in_range


def _sparse_pairs(grid: LevelGrid, boxes: Tensor, radius: float):
    """
    (location index, box index, valid) triples that can pass the centre-region test: per level
    and box a small window of cells around the box centre (a superset; the exact test comes
    after). Window cells outside the level are clamped onto it and marked invalid rather than
    removed, so no data-dependent shape (and no host sync on GPUs) arises.
    """
    centers = (boxes[:, :2] + boxes[:, 2:]) / 2  # (M, 2)
    width = int(math.ceil(2 * radius)) + 3
    loc_all, box_all, valid_all, base = [], [], [], 0
    box_ids = torch.arange(len(boxes), device=boxes.device)
    steps = torch.arange(width, device=boxes.device)
    for (height, w), s in zip(grid.sizes, grid.strides):
        first = torch.floor((centers - s * radius - s // 2) / s).long()  # (M, 2) cell x, y
        xs = first[:, 0, None] + steps  # (M, width)
        ys = first[:, 1, None] + steps
        valid = ((xs >= 0) & (xs < w))[:, None, :] & ((ys >= 0) & (ys < height))[:, :, None]
        cells = base + ys.clamp(0, height - 1)[:, :, None] * w + xs.clamp(0, w - 1)[:, None, :]
        loc_all.append(cells.flatten())  # (M * width * width,)
        box_all.append(box_ids[:, None, None].expand_as(cells).flatten())
        valid_all.append(valid.flatten())
        base += height * w
    yield torch.cat(loc_all), torch.cat(box_all), torch.cat(valid_all)


def _dense_pairs(num_locations: int, num_boxes: int, device):
    """All (location, box, valid) pairs, lazily in chunks that bound memory."""
    chunk = max(1, _MATCH_CHUNK_ELEMENTS // num_boxes)
    for start in range(0, num_locations, chunk):
        loc = torch.arange(start, min(start + chunk, num_locations), device=device)
        loc = loc.repeat_interleave(num_boxes)
        box = torch.arange(num_boxes, device=device).repeat(len(loc) // num_boxes)
        yield loc, box, torch.ones_like(loc, dtype=torch.bool)


def _pairs(grid: LevelGrid, boxes: Tensor, radius: float, method: str):
    """The (location, box, valid) batches ``method`` visits (see :func:`match_locations`)."""
    if method == "sparse":
        return _sparse_pairs(grid, boxes, radius)
    return _dense_pairs(len(grid), len(boxes), grid.points.device)


def match_locations(
    grid: LevelGrid,
    boxes: Tensor,
    radius: float,
    method: str = "sparse",
    legacy_areas: bool = False,
) -> Tensor:
    """
    Assign each location of ``grid`` to at most one of the (M, 4) XYXY ``boxes``.

    Args:
        radius: centre-sampling radius in strides (0 = whole box).
        method: "sparse" visits only the cells near each box centre (O(M) work; needs
            radius > 0); "dense" tests every (location, box) pair in memory-bounded chunks
            (O(R * M); the reference the sparse method is tested against).
        legacy_areas: rank candidates by maskrcnn-benchmark's box area (x1 - x0 + 1) *
            (y1 - y0 + 1), as the original FCOS does, instead of (x1 - x0) * (y1 - y0).
    Returns:
        (R,) int64 index of the matched box, -1 for background. Among several candidates the
        box of smallest area wins, the first one on equal areas.
    """
    _check_method(method, radius)
    matched = torch.full((len(grid),), -1, dtype=torch.long, device=grid.points.device)
    if len(boxes) == 0:
        return matched
    pairs = _pairs(grid, boxes, radius, method)
    offset = 1.0 if legacy_areas else 0.0
    areas = (boxes[:, 2] - boxes[:, 0] + offset) * (boxes[:, 3] - boxes[:, 1] + offset)  # (M,)
    return _assign(grid, boxes, areas, radius, pairs, matched)


def candidate_pairs(
    grid: LevelGrid, boxes: Tensor, radius: float, method: str = "sparse"
) -> Tuple[Tensor, Tensor, Tensor]:
    """
    Every (location, box) pair of :func:`match_locations`'s search whose location lies inside
    the box's centre region, with the size test's verdict: location indices (P,), box indices
    (P,) and ``in_range`` (P,) bool; the candidates of the tie-break are the pairs in range.
    For analyses (:mod:`fcos_d2.analyze`): the boolean selection syncs with the host.
    """
    _check_method(method, radius)
    empty = torch.zeros(0, dtype=torch.long, device=grid.points.device)
    if len(boxes) == 0:
        return empty, empty, empty.bool()
    pairs = _pairs(grid, boxes, radius, method)
    locs, box_ids, in_ranges = [empty], [empty], [empty.bool()]
    for loc, box, valid in pairs:
        inside, in_range = _pair_tests(grid, boxes, loc, box, radius)
        keep = valid & inside
        locs.append(loc[keep])
        box_ids.append(box[keep])
        in_ranges.append(in_range[keep])
    return torch.cat(locs), torch.cat(box_ids), torch.cat(in_ranges)


def _check_method(method: str, radius: float) -> None:
    if method not in MATCHING_METHODS:
        raise ValueError(f"method={method!r} is not one of {list(MATCHING_METHODS)}")
    if method == "sparse" and radius <= 0:
        raise ValueError(f"sparse matching needs a centre-sampling radius > 0, got {radius}")


def _assign(grid: LevelGrid, boxes, areas, radius, pairs, matched) -> Tensor:
    """
    Smallest-area candidate per location, first box on ties, over batches of (location index,
    box index, valid) pairs; fills and returns ``matched``. Pairs that fail the tests are masked,
    never removed: no host syncs.
    """
    num_boxes = len(boxes)
    # Dense pairs come in chunks of whole locations, so batches never share a location.
    for loc, box, valid in pairs:
        ok = valid & _pair_ok(grid, boxes, loc, box, radius)
        pair_area = torch.where(ok, areas[box], math.inf)
        best = torch.full((len(grid),), math.inf, device=boxes.device)
        best = best.scatter_reduce(0, loc, pair_area, "amin")
        tied = ok & (pair_area == best[loc])
        first = torch.full_like(matched, num_boxes)
        first = first.scatter_reduce(0, loc, torch.where(tied, box, num_boxes), "amin")
        matched = torch.where(first < num_boxes, first, matched)
    return matched


def compute_targets(
    grid: LevelGrid,
    boxes: Tensor,
    classes: Tensor,
    num_classes: int,
    radius: float,
    method: str = "sparse",
    legacy_areas: bool = False,
) -> Tuple[Tensor, Tensor]:
    """
    Training targets of one image.

    Args:
        grid, boxes, radius, method, legacy_areas: as in :func:`match_locations`;
        classes: (M,) int64 in [0, num_classes) (not checked here: the caller checks a batch once).
    Returns:
        labels: (R,) int64, ``num_classes`` for background;
        reg_targets: (R, 4) (l, t, r, b) of the matched box divided by the stride (0 if none).
    """
    matched = match_locations(grid, boxes, radius, method, legacy_areas)
    fg = matched >= 0
    safe = matched.clamp(min=0)
    # Gathers with a clamped index and a mask, no boolean indexing: no host sync.
    labels = torch.where(fg, classes[safe] if len(classes) else matched, num_classes)
    if len(boxes) == 0:
        return labels, torch.zeros((len(grid), 4), device=grid.points.device)
    box = boxes[safe]  # (R, 4)
    ltrb = torch.cat([grid.points - box[:, :2], box[:, 2:] - grid.points], dim=1)
    reg_targets = torch.where(fg[:, None], ltrb / grid.point_strides[:, None], 0.0)
    return labels, reg_targets


def batch_targets(
    grid: LevelGrid,
    boxes: Sequence[Tensor],
    classes: Sequence[Tensor],
    num_classes: int,
    radius: float,
    method: str = "sparse",
    legacy_areas: bool = False,
) -> Tuple[Tensor, Tensor]:
    """:func:`compute_targets` of N images on one grid: labels (N, R), reg_targets (N, R, 4)."""
    per_image = [
        compute_targets(grid, b, c, num_classes, radius, method, legacy_areas)
        for b, c in zip(boxes, classes)
    ]
    return torch.stack([t[0] for t in per_image]), torch.stack([t[1] for t in per_image])


def centerness_targets(reg_targets: Tensor) -> Tensor:
    """(P, 4) positive (l, t, r, b) -> (P,) sqrt(min(l,r)/max(l,r) * min(t,b)/max(t,b))."""
    lr, tb = reg_targets[:, 0::2], reg_targets[:, 1::2]
    ratio = (lr.amin(dim=1) / lr.amax(dim=1)) * (tb.amin(dim=1) / tb.amax(dim=1))
    return torch.sqrt(ratio)
