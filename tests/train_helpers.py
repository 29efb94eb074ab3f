"""Training a tiny FCOS in a test: a few SGD steps on a registered dataset, held in memory."""

import os
from typing import Dict

import torch
from conftest import tiny_cfg
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.evaluation import COCOEvaluator, inference_on_dataset
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from torch import nn

from fcos_d2.data.shapes import generate_split


def train_on_dataset(cfg: CfgNode, dataset: str, iterations: int, seed: int = 0) -> nn.Module:
    """
    A model built from ``cfg`` and trained full-batch on every image of ``dataset``, resized as
    at test time (no augmentation), with SGD at lr 0.01 after a 20-step linear warm-up;
    returned in eval mode.
    """
    torch.manual_seed(seed)
    model = build_model(cfg)
    mapper = DatasetMapper(cfg, is_train=False)
    mapper.is_train = True  # keep the annotations, resize as at test time
    data = [mapper(d) for d in DatasetCatalog.get(dataset)]
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
    return model.eval()


def overfit_setup(root: str, name: str) -> CfgNode:
    """
    The learning tests' problem: 4 synthetic images (112-128 px, 1-3 shapes of 16-64 px, written
    under ``root``) registered as dataset ``name`` (replacing an earlier registration), and the
    tiny model that overfits them in 250 steps of :func:`train_on_dataset` (two convs per tower:
    with one, seed 0 sat at the AP50 bar of 90 and rounding noise decided), tested at 128 px.
    """
    json_file = generate_split(
        root, "train", 4, seed=3, image_size=(112, 128), max_shapes=3, size_range=(16, 64)
    )
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_coco_instances(name, {}, json_file, os.path.join(root, "train"))
    cfg = tiny_cfg(tower_convs=2)
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (name,), (name,)
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 128, 160
    return cfg


def evaluate_on_dataset(model: nn.Module, cfg: CfgNode, dataset: str) -> Dict[str, float]:
    """COCO bbox metrics of ``model`` on every image of ``dataset``, resized as at test time."""
    mapper = DatasetMapper(cfg, is_train=False)
    inputs = [[mapper(d)] for d in DatasetCatalog.get(dataset)]
    return inference_on_dataset(model, inputs, COCOEvaluator(dataset, output_dir=None))["bbox"]
