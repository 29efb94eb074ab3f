"""Shared helpers: tiny FCOS configs and models for CPU tests."""

import os
import sys

import pytest
import torch
from detectron2.config import get_cfg

import fcos_d2

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def tiny_cfg(num_classes: int = 3, tower_convs: int = 1):
    """A small R-18 FCOS (32-channel FPN, ``tower_convs`` convs per tower) that builds in a
    second."""
    cfg = get_cfg()
    fcos_d2.add_fcos_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "demo", "FCOS_R18_shapes_demo.yaml"))
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    cfg.MODEL.FCOS.NUM_CLS_CONVS = tower_convs
    cfg.MODEL.FCOS.NUM_BOX_CONVS = tower_convs
    cfg.MODEL.FCOS.NUM_CLASSES = num_classes
    cfg.MODEL.RESNETS.NORM = "GN"
    return cfg


@pytest.fixture
def cfg():
    return tiny_cfg()
