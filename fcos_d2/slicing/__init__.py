"""
Sliced inference for small objects in large images: the image is cut into overlapping tiles,
each run through the model at its test-time size, and the detections merged in the image's
coordinates (``fcos-d2 predict/evaluate --slice H W``, or :class:`SlicedPredictor` in Python).
"""

from .evaluate import evaluate_sliced
from .predictor import SlicedPredictor
from .tiles import SliceSettings, cut_by_tile_border, merge_detections, tile_boxes

__all__ = [
    "SliceSettings",
    "SlicedPredictor",
    "cut_by_tile_border",
    "evaluate_sliced",
    "merge_detections",
    "tile_boxes",
]
