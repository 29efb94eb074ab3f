"""FCOSCore: the settings both FCOS roles run on, read once from the config."""

import math

import pytest
import torch
from detectron2.modeling import build_model
from torchvision.ops import sigmoid_focal_loss

from fcos_d2.modeling.core import FCOSLoss, build_fcos_core
from tests.common_utils import tiny_cfg

# A value other than the default for every key the core reads.
OTHER = {
    "SIZES_OF_INTEREST": [40, 90],
    "CENTER_SAMPLING_RADIUS": 2.5,
    "LEGACY_CONVENTIONS": True,
    "BOX_LOSS_TYPE": "linear_iou",
    "FOCAL_LOSS_ALPHA": 0.4,
    "FOCAL_LOSS_GAMMA": 1.5,
    "BOX_QUALITY": "iou",
    "SCORE_THRESH_TEST": 0.3,
    "TOPK_CANDIDATES_TEST": 77,
    "NMS_THRESH_TEST": 0.45,
    "THRESH_WITH_CTR": True,
}


def _other_cfg():
    cfg = tiny_cfg()
    for key, value in OTHER.items():
        cfg.MODEL.FCOS[key] = value
    cfg.TEST.DETECTIONS_PER_IMAGE = 33
    return cfg


def test_build_fcos_core_reads_every_algorithm_key():
    core = build_fcos_core(_other_cfg(), [8, 16, 32], num_classes=5)
    m, loss, post = core.matcher, core.loss, core.postprocess
    assert core.num_classes == 5 and m.strides == (8, 16, 32)
    assert m.size_ranges == ((-1.0, 40.0), (40.0, 90.0), (90.0, math.inf))
    assert (m.center_sampling_radius, m.legacy_areas, m.method) == (2.5, True, "sparse")
    assert (loss.box_loss_type, loss.focal_alpha, loss.focal_gamma) == ("linear_iou", 0.4, 1.5)
    assert loss.box_quality == "iou"
    assert (post.score_thresh, post.topk, post.nms_thresh) == (0.3, 77, 0.45)
    assert (post.max_detections, post.thresh_with_ctr, post.legacy_conventions) == (33, True, True)


def test_radius_zero_matches_densely():
    cfg = tiny_cfg()
    cfg.MODEL.FCOS.CENTER_SAMPLING_RADIUS = 0.0
    assert build_fcos_core(cfg, [8, 16, 32], 3).matcher.method == "dense"


def test_detector_and_proposal_generator_run_on_the_same_rules():
    cfg = _other_cfg()
    cfg.MODEL.FCOS.LEGACY_CONVENTIONS = False  # the original FCOS is a detector only
    cfg.MODEL.META_ARCHITECTURE = "FCOS"
    detector = build_model(cfg).core
    cfg.MODEL.META_ARCHITECTURE = "ProposalNetwork"
    cfg.MODEL.PROPOSAL_GENERATOR.NAME = "FCOS"
    generator = build_model(cfg).proposal_generator.core
    assert detector.matcher == generator.matcher and detector.loss == generator.loss
    assert (detector.num_classes, generator.num_classes) == (3, 1)
    assert generator.postprocess is None  # proposals are decoded by the generator itself


@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (0.4, 1.5)])
def test_loss_applies_its_focal_settings(alpha, gamma):
    # 2 images x 5 locations of one level, 3 classes; two positives
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 1, 5, generator=g)
    box_reg = torch.rand(2, 4, 1, 5, generator=g) + 0.5
    quality = torch.randn(2, 1, 1, 5, generator=g)
    labels = torch.tensor([[3, 0, 3, 3, 3], [3, 3, 2, 3, 3]])
    reg_targets = torch.rand(2, 5, 4, generator=g) + 0.5
    losses = FCOSLoss("giou", alpha, gamma, "ctrness")(
        ([logits], [box_reg], [quality]), labels, reg_targets
    )
    flat = logits.permute(0, 2, 3, 1).reshape(10, 3)
    target = torch.zeros(10, 3)
    target[1, 0] = target[7, 2] = 1.0
    expected = sigmoid_focal_loss(flat, target, alpha=alpha, gamma=gamma, reduction="sum") / 2
    torch.testing.assert_close(losses["loss_fcos_cls"], expected)
