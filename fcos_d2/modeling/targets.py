"""
Locations and location-to-target matching (pure functions).

Shape shorthand:
    N: images, L: levels, R: locations over all levels of one image, Hi x Wi: size of level i,
    M: ground-truth boxes of one image, K: classes.
Boxes are XYXY in pixels of the (padded) input; regression targets are (l, t, r, b) distances.
"""

import math
from typing import List, Sequence, Tuple

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
    (x * s + s // 2, y * s + s // 2). Returns one (Hi * Wi, 2) tensor of (x, y) per level, in row-major order (the order of a
    flattened (Hi, Wi) map).
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


def _ltrb(locations: Tensor, boxes: Tensor) -> Tensor:
    """(R, 2) points and (M, 4) boxes -> (R, M, 4) distances (l, t, r, b)."""
    x, y = locations[:, 0, None], locations[:, 1, None]
    return torch.stack([x - boxes[:, 0], y - boxes[:, 1], boxes[:, 2] - x, boxes[:, 3] - y], dim=2)


def _candidates(locations: Tensor, strides: Tensor, boxes: Tensor, radius: float) -> Tensor:
    """(R, M) bool: the location is strictly inside the box's centre region (or the box)."""
    if radius <= 0:
        return _ltrb(locations, boxes).amin(dim=2) > 0
    centers = (boxes[:, :2] + boxes[:, 2:]) / 2  # (M, 2)
    half = strides[:, None, None] * radius  # (R, 1, 1)
    lo = torch.maximum(centers[None] - half, boxes[None, :, :2])  # (R, M, 2)
    hi = torch.minimum(centers[None] + half, boxes[None, :, 2:])
    pts = locations[:, None, :]
    return torch.cat([pts - lo, hi - pts], dim=2).amin(dim=2) > 0


def match_locations(
    locations: Tensor, strides: Tensor, size_ranges: Tensor, boxes: Tensor, radius: float
) -> Tensor:
    """
    Assign each location to at most one box.

    Args:
        locations: (R, 2); strides: (R,); size_ranges: (R, 2) inclusive [lo, hi];
        boxes: (M, 4) XYXY; radius: centre-sampling radius in strides (0 = whole box).
    Returns:
        (R,) int64 index of the matched box, -1 for background. Among several candidates the
        box of smallest area wins, the first one on equal areas.
    """
    matched = torch.full((len(locations),), -1, dtype=torch.long, device=locations.device)
    if len(boxes) == 0:
        return matched
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])  # (M,)
    chunk = max(1, _MATCH_CHUNK_ELEMENTS // len(boxes))
    for start in range(0, len(locations), chunk):
        sl = slice(start, start + chunk)
        max_dist = _ltrb(locations[sl], boxes).amax(dim=2)  # (Rc, M)
        ok = (max_dist >= size_ranges[sl, :1]) & (max_dist <= size_ranges[sl, 1:])
        ok &= _candidates(locations[sl], strides[sl], boxes, radius)
        cand_area = torch.where(ok, areas[None], torch.full_like(max_dist, math.inf))
        min_area, idx = cand_area.min(dim=1)
        matched[sl] = torch.where(torch.isinf(min_area), torch.full_like(idx, -1), idx)
    return matched


def compute_targets(
    locations: Tensor,
    strides: Tensor,
    size_ranges: Tensor,
    boxes: Tensor,
    classes: Tensor,
    num_classes: int,
    radius: float,
) -> Tuple[Tensor, Tensor]:
    """
    Training targets of one image.

    Args:
        locations, strides, size_ranges, boxes, radius: as in :func:`match_locations`;
        classes: (M,) int64 in [0, num_classes).
    Returns:
        labels: (R,) int64, ``num_classes`` for background;
        reg_targets: (R, 4) (l, t, r, b) of the matched box divided by the stride (0 if none).
    """
    if len(classes) and (int(classes.min()) < 0 or int(classes.max()) >= num_classes):
        raise ValueError(
            f"ground-truth class id {int(classes.max())} (min {int(classes.min())}) is outside "
            f"[0, MODEL.FCOS.NUM_CLASSES={num_classes})"
        )
    matched = match_locations(locations, strides, size_ranges, boxes, radius)
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
