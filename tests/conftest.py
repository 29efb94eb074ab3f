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


@pytest.fixture(scope="session")
def overfit_model(tmp_path_factory):
    """
    ``get(train_dtype, seed)`` -> (cfg, dataset name, model): the learning tests' tiny model
    trained on their images (train_helpers.overfit_setup), once per (dtype, seed) and session,
    so that the tests that check what it learned (test_learning) and what quantizing it keeps
    (test_export_int8) share one training run.
    """
    from train_helpers import OVERFIT_RECIPE, overfit_setup, train_on_dataset

    runs = {}

    def get(train_dtype: str, seed: int):
        if (train_dtype, seed) not in runs:
            name = f"fcos_overfit_{train_dtype}_{seed}"
            cfg = overfit_setup(str(tmp_path_factory.mktemp(name)), name)
            cfg.MODEL.FCOS.TRAIN_DTYPE = train_dtype
            model = train_on_dataset(cfg, name, seed=seed, **OVERFIT_RECIPE)
            runs[train_dtype, seed] = cfg, name, model
        return runs[train_dtype, seed]

    return get
