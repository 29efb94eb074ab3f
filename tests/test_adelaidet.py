"""AdelaiDet behaviour: its losses (independent reference), its YAML files, its model variants."""

import logging
import math
import os

import pytest
import torch
import torch.nn.functional as F
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

import fcos_d2
from fcos_d2.modeling.head import DeformConv3x3
from fcos_d2.modeling.losses import fcos_losses
from tests.common_utils import REPO, randomize_head, tiny_cfg
from tests.fcos_reference import losses_and_reference


def test_default_losses_match_adelaidet_reference():
    torch.manual_seed(0)
    model = build_model(tiny_cfg())
    randomize_head(model, box_bias=2.0, box_std=0.2, quality_std=0.2)
    boxes = [[10.0, 12.0, 50.0, 40.0], [60.0, 20.0, 180.0, 150.0], [2.0, 3.0, 312.0, 250.0]]
    classes = [0, 2, 1]
    h, w = 256, 320
    losses, ref, lab0 = losses_and_reference(model, boxes, classes, h, w)
    assert sum(lab != 3 for lab in lab0) > 20 and {0, 1, 2} <= set(lab0)
    for name, value in ref.items():
        assert losses[name].item() == pytest.approx(value.item(), rel=1e-4), name


def test_iou_box_quality_losses_by_hand():
    # One positive: pred (2,2,2,2) vs target (1,1,1,1): IoU = 5/17, GIoU loss 12/17.
    logits = torch.zeros(1, 2, 1)
    box_reg = torch.tensor([[[2.0, 2, 2, 2], [1, 1, 1, 1]]])
    quality = torch.tensor([[0.5, 0.0]])
    out = fcos_losses(
        logits,
        box_reg,
        quality,
        torch.tensor([[0, 1]]),
        torch.tensor([[[1.0, 1, 1, 1], [0, 0, 0, 0]]]),
        box_quality="iou",
    )
    assert set(out) == {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_iou"}
    assert out["loss_fcos_loc"].item() == pytest.approx(12 / 17, rel=1e-5)
    iou = 5 / 17  # BCE(x, y) = log(1 + e^x) - x * y
    assert out["loss_fcos_iou"].item() == pytest.approx(math.log(1 + math.e**0.5) - 0.5 * iou)


def test_moving_fg_normaliser():
    cfg = tiny_cfg()
    cfg.MODEL.FCOS.LOSS_NORMALIZER_CLS = "moving_fg"
    torch.manual_seed(0)
    model = build_model(cfg)
    inst = Instances(
        (64, 64), gt_boxes=Boxes(torch.tensor([[0.0, 0, 40, 40]])), gt_classes=torch.tensor([1])
    )
    batch = [{"image": torch.rand(3, 64, 64) * 255, "instances": inst}]
    labels, _ = model.label_locations([(8, 8), (4, 4), (2, 2)], [inst])
    num_pos = int((labels != 3).sum())
    assert num_pos > 0
    with EventStorage():
        model(batch)
        assert model.moving_num_fg == pytest.approx(0.9 * 100 + 0.1 * num_pos)
        model(batch)
        assert model.moving_num_fg == pytest.approx(
            0.9 * (0.9 * 100 + 0.1 * num_pos) + 0.1 * num_pos
        )


def test_deformable_conv_with_zero_offsets_is_a_plain_conv():
    torch.manual_seed(0)
    layer = DeformConv3x3(8)
    with torch.no_grad():
        layer.offset.bias[18:] = 30.0  # mask = sigmoid(30) = 1
        layer.conv.weight.normal_()
        layer.conv.bias.normal_()
    x = torch.randn(2, 8, 9, 11)
    expected = F.conv2d(x, layer.conv.weight, layer.conv.bias, padding=1)
    assert torch.allclose(layer(x), expected, atol=1e-4)


def test_deformable_head_keys_match_adelaidet_layout():
    cfg = tiny_cfg()
    cfg.MODEL.FCOS.USE_DEFORMABLE = True
    cfg.MODEL.FCOS.NUM_CLS_CONVS = cfg.MODEL.FCOS.NUM_BOX_CONVS = 2
    head = build_model(cfg).head
    keys = set(head.state_dict())
    assert not head.cls_tower[3].offset.weight.any()  # starts as a plain conv (zero offsets)
    assert head.cls_tower[3].conv.weight.std().item() == pytest.approx(0.01, rel=0.2)
    assert {
        "cls_tower.3.offset.weight",
        "cls_tower.3.conv.weight",
        "cls_tower.3.conv.bias",
        "bbox_tower.3.offset.bias",
        "cls_tower.0.weight",
    } <= keys


ADET_BASE = """MODEL:
  META_ARCHITECTURE: "OneStageDetector"
  BACKBONE:
    NAME: "build_fcos_resnet_fpn_backbone"
  RESNETS:
    OUT_FEATURES: ["res3", "res4", "res5"]
  FPN:
    IN_FEATURES: ["res3", "res4", "res5"]
  PROPOSAL_GENERATOR:
    NAME: "FCOS"
SOLVER:
  IMS_PER_BATCH: 16
  BASE_LR: 0.01
"""
ADET_CHILD = """_BASE_: "Base-FCOS.yaml"
MODEL:
  RESNETS:
    DEPTH: 18
    RES2_OUT_CHANNELS: 64
  FPN:
    OUT_CHANNELS: 64
  FCOS:
    TOP_LEVELS: 0
    SIZES_OF_INTEREST: [64, 128]
    FPN_STRIDES: [8, 16, 32]
    IN_FEATURES: ['p3', 'p4', 'p5']
    INFERENCE_TH_TEST: 0.3
    NMS_TH: 0.5
    PRE_NMS_TOPK_TEST: 500
    POST_NMS_TOPK_TEST: 50
    CENTER_SAMPLE: False
    LOC_LOSS_TYPE: "iou"
    NORM: "BN"
    NUM_SHARE_CONVS: 2
    NUM_CLS_CONVS: 0
    NUM_BOX_CONVS: 0
    BOX_QUALITY: "iou"
    LOSS_NORMALIZER_CLS: "moving_fg"
    YIELD_PROPOSAL: True
  BASIS_MODULE:
    NUM_BASES: 4
"""


def test_adelaidet_yaml_is_translated(tmp_path, caplog):
    (tmp_path / "Base-FCOS.yaml").write_text(ADET_BASE)
    (tmp_path / "child.yaml").write_text(ADET_CHILD)
    with caplog.at_level(logging.WARNING, logger="fcos_d2.config.loader"):
        cfg = fcos_d2.load_config(str(tmp_path / "child.yaml"), ["MODEL.FCOS.NMS_TH", "0.45"])
    f = cfg.MODEL.FCOS
    assert cfg.MODEL.META_ARCHITECTURE == "FCOS"
    assert (f.SCORE_THRESH_TEST, f.NMS_THRESH_TEST, f.TOPK_CANDIDATES_TEST) == (0.3, 0.45, 500)
    assert cfg.TEST.DETECTIONS_PER_IMAGE == 50 and f.CENTER_SAMPLING_RADIUS == 0.0
    assert f.BOX_LOSS_TYPE == "iou" and f.TOP_BLOCK_IN_FEATURE == "" and f.NORM == "BN"
    assert (f.NUM_SHARE_CONVS, f.NUM_CLS_CONVS, f.BOX_QUALITY) == (2, 0, "iou")
    assert f.LOSS_NORMALIZER_CLS == "moving_fg" and cfg.SOLVER.BASE_LR == 0.01
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "MODEL.FCOS.YIELD_PROPOSAL=True" in warnings[0].message
    assert "MODEL.BASIS_MODULE" in warnings[0].message
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)  # FCOS-RT-like: shared BN tower, P3-P5
    assert model.strides == [8, 16, 32] and len(model.head.share_tower) == 6
    assert len(model.head.cls_tower) == 0


def test_fcos_d2_yaml_unchanged_by_load_config():
    cfg = fcos_d2.load_config(
        os.path.join(REPO, "configs", "FCOS_R_50_FPN_1x.yaml"),
        ["MODEL.FCOS.NMS_THRESH_TEST", "0.5"],
    )
    assert cfg.MODEL.FCOS.NMS_THRESH_TEST == 0.5 and cfg.MODEL.RESNETS.DEPTH == 50
