"""The training rows on a model whose classes are fewer than the benchmark batch's ids."""

import pytest

from fcos_d2.benchmark.harness import build_models
from fcos_d2.benchmark.training import DIRECT, bench_train, training_batch
from fcos_d2.model_zoo import get_config_file


def test_training_batch_classes_exist_in_the_model():
    for k in (1, 3, 80):
        for image in training_batch(k):
            classes = image["instances"].gt_classes
            assert len(classes) == 2 and 0 <= int(classes.min()) and int(classes.max()) < k


@pytest.mark.slow
def test_training_rows_of_a_three_class_model():
    """detectron2's loss one-hot encodes the classes: an id >= NUM_CLASSES stopped the run."""
    cfg, ours, d2 = build_models(get_config_file("demo/FCOS_R18_shapes_demo.yaml"), "cpu")
    assert ours.num_classes == 3
    rows = {r["mode"]: r for r in bench_train(cfg, ours, d2, "cpu", iters=1)}
    assert ours.winograd  # so the run also times the model without (on a CPU)
    for mode in ("d2 built-in", "fcos_d2 float32 (default)", DIRECT, "conv-bound floor (float32)"):
        assert rows[mode]["min_s"] > 0
