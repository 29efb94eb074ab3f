"""FCOS as the proposal generator of detectron2's GeneralizedRCNN and ProposalNetwork."""

import math
import os

import pytest
import torch
from detectron2.modeling import PROPOSAL_GENERATOR_REGISTRY, build_model
from detectron2.modeling.proposal_generator import RPN
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

import fcos_d2
from fcos_d2.modeling import FCOSProposalGenerator
from fcos_d2.modeling.proposal_generator import proposal_objectness_logits
from tests.common_utils import REPO, randomize_head
from tests.fcos_reference import reference_targets

RPN_LOSSES = {"loss_fcos_rpn_cls", "loss_fcos_rpn_loc", "loss_fcos_rpn_ctr"}


def tiny_rcnn_cfg(meta_arch: str = "GeneralizedRCNN"):
    """The shapes Faster R-CNN with FCOS proposals, narrowed: builds and steps in a second."""
    cfg = fcos_d2.load_config(
        os.path.join(REPO, "configs", "FCOS-RPN", "faster_rcnn_R18_shapes_fcos_rpn.yaml")
    )
    cfg.MODEL.META_ARCHITECTURE = meta_arch
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    cfg.MODEL.FCOS.NUM_CLS_CONVS = 1
    cfg.MODEL.FCOS.NUM_BOX_CONVS = 1
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 32
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 16
    return cfg


def _input(height, width, boxes, classes, seed):
    gen = torch.Generator().manual_seed(seed)
    gt = Instances((height, width))
    gt.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    gt.gt_classes = torch.tensor(classes, dtype=torch.int64)
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=gen)
    return {"image": image, "instances": gt, "height": height, "width": width}


def _batch():
    # Odd sizes; the second image has no boxes.
    return [
        _input(61, 75, [[5.0, 8.0, 30.0, 40.0], [20.0, 15.0, 70.0, 58.0]], [2, 0], seed=1),
        _input(50, 47, [], [], seed=2),
    ]


def test_fcos_is_registered_as_a_proposal_generator():
    model = build_model(tiny_rcnn_cfg())
    assert isinstance(model.proposal_generator, FCOSProposalGenerator)
    assert model.proposal_generator.head.cls_logits.out_channels == 1  # class-agnostic
    assert PROPOSAL_GENERATOR_REGISTRY.get("RPN") is RPN  # detectron2's own stays


def test_objectness_logits_by_hand():
    # p = sqrt(sigmoid(cls) * sigmoid(ctr)); logit(p) = log(p / (1 - p)).
    cls = torch.tensor([0.0, math.log(0.9 / 0.1), 60.0, -60.0])
    ctr = torch.tensor([0.0, math.log(0.4 / 0.6), 60.0, -60.0])
    out = proposal_objectness_logits(cls, ctr)
    assert out[0].item() == pytest.approx(0.0, abs=1e-6)  # p = sqrt(0.25) = 0.5
    assert out[1].item() == pytest.approx(math.log(0.6 / 0.4), abs=1e-5)  # p = sqrt(0.36)
    assert torch.isfinite(out).all() and out[2] > 10 and out[3] < -50


def test_rcnn_with_fcos_proposals_trains_with_finite_losses():
    torch.manual_seed(0)
    model = build_model(tiny_rcnn_cfg())
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    with EventStorage():
        for _ in range(3):
            losses = model(_batch())
            assert set(losses) == RPN_LOSSES | {"loss_cls", "loss_box_reg"}
            assert all(torch.isfinite(v) for v in losses.values()), losses
            optimizer.zero_grad()
            sum(losses.values()).backward()
            head = model.proposal_generator.head
            assert head.cls_logits.weight.grad.abs().sum() > 0
            assert head.bbox_pred.weight.grad.abs().sum() > 0
            optimizer.step()
        # A batch without any box: positives-only losses are 0, the rest finite.
        empty = model([_input(64, 64, [], [], seed=3), _input(45, 67, [], [], seed=4)])
    assert all(torch.isfinite(v) for v in empty.values())
    assert empty["loss_fcos_rpn_loc"].item() == 0.0
    assert empty["loss_fcos_rpn_cls"].item() > 0.0


def test_training_targets_follow_the_configured_ranges_and_radius_with_one_class():
    # Non-default sizes of interest and radius, so a generator that ignores either fails.
    cfg = tiny_rcnn_cfg()
    cfg.MODEL.FCOS.SIZES_OF_INTEREST = [24, 40]
    cfg.MODEL.FCOS.CENTER_SAMPLING_RADIUS = 1.0
    generator = build_model(cfg).proposal_generator
    h, w = 64, 96
    boxes = [[5.0, 8.0, 30.0, 40.0], [20.0, 15.0, 90.0, 58.0], [60.0, 2.0, 75.0, 12.0]]
    gt = [
        Instances((h, w), gt_boxes=Boxes(torch.tensor(boxes)), gt_classes=torch.tensor([2, 1, 0])),
        Instances((h, w), gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0).long()),
    ]
    sizes = [(8, 12), (4, 6), (2, 3)]
    labels, reg = generator.core.targets(sizes, gt, torch.device("cpu"))
    ranges = [(-1, 24), (24, 40), (40, math.inf)]
    ref_labels, ref_reg = reference_targets(
        h, w, [8, 16, 32], boxes, [0, 0, 0], 1, 1.0, False, ranges
    )
    assert labels[0].tolist() == ref_labels and (labels[1] == 1).all()
    assert 0 < sum(x == 0 for x in ref_labels) < len(ref_labels)
    torch.testing.assert_close(reg[0], torch.tensor(ref_reg), atol=1e-5, rtol=0)
    # the same rules with the defaults would assign differently: the test can tell them apart
    default_labels, _ = reference_targets(h, w, [8, 16, 32], boxes, [0, 0, 0], 1, 1.5)
    assert default_labels != ref_labels


