"""Shared fixtures: a tiny FCOS config, and the learning tests' trained model (the helpers
themselves are in tests/common_utils.py)."""

import contextlib

import pytest

from tests.common_utils import tiny_cfg  # also registers the shapes datasets, sets torch threads


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
    from tests.train_helpers import OVERFIT_RECIPE, overfit_setup, train_on_dataset

    runs = {}
    datasets = contextlib.ExitStack()  # their registrations, kept until the session ends

    def get(train_dtype: str, seed: int):
        if (train_dtype, seed) not in runs:
            name = f"fcos_overfit_{train_dtype}_{seed}"
            cfg = datasets.enter_context(overfit_setup(str(tmp_path_factory.mktemp(name)), name))
            cfg.MODEL.FCOS.TRAIN_DTYPE = train_dtype
            model = train_on_dataset(cfg, name, seed=seed, **OVERFIT_RECIPE)
            runs[train_dtype, seed] = cfg, name, model
        return runs[train_dtype, seed]

    with datasets:
        yield get
