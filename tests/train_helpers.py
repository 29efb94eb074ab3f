"""Training a tiny FCOS in a test: a few SGD steps on a registered dataset, held in memory."""

import contextlib
import os
from typing import Dict, Iterator, List, Sequence

import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.evaluation import COCOEvaluator, inference_on_dataset
from detectron2.modeling import build_model
from detectron2.structures import Boxes, pairwise_iou
from detectron2.utils.events import EventStorage
from torch import nn

from fcos_d2.data.shapes import generate_split
from tests.common_utils import registered_dataset, tiny_cfg

# The learning tests' recipe (train_on_dataset's arguments): Adam, whose per-parameter step
# sizes fit the boxes of this tiny from-scratch model in a few hundred steps where SGD at lr 0.01
# still moved them, and a learning rate divided by 10 twice near the end, so that the model
# settles: with a constant rate where the run stops decided whether a borderline box passed IoU
# 0.5, and last-bit differences between CPUs decided that.
OVERFIT_RECIPE = {"iterations": 400, "lr_steps": (280, 350), "base_lr": 1e-3, "adam": True}


def train_on_dataset(
    cfg: CfgNode,
    dataset: str,
    iterations: int,
    seed: int = 0,
    lr_steps: Sequence[int] = (),
    base_lr: float = 0.01,
    adam: bool = False,
) -> nn.Module:
    """
    A model built from ``cfg`` and trained full-batch on every image of ``dataset``, resized as
    at test time (no augmentation), with SGD (momentum 0.9, weight decay 1e-4) or Adam at
    ``base_lr`` after a 20-step linear warm-up, times 0.1 at each step of ``lr_steps``;
    returned in eval mode.
    """
    torch.manual_seed(seed)
    model = build_model(cfg)
    mapper = DatasetMapper(cfg, is_train=False)
    mapper.is_train = True  # keep the annotations, resize as at test time
    data = [mapper(d) for d in DatasetCatalog.get(dataset)]
    if adam:
        opt = torch.optim.Adam(model.parameters(), lr=base_lr)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=base_lr, momentum=0.9, weight_decay=1e-4)
    model.train()
    with EventStorage():
        for it in range(iterations):
            decay = 0.1 ** sum(it >= s for s in lr_steps)
            for group in opt.param_groups:
                group["lr"] = base_lr * min(1.0, (it + 1) / 20) * decay
            loss = sum(model(data).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@contextlib.contextmanager
def overfit_setup(root: str, name: str) -> Iterator[CfgNode]:
    """
    The learning tests' problem: 6 synthetic images (112-128 px, 14 shapes of 16-64 px, written
    under ``root``) registered as dataset ``name`` for the time of the ``with`` block
    (registered_dataset), and the tiny model (two convs per tower) that overfits them with
    ``train_on_dataset(cfg, name, seed=seed, **OVERFIT_RECIPE)``, tested at 128 px: yields its
    cfg.
    """
    json_file = generate_split(
        root, "train", 6, seed=5, image_size=(112, 128), max_shapes=3, size_range=(16, 64)
    )
    with registered_dataset(name, json_file, os.path.join(root, "train")):
        cfg = tiny_cfg(tower_convs=2)
        cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (name,), (name,)
        cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 128, 160
        yield cfg


def evaluate_on_dataset(model: nn.Module, cfg: CfgNode, dataset: str) -> Dict[str, float]:
    """COCO bbox metrics of ``model`` on every image of ``dataset``, resized as at test time."""
    mapper = DatasetMapper(cfg, is_train=False)
    inputs = [[mapper(d)] for d in DatasetCatalog.get(dataset)]
    return inference_on_dataset(model, inputs, COCOEvaluator(dataset, output_dir=None))["bbox"]


def ground_truth_report(model: nn.Module, cfg: CfgNode, dataset: str) -> List[Dict[str, float]]:
    """
    What the model says about each ground-truth box of ``dataset`` (original image pixels):
    ``iou`` of the best-scoring detection of the box's class among those overlapping it by IoU
    >= 0.5 (0 if none), that detection's ``score`` (0 if none), and ``wrong_score``, the best
    score of a detection of another class overlapping the box by IoU >= 0.5 (0 if none).
    """
    mapper = DatasetMapper(cfg, is_train=False)
    report = []
    with torch.no_grad():
        for record in DatasetCatalog.get(dataset):
            inst = model([mapper(record)])[0]["instances"].to("cpu")
            for anno in record["annotations"]:
                x, y, w, h = anno["bbox"]
                iou = pairwise_iou(Boxes(torch.tensor([[x, y, x + w, y + h]])), inst.pred_boxes)[0]
                near = iou >= 0.5
                right = near & (inst.pred_classes == anno["category_id"])
                wrong = near & (inst.pred_classes != anno["category_id"])
                best = int(torch.where(right, inst.scores, -1.0).argmax()) if right.any() else -1
                report.append(
                    {
                        "iou": float(iou[best]) if best >= 0 else 0.0,
                        "score": float(inst.scores[best]) if best >= 0 else 0.0,
                        "wrong_score": float(inst.scores[wrong].max()) if wrong.any() else 0.0,
                    }
                )
    return report
