"""A short learning test: a tiny FCOS overfits a handful of synthetic images."""

import pytest
import torch
from conftest import tiny_cfg
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.data.datasets import register_coco_instances
from detectron2.evaluation import COCOEvaluator, inference_on_dataset
from train_helpers import train_on_dataset

from fcos_d2.data.shapes import generate_split

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
    json_file = generate_split(
        str(tmp_path), "train", 4, seed=3, image_size=(112, 128), max_shapes=3, size_range=(16, 64)
    )
    name = f"fcos_overfit_{train_dtype}"
    register_coco_instances(name, {}, json_file, str(tmp_path / "train"))
    assert sum(len(d["annotations"]) for d in DatasetCatalog.get(name)) >= 6
    # Two convs per tower (the demo head's depth): with one, seed 0 sat at the bar (AP50 100 at
    # step 200, 88.8 from 250 to 400: one box regressed too small), so rounding noise decided.
    cfg = tiny_cfg(tower_convs=2)
    cfg.MODEL.FCOS.TRAIN_DTYPE = train_dtype
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 128, 160
    model = train_on_dataset(cfg, name, iterations)
    mapper = DatasetMapper(cfg, is_train=False)
    inputs = [[mapper(d)] for d in DatasetCatalog.get(name)]
    result = inference_on_dataset(model, inputs, COCOEvaluator(name, output_dir=None))
    assert result["bbox"]["AP50"] >= 90, result["bbox"]
