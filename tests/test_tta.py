"""Test-time augmentation: fcos_d2.tta.FCOSWithTTA and train_net.py's TEST.AUG.ENABLED branch."""

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import DatasetMapper
from detectron2.data.transforms import CropTransform, ResizeTransform, TransformList
from detectron2.modeling import GeneralizedRCNNWithTTA, build_model
from detectron2.structures import Boxes, pairwise_iou
from fvcore.transforms import HFlipTransform, VFlipTransform

import fcos_d2
from fcos_d2.data.shapes import generate_shapes_dataset, render_image
from fcos_d2.tta import FCOSWithTTA, tta_model, unflip_boxes
from tests.common_utils import REPO, randomize_head, tiny_cfg

NMS = 0.6


def _cfg(min_sizes=(128,), flip=False, max_size=200, detections=100):
    cfg = tiny_cfg()
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 128, 200
    # An untrained model's probabilities sit near PRIOR_PROB (0.01): a low threshold gives it
    # plenty of overlapping candidates, so that NMS and the detection cap have work to do.
    cfg.MODEL.FCOS.SCORE_THRESH_TEST = 0.005
    cfg.MODEL.FCOS.NMS_THRESH_TEST = NMS
    cfg.TEST.DETECTIONS_PER_IMAGE = detections
    cfg.TEST.AUG.MIN_SIZES = min_sizes
    cfg.TEST.AUG.MAX_SIZE = max_size
    cfg.TEST.AUG.FLIP = flip
    return cfg


def _model(cfg):
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    # Untrained regressions are near 0 (boxes of a pixel or two); a bias of 2 strides per side
    # gives boxes of about 4 strides, which overlap each other and their mirrors' for NMS to act.
    return randomize_head(model, box_bias=2.0)


def _image(height, width, seed=1):
    image, _ = render_image(np.random.default_rng(seed), height, width, max_shapes=4)
    return image


def _chw(image):
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def _sorted(instances):
    order = instances.scores.argsort(descending=True, stable=True)
    return (
        instances.pred_boxes.tensor[order],
        instances.scores[order],
        instances.pred_classes[order],
    )


def test_unflip_boxes_by_hand():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    resize = ResizeTransform(50, 100, 80, 160)
    h = TransformList([resize, HFlipTransform(160)])
    assert unflip_boxes(boxes, h, 50, 100).tolist() == [[70.0, 20.0, 90.0, 40.0]]
    hv = TransformList([resize, HFlipTransform(160), VFlipTransform(80)])
    assert unflip_boxes(boxes, hv, 50, 100).tolist() == [[70.0, 10.0, 90.0, 30.0]]
    twice = TransformList([HFlipTransform(100), resize, HFlipTransform(160)])
    assert unflip_boxes(boxes, twice, 50, 100).tolist() == boxes.tolist()
    with pytest.raises(ValueError, match="CropTransform"):
        unflip_boxes(boxes, TransformList([CropTransform(0, 0, 10, 10)]), 50, 100)


def test_one_scale_at_the_test_size_without_flip_is_the_plain_model(tmp_path):
    cfg = _cfg(min_sizes=(128,), flip=False)
    model = _model(cfg)
    path = str(tmp_path / "odd.png")
    cv2.imwrite(path, _image(97, 139))  # resized to 128 x 183 by both
    record = {"file_name": path, "height": 97, "width": 139, "image_id": 0}
    mapped = DatasetMapper(cfg, is_train=False)(dict(record))
    with torch.no_grad():
        plain = model([mapped])[0]["instances"]
    tta = FCOSWithTTA(cfg, model)
    assert len(plain) > 10  # enough detections for the comparison to mean something
    # From the test-time mapper's dict (image already resized) and from the file name alone.
    for inputs in ({**mapped}, {"file_name": path}):
        out = tta([inputs])[0]["instances"]
        assert out.image_size == (97, 139)
        for a, b in zip(_sorted(out), _sorted(plain)):
            assert torch.equal(a, b)


def _mirror(boxes, width):
    return torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1)


def test_flip_only_an_image_and_its_mirror_give_mirrored_detections():
    # 128 x 160 is already the test size, so the copies are the image and its exact mirror.
    cfg = _cfg(min_sizes=(128,), flip=True)
    model = _model(cfg)
    image = _image(128, 160, seed=2)
    mirror = np.ascontiguousarray(image[:, ::-1])
    tta = FCOSWithTTA(cfg, model)
    a = tta([{"image": _chw(image)}])[0]["instances"]
    b = tta([{"image": _chw(mirror)}])[0]["instances"]
    assert len(a) > 10 and len(a) == len(b)
    boxes_a, scores_a, classes_a = _sorted(a)
    boxes_b, scores_b, classes_b = _sorted(b)
    assert torch.equal(classes_a, classes_b)
    torch.testing.assert_close(scores_a, scores_b, rtol=0, atol=1e-5)
    torch.testing.assert_close(_mirror(boxes_b, 160), boxes_a, rtol=0, atol=1e-3)


