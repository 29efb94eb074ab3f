"""End-to-end CPU checks on tiny random inputs of odd sizes (seeded)."""

import os

import pytest
import torch
from detectron2.engine import SimpleTrainer
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from fcos_d2.data.mapper import FCOSDatasetMapper
from tests.common_utils import randomize_head, tiny_cfg
from tests.fcos_reference import losses_and_reference


def _image(h, w, boxes=(), classes=()):
    inst = Instances((h, w))
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.tensor(classes, dtype=torch.long)
    gen = torch.Generator().manual_seed(h * 1000 + w)
    return {"image": torch.rand(3, h, w, generator=gen) * 255, "instances": inst}


def _model(num_classes=3):
    torch.manual_seed(0)
    model = build_model(tiny_cfg(num_classes))
    model.train()
    return model


def _train_step(model, batch):
    with EventStorage():
        losses = model(batch)
        assert set(losses) == {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr"}
        for name, value in losses.items():
            assert torch.isfinite(value), name
        sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    return losses


def _same_weights(model, **fcos_keys):
    """A tiny FCOS with other MODEL.FCOS settings, ``model``'s weights and train/eval mode."""
    cfg = tiny_cfg()
    for key, value in fcos_keys.items():
        cfg.MODEL.FCOS[key] = value
    other = build_model(cfg)
    other.load_state_dict(model.state_dict())
    return other.train(model.training)


FULL = _image(97, 131, [[10, 12, 60, 70], [50, 40, 120, 90]], [0, 2])


def test_train_step_empty_batch():
    losses = _train_step(_model(), [_image(67, 83), _image(101, 77)])
    assert losses["loss_fcos_loc"].item() == 0 and losses["loss_fcos_ctr"].item() == 0
    assert losses["loss_fcos_cls"].item() > 0


def test_train_step_half_empty_batch_gives_the_reference_losses():
    # one image with two boxes and one without (the reference needs no padding: multiples of
    # 32): the plain-Python AdelaiDet formulas
    boxes, classes = [[10.0, 12.0, 60.0, 70.0], [50.0, 40.0, 120.0, 90.0]], [0, 2]
    losses, ref, labels = losses_and_reference(_model(), boxes, classes, 96, 160)
    assert sum(label != 3 for label in labels) >= 4  # both boxes have positives
    for name, value in ref.items():
        assert abs(losses[name].item() - value.item()) <= 1e-4 * max(1.0, abs(value.item())), name


def test_train_step_full_batch():
    batch = [FULL, _image(64, 99, [[0, 0, 30, 40]], [1])]
    losses = _train_step(_model(), batch)
    assert losses["loss_fcos_ctr"].item() > 0


def test_zero_size_and_partly_outside_boxes():
    # A zero-width box, a zero-height box and a box reaching past the image border.
    batch = [_image(80, 96, [[10, 10, 10, 50], [5, 30, 60, 30], [40, 40, 150, 120]], [0, 1, 2])]
    _train_step(_model(), batch)


def test_crowd_annotations_are_dropped_by_the_mapper():
    # fcos_d2's own training mapper (the one FCOSTrainer builds), not detectron2's.
    cfg = tiny_cfg()
    mapper = FCOSDatasetMapper(cfg, is_train=True, augmentations=[])
    import numpy as np

    record = {
        "file_name": "unused",
        "height": 60,
        "width": 80,
        "image_id": 0,
        "annotations": [
            {"bbox": [5, 5, 30, 30], "bbox_mode": 1, "category_id": 0, "iscrowd": 0},
            {"bbox": [20, 20, 40, 30], "bbox_mode": 1, "category_id": 1, "iscrowd": 1},
        ],
    }
    from unittest import mock

    with mock.patch(
        "detectron2.data.detection_utils.read_image", return_value=np.zeros((60, 80, 3), np.uint8)
    ):
        out = mapper(record)
    assert out["instances"].gt_classes.tolist() == [0]
    _train_step(_model(), [out])


def test_class_id_out_of_range():
    with pytest.raises(ValueError, match="NUM_CLASSES=3"):
        _train_step(_model(), [_image(64, 64, [[0, 0, 30, 30]], [5])])


def test_inference_odd_sizes_and_rescale():
    model = _model()
    randomize_head(model, cls_bias=0.0)  # make some detections survive
    model.eval()
    batch = [_image(97, 131), _image(61, 45)]
    batch[1]["height"], batch[1]["width"] = 122, 90  # ask for twice the input size
    with torch.no_grad():
        out = model(batch)
    for result, (h, w) in zip(out, [(97, 131), (122, 90)]):
        inst = result["instances"]
        assert inst.image_size == (h, w)
        assert 0 < len(inst) <= 100
        b = inst.pred_boxes.tensor
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all()
        assert (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
        assert (inst.scores[:-1] >= inst.scores[1:]).all()
        assert set(inst.pred_classes.tolist()) <= {0, 1, 2}


def test_nan_loss_stops_training_with_floating_point_error():
    model = _model()
    bad = _image(64, 64, [[0, 0, 30, 30]], [1])
    bad["image"][:, 5, 5] = float("nan")
    loader = iter([[bad]] * 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    trainer = SimpleTrainer(model, loader, opt)
    with pytest.raises(FloatingPointError, match="iteration=0"):
        trainer.train(0, 1)


def _input_layouts(model, batch):
    """Whether the backbone got its input channels_last, in eval and in training mode."""
    seen = []
    hook = model.backbone.register_forward_pre_hook(
        lambda _, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    try:
        with torch.no_grad():
            model.eval()(batch)
        with EventStorage():
            model.train()(batch)
    finally:
        hook.remove()
        model.eval()
    return seen


def test_channels_last_gives_the_same_detections():
    model = _model()
    randomize_head(model, cls_bias=0.0)
    model.eval()
    plain = _same_weights(model, CHANNELS_LAST=False)
    fast = _same_weights(model, CHANNELS_LAST=True)
    for m, channels_last in ((plain, False), (fast, True)):
        assert m.channels_last == channels_last
        # the weights keep their layout; the input's decides how convs run
        assert m.head.cls_logits.weight.is_contiguous()
    train_batch = [_image(64, 96, [[10, 10, 40, 50]], [1])]
    assert _input_layouts(plain, train_batch) == [False, False]
    avx512 = torch.backends.cpu.get_cpu_capability().startswith("AVX512")
    assert _input_layouts(fast, train_batch) == [True, avx512]
    batch = [_image(97, 131)]
    with torch.no_grad():
        a, b = plain(batch)[0]["instances"], fast(batch)[0]["instances"]
    assert len(a) == len(b) > 0
    assert torch.allclose(a.scores, b.scores, atol=1e-4)
    assert torch.allclose(a.pred_boxes.tensor, b.pred_boxes.tensor, atol=1e-2)


def test_bfloat16_inference_keeps_float32_outputs_close():
    model = _model()
    randomize_head(model, cls_bias=0.0)
    model.eval()
    low = _same_weights(model, INFERENCE_DTYPE="bfloat16")
    batch = [_image(97, 131)]
    with torch.no_grad():
        a, b = model(batch)[0]["instances"], low(batch)[0]["instances"]
    assert b.scores.dtype == torch.float32 and b.pred_boxes.tensor.dtype == torch.float32
    assert len(b) > 0
    # bfloat16 keeps ~3 significant digits: each of the best float32 detections is found in
    # bfloat16 with its class, its score within 0.01 and each box side within 0.5 px (measured:
    # 1e-3 and 0.13 px; the untrained model's boxes are a few pixels, so IoU would not do)
    for i in range(5):
        side = (b.pred_boxes.tensor - a.pred_boxes.tensor[i]).abs().amax(dim=1)  # (D,)
        same = (b.pred_classes == a.pred_classes[i]) & ((b.scores - a.scores[i]).abs() < 0.01)
        assert (same & (side < 0.5)).any(), i
    assert model.inference_dtype == torch.float32 and low.inference_dtype == torch.bfloat16


def test_bfloat16_training_keeps_float32_weights_gradients_and_losses():
    model = _model()
    batch = [FULL, _image(64, 80, [[5, 5, 40, 50]], [1])]
    with EventStorage():
        reference = {k: v.item() for k, v in model(batch).items()}
    low = _same_weights(model, TRAIN_DTYPE="bfloat16")
    dtypes = []
    low.head.cls_logits.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    losses = _train_step(low, batch)
    assert dtypes and set(dtypes) == {torch.bfloat16}  # the head really ran in bfloat16
    assert all(v.dtype == torch.float32 for v in losses.values())
    assert all(p.dtype == torch.float32 for p in low.parameters())
    assert all(p.grad.dtype == torch.float32 for p in low.parameters() if p.grad is not None)
    # bfloat16 keeps ~3 significant digits; the losses of the same weights stay close
    for name, value in losses.items():
        assert abs(value.item() - reference[name]) <= 0.03 * abs(reference[name]), name


def test_head_outputs_share_one_dtype_under_autocast():
    # detectron2's autocast test, on the CPU in bfloat16: the head's outputs all in the autocast
    # dtype (the float32 Scale must not promote box regression), detections in float32.
    model = _model().eval()
    seen = []
    model.head.register_forward_hook(
        lambda m, i, out: seen.append({t.dtype for level in out for t in level})
    )
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        inst = model([_image(67, 83)])[0]["instances"]
    assert seen == [{torch.bfloat16}]
    assert inst.pred_boxes.tensor.dtype == torch.float32 and inst.scores.dtype == torch.float32


def test_low_precision_stops_at_the_head_outputs():
    # INFERENCE_DTYPE bfloat16: the head runs in bfloat16; decoding gets float32 predictions.
    model = _same_weights(_model(), INFERENCE_DTYPE="bfloat16").eval()
    head_dtypes, decode_dtypes = [], []
    model.head.register_forward_hook(
        lambda m, i, out: head_dtypes.append({t.dtype for level in out for t in level})
    )
    decode = model.forward_inference

    def spy(images, features, predictions):
        decode_dtypes.append({t.dtype for level in predictions for t in level})
        return decode(images, features, predictions)

    model.forward_inference = spy
    with torch.no_grad():
        model([_image(67, 83)])
    assert head_dtypes == [{torch.bfloat16}] and decode_dtypes == [{torch.float32}]


def test_construction_leaves_the_given_modules_unchanged():
    from detectron2.layers import FrozenBatchNorm2d
    from detectron2.modeling import build_backbone

    from fcos_d2.layers import FrozenBNConv2d
    from fcos_d2.modeling import FCOS

    cfg = tiny_cfg()
    cfg.MODEL.RESNETS.NORM = "FrozenBN"
    cfg.MODEL.FCOS.FOLD_FROZEN_BN = True
    cfg.MODEL.FCOS.CHANNELS_LAST = True
    args = FCOS.from_config(cfg)
    # from_config applies the speed settings to the modules it builds itself ...
    built = args["backbone"]
    assert any(type(m) is FrozenBNConv2d for m in built.modules())
    # ... while the constructor uses a backbone passed in as it is.
    backbone = build_backbone(cfg)
    types = [type(m) for m in backbone.modules()]
    assert FrozenBatchNorm2d in types and FrozenBNConv2d not in types
    model = FCOS(**{**args, "backbone": backbone})
    assert model.backbone is backbone
    assert [type(m) for m in backbone.modules()] == types
    assert backbone.bottom_up.stem.conv1.weight.is_contiguous()


def test_cpu_training_runs_nchw_on_an_avx2_only_cpu():
    """Measured: oneDNN's AVX2 backward convolutions are slower channels_last, its AVX-512 ones
    faster; inference is faster channels_last on both (fcos_d2.layers.layout)."""
    import subprocess
    import sys

    from tests.common_utils import REPO

    code = (
        "import torch; from fcos_d2.layers import channels_last_helps as h; "
        "print(torch.backends.cpu.get_cpu_capability(), h('cpu', True), h('cpu', False), "
        "h('cuda', True))"
    )
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.stdout.split() == ["AVX2", "False", "True", "True"], out.stderr[-1000:]


def test_cpu_inference_of_a_batch_runs_image_by_image_with_the_batchs_detections(monkeypatch):
    import fcos_d2.modeling.meta_arch as meta_arch

    model = _model()
    randomize_head(model, cls_bias=0.0)
    model.eval()
    batch = [_image(97, 131), _image(64, 150), _image(80, 80)]
    calls = []
    hook = model.backbone.register_forward_pre_hook(lambda _, args: calls.append(len(args[0])))
    with torch.no_grad():
        split = model(batch)
        monkeypatch.setattr(meta_arch, "one_image_at_a_time", lambda *_: False)
        whole = model(batch)
    hook.remove()
    assert calls == [1, 1, 1, 3]
    for a, b in zip(split, whole):
        a, b = a["instances"], b["instances"]
        assert len(a) == len(b) > 0
        assert torch.equal(a.pred_classes, b.pred_classes)
        assert torch.allclose(a.scores, b.scores, atol=1e-5)
        assert torch.allclose(a.pred_boxes.tensor, b.pred_boxes.tensor, atol=1e-3)


def test_winograd_training_gives_the_direct_losses_and_gradients_and_leaves_inference_alone(
    monkeypatch,
):
    import fcos_d2.layers.winograd as winograd

    seen = []
    original = winograd.winograd_conv2d
    monkeypatch.setattr(winograd, "winograd_conv2d", lambda *a: seen.append(1) or original(*a))
    cfg = tiny_cfg()
    cfg.MODEL.FPN.OUT_CHANNELS = 256
    cfg.MODEL.FCOS.WINOGRAD = False
    torch.manual_seed(0)
    direct = build_model(cfg).train()
    cfg.MODEL.FCOS.WINOGRAD = True
    fast = build_model(cfg).train()
    fast.load_state_dict(direct.state_dict())
    assert (direct.winograd, fast.winograd) == (False, True)
    # padded to 224 x 320: P3 is 28 x 40, 2 x 7 x 10 = 140 tiles of 4 x 4 (>= 128); P4 and
    # R-18's res4 have 40. The 256-channel 3 x 3 convs on P3: the FPN's output conv and one per
    # tower.
    batch = [_image(224, 320, [[10, 12, 90, 100]], [1]), _image(217, 313, [[30, 20, 80, 70]], [2])]
    losses = [_train_step(m, batch) for m in (direct, fast)]
    assert len(seen) == 3
    for name in losses[0]:
        assert losses[1][name].item() == pytest.approx(losses[0][name].item(), rel=1e-4), name
    for (name, a), b in zip(direct.named_parameters(), fast.parameters()):
        if a.grad is not None:
            assert (a.grad - b.grad).abs().max() <= 1e-4 * a.grad.abs().max() + 1e-7, name
    with torch.enable_grad():  # the weights require gradients: only the mode decides
        fast.eval()([_image(224, 320)])
    assert len(seen) == 3  # inference runs torch's convolutions
