"""Checkpoints: atomic writes, unreadable files named, strict loading for inference,
detectron2's fine-tuning convention for other class counts."""

import logging
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from torch import nn

from fcos_d2.checkpoint import (
    CheckpointReadError,
    FCOSCheckpointer,
    IncompleteCheckpointError,
    from_native,
    load_for_inference,
)
from tests.common_utils import REPO, tiny_batch, tiny_cfg


def _net(fill: float) -> nn.Module:
    net = nn.Linear(300, 300)
    with torch.no_grad():
        net.weight.fill_(fill)
        net.bias.fill_(fill)
    return net


def _truncate(path: str, keep: float = 0.5) -> None:
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * keep)])


# A process that rewrites model_0000019.pth and is killed (SIGKILL) half-way through the write;
# run in the repository root, so that fcos_d2 is this checkout's.
_KILLED_WRITER = """
import time, torch
from torch import nn
from fcos_d2.checkpoint import FCOSCheckpointer
real_save = torch.save
def slow_save(obj, f, *a, **k):
    import io
    buf = io.BytesIO(); real_save(obj, buf)
    data = buf.getvalue()
    f.write(data[: len(data) // 2]); f.flush()
    print("half written", flush=True)
    time.sleep(600)
torch.save = slow_save
net = nn.Linear(300, 300)
FCOSCheckpointer(net, {out!r}).save("model_0000019")
"""


def test_kill_while_rewriting_a_checkpoint_leaves_the_previous_complete_file(tmp_path):
    out = str(tmp_path)
    FCOSCheckpointer(_net(1.0), out).save("model_0000019")  # the first run's checkpoint
    script = _KILLED_WRITER.format(out=out)
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        assert proc.stdout.readline().strip() == "half written"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert open(os.path.join(out, "last_checkpoint")).read() == "model_0000019.pth"
    net = _net(0.0)
    FCOSCheckpointer(net, out).resume_or_load("", resume=True)
    assert torch.all(net.weight == 1.0)  # the complete file of the first run, intact
    # the next save of that name clears the killed write's temporary file
    assert len([f for f in os.listdir(out) if f.endswith(".tmp")]) == 1
    FCOSCheckpointer(_net(2.0), out).save("model_0000019")
    assert sorted(os.listdir(out)) == ["last_checkpoint", "model_0000019.pth"]


