"""The training rows on a model whose classes are fewer than the benchmark batch's ids."""

import pytest
from detectron2.utils.events import EventStorage

from fcos_d2.benchmark.floors import step_gflop
from fcos_d2.benchmark.harness import build_models, variant
from fcos_d2.benchmark.training import (
    DIRECT,
    _train_step,
    _training_floor,
    bench_train,
    training_batch,
)
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


@pytest.mark.slow
def test_training_floor_counts_the_direct_convolutions_arithmetic_with_or_without_winograd():
    """The floor is the built-in's arithmetic (direct convolutions); Winograd convolutions run
    fewer FLOPs (R-18's 256-channel res4 at 512 px here) and must not lower it."""
    cfg, ours, _ = build_models(get_config_file("demo/FCOS_R18_shapes_demo.yaml"), "cpu")
    batch = training_batch(ours.num_classes)
    direct = variant(cfg, ours, WINOGRAD=False)
    floors = [_training_floor(m, batch, "cpu") for m in (ours, direct)]
    gflop = [f["min_s"] * f["gflops_per_s"] for f in floors]
    assert gflop[0] == pytest.approx(gflop[1], rel=1e-9)
    with EventStorage():
        assert step_gflop(_train_step(ours, batch)) < 0.95 * gflop[1]
