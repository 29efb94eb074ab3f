"""Sliced inference: the tile grid, the cut-object rule and the merge worked out by hand, and a
sliced run of a detector whose answers are known (bright squares found by thresholding)."""

import cv2
import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from fcos_d2.slicing import (
    SlicedPredictor,
    SliceSettings,
    cut_by_tile_border,
    merge_detections,
    tile_boxes,
)
from tests.common_utils import tiny_cfg, with_saved_weights


def test_tiles_step_by_tile_times_one_minus_overlap_and_end_flush_with_the_image():
    # step int(512 * 0.8) = 409; x: 0, then 700 - 512 = 188; y: 0, 409, then 1000 - 512 = 488
    tiles = tile_boxes(1000, 700, SliceSettings(512, 512, overlap=0.2)).tolist()
    assert tiles == [
        [0, 0, 512, 512],
        [188, 0, 700, 512],
        [0, 409, 512, 921],
        [188, 409, 700, 921],
        [0, 488, 512, 1000],
        [188, 488, 700, 1000],
    ]


def test_an_image_smaller_than_a_tile_is_one_tile_of_its_own_size():
    assert tile_boxes(37, 301, SliceSettings(64, 512)).tolist() == [[0, 0, 301, 37]]


def test_only_borders_inside_the_image_cut_a_box():
    tiles = torch.tensor([[0, 0, 100, 100]] * 3 + [[50, 50, 150, 150]] * 2)
    boxes = torch.tensor(
        [
            [0.0, 0.0, 20.0, 20.0],  # touches the image's corner: not cut
            [80.0, 10.0, 99.0, 30.0],  # 1 px from the tile's right border (inside the image)
            [10.0, 10.0, 90.0, 90.0],  # well inside
            [51.0, 60.0, 70.0, 80.0],  # 1 px from the left border at x = 50
            [60.0, 60.0, 150.0, 150.0],  # the image's far corner (image 150 x 150)
        ]
    )
    cut = cut_by_tile_border(boxes, tiles, height=150, width=150, margin=2.0)
    assert cut.tolist() == [False, True, False, True, False]


def test_merge_is_class_wise_nms_keeping_the_best():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10], [50, 50, 60, 60]]).float()
    scores = torch.tensor([0.5, 0.9, 0.8, 0.7])
    classes = torch.tensor([0, 0, 1, 0])
    # boxes 0 and 1: IoU 90 / 110 = 0.82 > 0.5, one class: 0.9 kept; class 1 apart
    b, s, c = merge_detections(boxes, scores, classes, 0.5, max_detections=10)
    assert s.tolist() == pytest.approx([0.9, 0.8, 0.7]) and c.tolist() == [0, 1, 0]
    assert b[0].tolist() == [1, 0, 11, 10]
    assert len(merge_detections(boxes, scores, classes, 0.5, max_detections=2)[1]) == 2


class SquareFinder:
    """A detector whose answers are known: the bounding boxes of the bright (255) regions of
    the image it is given, score 0.9, class 0, in that image's pixels."""

    def __init__(self):
        self.calls = []

    def __call__(self, image):
        self.calls.append(image.shape[:2])
        mask = (image[:, :, 0] == 255).astype(np.uint8)
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask)
        boxes = [[x, y, x + w, y + h] for x, y, w, h, _ in stats[1:count]]
        instances = Instances(image.shape[:2])
        instances.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        instances.scores = torch.full((len(boxes),), 0.9)
        instances.pred_classes = torch.zeros(len(boxes), dtype=torch.int64)
        return {"instances": instances}


def test_sliced_detections_are_in_image_pixels_with_cut_objects_whole_once():
    image = np.zeros((300, 500, 3), np.uint8)
    squares = [
        [10, 20, 40, 50],  # inside the first tile only
        [110, 30, 140, 60],  # across the border x = 128 of the first tile: whole in the second
        [400, 250, 430, 280],  # in the last tiles
        [150, 90, 330, 200],  # larger than any tile: cut everywhere, whole in the whole image
    ]
    for x0, y0, x1, y1 in squares:
        image[y0:y1, x0:x1] = 255
    finder = SquareFinder()
    settings = SliceSettings(128, 128, overlap=0.25)
    out = SlicedPredictor(finder, settings)(image)["instances"]
    assert out.image_size == (300, 500)
    found = sorted(out.pred_boxes.tensor.tolist())
    assert found == sorted([[float(v) for v in s] for s in squares])
    # 5 x 3 tiles of 128 x 128 (x: 0 96 192 288 372, y: 0 96 172), then the whole image
    assert finder.calls == [(128, 128)] * 15 + [(300, 500)]
    # without the whole image, the large square is lost (every tile cuts it)
    out = SlicedPredictor(SquareFinder(), settings._replace(whole_image=False))(image)
    assert sorted(out["instances"].pred_boxes.tensor.tolist()) == sorted(
        [[float(v) for v in s] for s in squares[:3]]
    )


def test_bad_slice_settings_are_errors_naming_the_value():
    with pytest.raises(ValueError, match="overlap 1.0"):
        SlicedPredictor(SquareFinder(), SliceSettings(64, 64, overlap=1.0))
    with pytest.raises(ValueError, match="0 x 64"):
        SlicedPredictor(SquareFinder(), SliceSettings(0, 64))


def test_predictor_batch_equals_one_image_at_a_time_for_mixed_sizes(tmp_path):
    import fcos_d2

    cfg = tiny_cfg()
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 64, 96
    cfg.MODEL.FCOS.SCORE_THRESH_TEST = 0.0
    torch.manual_seed(0)
    cfg = with_saved_weights(cfg, build_model(cfg), tmp_path)
    predictor = fcos_d2.Predictor(cfg)
    rng = np.random.default_rng(0)
    # two of one size (one forward pass), one of another (its own: the GroupNorm head would
    # see another padding in a shared batch)
    sizes = [(53, 71), (80, 40), (53, 71)]
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]
    batched = predictor.predict_batch(images)
    for image, out in zip(images, batched):
        one = predictor(image)["instances"]
        assert len(one) == len(out["instances"]) > 0
        assert torch.allclose(one.pred_boxes.tensor, out["instances"].pred_boxes.tensor, atol=1e-3)
        assert torch.allclose(one.scores, out["instances"].scores, atol=1e-5)
