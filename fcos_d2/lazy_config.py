"""
What the inference commands read from a LazyConfig (Python) config, in one place: the model,
its weights (``train.init_checkpoint``), the test-time resizing and dataset
(``dataloader.test``), and the two inference settings the demo sets (score threshold,
per-class thresholds), as the YAML keys ``MODEL.WEIGHTS``, ``INPUT.MIN/MAX_SIZE_TEST``,
``DATASETS.TEST`` and ``MODEL.FCOS.SCORE_THRESH_TEST`` / ``CLASS_THRESHOLDS_FILE`` are read.
"""

from typing import List, Optional

from detectron2.config import LazyCall as L
from detectron2.config import instantiate
from detectron2.data import transforms as T
from omegaconf import DictConfig
from torch import nn

from .modeling.class_thresholds import read_class_thresholds

__all__ = [
    "build_lazy_model",
    "lazy_weights",
    "lazy_test_augmentations",
    "lazy_test_dataset",
    "set_lazy_score_thresh",
    "set_lazy_class_thresholds",
]


def build_lazy_model(cfg: DictConfig) -> nn.Module:
    """``cfg.model`` instantiated on ``train.device`` (without weights)."""
    return instantiate(cfg.model).to(cfg.train.device)


def lazy_weights(cfg: DictConfig) -> str:
    return str(cfg.train.init_checkpoint)


def lazy_test_augmentations(cfg: DictConfig) -> List[T.Augmentation]:
    """The test mapper's augmentations (detectron2's configs: one ``ResizeShortestEdge``)."""
    return list(instantiate(cfg.dataloader.test.mapper.augmentations))


def lazy_test_dataset(cfg: DictConfig) -> Optional[str]:
    """The first test dataset's name, or None."""
    names = cfg.dataloader.test.dataset.get("names") if "test" in cfg.dataloader else None
    if names is None or isinstance(names, str):
        return names
    return names[0] if len(names) else None


def set_lazy_score_thresh(cfg: DictConfig, threshold: float) -> None:
    cfg.model.core.postprocess.score_thresh = float(threshold)


def set_lazy_class_thresholds(cfg: DictConfig, path: str) -> None:
    cfg.model.class_thresholds = L(read_class_thresholds)(
        path=path, num_classes="${..head.num_classes}"
    )
