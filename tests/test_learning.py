"""
A short learning test: a tiny FCOS overfits a handful of synthetic images, for several seeds.

What learning means here, per ground-truth box: a detection of its class overlaps it well and
scores high, and no detection of another class on it scores close. The bars leave room beyond
what the measured runs reach (`-s` prints them), so that last-bit differences between CPU
kernels (AVX2, AVX-512, AVX512_BF16, AMX) do not decide the outcome.
"""

import pytest
import torch
from detectron2.data import DatasetCatalog

from fcos_d2.utils import cpu_info
from tests.train_helpers import evaluate_on_dataset, ground_truth_report

# Trains the tiny model for several seeds and dtypes: most of the suite's time.
pytestmark = pytest.mark.slow

# Emulated bfloat16 (no AVX512_BF16 / AMX units, or oneDNN capped below them) is about 10x
# slower than float32 (measured on an AVX2-only CPU): the runs would take most of an hour there.
# The bfloat16 unit tests of tests/modeling/test_model_e2e.py run on every CPU.
NATIVE_BF16 = cpu_info()["native_bfloat16"] and torch.ops.mkldnn._is_mkldnn_bf16_supported()
SEEDS = (0, 1, 2)

# Measured (2026-12-01, 2-core AMD EPYC family 25 model 17). As the suite runs (2 threads;
# native float32 and bfloat16, emulated AVX2 float32; seeds 0-2; AVX512_CORE float32 gave the
# native numbers exactly): all 14 boxes found in all 9 runs, the hardest at IoU 0.53-0.66, the
# next at 0.63-0.71, median >= 0.82, every found box scoring >= 0.71, no box with another class
# above 0.20. With 1 thread (other rounding), 2 of 6 runs missed one box (a 16 px right-angled
# triangle) and the next hardest sat at 0.56-0.64: this tiny model regresses some small boxes
# only that well, so the bar on found boxes allows two misses.
MIN_IOU = 0.5  # a box is found: a detection of its class overlaps it this much ...
MIN_SCORE = 0.4  # ... and scores at least this
MIN_FOUND = 12  # of the 14 boxes
MIN_MEDIAN_IOU = 0.75  # over all boxes
MAX_WRONG_SCORE = 0.4  # best score of another class on any box


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    "train_dtype",
    [
        "float32",
        pytest.param(
            "bfloat16",
            marks=pytest.mark.skipif(not NATIVE_BF16, reason="no bfloat16 units: emulated, ~10x"),
        ),
    ],
)
def test_overfits_a_few_images(overfit_model, train_dtype, seed):
    cfg, name, model = overfit_model(train_dtype, seed)
    assert sum(len(d["annotations"]) for d in DatasetCatalog.get(name)) == 14
    result = evaluate_on_dataset(model, cfg, name)
    boxes = ground_truth_report(model, cfg, name)
    ious = sorted(b["iou"] for b in boxes)
    print(
        f"\n{train_dtype} seed {seed}: AP {result['AP']:.1f} AP50 {result['AP50']:.1f}, IoU per "
        f"box {[round(i, 2) for i in ious]}, min score {min(b['score'] for b in boxes):.2f}, "
        f"max wrong-class score {max(b['wrong_score'] for b in boxes):.2f}"
    )
    found = [b for b in boxes if b["iou"] >= MIN_IOU and b["score"] >= MIN_SCORE]
    assert len(found) >= MIN_FOUND, boxes
    assert ious[len(ious) // 2] >= MIN_MEDIAN_IOU, boxes
    assert max(b["wrong_score"] for b in boxes) <= MAX_WRONG_SCORE, boxes
    assert result["AP50"] >= 80, result  # two boxes missed: at most 85.7
