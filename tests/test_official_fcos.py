"""
The original FCOS (maskrcnn-benchmark) with the preset configs/compat/Official-*.yaml: its
"+1" conventions in matching and inference, its frozen BN and pixel mean, against plain-Python
re-derivations of its rules (tests/fcos_reference.py); its code is not a test dependency.
"""

import os

import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

import fcos_d2
from fcos_d2.export.graph import check_exportable
from fcos_d2.layers import FrozenBNConv2d
from tests.common_utils import REPO, randomize_head, tiny_cfg
from tests.fcos_reference import (
    losses_and_reference,
    matched_fraction,
    official_detections,
    reference_targets,
)

PRESET = os.path.join(REPO, "configs", "compat", "Official-FCOS_imprv_R_50_FPN_1x.yaml")
# The original's config/defaults.py: _C.INPUT.PIXEL_MEAN.
ORIGINAL_PIXEL_MEAN = [102.9801, 115.9465, 122.7717]

# Two boxes sharing their centre (100, 100), both candidates of stride-8 locations there:
# 20 x 120 has the smaller area (2400 < 2401), 49 x 49 the smaller "+1" area (2500 < 2541).
THIN, SQUARE = [90.0, 40.0, 110.0, 160.0], [75.5, 75.5, 124.5, 124.5]


def _legacy_tiny_cfg(legacy: bool = True):
    cfg = tiny_cfg()
    cfg.MODEL.FCOS.LEGACY_CONVENTIONS = legacy
    return cfg


