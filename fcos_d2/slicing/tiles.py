"""Tiles of an image and the merge of their detections (tensors only: the same on any device)."""

from typing import List, NamedTuple, Tuple

import torch
from torchvision.ops import batched_nms

__all__ = ["SliceSettings", "tile_boxes", "cut_by_tile_border", "merge_detections"]


class SliceSettings(NamedTuple):
    """
    How an image is sliced: tiles of ``height`` x ``width`` pixels overlapping by ``overlap``
    (a fraction of the tile) on each axis, plus the whole image when ``whole_image`` (for the
    objects larger than the overlap, which no tile may hold whole).

    A tile's detection that reaches within ``edge_margin`` pixels of one of its borders inside
    the image is an object cut by the tile: it is left out (the object is whole in another tile,
    or in the whole image). The rest are merged by class-wise NMS at ``nms_threshold`` IoU.
    """

    height: int
    width: int
    overlap: float = 0.2
    whole_image: bool = True
    nms_threshold: float = 0.5
    edge_margin: float = 2.0

    def check(self) -> "SliceSettings":
        if self.height < 1 or self.width < 1:
            raise ValueError(f"slice size {self.height} x {self.width}: both must be >= 1 pixel")
        if not 0 <= self.overlap < 1:
            raise ValueError(f"slice overlap {self.overlap}: a fraction in [0, 1)")
        if not 0 < self.nms_threshold <= 1:
            raise ValueError(f"slice NMS threshold {self.nms_threshold}: in (0, 1]")
        return self


def _starts(size: int, tile: int, overlap: float) -> Tuple[List[int], int]:
    """Tile origins along one axis (the last one flush with the far edge) and the tile size."""
    if size <= tile:
        return [0], size
    step = max(1, int(tile * (1 - overlap)))
    return list(range(0, size - tile, step)) + [size - tile], tile


def tile_boxes(height: int, width: int, settings: SliceSettings) -> torch.Tensor:
    """(T, 4) int64 tiles (x0, y0, x1, y1) covering an image of ``height`` x ``width``, row by
    row; all of one size (the image's where it is smaller than a tile)."""
    ys, tile_h = _starts(height, settings.height, settings.overlap)
    xs, tile_w = _starts(width, settings.width, settings.overlap)
    return torch.tensor([[x, y, x + tile_w, y + tile_h] for y in ys for x in xs], dtype=torch.int64)


def cut_by_tile_border(
    boxes: torch.Tensor, tiles: torch.Tensor, height: int, width: int, margin: float
) -> torch.Tensor:
    """
    Args:
        boxes: (N, 4) detections in image pixels; tiles: (N, 4) the tile each came from.
    Returns:
        (N,) bool: the box reaches within ``margin`` of a border of its tile that lies inside
        the image (the image's own borders cut nothing).
    """
    tiles = tiles.to(boxes)
    inner = torch.stack(
        [tiles[:, 0] > 0, tiles[:, 1] > 0, tiles[:, 2] < width, tiles[:, 3] < height], dim=1
    )
    near = torch.cat(
        [boxes[:, :2] <= tiles[:, :2] + margin, boxes[:, 2:] >= tiles[:, 2:] - margin], dim=1
    )
    return (inner & near).any(dim=1)


def merge_detections(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    classes: torch.Tensor,
    nms_threshold: float,
    max_detections: int,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """
    Args:
        boxes: (N, 4) XYXY in image pixels; scores: (N,); classes: (N,) int64.
    Returns:
        (boxes (M, 4), scores (M,), classes (M,)): class-wise NMS (torchvision's), the best
        ``max_detections`` by decreasing score.
    """
    keep = batched_nms(boxes.float(), scores, classes, nms_threshold)[:max_detections]
    return boxes[keep], scores[keep], classes[keep]
