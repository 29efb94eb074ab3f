"""
Locations and location-to-target matching (pure functions).

Shape shorthand:
    N: images, L: levels, R: locations over all levels of one image, Hi x Wi: size of level i,
    M: ground-truth boxes of one image, K: classes.
Boxes are XYXY in pixels of the (padded) input; regression targets are (l, t, r, b) distances.
"""

import math
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

__all__ = [
    "compute_locations",
    "level_size_ranges",
    "flatten_levels",
    "match_locations",
    "compute_targets",
    "centerness_targets",
]

# Locations x boxes handled at once in matching: bounds memory when an image has many boxes.
_MATCH_CHUNK_ELEMENTS = 1 << 20


def compute_locations(
    sizes: Sequence[Tuple[int, int]],
    strides: Sequence[int],
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
            f"MODEL.FCOS.SIZES_OF_INTEREST has {len(sizes_of_interest)} values; "
            f"{num_levels} levels need {num_levels - 1}"
        )
    bounds = [-1.0] + [float(s) for s in sizes_of_interest] + [math.inf]
    return [[bounds[i], bounds[i + 1]] for i in range(num_levels)]


def flatten_levels(
    locations: List[Tensor], strides: Sequence[int], size_ranges: Sequence[Sequence[float]]
) -> Tuple[Tensor, Tensor, Tensor]:
    """Concatenate per-level locations into (R, 2), with (R,) strides and (R, 2) size ranges."""
    counts = [len(loc) for loc in locations]
    device = locations[0].device
    stride_t = torch.tensor(strides, dtype=torch.float32, device=device)
    range_t = torch.tensor(size_ranges, dtype=torch.float32, device=device)
    counts_t = torch.tensor(counts, device=device)
    return (
        torch.cat(locations, dim=0),
        stride_t.repeat_interleave(counts_t),
        range_t.repeat_interleave(counts_t, dim=0),
    )


def _pair_ok(locations, strides, size_ranges, boxes, loc_idx, box_idx, radius) -> Tensor:
    """(P,) bool: the (location, box) pairs that pass the centre-region and size tests."""
    pts, b = locations[loc_idx], boxes[box_idx]  # (P, 2), (P, 4)
    ltrb = torch.cat([pts - b[:, :2], b[:, 2:] - pts], dim=1)
    max_dist = ltrb.amax(dim=1)
    ok = (max_dist >= size_ranges[loc_idx, 0]) & (max_dist <= size_ranges[loc_idx, 1])
    if radius <= 0:
        return ok & (ltrb.amin(dim=1) > 0)
    centers = (b[:, :2] + b[:, 2:]) / 2
    half = strides[loc_idx, None] * radius
    lo = torch.maximum(centers - half, b[:, :2])
    hi = torch.minimum(centers + half, b[:, 2:])
    return ok & (torch.cat([pts - lo, hi - pts], dim=1).amin(dim=1) > 0)


