"""Shared helpers: tiny FCOS configs and models for CPU tests."""

import os
import sys

import pytest
import torch
from detectron2.config import get_cfg

import fcos_d2
from fcos_d2.data import register_shapes

register_shapes(replace=False)  # tests name the shapes datasets, as the commands do
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


# The tests' own small model, written out here so that tuning the demo recipe changes no test:
# R-18 from scratch, P3-P5, CPU, shapes datasets, small inputs.
_TINY = [
    "MODEL.DEVICE",
    "cpu",
    "MODEL.WEIGHTS",
    "",
    "MODEL.PIXEL_STD",
    "[57.375, 57.120, 58.395]",
    "MODEL.RESNETS.DEPTH",
    "18",
    "MODEL.RESNETS.RES2_OUT_CHANNELS",
    "64",
    "MODEL.RESNETS.STRIDE_IN_1X1",
    "False",
    "MODEL.BACKBONE.FREEZE_AT",
    "0",
    "MODEL.FCOS.IN_FEATURES",
    '["p3", "p4", "p5"]',
    "MODEL.FCOS.TOP_BLOCK_IN_FEATURE",
    "",
    "MODEL.FCOS.SIZES_OF_INTEREST",
    "[64, 128]",
    "MODEL.FCOS.CHANNELS_LAST",
    "False",
    "DATASETS.TRAIN",
    '("shapes_train",)',
    "DATASETS.TEST",
    '("shapes_val",)',
    "DATALOADER.NUM_WORKERS",
    "1",
    "INPUT.MIN_SIZE_TRAIN",
    "(224,)",
    "INPUT.MAX_SIZE_TRAIN",
    "320",
    "INPUT.MIN_SIZE_TEST",
    "224",
    "INPUT.MAX_SIZE_TEST",
    "320",
    "SOLVER.IMS_PER_BATCH",
    "8",
    "SOLVER.BASE_LR",
    "0.05",
    "SOLVER.WARMUP_ITERS",
    "50",
    "SOLVER.WARMUP_FACTOR",
    "0.01",
    "SOLVER.STEPS",
    "(540, 630)",
    "SOLVER.MAX_ITER",
    "680",
    "TEST.EVAL_PERIOD",
    "0",
    "SEED",
    "0",
]


def tiny_cfg(num_classes: int = 3, tower_convs: int = 1):
    """A small R-18 FCOS (32-channel FPN, GroupNorm, ``tower_convs`` convs per tower) that
    builds in a second; the one model factory of the tests."""
    cfg = get_cfg()
    fcos_d2.add_fcos_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "Base-FCOS.yaml"))
    cfg.merge_from_list(_TINY)
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