def _inference_generator(pre_topk, post_topk, nms_thresh, box_bias):
    cfg = tiny_rcnn_cfg()
    cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = pre_topk
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = post_topk
    cfg.MODEL.RPN.NMS_THRESH = nms_thresh
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    # Every location predicts (l, t, r, b) = box_bias strides: no empty boxes.
    randomize_head(model.proposal_generator, box_bias=box_bias)
    return model


def _features(model, inputs):
    images = model.preprocess_image(inputs)
    return images, model.backbone(images.tensor)


def _proposals(model, inputs):
    images, features = _features(model, inputs)
    with torch.no_grad():
        proposals, losses = model.proposal_generator(images, features)
    return images, features, proposals, losses


def test_proposals_respect_the_top_k_settings():
    inputs = _batch()
    # NMS threshold 1: nothing is suppressed; boxes of 10 strides to each side keep some area
    # inside the image from every location of the padded input: the counts are the top-k's.
    model = _inference_generator(pre_topk=5, post_topk=100, nms_thresh=1.0, box_bias=10.0)
    _, _, proposals, losses = _proposals(model, inputs)
    assert losses == {}
    assert [len(p) for p in proposals] == [5 * 3, 5 * 3]  # 5 per level, 3 levels
    model = _inference_generator(pre_topk=5, post_topk=7, nms_thresh=1.0, box_bias=10.0)
    _, _, proposals, _ = _proposals(model, inputs)
    assert [len(p) for p in proposals] == [7, 7]
    for p in proposals:
        assert set(p.get_fields()) == {"proposal_boxes", "objectness_logits"}
        logits = p.objectness_logits
        assert (logits[:-1] >= logits[1:]).all()  # best first


def test_best_proposal_is_the_location_with_the_highest_score():
    model = _inference_generator(pre_topk=1000, post_topk=1000, nms_thresh=0.7, box_bias=1.0)
    images, features, proposals, _ = _proposals(model, _batch())
    generator = model.proposal_generator
    with torch.no_grad():
        cls, _, ctr = generator.head([features[f] for f in generator.in_features])
    for i, p in enumerate(proposals):
        score = torch.cat(
            [(c[i].sigmoid() * t[i].sigmoid()).sqrt().flatten() for c, t in zip(cls, ctr)]
        )
        best = score.max().item()
        assert p.objectness_logits[0].item() == pytest.approx(math.log(best / (1 - best)), 1e-4)


def test_proposals_are_clipped_to_the_image():
    # Boxes of 10 strides to each side reach past every border; the padded input is larger than
    # the images, which must clip at their own size.
    inputs = _batch()
    model = _inference_generator(pre_topk=50, post_topk=200, nms_thresh=1.0, box_bias=10.0)
    images, _, proposals, _ = _proposals(model, inputs)
    assert tuple(images.tensor.shape[-2:]) == (64, 96)
    for p, (height, width) in zip(proposals, [(61, 75), (50, 47)]):
        boxes = p.proposal_boxes.tensor
        assert p.image_size == (height, width)
        assert (boxes[:, :2] >= 0).all()
        assert (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
        assert (boxes[:, 2] == width).any() and (boxes[:, 3] == height).any()


def test_proposal_network_with_fcos():
    torch.manual_seed(0)
    model = build_model(tiny_rcnn_cfg("ProposalNetwork"))
    model.train()
    losses = model(_batch())
    assert set(losses) == RPN_LOSSES and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    inputs = _batch()
    inputs[0]["height"], inputs[0]["width"] = 122, 150  # outputs at twice the input size
    with torch.no_grad():
        outputs = model(inputs)
    proposals = outputs[0]["proposals"]
    assert 0 < len(proposals) <= 1000
    assert proposals.image_size == (122, 150)
    assert (proposals.proposal_boxes.tensor[:, 2] <= 150).all()


def test_loss_weight_and_loss_normaliser_keys():
    cfg = tiny_rcnn_cfg()
    cfg.MODEL.FCOS.LOSS_NORMALIZER_CLS = "moving_fg"
    with pytest.raises(ValueError, match="LOSS_NORMALIZER_CLS='moving_fg'"):
        build_model(cfg)
    losses = {}
    for weight in (1.0, 2.5):
        cfg = tiny_rcnn_cfg()
        cfg.MODEL.RPN.LOSS_WEIGHT = weight
        torch.manual_seed(0)
        model = build_model(cfg).train()
        images, features = _features(model, _batch())
        gt = [x["instances"] for x in _batch()]
        _, losses[weight] = model.proposal_generator(images, features, gt)
    for name in RPN_LOSSES:
        torch.testing.assert_close(losses[2.5][name], 2.5 * losses[1.0][name])
