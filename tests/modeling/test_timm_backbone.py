"""
timm backbones (MODEL.BACKBONE.NAME build_fcos_timm_fpn_backbone) on the three shipped models:
feature names, strides and channels against timm's own feature_info and the maps' real sizes,
the FPN's P3-P7, FREEZE_AT, frozen BatchNorm, offline pretrained weights and one-line errors.
The end-to-end checks of the shipped configs (train a step, ONNX) are in
tests/export/test_export_timm.py.
"""

import glob
import math
import os
import sys

import pytest
import torch
from detectron2.modeling import build_backbone
from detectron2.structures import ImageList

import fcos_d2
from fcos_d2.modeling.timm_backbone import TimmBackbone
from tests.common_utils import REPO, tiny_cfg

timm = pytest.importorskip("timm")

MODELS = ["ese_vovnet39b", "convnext_tiny", "efficientnet_b3"]
# detectron2's ResNet names by stride, written out (not the code under test's rule)
NAMES = {2: "res1", 4: "res2", 8: "res3", 16: "res4", 32: "res5"}
# What FREEZE_AT k freezes, by the names of the timm features model's parameters: the stem for
# k = 1, and the stages up to stride 2**k (read off each model's own timm structure).
FROZEN_PREFIXES = {
    "ese_vovnet39b": {
        1: ("stem_",),
        2: ("stem_", "stages_0."),
        3: ("stem_", "stages_0.", "stages_1."),
    },
    "convnext_tiny": {
        1: ("stem_",),
        2: ("stem_", "stages_0."),
        3: ("stem_", "stages_0.", "stages_1."),
    },
    "efficientnet_b3": {
        1: ("conv_stem.", "bn1.", "blocks.0."),
        2: ("conv_stem.", "bn1.", "blocks.0.", "blocks.1."),
        3: ("conv_stem.", "bn1.", "blocks.0.", "blocks.1.", "blocks.2."),
    },
}
TIMM_CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "timm", "*.yaml")))
H, W = 97, 131  # odd: the maps' sizes are floors or ceilings of H / stride


def timm_cfg(name: str, **timm_keys):
    """tiny_cfg (32-channel FPN) on the timm model ``name``: res3-res5, P3-P7 from P5."""
    cfg = tiny_cfg()
    cfg.MODEL.BACKBONE.NAME = "build_fcos_timm_fpn_backbone"
    cfg.MODEL.TIMM.NAME = name
    for key, value in timm_keys.items():
        cfg.MODEL.TIMM[key] = value
    cfg.MODEL.FPN.IN_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.FCOS.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    cfg.MODEL.FCOS.TOP_BLOCK_IN_FEATURE = "p5"
    cfg.MODEL.FCOS.SIZES_OF_INTEREST = [64, 128, 256, 512]
    return cfg


