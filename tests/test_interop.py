"""Loading other implementations' FCOS checkpoints and configs, and reproducing them."""

import logging
import re

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_backbone, build_model
from detectron2.modeling.meta_arch.fcos import FCOS as D2FCOS
from detectron2.modeling.meta_arch.fcos import FCOSHead as D2FCOSHead

import fcos_d2  # noqa: F401  (registers FCOS)
from fcos_d2 import model_zoo
from fcos_d2.checkpoint import detect_layout, from_native
from fcos_d2.checkpoint.convert import main as convert_main
from tests.common_utils import tiny_cfg


def _image(h, w, seed):
    gen = torch.Generator().manual_seed(seed)
    return {"image": torch.rand(3, h, w, generator=gen) * 255}


def _d2_cfg(num_classes=3):
    cfg = tiny_cfg(num_classes)
    cfg.MODEL.FCOS.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    cfg.MODEL.FCOS.TOP_BLOCK_IN_FEATURE = "p5"
    cfg.MODEL.FCOS.SIZES_OF_INTEREST = [64, 128, 256, 512]
    cfg.MODEL.FCOS.NUM_CLS_CONVS = cfg.MODEL.FCOS.NUM_BOX_CONVS = 2
    return cfg


def _builtin_d2_fcos(cfg):
    """detectron2's own FCOS with random (but non-trivial) seeded weights."""
    torch.manual_seed(0)
    backbone = build_backbone(cfg)
    shapes = [backbone.output_shape()[f] for f in cfg.MODEL.FCOS.IN_FEATURES]
    head = D2FCOSHead(input_shape=shapes, conv_dims=[32, 32], num_classes=3, norm="GN")
    model = D2FCOS(
        backbone=backbone,
        head=head,
        head_in_features=cfg.MODEL.FCOS.IN_FEATURES,
        num_classes=3,
        pixel_mean=cfg.MODEL.PIXEL_MEAN,
        pixel_std=cfg.MODEL.PIXEL_STD,
    )
    with torch.no_grad():
        for name, p in model.head.named_parameters():
            if p.dim() == 4:
                p.normal_(0, 0.05)
        model.head.cls_score.bias.fill_(0.0)
        model.head.bbox_pred.bias.fill_(1.0)
        model.head.bbox_pred.weight.normal_(0, 0.3)
    return model.eval()


def test_d2_builtin_checkpoint_gives_identical_detections(tmp_path, caplog):
    cfg = _d2_cfg()
    d2 = _builtin_d2_fcos(cfg)
    path = str(tmp_path / "d2_fcos.pth")
    torch.save({"model": d2.state_dict()}, path)

    cfg.merge_from_file(model_zoo.get_config_file("compat/D2-Builtin-FCOS_R_50_FPN_1x.yaml"))
    cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.FPN.OUT_CHANNELS, cfg.MODEL.FCOS.NUM_CLASSES = 18, 32, 3
    cfg.MODEL.FCOS.NUM_CLS_CONVS = cfg.MODEL.FCOS.NUM_BOX_CONVS = 2
    cfg.MODEL.PIXEL_STD = list(d2.pixel_std.flatten().tolist())
    ours = build_model(cfg).eval()
    with caplog.at_level(logging.INFO, logger="fcos_d2.checkpoint"):
        DetectionCheckpointer(ours).load(path)
    assert "Recognised a d2 FCOS checkpoint" in caplog.text
    total = 0
    for h, w, seed in [(137, 171, 1), (160, 160, 2), (131, 263, 3)]:
        batch = [_image(h, w, seed)]
        with torch.no_grad():
            a, b = d2(batch)[0]["instances"], ours(batch)[0]["instances"]
        assert len(a) == len(b)
        assert torch.equal(a.pred_classes, b.pred_classes)
        assert torch.allclose(a.scores, b.scores, atol=1e-5, rtol=0)
        assert torch.allclose(a.pred_boxes.tensor, b.pred_boxes.tensor, atol=1e-3, rtol=0)
        total += len(a)
    assert total > 30  # the comparison covered real detections, not empty outputs


def test_foreign_head_shape_mismatch_skips_the_tensor_with_a_warning(tmp_path, caplog):
    d2 = _builtin_d2_fcos(_d2_cfg())
    path = str(tmp_path / "d2_fcos.pth")
    torch.save({"model": d2.state_dict()}, path)
    ours = build_model(_d2_cfg(num_classes=5))
    with caplog.at_level(logging.WARNING):
        DetectionCheckpointer(ours).load(path)  # fine-tuning convention: load the rest
    assert re.search(r"head.cls_logits.weight.*\(3, 32, 3, 3\).*\(5, 32, 3, 3\)", caplog.text)
    box = d2.state_dict()["head.bbox_pred.weight"]
    assert torch.equal(ours.state_dict()["head.bbox_pred.weight"], box)


def _numbered(model):
    """A state dict of ``model``'s shapes whose tensors are all different."""
    return {
        k: torch.full_like(v, float(i), dtype=torch.float32).to(v.dtype)
        for i, (k, v) in enumerate(model.state_dict().items())
    }


