"""
Shared test helpers (one home, as torchvision's test/common_utils.py): a tiny registered dataset,
a few-iteration training config on it, and a batch of model inputs.
"""

import os
from typing import Optional

import cv2
import numpy as np
import torch
from conftest import tiny_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import HookBase
from detectron2.structures import Boxes, BoxMode, Instances
from torch import nn

__all__ = [
    "register_tiny_dataset",
    "register_coco_dict",
    "with_saved_weights",
    "tiny_training_cfg",
    "tiny_batch",
    "randomize_head",
    "CrashAfter",
]


def register_tiny_dataset(root: str, name: str, num: int = 7) -> None:
    """``num`` random images of odd sizes, portrait and landscape, with 1-2 boxes each."""
    rng = np.random.RandomState(0)
    records = []
    for i in range(num):
        h, w = (53, 77) if i % 3 else (81, 49)
        image = rng.randint(0, 255, (h, w, 3), dtype=np.uint8)
        path = os.path.join(root, f"{i}.png")
        cv2.imwrite(path, image)
        anns = [
            {
                "id": 10 * i + k,
                "bbox": [5 + 7 * k, 6, 20, 25],
                "bbox_mode": BoxMode.XYWH_ABS,
                "category_id": (i + k) % 3,
                "iscrowd": 0,
            }
            for k in range(1 + i % 2)
        ]
        records.append(
            {"file_name": path, "image_id": i, "height": h, "width": w, "annotations": anns}
        )
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: [dict(r) for r in records])
    MetadataCatalog.get(name).thing_classes = ["a", "b", "c"]


def register_coco_dict(name: str, data: dict, root) -> str:
    """``data`` (a COCO dict) written to ``root``/gt.json and registered (replacing) as ``name``,
    then loaded once, as a test loader does, so its metadata has the category id map."""
    import json

    from detectron2.data.datasets import register_coco_instances

    path = os.path.join(str(root), "gt.json")
    with open(path, "w") as f:
        json.dump(data, f)
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_coco_instances(name, {}, path, str(root))
    DatasetCatalog.get(name)
    return path


def with_saved_weights(cfg, model, folder):
    """A copy of ``cfg`` whose MODEL.WEIGHTS is ``model``'s state dict saved in ``folder``."""
    cfg = cfg.clone()
    cfg.MODEL.WEIGHTS = os.path.join(str(folder), "model.pth")
    torch.save({"model": model.state_dict()}, cfg.MODEL.WEIGHTS)
    return cfg


def tiny_training_cfg(dataset: str, out: str, max_iter: int = 4):
    """tiny_cfg trained for ``max_iter`` iterations of 2 images on ``dataset``, checkpoints half-way."""
    cfg = tiny_cfg()
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (dataset,), ()
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (32, 40, 48), 64
    cfg.INPUT.RANDOM_FLIP = "horizontal"
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.BASE_LR, cfg.SOLVER.WARMUP_ITERS = 2, 0.01, 2
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS = max_iter, (3,)
    cfg.SOLVER.CHECKPOINT_PERIOD = max(1, max_iter // 2)
    cfg.TEST.EVAL_PERIOD = 0
    cfg.SEED = 7
    cfg.OUTPUT_DIR = out
    return cfg


def tiny_batch():
    """8 images of one odd size (so batches of 4 and of 8 get the same padding), 1-3 boxes
    each."""
    g = torch.Generator().manual_seed(3)
    batch = []
    for i in range(8):
        image = torch.randint(0, 256, (3, 61, 83), generator=g).float()
        n = 1 + i % 3
        xy = torch.rand(n, 2, generator=g) * torch.tensor([50.0, 30.0])
        wh = 8 + torch.rand(n, 2, generator=g) * 25
        inst = Instances((61, 83))
        inst.gt_boxes = Boxes(torch.cat([xy, xy + wh], dim=1))
        inst.gt_classes = torch.tensor([(i + k) % 3 for k in range(n)])
        batch.append({"image": image, "instances": inst, "height": 61, "width": 83})
    return batch


def randomize_head(
    model: nn.Module,
    *,
    cls_bias: Optional[float] = None,
    cls_std: Optional[float] = None,
    box_bias: Optional[float] = None,
    box_std: Optional[float] = None,
    quality_std: Optional[float] = None,
) -> nn.Module:
    """
    Make an untrained FCOS give non-trivial outputs (in place; returns ``model``), the one way
    tests do it: ``cls_bias`` 0 raises the class prior to 0.5 so that candidates pass the score
    threshold; ``cls_std``/``box_std``/``quality_std`` spread the last convs' weights; ``box_bias``
    sets the box distances (in strides) the untrained head starts at (the initial 0 gives boxes
    of near-zero width).
    """
    head = model.head
    with torch.no_grad():
        if cls_bias is not None:
            head.cls_logits.bias.fill_(cls_bias)
        if cls_std is not None:
            head.cls_logits.weight.normal_(0, cls_std)
        if box_bias is not None:
            head.bbox_pred.bias.fill_(box_bias)
        if box_std is not None:
            head.bbox_pred.weight.normal_(0, box_std)
        if quality_std is not None:
            head.ctrness.weight.normal_(0, quality_std)
    return model


class CrashAfter(HookBase):
    """Stops training by an exception after iteration ``at`` (like a kill after a checkpoint)."""

    def __init__(self, at: int):
        self.at = at

    def after_step(self):
        if self.trainer.iter == self.at:
            raise KeyboardInterrupt
