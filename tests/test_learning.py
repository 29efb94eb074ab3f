"""A short learning test: a tiny FCOS overfits a handful of synthetic images."""

import pytest
import torch
from conftest import tiny_cfg
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.data.datasets import register_coco_instances
from detectron2.evaluation import COCOEvaluator, inference_on_dataset
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from fcos_d2.data.shapes import generate_split


# bfloat16 training converges a little more slowly on this tiny problem, so it gets more
# iterations to reach the same bar.
@pytest.mark.parametrize("train_dtype, iterations", [("float32", 250), ("bfloat16", 400)])
def test_overfits_a_few_images(tmp_path, train_dtype, iterations):
    json_file = generate_split(
        str(tmp_path), "train", 4, seed=3, image_size=(112, 128), max_shapes=3, size_range=(16, 64)
    )
    name = f"fcos_overfit_{train_dtype}"
    register_coco_instances(name, {}, json_file, str(tmp_path / "train"))
    cfg = tiny_cfg()
    cfg.MODEL.FCOS.TRAIN_DTYPE = train_dtype
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 128, 160
    torch.manual_seed(0)
    model = build_model(cfg)
    mapper = DatasetMapper(cfg, is_train=False)
    mapper.is_train = True  # keep the annotations, resize as at test time
    data = [mapper(d) for d in DatasetCatalog.get(name)]
    assert sum(len(d["instances"]) for d in data) >= 6
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    model.train()
    with EventStorage():
        for it in range(iterations):
            for group in opt.param_groups:
                group["lr"] = 0.01 * min(1.0, (it + 1) / 20)
            loss = sum(model(data).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    inputs = [[{k: v for k, v in d.items() if k != "instances"}] for d in data]
    result = inference_on_dataset(model, inputs, COCOEvaluator(name, output_dir=None))
    assert result["bbox"]["AP50"] >= 90, result["bbox"]
