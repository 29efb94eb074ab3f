"""timm's pretrained weights on a machine that cannot download them: a one-line error naming the
config keys, within seconds (timm and huggingface_hub would retry for about a minute)."""

import socket
import time

import pytest

from fcos_d2 import model_zoo
from fcos_d2.modeling.timm_backbone import build_timm_backbone

timm = pytest.importorskip("timm")
hub_constants = pytest.importorskip("huggingface_hub.constants")

# A hub model whose weights no test downloads (nor finds in a cache).
NAME = "resnet10t"


def _refuse_connections(monkeypatch):
    calls = []

    def refuse(address, *args, **kwargs):
        calls.append(address)
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    return calls


def test_unreachable_hub_is_a_one_line_error_naming_both_keys(monkeypatch):
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    calls = _refuse_connections(monkeypatch)
    cfg = model_zoo.get_config(
        "timm/FCOS_convnext_tiny_FPN_1x.yaml",
        ["MODEL.TIMM.NAME", NAME, "MODEL.TIMM.PRETRAINED", "True", "MODEL.DEVICE", "cpu"],
    )
    from detectron2.modeling import build_model

    start = time.perf_counter()
    with pytest.raises(ValueError) as error:
        build_model(cfg)
    assert time.perf_counter() - start < 30  # one refused connection, no minute of retries
    message = str(error.value)
    assert "\n" not in message
    assert "MODEL.TIMM.PRETRAINED=True" in message and "MODEL.TIMM.PRETRAINED_FILE" in message
    assert calls and calls[0][1] == 443


def test_offline_mode_is_the_same_error_without_a_connection(monkeypatch):
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    calls = _refuse_connections(monkeypatch)
    with pytest.raises(ValueError, match=r"pretrained=True.*HF_HUB_OFFLINE.*pretrained_file"):
        build_timm_backbone(name=NAME, out_features=["res3", "res4", "res5"], pretrained=True)
    assert calls == []


def test_a_local_weights_file_needs_no_network(monkeypatch, tmp_path):
    calls = _refuse_connections(monkeypatch)
    path = tmp_path / "weights.pth"
    import torch

    torch.save(timm.create_model(NAME).state_dict(), path)
    backbone = build_timm_backbone(
        name=NAME, out_features=["res3", "res4", "res5"], pretrained=True, pretrained_file=str(path)
    )
    assert set(backbone.output_shape()) == {"res3", "res4", "res5"} and calls == []