def test_flip_pools_both_copies_and_applies_classwise_nms():
    """The merged set, checked against the model run by hand on the image and its mirror."""
    cfg = _cfg(min_sizes=(128,), flip=True, detections=1000)  # no cap: NMS alone decides
    model = _model(cfg)
    image = _image(128, 160, seed=3)
    # The model's boxes before detector_postprocess clips them: the merging NMS sees those, as
    # the model's own NMS does (test above: clipped, they are the model's output exactly).
    with torch.no_grad():
        own, mirrored = model.inference(
            [{"image": _chw(image)}, {"image": _chw(np.ascontiguousarray(image[:, ::-1]))}],
            do_postprocess=False,
        )
    pool_boxes = torch.cat([own.pred_boxes.tensor, _mirror(mirrored.pred_boxes.tensor, 160)])
    pool_scores = torch.cat([own.scores, mirrored.scores])
    pool_classes = torch.cat([own.pred_classes, mirrored.pred_classes])
    out = FCOSWithTTA(cfg, model)([{"image": _chw(image)}])[0]["instances"]
    assert 0 < len(out) < len(pool_boxes)  # the merge suppressed some
    # Every output detection is a pooled one (same class, score and box) clipped to the image ...
    clipped = Boxes(pool_boxes.clone())
    clipped.clip((128, 160))
    dist = torch.cdist(out.pred_boxes.tensor, clipped.tensor, p=1)
    dist += (out.scores[:, None] - pool_scores[None]).abs() * 1000
    dist[out.pred_classes[:, None] != pool_classes[None]] = float("inf")
    assert dist.min(1).values.max() < 1e-3
    match = dist < 1e-3
    assert (match.sum(1) == 1).all()
    kept = match.float().argmax(1)
    # ... no two kept boxes of one class overlap by more than the threshold ...
    kept_boxes = Boxes(pool_boxes[kept])
    iou = pairwise_iou(kept_boxes, kept_boxes).fill_diagonal_(0)
    same = out.pred_classes[:, None] == out.pred_classes[None]
    assert not ((iou > NMS) & same).any()
    # ... and every pooled detection left out overlaps a kept one of its class with a higher score.
    left = ~match.any(0)
    iou = pairwise_iou(Boxes(pool_boxes[left]), kept_boxes)
    suppressed = (
        (iou > NMS)
        & (pool_classes[left][:, None] == out.pred_classes[None])
        & (out.scores[None] >= pool_scores[left][:, None])
    )
    assert suppressed.any(1).all()


def test_merged_output_never_exceeds_detections_per_image():
    cfg = _cfg(min_sizes=(96, 128, 160), flip=True, max_size=240, detections=7)
    model = _model(cfg)
    tta = FCOSWithTTA(cfg, model)
    for height, width in ((97, 139), (128, 128)):
        out = tta([{"image": _chw(_image(height, width))}])[0]["instances"]
        assert len(out) == 7  # hundreds of candidates, so the cap is reached
        assert (out.scores[:-1] >= out.scores[1:]).all()


def test_no_detection_gives_empty_instances():
    cfg = _cfg(min_sizes=(96, 128), flip=True)
    cfg.MODEL.FCOS.SCORE_THRESH_TEST = 0.99
    out = FCOSWithTTA(cfg, _model(cfg))([{"image": _chw(_image(70, 90))}])[0]["instances"]
    assert len(out) == 0 and out.image_size == (70, 90)


@pytest.mark.slow
def test_train_net_eval_only_with_tta_writes_inference_tta(tmp_path):
    generate_shapes_dataset(str(tmp_path / "shapes"), num_train=1, num_val=2, seed=4)
    config = os.path.join(REPO, "configs", "demo", "FCOS_R18_shapes_demo.yaml")
    small = ["MODEL.FPN.OUT_CHANNELS", "32", "INPUT.MIN_SIZE_TEST", "128"]
    weights = str(tmp_path / "untrained.pth")
    torch.manual_seed(0)
    model = build_model(fcos_d2.load_config(config, small))
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("untrained")
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path), PYTHONWARNINGS="ignore")
    out = str(tmp_path / "out")
    aug = ["TEST.AUG.ENABLED", "True", "TEST.AUG.MIN_SIZES", "(96,128)", "TEST.AUG.MAX_SIZE", "200"]
    cmd = [sys.executable, os.path.join(REPO, "train_net.py"), "--config-file", config]
    cmd += ["--eval-only", *small, *aug, "MODEL.WEIGHTS", weights, "OUTPUT_DIR", out]
    res = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-3000:]
    assert os.path.exists(os.path.join(out, "inference", "coco_instances_results.json"))
    assert os.path.exists(os.path.join(out, "inference_TTA", "coco_instances_results.json"))
    assert log.count("copypaste: Task: bbox") == 2
    assert "Running inference with test-time augmentation" in log


def test_tta_model_picks_the_wrapper_of_the_meta_architecture():
    fcos_cfg = _cfg()
    assert isinstance(tta_model(fcos_cfg, _model(fcos_cfg)), FCOSWithTTA)
    rcnn_cfg = get_cfg()
    fcos_d2.add_fcos_config(rcnn_cfg)
    rcnn_cfg.MODEL.DEVICE = "cpu"
    rcnn_cfg.MODEL.RESNETS.DEPTH = 18
    rcnn_cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    rcnn = build_model(rcnn_cfg)
    assert isinstance(tta_model(rcnn_cfg, rcnn), GeneralizedRCNNWithTTA)
    with pytest.raises(ValueError, match="GeneralizedRCNN"):
        FCOSWithTTA(rcnn_cfg, rcnn)
