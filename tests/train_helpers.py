"""Training a tiny FCOS in a test: a few SGD steps on a registered dataset, held in memory."""

import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from torch import nn


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
