"""A short learning test: a tiny FCOS overfits a handful of synthetic images."""

import pytest
import torch
from detectron2.data import DatasetCatalog
from train_helpers import evaluate_on_dataset, overfit_setup, train_on_dataset

# Without bfloat16 units (AVX512_BF16 / AMX) oneDNN emulates bfloat16 convolutions about 10x
# slower than float32 (measured on an AVX2-only CPU): the 400-iteration run would take ~40 min
# there. The bfloat16 unit tests of tests/test_model_e2e.py run on every CPU.
NATIVE_BF16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()


# bfloat16 training converges a little more slowly on this tiny problem, so it gets more
# iterations to reach the same bar.
@pytest.mark.parametrize(
    "train_dtype, iterations",
    [
        ("float32", 250),
        pytest.param(
            "bfloat16",
            400,
            marks=pytest.mark.skipif(
                not NATIVE_BF16, reason="CPU without native bfloat16: emulated, ~10x slower"
            ),
        ),
    ],
)
def test_overfits_a_few_images(tmp_path, train_dtype, iterations):
    name = f"fcos_overfit_{train_dtype}"
    cfg = overfit_setup(str(tmp_path), name)
    assert sum(len(d["annotations"]) for d in DatasetCatalog.get(name)) >= 6
    cfg.MODEL.FCOS.TRAIN_DTYPE = train_dtype
    model = train_on_dataset(cfg, name, iterations)
    result = evaluate_on_dataset(model, cfg, name)
    assert result["AP50"] >= 90, result
