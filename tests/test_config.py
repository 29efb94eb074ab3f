"""Config keys, YAML files, registration and clear errors for bad values."""

import glob
import os

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import BACKBONE_REGISTRY, META_ARCH_REGISTRY, build_model
from detectron2.modeling.proposal_generator import RPN
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

import fcos_d2
from fcos_d2.data import check_num_classes
from fcos_d2.modeling import FCOS, FCOSProposalGenerator
from fcos_d2.modeling.deform_resnet import TorchvisionDeformBottleneckBlock
from tests.common_utils import REPO, tiny_cfg

CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True))
PROPOSAL_GENERATORS = {"FCOS": FCOSProposalGenerator, "RPN": RPN}


def test_registered():
    assert META_ARCH_REGISTRY.get("FCOS") is FCOS
    assert BACKBONE_REGISTRY.get("build_fcos_resnet_fpn_backbone") is not None
    assert BACKBONE_REGISTRY.get("build_fcos_timm_fpn_backbone") is not None


def test_add_fcos_config_adds_only_model_fcos_model_timm_and_the_optimizer_key():
    plain, cfg = get_cfg(), get_cfg()
    fcos_d2.add_fcos_config(cfg)
    fcos = cfg.MODEL.pop("FCOS")
    assert cfg.MODEL.pop("TIMM") == {
        "NAME": "",
        "PRETRAINED": False,
        "PRETRAINED_FILE": "",
        "NORM": "FrozenBN",
    }
    assert cfg.SOLVER.pop("OPTIMIZER") == "SGD"
    assert cfg == plain
    assert fcos.NUM_CLASSES == 80 and fcos.NMS_THRESH_TEST == 0.6
    assert fcos.IN_FEATURES == ["p3", "p4", "p5", "p6", "p7"]
    assert fcos.SIZES_OF_INTEREST == [64, 128, 256, 512]


def test_add_fcos_config_keeps_an_optimizer_key_another_project_added():
    cfg = get_cfg()
    cfg.SOLVER.OPTIMIZER = "ADAM"  # Panoptic-DeepLab's add_panoptic_deeplab_config does this
    fcos_d2.add_fcos_config(cfg)
    assert cfg.SOLVER.OPTIMIZER == "ADAM"


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.relpath(p, REPO) for p in CONFIGS])
def test_every_yaml_builds_and_trains_one_step_on_a_tiny_image(path):
    # Built as shipped (X-101 with deformable res4/res5 on torchvision included); one 64x72 image.
    torch.manual_seed(0)
    cfg = fcos_d2.load_config(path)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.TIMM.PRETRAINED = False  # timm's weights are downloaded; none can be here
    if cfg.MODEL.BACKBONE.NAME == "build_fcos_timm_fpn_backbone":
        pytest.importorskip("timm")  # the optional extra (make setup installs it)
    model = build_model(cfg)
    if cfg.MODEL.META_ARCHITECTURE == "FCOS":
        assert model.head.cls_logits.out_channels == cfg.MODEL.FCOS.NUM_CLASSES
        assert len(model.strides) == len(cfg.MODEL.FCOS.IN_FEATURES)
    else:  # configs/FCOS-RPN: detectron2's Faster R-CNN
        generator = cfg.MODEL.PROPOSAL_GENERATOR.NAME
        assert isinstance(model.proposal_generator, PROPOSAL_GENERATORS[generator])
    deformable = [m for m in model.modules() if isinstance(m, TorchvisionDeformBottleneckBlock)]
    assert len(deformable) == _num_deformable_blocks(cfg.MODEL.RESNETS)
    image = torch.randint(0, 256, (3, 64, 72), dtype=torch.uint8)
    gt = Instances((64, 72), gt_boxes=Boxes(torch.tensor([[8.0, 10.0, 40.0, 50.0]])))
    gt.gt_classes = torch.tensor([0])
    model.train()
    with EventStorage():
        losses = model([{"image": image, "instances": gt, "height": 64, "width": 72}])
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()


def _num_deformable_blocks(resnets) -> int:
    blocks = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}.get(resnets.DEPTH)
    return sum(n for n, on in zip(blocks or [0] * 4, resnets.DEFORM_ON_PER_STAGE) if on)


