"""
What FCOS's matching does with the boxes of one image (pure functions over the
:class:`~fcos_d2.modeling.core.FCOSMatcher` training uses): which boxes get a location (best
possible recall), which positive locations several boxes compete for (ambiguity) and why a box
gets none.

Shape shorthand: L levels, R locations over all levels, M boxes of the image, P candidate
(location, box) pairs.
"""

import math
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import torch
from torch import Tensor

from ..modeling.core import FCOSMatcher
from ..modeling.targets import LevelGrid

__all__ = ["REASONS", "ImageMatch", "analyse_matching", "level_sizes", "centre_sizes"]

# Why a box is not recalled (index = code in ImageMatch.reasons; 0 = recalled):
REASONS = (
    "recalled",
    # no location of the level whose size range holds the box (by its centre size) lies inside
    # its centre region: the box is too small (or too thin) for that level's stride
    "smaller_than_stride",
    # locations lie inside it, but at none of them is the largest distance to its sides in that
    # location's level range (or its centre size is in no level's range)
    "outside_ranges",
    # it has candidate locations, and the min-area tie-break gives every one to smaller boxes
    # (or to an earlier box of equal area)
    "taken_by_smaller_boxes",
)


@dataclass(frozen=True)
class ImageMatch:
    """
    Matching statistics of one image.

    Attributes:
        reasons: (M,) int64 index into :data:`REASONS` (0: the box has at least one location).
        level_positives: (L,) locations of each level assigned to some box.
        level_boxes: (L,) boxes with at least one location on each level.
        ambiguous: positive locations that pass the tests of two or more boxes;
        ambiguous_different_class: those among them whose boxes are of two or more classes.
    """

    reasons: Tensor
    level_positives: Tensor
    level_boxes: Tensor
    ambiguous: int
    ambiguous_different_class: int

    @property
    def positives(self) -> int:
        return int(self.level_positives.sum())


def level_sizes(
    image_size: Tuple[int, int], strides: Sequence[int], size_divisibility: int
) -> List[Tuple[int, int]]:
    """
    (Hi, Wi) of each level for an (h, w) image: padded up to ``size_divisibility`` as the
    detector's ``ImageList`` pads it, then ceil(size / stride), what a chain of stride-2
    convolutions with padding gives.
    """
    div = max(int(size_divisibility), 1)
    h, w = (int(math.ceil(v / div)) * div for v in image_size)
    return [(int(math.ceil(h / s)), int(math.ceil(w / s))) for s in strides]


def centre_sizes(boxes: Tensor) -> Tensor:
    """(M, 4) XYXY -> (M,) max(l, t, r, b) at the box centre: half the longer side."""
    return torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) / 2


def _location_levels(grid: LevelGrid) -> Tensor:
    counts = torch.tensor([h * w for h, w in grid.sizes], device=grid.points.device)
    return torch.arange(len(grid.sizes), device=grid.points.device).repeat_interleave(counts)


def analyse_matching(
    matcher: FCOSMatcher, grid: LevelGrid, boxes: Tensor, classes: Tensor
) -> ImageMatch:
    """
    Statistics of ``matcher`` on one image's (M, 4) XYXY ``boxes`` of (M,) ``classes`` over the
    locations of ``grid``: the final assignment is ``matcher.match`` (the function training
    calls), the competition before its tie-break ``matcher.candidates``.
    """
    boxes, classes = boxes.reshape(-1, 4).float(), classes.reshape(-1).long()
    num_levels, num_boxes = len(grid.sizes), len(boxes)
    device = grid.points.device
    levels = _location_levels(grid)  # (R,)
    matched = matcher.match(grid, boxes)  # (R,)
    positive = matched >= 0
    level_positives = torch.bincount(levels[positive], minlength=num_levels)
    # distinct (level, box) pairs among the assigned locations
    assigned = torch.unique(levels[positive] * max(num_boxes, 1) + matched[positive])
    level_boxes = torch.bincount(assigned // max(num_boxes, 1), minlength=num_levels)

    loc, box, in_range = matcher.candidates(grid, boxes)  # (P,) each
    cand_loc, cand_box = loc[in_range], box[in_range]
    count = torch.bincount(cand_loc, minlength=len(grid))  # (R,) candidate boxes per location
    cls = classes[cand_box]
    lo = torch.full((len(grid),), -1, dtype=torch.long, device=device)
    hi = lo.clone()
    lo = lo.scatter_reduce(0, cand_loc, cls, "amin", include_self=False)
    hi = hi.scatter_reduce(0, cand_loc, cls, "amax", include_self=False)
    ambiguous = positive & (count >= 2)
    different = ambiguous & (lo != hi)

    recalled = torch.zeros(num_boxes, dtype=torch.bool, device=device)
    recalled[matched[positive]] = True
    has_candidate = torch.zeros_like(recalled)
    has_candidate[cand_box] = True
    reasons = torch.zeros(num_boxes, dtype=torch.long, device=device)
    reasons[~recalled & has_candidate] = REASONS.index("taken_by_smaller_boxes")
    without = ~recalled & ~has_candidate
    if without.any():
        reasons[without] = _reason_without_candidates(grid, boxes, loc, box, levels)[without]
    return ImageMatch(
        reasons=reasons,
        level_positives=level_positives,
        level_boxes=level_boxes,
        ambiguous=int(ambiguous.sum()),
        ambiguous_different_class=int(different.sum()),
    )


def _reason_without_candidates(grid: LevelGrid, boxes, loc, box, levels) -> Tensor:
    """(M,) reason code of each box as if it had no candidate location."""
    ranges = torch.tensor(grid.size_ranges, dtype=torch.float32, device=boxes.device)  # (L, 2)
    sizes = centre_sizes(boxes)[:, None]  # (M, 1)
    fits = (sizes >= ranges[:, 0]) & (sizes <= ranges[:, 1])  # (M, L)
    inside = torch.zeros_like(fits)  # (M, L): some location of the level inside the region
    inside[box, levels[loc]] = True
    small = fits.any(dim=1) & ~(inside & fits).any(dim=1)
    return torch.where(small, REASONS.index("smaller_than_stride"), REASONS.index("outside_ranges"))
