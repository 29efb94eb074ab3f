"""
Shared test helpers (one home, as torchvision's test/common_utils.py): the tests' tiny FCOS
config, datasets registered for the time of a ``with`` block, a few-iteration training config,
and a batch of model inputs.
"""

import contextlib
import copy
import json
import os
from typing import Iterator, Optional, Sequence

import cv2
import numpy as np
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.engine import HookBase
from detectron2.structures import Boxes, BoxMode, Instances
from torch import nn

import fcos_d2
from fcos_d2.data import register_shapes

__all__ = [
    "REPO",
    "tiny_cfg",
    "registered_dataset",
    "tiny_dataset",
    "coco_dict_dataset",
    "with_saved_weights",
    "tiny_training_cfg",
    "tiny_batch",
    "randomize_head",
    "CrashAfter",
    "png_header",
]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# On import (by conftest, and by the test modules that processes spawned by tests import):
register_shapes(replace=False)  # tests name the shapes datasets, as the commands do
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


def _unregister(name: str) -> None:
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)


@contextlib.contextmanager
def registered_dataset(
    name: str,
    json_file: Optional[str] = None,
    image_root: Optional[str] = None,
    *,
    records: Optional[Sequence[dict]] = None,
    thing_classes: Optional[Sequence[str]] = None,
) -> Iterator[str]:
    """
    ``with registered_dataset(name, json_file, image_root): ...``: ``name`` registered (replacing
    an earlier registration) in DatasetCatalog and MetadataCatalog for the time of the block,
    and removed from both after it (in a fixture: ``with ...: yield``). The dataset is the COCO
    json ``json_file`` with images under ``image_root`` (register_coco_instances), or else the
    detectron2 dataset dicts ``records`` (a fresh copy per load). ``thing_classes``: set in the
    metadata. Yields ``name``.
    """
    _unregister(name)
    if records is None:
        register_coco_instances(name, {}, str(json_file), str(image_root))
    else:
        DatasetCatalog.register(name, lambda: copy.deepcopy(list(records)))
    if thing_classes is not None:
        MetadataCatalog.get(name).thing_classes = list(thing_classes)
    try:
        yield name
    finally:
        _unregister(name)


@contextlib.contextmanager
def tiny_dataset(root: str, name: str, num: int = 7) -> Iterator[str]:
    """``name`` registered (registered_dataset) for the time of the block: ``num`` random images
    of odd sizes, portrait and landscape, written to ``root``, with 1-2 boxes each."""
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
    with registered_dataset(name, records=records, thing_classes=["a", "b", "c"]):
        yield name


@contextlib.contextmanager
def coco_dict_dataset(name: str, data: dict, root) -> Iterator[str]:
    """``data`` (a COCO dict) written to ``root``/gt.json and registered (registered_dataset) as
    ``name`` for the time of the block, loaded once, as a test loader does, so that its metadata
    has the category id map. Yields the json file's path."""
    path = os.path.join(str(root), "gt.json")
    with open(path, "w") as f:
        json.dump(data, f)
    with registered_dataset(name, path, root):
        DatasetCatalog.get(name)
        yield path


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


def png_header(width: int, height: int) -> bytes:
    """A PNG file of only its IHDR and IEND chunks, claiming ``width`` x ``height`` pixels (no
    pixel data): what a decoder sees of a huge image before allocating it."""
    import struct
    import zlib

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")