def test_r50_default_strides_and_head():
    cfg = get_cfg()
    fcos_d2.add_fcos_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "FCOS_R_50_FPN_1x.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    assert model.strides == [8, 16, 32, 64, 128]
    assert model.backbone.top_block.in_feature == "p5"
    assert len(model.head.cls_tower) == 12 and isinstance(
        model.head.cls_tower[1], torch.nn.GroupNorm
    )


def test_from_config_round_trip(cfg):
    cfg.MODEL.FCOS.NMS_THRESH_TEST = 0.45
    cfg.MODEL.FCOS.SCORE_THRESH_TEST = 0.2
    cfg.TEST.DETECTIONS_PER_IMAGE = 7
    args = FCOS.from_config(cfg)
    post = args["core"].postprocess
    assert post.nms_thresh == 0.45 and post.max_detections == 7 and post.score_thresh == 0.2
    model = FCOS(**args)
    assert model.core is args["core"] and model.strides == [8, 16, 32]
    assert model.core.matcher.size_ranges[1] == (64.0, 128.0)


def test_unknown_key_names_the_key(cfg, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("MODEL:\n  FCOS:\n    NOT_A_KEY: 1\n")
    with pytest.raises(KeyError, match="MODEL.FCOS.NOT_A_KEY"):
        cfg.merge_from_file(str(bad))
    # yacs reports command-line overrides with an AssertionError naming the key.
    with pytest.raises(AssertionError, match="MODEL.FCOS.NOT_A_KEY"):
        cfg.merge_from_list(["MODEL.FCOS.NOT_A_KEY", 1])


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("BOX_LOSS_TYPE", "l1", "MODEL.FCOS.BOX_LOSS_TYPE='l1' is not one of"),
        ("NORM", "LN", "MODEL.FCOS.NORM='LN' is not one of"),
        ("IN_FEATURES", ["p3", "p9"], r"MODEL.FCOS.IN_FEATURES=.*\['p9'\]"),
        ("TOP_BLOCK_IN_FEATURE", "c6", "MODEL.FCOS.TOP_BLOCK_IN_FEATURE='c6'"),
        ("SIZES_OF_INTEREST", [64], "MODEL.FCOS.SIZES_OF_INTEREST"),
        ("NUM_CLASSES", 0, "MODEL.FCOS.NUM_CLASSES=0"),
        ("BOX_QUALITY", "centerness", "MODEL.FCOS.BOX_QUALITY='centerness' is not one of"),
        ("LOSS_NORMALIZER_CLS", "all", "MODEL.FCOS.LOSS_NORMALIZER_CLS='all' is not one of"),
        ("INFERENCE_DTYPE", "int8", "MODEL.FCOS.INFERENCE_DTYPE='int8' is not one of"),
        ("TRAIN_DTYPE", "float16", "MODEL.FCOS.TRAIN_DTYPE='float16' is not one of"),
    ],
)
def test_bad_values_fail_at_build_with_key_name(cfg, key, value, message):
    cfg.MODEL.FCOS[key] = value
    with pytest.raises(ValueError, match=message):
        build_model(cfg)


def test_num_classes_smaller_than_dataset():
    from detectron2.data import MetadataCatalog

    cfg = tiny_cfg(num_classes=2)
    MetadataCatalog.get("fcos_test_three_classes").thing_classes = ["a", "b", "c"]
    cfg.DATASETS.TRAIN = ("fcos_test_three_classes",)
    with pytest.raises(ValueError, match="MODEL.FCOS.NUM_CLASSES=2 is smaller than the 3"):
        check_num_classes(cfg)
    cfg.MODEL.FCOS.NUM_CLASSES = 3
    check_num_classes(cfg)


def test_input_format_other_than_bgr_or_rgb_is_a_one_line_error(cfg):
    cfg.INPUT.FORMAT = "L"
    with pytest.raises(ValueError, match=r"INPUT.FORMAT='L' is not one of \['BGR', 'RGB'\]"):
        build_model(cfg)


def test_an_option_among_the_overrides_is_named():
    # argparse's REMAINDER hands "--eval x" given after the overrides to them
    config = os.path.join(REPO, "configs", "demo", "FCOS_R18_shapes_demo.yaml")
    with pytest.raises(ValueError, match="--eval after the overrides"):
        fcos_d2.load_config(config, ["MODEL.FCOS.NUM_CLASSES", "3", "--eval", "x"])