def _image(seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 3, H, W, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", MODELS)
def test_outputs_are_named_by_stride_with_timms_strides_and_channels(name):
    torch.manual_seed(0)
    model = timm.create_model(name, features_only=True).eval()
    strides, channels = model.feature_info.reduction(), model.feature_info.channels()
    backbone = TimmBackbone(model)
    shapes = backbone.output_shape()
    assert list(shapes) == [NAMES[s] for s in strides]
    assert [(shapes[NAMES[s]].stride, shapes[NAMES[s]].channels) for s in strides] == list(
        zip(strides, channels)
    )
    assert backbone.size_divisibility == 32
    x = _image()
    with torch.no_grad():
        expected = model(x)
        out = backbone(x)
    for (key, f), e, s, c in zip(out.items(), expected, strides, channels):
        assert torch.equal(f, e)
        assert f.shape[1] == c
        assert H // s <= f.shape[2] <= math.ceil(H / s) and W // s <= f.shape[3] <= math.ceil(W / s)
    # only the features asked for
    some = TimmBackbone(model, ["res5", "res3"])
    with torch.no_grad():
        assert set(some(x)) == {"res3", "res5"}
    assert set(some.output_shape()) == {"res3", "res5"}


@pytest.mark.parametrize("name", MODELS)
def test_fpn_on_timm_gives_p3_to_p7_at_strides_8_to_128(name):
    torch.manual_seed(0)
    backbone = build_backbone(timm_cfg(name))
    bottom_up = backbone.bottom_up
    assert bottom_up.model.feature_info.reduction() == [8, 16, 32]  # only what the FPN reads
    shapes = backbone.output_shape()
    assert {k: v.stride for k, v in shapes.items()} == {
        "p3": 8,
        "p4": 16,
        "p5": 32,
        "p6": 64,
        "p7": 128,
    }
    assert {v.channels for v in shapes.values()} == {32}
    images = ImageList.from_tensors([_image()[0]], backbone.size_divisibility)
    padded = images.tensor.shape[-2:]
    assert tuple(padded) == (128, 160)
    with torch.no_grad():
        out = backbone(images.tensor)
    for key, s in (("p3", 8), ("p4", 16), ("p5", 32), ("p6", 64), ("p7", 128)):
        assert out[key].shape == (1, 32, math.ceil(128 / s), math.ceil(160 / s)), key


def _frozen(name: str, freeze_at: int, params) -> set:
    return {n for n in params if n.startswith(FROZEN_PREFIXES[name][freeze_at])}


@pytest.mark.parametrize(
    "name, freeze_at",
    [("ese_vovnet39b", 2), ("convnext_tiny", 2), ("efficientnet_b3", 2)]
    + [("efficientnet_b3", 1), ("ese_vovnet39b", 3)],
)
def test_frozen_stages_get_no_gradient_and_stay_unchanged_after_a_step(name, freeze_at):
    torch.manual_seed(0)
    cfg = timm_cfg(name, NORM="")  # the model's own BatchNorm: frozen in the frozen stages only
    cfg.MODEL.BACKBONE.FREEZE_AT = freeze_at
    backbone = build_backbone(cfg).train()
    timm_model = backbone.bottom_up.model
    params = dict(timm_model.named_parameters())
    frozen = _frozen(name, freeze_at, params)
    assert frozen and len(frozen) < len(params)
    assert {n for n, p in params.items() if not p.requires_grad} == frozen
    # the frozen stages' norms are frozen, the others are the model's own BatchNorm
    bn = torch.nn.modules.batchnorm._BatchNorm
    norms = {n: m for n, m in timm_model.named_modules() if "BatchNorm" in type(m).__name__}
    frozen_norms = _frozen(name, freeze_at, [n + "." for n in norms])
    assert all(not isinstance(norms[n[:-1]], bn) for n in frozen_norms)
    if name != "convnext_tiny":  # ConvNeXt has LayerNorms only
        assert frozen_norms and all(
            isinstance(m, bn) for n, m in norms.items() if n + "." not in frozen_norms
        )
    state = {k: v.clone() for k, v in timm_model.state_dict().items()}
    before = {n: p.detach().clone() for n, p in params.items()}
    optimizer = torch.optim.SGD([p for p in params.values() if p.requires_grad], lr=1.0)
    out = backbone(_image()[:, :, :96, :128])
    sum(f.square().mean() for f in out.values()).backward()
    optimizer.step()
    for n, p in params.items():
        if n in frozen:
            assert p.grad is None and torch.equal(p, before[n]), n
            continue
        assert p.grad is not None and p.grad.abs().max() > 0, n
        # changed, unless the step is below the float resolution of the weight (ConvNeXt's
        # layer scale of 1e-6 leaves the LayerNorm weights of 1.0 a gradient of about 1e-8)
        tiny = p.grad.abs().max() < 1e-6 * before[n].abs().max()
        assert tiny or not torch.equal(p, before[n]), n
    for key, value in timm_model.state_dict().items():  # running statistics of frozen norms
        if _frozen(name, freeze_at, [key]):
            assert torch.equal(value, state[key]), key


@pytest.mark.parametrize("name", ["efficientnet_b3", "ese_vovnet39b"])
def test_frozen_batchnorm_keeps_the_eval_outputs_and_its_activation(name):
    torch.manual_seed(0)
    model = timm.create_model(name, features_only=True, out_indices=(2, 3, 4)).eval()
    with torch.no_grad():  # statistics and affine far from their initial values
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    fused = [m for m in model.modules() if type(m).__name__ == "BatchNormAct2d"]
    assert fused  # BatchNorm + activation in one module (timm's norm_act layers)
    backbone = TimmBackbone(model)
    x = _image(1)
    with torch.no_grad():
        expected = backbone(x)
    backbone.freeze_batchnorm()
    assert not [m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    frozen = [m for m in backbone.modules() if type(m).__name__ == "FrozenBatchNormAct2d"]
    assert len(frozen) == len(fused)
    backbone.train()  # frozen: training mode changes nothing
    with torch.no_grad():
        got = backbone(x)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", MODELS)
def test_frozen_bn_config_leaves_no_trainable_batchnorm(name):
    cfg = timm_cfg(name)  # MODEL.TIMM.NORM "FrozenBN", the default
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    backbone = build_backbone(cfg)
    assert not [m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(p.requires_grad for p in backbone.parameters())


@pytest.mark.parametrize("name", MODELS)
def test_pretrained_weights_load_from_a_local_file(name, tmp_path, monkeypatch):
    torch.manual_seed(11)
    weights = timm.create_model(name).state_dict()  # the classifier's, as timm's hub has them
    path = str(tmp_path / "weights.pth")
    torch.save(weights, path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing may come from the network
    cfg = timm_cfg(name, PRETRAINED=True, PRETRAINED_FILE=path)
    torch.manual_seed(0)
    state = build_backbone(cfg).bottom_up.model.state_dict()
    # timm's features model renames flattened modules ("stages.0" -> "stages_0")
    flat = {k.replace(".", "_"): v for k, v in weights.items()}
    assert len(state) > 50
    for key, value in state.items():
        assert torch.equal(value, flat[key.replace(".", "_")]), key


def _pretrained_calls(monkeypatch) -> list:
    """The ``pretrained`` argument of every timm.create_model call from now on."""
    calls = []
    create = timm.create_model

    def spy(*args, **kwargs):
        calls.append(kwargs.get("pretrained"))
        return create(*args, **kwargs)

    monkeypatch.setattr(timm, "create_model", spy)
    return calls


def test_pretrained_weights_are_not_fetched_when_model_weights_replace_them(monkeypatch):
    calls = _pretrained_calls(monkeypatch)
    cfg = timm_cfg("efficientnet_b3", PRETRAINED=True)
    cfg.MODEL.WEIGHTS = "model_final.pth"  # a trained FCOS: loaded after the build
    build_backbone(cfg)
    assert calls and not any(calls)


def test_predictor_and_python_configs_do_not_fetch_what_the_weights_replace(tmp_path, monkeypatch):
    from detectron2.modeling import build_model

    from fcos_d2 import Predictor
    from fcos_d2.config.lazy import build_lazy_model

    cfg = timm_cfg("efficientnet_b3")
    torch.manual_seed(0)
    weights = str(tmp_path / "model.pth")
    torch.save({"model": build_model(cfg).state_dict()}, weights)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    calls = _pretrained_calls(monkeypatch)
    cfg.MODEL.TIMM.PRETRAINED, cfg.MODEL.WEIGHTS = True, weights  # as the shipped configs
    Predictor(cfg)
    path = os.path.join(REPO, "configs", "lazy", "timm", "fcos_efficientnet_b3_FPN_1x.py")
    lazy = fcos_d2.load_config(path, ["train.device=cpu", f"train.init_checkpoint={weights}"])
    build_lazy_model(lazy)
    assert lazy.model.backbone.bottom_up.pretrained  # the config itself is left as it was
    assert len(calls) == 4 and not any(calls)  # probe + model, twice: never pretrained


def _one_line_error(cfg, error, match):
    with pytest.raises(error, match=match) as info:
        build_backbone(cfg)
    assert "\n" not in str(info.value)


def test_missing_timm_is_a_one_line_error_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)
    message = r'build_fcos_timm_fpn_backbone needs timm: pip install "fcos_d2\[timm\]"'
    _one_line_error(timm_cfg("convnext_tiny"), ImportError, message)


@pytest.mark.parametrize(
    "keys, error, match",
    [
        ({"MODEL.TIMM.NAME": "no_such_net"}, ValueError, "MODEL.TIMM.NAME='no_such_net' is not"),
        ({"MODEL.TIMM.NAME": ""}, ValueError, "MODEL.TIMM.NAME='' is not a timm model"),
        (
            {"MODEL.FPN.IN_FEATURES": ["res4", "res5", "res6"]},
            ValueError,
            r"MODEL.FPN.IN_FEATURES=\['res4', 'res5', 'res6'\]: \['res6'\] not produced",
        ),
        (
            {"MODEL.FPN.IN_FEATURES": ["res1", "res2", "res3"]},  # ConvNeXt starts at stride 4
            ValueError,
            r"MODEL.FPN.IN_FEATURES=.*\['res1'\] not produced",
        ),
        ({"MODEL.TIMM.NORM": "BN"}, ValueError, "MODEL.TIMM.NORM='BN' is not one of"),
        ({"MODEL.BACKBONE.FREEZE_AT": 6}, ValueError, "MODEL.BACKBONE.FREEZE_AT=6"),
        (
            {"MODEL.TIMM.PRETRAINED_FILE": "w.pth"},
            ValueError,
            "read only with MODEL.TIMM.PRETRAINED True",
        ),
        (
            {"MODEL.TIMM.PRETRAINED": True, "MODEL.TIMM.PRETRAINED_FILE": "/no/such.pth"},
            ValueError,
            "MODEL.TIMM.PRETRAINED_FILE='/no/such.pth': no such file",
        ),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_key(keys, error, match):
    cfg = timm_cfg("convnext_tiny")
    cfg.merge_from_list([x for kv in keys.items() for x in kv])
    _one_line_error(cfg, error, match)


@pytest.mark.parametrize("path", TIMM_CONFIGS, ids=os.path.basename)
def test_shipped_configs_use_their_models_pretrained_normalisation(path):
    cfg = fcos_d2.load_config(path)
    assert cfg.MODEL.BACKBONE.NAME == "build_fcos_timm_fpn_backbone"
    assert cfg.MODEL.TIMM.PRETRAINED and cfg.INPUT.FORMAT == "RGB"
    pretrained = timm.models.get_pretrained_cfg(cfg.MODEL.TIMM.NAME)
    assert cfg.MODEL.PIXEL_MEAN == pytest.approx([255 * m for m in pretrained.mean])
    assert cfg.MODEL.PIXEL_STD == pytest.approx([255 * s for s in pretrained.std])
    assert cfg.MODEL.FPN.IN_FEATURES == ["res3", "res4", "res5"]


def test_the_three_models_are_shipped():
    shipped = {fcos_d2.load_config(p).MODEL.TIMM.NAME for p in TIMM_CONFIGS}
    assert shipped == set(MODELS)


def test_p6_from_c5_takes_the_timm_models_stride_32_feature():
    cfg = timm_cfg("efficientnet_b3")
    cfg.MODEL.FPN.IN_FEATURES = ["res3", "res4"]
    cfg.MODEL.FCOS.TOP_BLOCK_IN_FEATURE = "res5"
    backbone = build_backbone(cfg)
    channels = timm.create_model("efficientnet_b3", features_only=True).feature_info.channels()
    assert backbone.bottom_up.model.feature_info.reduction() == [8, 16, 32]
    assert backbone.top_block.p6.in_channels == channels[-1]  # 384, stride 32
    assert {k: v.stride for k, v in backbone.output_shape().items()} == {
        "p3": 8,
        "p4": 16,
        "p5": 32,
        "p6": 64,
    }
