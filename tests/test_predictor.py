"""fcos_d2.Predictor: DefaultPredictor's calling convention, one-line errors for wrong inputs,
refusal of weights that do not fit."""

import warnings

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

import fcos_d2
from fcos_d2.checkpoint import CheckpointReadError, IncompleteCheckpointError
from tests.common_utils import tiny_cfg

RNG = np.random.RandomState(0)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("pred") / "model.pth")
    torch.save({"model": build_model(tiny_cfg()).state_dict()}, path)
    return path


def _cfg(weights):
    cfg = tiny_cfg()
    cfg.MODEL.WEIGHTS = weights
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 64, 96
    cfg.MODEL.FCOS.SCORE_THRESH_TEST = 0.0  # random weights: keep low-score detections
    return cfg


@pytest.mark.parametrize(
    "image, words",
    [
        (RNG.randint(0, 255, (40, 50), dtype=np.uint8), "2-D (grayscale)"),
        (RNG.randint(0, 255, (40, 50, 4), dtype=np.uint8), "4 channels"),
        (RNG.randint(0, 255, (3, 40, 50), dtype=np.uint8), "channel-first"),
        (torch.randint(0, 255, (40, 50, 3), dtype=torch.uint8), "torch.Tensor"),
        (RNG.randint(0, 255, (40, 50, 3)).astype(np.int64), "int64"),
        (np.zeros((0, 50, 3), np.uint8), "empty image"),
        (np.full((4, 5, 3), np.nan, np.float32), "NaN"),
    ],
)
def test_wrong_inputs_get_a_one_line_error_naming_the_problem(image, words):
    with pytest.raises(ValueError) as err:
        fcos_d2.check_image(image)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_float_image_scaled_to_one_warns_and_uint8_does_not():
    with pytest.warns(UserWarning, match="0..1"):
        fcos_d2.check_image(RNG.rand(20, 30, 3).astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fcos_d2.check_image(RNG.randint(0, 255, (20, 30, 3), dtype=np.uint8))
        fcos_d2.check_image(RNG.randint(0, 255, (20, 30, 3)).astype(np.float32))


def test_predictor_output_is_in_original_image_coordinates(weights):
    predictor = fcos_d2.Predictor(_cfg(weights))
    image = RNG.randint(0, 255, (37, 141, 3), dtype=np.uint8)  # resized to 64 x 244 -> 96 max
    instances = predictor(image)["instances"]
    assert instances.image_size == (37, 141)
    assert len(instances) > 0
    boxes = instances.pred_boxes.tensor
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 141).all()
    assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= 37).all()
    with pytest.raises(ValueError, match="channel-first"):
        predictor(np.ascontiguousarray(image.transpose(2, 0, 1)))


def test_predictor_refuses_weights_that_do_not_fill_the_model(weights):
    cfg = _cfg(weights)
    cfg.MODEL.FCOS.NUM_CLS_CONVS = 2  # the checkpoint has one conv per tower
    with pytest.raises(IncompleteCheckpointError, match="head.cls_tower.3.weight"):
        fcos_d2.Predictor(cfg)
    with pytest.raises(IncompleteCheckpointError, match="MODEL.WEIGHTS is empty"):
        fcos_d2.Predictor(_cfg(""))


def test_predictor_names_a_truncated_weights_file(weights, tmp_path):
    broken = str(tmp_path / "broken.pth")
    with open(weights, "rb") as f, open(broken, "wb") as g:
        g.write(f.read()[:1000])
    with pytest.raises(CheckpointReadError, match="broken.pth"):
        fcos_d2.Predictor(_cfg(broken))