def _busy_head(model, seed=0):
    """Head weights that give many candidates with boxes of tens of pixels."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for conv, bias, std in (
            (model.head.cls_logits, -1.5, 0.3),
            (model.head.bbox_pred, 2.0, 0.2),
            (model.head.ctrness, 0.0, 0.2),
        ):
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * std)
            conv.bias.fill_(bias)


def test_legacy_matching_uses_the_original_plus_one_areas():
    h, w = 224, 256
    boxes, classes = [THIN, SQUARE], [0, 1]
    gt = Instances((h, w), gt_boxes=Boxes(torch.tensor(boxes)), gt_classes=torch.tensor(classes))
    sizes = [((h + s - 1) // s, (w + s - 1) // s) for s in (8, 16, 32)]
    labels = {}
    for legacy in (False, True):
        model = build_model(_legacy_tiny_cfg(legacy))
        labels[legacy] = model.label_locations(sizes, [gt])[0][0].tolist()
        expected, _ = reference_targets(h, w, [8, 16, 32], boxes, classes, 3, area_plus_one=legacy)
        assert labels[legacy] == expected
    # The rule matters here: the location at (100, 100) (stride 8, cell 12, 12) changes hands.
    centre = 12 * ((w + 7) // 8) + 12
    assert (labels[False][centre], labels[True][centre]) == (0, 1)


def test_legacy_losses_match_the_original_rules():
    torch.manual_seed(0)
    model = build_model(_legacy_tiny_cfg())
    randomize_head(model, box_bias=2.0, box_std=0.2, quality_std=0.2)
    boxes = [THIN, SQUARE, [150.0, 20.0, 240.0, 90.0], [2.0, 3.0, 250.0, 220.0]]
    classes = [0, 1, 2, 1]
    h, w = 224, 256
    losses, ref, lab0 = losses_and_reference(model, boxes, classes, h, w, area_plus_one=True)
    assert sum(lab != 3 for lab in lab0) > 20 and {0, 1, 2} <= set(lab0)
    for name, value in ref.items():
        assert losses[name].item() == pytest.approx(value.item(), rel=1e-4), name


def _detections_and_reference(legacy: bool, h: int, w: int, out_h: int, out_w: int, seed: int):
    torch.manual_seed(seed)
    model = build_model(_legacy_tiny_cfg(legacy)).eval()
    _busy_head(model, seed)
    captured = {}
    model.head.register_forward_hook(lambda m, i, out: captured.setdefault("out", out))
    image = torch.rand(3, h, w) * 255
    with torch.no_grad():
        inst = model([{"image": image, "height": out_h, "width": out_w}])[0]["instances"]
    ref = official_detections(
        [x[0] for x in captured["out"][0]],
        [x[0] for x in captured["out"][1]],
        [x[0, 0] for x in captured["out"][2]],
        [8, 16, 32],
        (h, w),
    )
    sx, sy = out_w / w, out_h / h
    ref = [(c, s, [b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy]) for c, s, b in ref]
    found = [
        (int(c), float(s), [float(v) for v in b])
        for c, s, b in zip(inst.pred_classes, inst.scores, inst.pred_boxes.tensor)
    ]
    return found, ref


@pytest.mark.parametrize("h, w, out_h, out_w", [(203, 251, 203, 251), (161, 237, 400, 589)])
def test_legacy_detections_match_the_original_post_processing(h, w, out_h, out_w):
    found, ref = _detections_and_reference(True, h, w, out_h, out_w, seed=h)
    assert len(ref) >= 30
    # Clipping to (w - 1, h - 1) in the input's pixels: many boxes touch the right/bottom edge.
    on_edge = [b for _, _, b in ref if abs(b[2] - (w - 1) * out_w / w) < 1e-3]
    assert len(on_edge) >= 3
    assert matched_fraction(found, ref) >= 0.98
    assert matched_fraction(ref, found) >= 0.98
    # fcos_d2's own conventions give other detections on the same weights.
    found_default, _ = _detections_and_reference(False, h, w, out_h, out_w, seed=h)
    assert matched_fraction(found_default, ref) < 0.9


def test_official_preset_has_the_original_frozen_bn_and_pixel_mean():
    cfg = fcos_d2.load_config(PRESET, ["MODEL.DEVICE", "cpu"])
    assert list(cfg.MODEL.PIXEL_MEAN) == pytest.approx(ORIGINAL_PIXEL_MEAN)
    model = build_model(cfg).eval()
    norms = [m for m in model.backbone.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert len(norms) == 53 and all(m.eps == 0.0 for m in norms)  # every R-50 norm
    conv = model.backbone.bottom_up.stem.conv1
    assert isinstance(conv, FrozenBNConv2d)
    with torch.no_grad():
        conv.norm.running_var.uniform_(1e-6, 1e-4)  # where an epsilon of 1e-5 shows
        conv.norm.running_mean.normal_()
        x = torch.randn(1, 3, 37, 41)
        # The original's FrozenBatchNorm2d: scale = weight / sqrt(var), no epsilon.
        scale = conv.norm.weight / conv.norm.running_var.sqrt()
        shift = conv.norm.bias - conv.norm.running_mean * scale
        expected = F.conv2d(x, conv.weight, None, 2, 3) * scale.view(1, -1, 1, 1)
        expected = expected + shift.view(1, -1, 1, 1)
        assert torch.allclose(conv(x), expected, atol=1e-3, rtol=1e-4)
        with_eps = conv.norm.weight / (conv.norm.running_var + 1e-5).sqrt()
        assert not torch.allclose(scale, with_eps, rtol=1e-2)
    default_cfg = os.path.join(REPO, "configs", "FCOS_R_50_FPN_1x.yaml")
    default = build_model(fcos_d2.load_config(default_cfg, ["MODEL.DEVICE", "cpu"]))
    assert {m.eps for m in default.backbone.modules() if isinstance(m, FrozenBatchNorm2d)} == {1e-5}


def test_legacy_conventions_are_refused_where_they_are_not_reproduced():
    cfg = _legacy_tiny_cfg()
    cfg.TEST.AUG.ENABLED = True
    with pytest.raises(ValueError, match="LEGACY_CONVENTIONS=True .*TEST.AUG.ENABLED=True"):
        build_model(cfg)
    cfg = _legacy_tiny_cfg()
    with pytest.raises(ValueError, match="cannot export this config: MODEL.FCOS.LEGACY_CONV"):
        check_exportable(cfg)