def _sparse_pairs(level_sizes, level_strides, boxes: Tensor, radius: float):
    """
    (location index, box index) pairs that can pass the centre-region test: per level and box a
    small window of cells around the box centre (a superset; the exact test comes after).
    """
    centers = (boxes[:, :2] + boxes[:, 2:]) / 2  # (M, 2)
    width = int(math.ceil(2 * radius)) + 3
    loc_all, box_all, base = [], [], 0
    box_ids = torch.arange(len(boxes), device=boxes.device)
    for (height, w), s in zip(level_sizes, level_strides):
        first = torch.floor((centers - s * radius - s // 2) / s).long()  # (M, 2) cell x, y
        steps = torch.arange(width, device=boxes.device)
        xs = first[:, 0, None] + steps  # (M, width)
        ys = first[:, 1, None] + steps
        valid = ((xs >= 0) & (xs < w))[:, None, :] & ((ys >= 0) & (ys < height))[:, :, None]
        cells = base + ys[:, :, None] * w + xs[:, None, :]  # (M, width, width)
        loc_all.append(cells[valid])
        box_all.append(box_ids[:, None, None].expand_as(cells)[valid])
        base += height * w
    return torch.cat(loc_all), torch.cat(box_all)


def match_locations(
    locations: Tensor,
    strides: Tensor,
    size_ranges: Tensor,
    boxes: Tensor,
    radius: float,
    level_sizes: Optional[Sequence[Tuple[int, int]]] = None,
) -> Tensor:
    """
    Assign each location to at most one box.

    Args:
        locations: (R, 2); strides: (R,); size_ranges: (R, 2) inclusive [lo, hi];
        boxes: (M, 4) XYXY; radius: centre-sampling radius in strides (0 = whole box);
        level_sizes: (Hi, Wi) per level, in the order of ``locations``. With centre sampling
            it lets the matching visit only cells near each box centre (O(M), not O(R * M)).
    Returns:
        (R,) int64 index of the matched box, -1 for background. Among several candidates the
        box of smallest area wins, the first one on equal areas.
    """
    matched = torch.full((len(locations),), -1, dtype=torch.long, device=locations.device)
    if len(boxes) == 0:
        return matched
    if radius > 0 and level_sizes is not None:
        level_strides = strides[torch.tensor([0] + [h * w for h, w in level_sizes[:-1]]).cumsum(0)]
        pairs = [_sparse_pairs(level_sizes, level_strides.tolist(), boxes, radius)]
    else:
        pairs = _dense_pairs(len(locations), len(boxes), locations.device)
    return _assign(locations, strides, size_ranges, boxes, radius, pairs, matched)


def _dense_pairs(num_locations: int, num_boxes: int, device):
    """All (location, box) pairs, lazily in chunks that bound memory."""
    chunk = max(1, _MATCH_CHUNK_ELEMENTS // num_boxes)
    for start in range(0, num_locations, chunk):
        loc = torch.arange(start, min(start + chunk, num_locations), device=device)
        yield loc.repeat_interleave(num_boxes), torch.arange(num_boxes, device=device).repeat(
            len(loc)
        )


def _assign(locations, strides, size_ranges, boxes, radius, pairs, matched) -> Tensor:
    """
    Smallest-area candidate per location, first box on ties, over batches of (location index,
    box index) pairs; fills and returns ``matched``.
    """
    num_boxes = len(boxes)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])  # (M,)
    # Dense pairs come in chunks of whole locations, so batches never share a location.
    for loc, box in pairs:
        ok = _pair_ok(locations, strides, size_ranges, boxes, loc, box, radius)
        loc, box = loc[ok], box[ok]
        best = torch.full((len(locations),), math.inf, device=locations.device)
        best = best.scatter_reduce(0, loc, areas[box], "amin")
        tied = areas[box] == best[loc]
        first = torch.full_like(matched, num_boxes).scatter_reduce(0, loc[tied], box[tied], "amin")
        matched = torch.where(first < num_boxes, first, matched)
    return matched


def compute_targets(
    locations: Tensor,
    strides: Tensor,
    size_ranges: Tensor,
    boxes: Tensor,
    classes: Tensor,
    num_classes: int,
    radius: float,
    level_sizes: Optional[Sequence[Tuple[int, int]]] = None,
) -> Tuple[Tensor, Tensor]:
    """
    Training targets of one image.

    Args:
        locations, strides, size_ranges, boxes, radius: as in :func:`match_locations`;
        classes: (M,) int64 in [0, num_classes); level_sizes: see :func:`match_locations`.
    Returns:
        labels: (R,) int64, ``num_classes`` for background;
        reg_targets: (R, 4) (l, t, r, b) of the matched box divided by the stride (0 if none).
    """
    if len(classes) and (int(classes.min()) < 0 or int(classes.max()) >= num_classes):
        raise ValueError(
            f"ground-truth class id {int(classes.max())} (min {int(classes.min())}) is outside "
            f"[0, MODEL.FCOS.NUM_CLASSES={num_classes})"
        )
    matched = match_locations(locations, strides, size_ranges, boxes, radius, level_sizes)
    fg = matched >= 0
    labels = torch.full_like(matched, num_classes)
    labels[fg] = classes[matched[fg]]
    reg_targets = torch.zeros((len(locations), 4), device=locations.device)
    if fg.any():
        fg_boxes = boxes[matched[fg]]
        pts = locations[fg]
        ltrb = torch.cat([pts - fg_boxes[:, :2], fg_boxes[:, 2:] - pts], dim=1)
        reg_targets[fg] = ltrb / strides[fg, None]
    return labels, reg_targets


def centerness_targets(reg_targets: Tensor) -> Tensor:
    """(P, 4) positive (l, t, r, b) -> (P,) sqrt(min(l,r)/max(l,r) * min(t,b)/max(t,b))."""
    lr, tb = reg_targets[:, 0::2], reg_targets[:, 1::2]
    ratio = (lr.amin(dim=1) / lr.amax(dim=1)) * (tb.amin(dim=1) / tb.amax(dim=1))
    return torch.sqrt(ratio)