def test_checkpoint_files_get_the_usual_permissions(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    FCOSCheckpointer(_net(1.0), str(tmp_path)).save("model_final")
    assert os.stat(tmp_path / "model_final.pth").st_mode & 0o777 == 0o666 & ~umask


def test_failed_save_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    out = str(tmp_path)
    FCOSCheckpointer(_net(1.0), out).save("model_final")
    FCOSCheckpointer(_net(1.0), out).save("model_0000004")

    def failing_save(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        FCOSCheckpointer(_net(2.0), out).save("model_final")
    assert sorted(os.listdir(out)) == ["last_checkpoint", "model_0000004.pth", "model_final.pth"]
    assert open(os.path.join(out, "last_checkpoint")).read() == "model_0000004.pth"
    monkeypatch.undo()
    net = _net(0.0)
    FCOSCheckpointer(net).load(os.path.join(out, "model_final.pth"))
    assert torch.all(net.weight == 1.0)


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_unreadable_checkpoint_error_names_the_file(tmp_path, damage):
    path = str(tmp_path / "weights.pth")
    torch.save({"model": _net(1.0).state_dict()}, path)
    _truncate(path, 0.5 if damage == "truncated" else 0.0)
    with pytest.raises(CheckpointReadError) as err:
        FCOSCheckpointer(_net(0.0)).load(path)
    assert path in str(err.value) and "\n" not in str(err.value)


def test_missing_checkpoint_file_is_named(tmp_path):
    path = str(tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        FCOSCheckpointer(_net(0.0)).load(path)


def test_resume_falls_back_to_the_newest_readable_checkpoint_naming_both(tmp_path, caplog):
    out = str(tmp_path)
    FCOSCheckpointer(_net(1.0), out).save("model_0000004")
    FCOSCheckpointer(_net(2.0), out).save("model_0000009")
    time.sleep(0.01)
    FCOSCheckpointer(_net(3.0), out).save("model_0000014")
    _truncate(os.path.join(out, "model_0000014.pth"))  # damaged outside fcos_d2's control
    net = _net(0.0)
    with caplog.at_level(logging.WARNING):
        FCOSCheckpointer(net, out).resume_or_load("", resume=True)
    assert torch.all(net.weight == 2.0)
    assert "model_0000014.pth" in caplog.text and "model_0000009.pth" in caplog.text


def _state(num_classes: int, num_convs: int = 1):
    cfg = tiny_cfg(num_classes)
    cfg.MODEL.FCOS.NUM_CLS_CONVS = cfg.MODEL.FCOS.NUM_BOX_CONVS = num_convs
    torch.manual_seed(num_classes)
    return build_model(cfg).state_dict()


def test_fine_tuning_from_an_adelaidet_80_class_model_skips_only_the_classifier(tmp_path, caplog):
    source = _state(80)
    path = str(tmp_path / "adelaidet_coco.pth")
    torch.save({"model": from_native(source, "adelaidet")}, path)
    model = build_model(tiny_cfg(3))
    with caplog.at_level(logging.INFO, logger="fcos_d2"):
        FCOSCheckpointer(model).load(path)
    mine = model.state_dict()
    skipped = [k for k in mine if not torch.equal(mine[k], source[k])]
    assert skipped == ["head.cls_logits.weight", "head.cls_logits.bias"]
    # one line naming both tensors, both class counts and the prior-probability bias:
    # MODEL.FCOS.PRIOR_PROB 0.01 gives -log((1 - 0.01) / 0.01) = -4.5951
    (line,) = [r.getMessage() for r in caplog.records if "re-initialised" in r.getMessage()]
    assert "head.cls_logits.bias, head.cls_logits.weight" in line
    assert "model's 3 classes (the checkpoint has 80)" in line and "bias -4.5951" in line
    assert "prior probability 0.01" in line
    assert torch.allclose(mine["head.cls_logits.bias"], torch.full((3,), -4.5951), atol=1e-4)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    # and it trains: one step gives finite losses
    losses = model.train()(tiny_batch()[:2])
    assert all(torch.isfinite(v) for v in losses.values())
    # the same file is refused for inference, naming the tensors
    with pytest.raises(IncompleteCheckpointError, match="head.cls_logits.weight"):
        load_for_inference(build_model(tiny_cfg(3)), path)


def test_inference_refuses_a_checkpoint_with_fewer_tower_convs(tmp_path):
    path = str(tmp_path / "two_conv.pth")
    torch.save({"model": _state(3, num_convs=1)}, path)
    cfg = tiny_cfg(3)
    cfg.MODEL.FCOS.NUM_CLS_CONVS = cfg.MODEL.FCOS.NUM_BOX_CONVS = 2
    with pytest.raises(IncompleteCheckpointError) as err:
        load_for_inference(build_model(cfg), path)
    assert "head.cls_tower.3.weight" in str(err.value)
    # a checkpoint that fits loads, and the model then equals it
    ok = build_model(tiny_cfg(3))
    load_for_inference(ok, path)
    assert all(torch.equal(v, ok.state_dict()[k]) for k, v in torch.load(path)["model"].items())


def test_inference_accepts_a_checkpoint_without_batchnorm_step_counters(tmp_path):
    cfg = tiny_cfg(3)
    cfg.MODEL.RESNETS.NORM = "BN"
    state = build_model(cfg).state_dict()
    counters = [k for k in state if k.endswith("num_batches_tracked")]
    assert counters  # the model has BatchNorm layers
    path = str(tmp_path / "no_counters.pth")
    torch.save({"model": {k: v for k, v in state.items() if k not in counters}}, path)
    load_for_inference(build_model(cfg), path)  # does not raise


def test_inference_refuses_a_checkpoint_with_more_tower_convs(tmp_path):
    path = str(tmp_path / "more.pth")
    torch.save({"model": _state(3, num_convs=2)}, path)
    with pytest.raises(IncompleteCheckpointError, match="no place for: .*head.cls_tower.3"):
        load_for_inference(build_model(tiny_cfg(3)), path)


def test_retinanet_checkpoint_is_not_called_an_fcos_checkpoint(tmp_path, caplog):
    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = "RetinaNet"
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 18, 64
    cfg.MODEL.BACKBONE.NAME = "build_retinanet_resnet_fpn_backbone"
    cfg.MODEL.RESNETS.OUT_FEATURES = cfg.MODEL.FPN.IN_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    cfg.MODEL.RETINANET.NUM_CLASSES = 3
    path = str(tmp_path / "retinanet.pth")
    torch.save({"model": build_model(cfg).state_dict()}, path)
    with caplog.at_level(logging.INFO, logger="fcos_d2"):
        with pytest.raises(IncompleteCheckpointError, match="head.ctrness.weight"):
            load_for_inference(build_model(tiny_cfg(3)), path)
    assert "RetinaNet" in caplog.text
    assert "FCOS checkpoint;" not in caplog.text  # not "a d2 FCOS checkpoint; converting ..."


def test_a_checkpoint_without_class_logits_is_not_called_fine_tuning(tmp_path, caplog):
    source = _state(3)
    partial = {k: v for k, v in source.items() if not k.startswith("head.")}  # e.g. a backbone
    path = str(tmp_path / "backbone.pth")
    torch.save({"model": partial}, path)
    with caplog.at_level(logging.INFO):
        FCOSCheckpointer(build_model(tiny_cfg(3))).load(path)
    assert "re-initialised" not in caplog.text
    assert "head.cls_logits.{bias, weight}" in caplog.text  # detectron2 names what is missing