# Hand-written correspondences from the reference document (official = maskrcnn-benchmark).
OFFICIAL_PAIRS = {
    "module.backbone.body.stem.conv1.weight": "backbone.bottom_up.stem.conv1.weight",
    "module.backbone.body.stem.bn1.running_var": "backbone.bottom_up.stem.conv1.norm.running_var",
    "module.backbone.body.layer1.0.downsample.0.weight": "backbone.bottom_up.res2.0.shortcut.weight",
    "module.backbone.body.layer1.0.downsample.1.bias": "backbone.bottom_up.res2.0.shortcut.norm.bias",
    "module.backbone.body.layer4.1.bn2.weight": "backbone.bottom_up.res5.1.conv2.norm.weight",
    "module.backbone.body.layer3.0.conv1.weight": "backbone.bottom_up.res4.0.conv1.weight",
    "module.backbone.fpn.fpn_inner2.weight": "backbone.fpn_lateral3.weight",
    "module.backbone.fpn.fpn_layer4.bias": "backbone.fpn_output5.bias",
    "module.backbone.fpn.top_blocks.p7.weight": "backbone.top_block.p7.weight",
    "module.rpn.head.centerness.weight": "head.ctrness.weight",
    "module.rpn.head.cls_tower.3.weight": "head.cls_tower.3.weight",
    "module.rpn.head.scales.4.scale": "head.scales.4.scale",
}
ADET_PAIRS = {
    "proposal_generator.fcos_head.cls_tower.0.weight": "head.cls_tower.0.weight",
    "proposal_generator.fcos_head.bbox_tower.4.bias": "head.bbox_tower.4.bias",
    "proposal_generator.fcos_head.ctrness.bias": "head.ctrness.bias",
    "proposal_generator.fcos_head.scales.0.scale": "head.scales.0.scale",
    "backbone.bottom_up.res3.1.conv2.norm.running_mean": "backbone.bottom_up.res3.1.conv2.norm.running_mean",
}


@pytest.mark.parametrize(
    "fmt, pairs", [("maskrcnn_benchmark", OFFICIAL_PAIRS), ("adelaidet", ADET_PAIRS)]
)
def test_foreign_layouts_load_every_tensor(tmp_path, fmt, pairs):
    cfg = _d2_cfg()
    cfg.MODEL.RESNETS.NORM = "FrozenBN"
    cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 50, 256  # with shortcut convs
    source = _numbered(build_model(cfg))
    foreign = from_native(source, fmt)
    assert set(pairs) <= set(foreign) and detect_layout(foreign) == fmt
    for fkey, nkey in pairs.items():
        assert torch.equal(foreign[fkey], source[nkey])
    path = str(tmp_path / f"{fmt}.pth")
    torch.save({"model": foreign}, path)
    model = build_model(cfg)
    DetectionCheckpointer(model).load(path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, source[key]), key
    # and through the converter, there and back
    convert_main(["--from", fmt, path, str(tmp_path / "native.pth")])
    convert_main(["--to", fmt, str(tmp_path / "native.pth"), str(tmp_path / "back.pth")])
    back = torch.load(str(tmp_path / "back.pth"))["model"]
    assert set(back) == set(foreign)
    assert all(torch.equal(back[k], foreign[k]) for k in foreign)


def test_adelaidet_per_level_bn_keys():
    cfg = tiny_cfg()
    cfg.MODEL.FCOS.NORM = "BN"
    foreign = from_native(_numbered(build_model(cfg)), "adelaidet")
    # one BatchNorm per level (3 levels) after each tower conv
    for level in range(3):
        assert f"proposal_generator.fcos_head.cls_tower.1.{level}.running_mean" in foreign


def test_convert_rejects_wrong_format(tmp_path):
    path = str(tmp_path / "native.pth")
    torch.save({"model": build_model(tiny_cfg()).state_dict()}, path)
    with pytest.raises(SystemExit, match="looks like a native checkpoint, not adelaidet"):
        convert_main(["--from", "adelaidet", path, str(tmp_path / "out.pth")])


def test_previous_release_checkpoint_names_work_with_a_deprecation_warning(tmp_path):
    import fcos_d2.checkpoint as checkpoint
    import fcos_d2.engine as engine

    native = _numbered(build_model(tiny_cfg()))
    foreign = from_native(native, "maskrcnn_benchmark")
    assert any(k.startswith("module.rpn.head.") for k in foreign)
    with pytest.warns(DeprecationWarning, match="maskrcnn_benchmark"):
        assert from_native(native, "official") == foreign
    with pytest.warns(DeprecationWarning, match="detect_layout"):
        assert checkpoint.detect_format(foreign) == "maskrcnn_benchmark"
    with pytest.warns(DeprecationWarning, match="fcos_d2.checkpoint.FCOSCheckpointer"):
        assert engine.FCOSCheckpointer is checkpoint.FCOSCheckpointer
    path = str(tmp_path / "mb.pth")
    torch.save({"model": foreign}, path)
    with pytest.warns(DeprecationWarning):
        convert_main(["--from", "official", path, str(tmp_path / "native.pth")])
    back = torch.load(str(tmp_path / "native.pth"))["model"]
    assert set(back) == set(native) and all(torch.equal(back[k], native[k]) for k in native)
