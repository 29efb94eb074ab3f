"""
What the inference commands read from a LazyConfig (Python) config, in one place: the model,
its weights (``train.init_checkpoint``), the test-time resizing and dataset
(``dataloader.test``), and the two inference settings the demo sets (score threshold,
per-class thresholds), as the YAML keys ``MODEL.WEIGHTS``, ``INPUT.MIN/MAX_SIZE_TEST``,
``DATASETS.TEST`` and ``MODEL.FCOS.SCORE_THRESH_TEST`` / ``CLASS_THRESHOLDS_FILE`` are read.
"""

import copy
from typing import Any, Iterator, List, Optional, Tuple

from detectron2.config import LazyCall as L
from detectron2.config import instantiate
from detectron2.data import transforms as T
from omegaconf import DictConfig, ListConfig
from torch import nn

from .class_thresholds import read_class_thresholds

__all__ = [
    "build_lazy_model",
    "check_lazy_input_format",
    "lazy_weights",
    "lazy_test_augmentations",
    "lazy_test_dataset",
    "lazy_test_datasets",
    "set_lazy_score_thresh",
    "set_lazy_class_thresholds",
]


def build_lazy_model(cfg: DictConfig) -> nn.Module:
    """``cfg.model`` instantiated on ``train.device`` (without weights). With
    ``train.init_checkpoint`` set, timm backbones are built without their pretrained weights,
    which the checkpoint replaces (nothing downloaded); ``cfg`` is not changed."""
    model_cfg = copy.deepcopy(cfg.model)
    if lazy_weights(cfg):
        for node in _lazy_calls(model_cfg):
            if _target_name(node) == _TIMM_BUILDER:
                node.pretrained = False
    return instantiate(model_cfg).to(cfg.train.device)


# fcos_d2's timm backbone builder, named (the config package sits below the modeling package).
_TIMM_BUILDER = "fcos_d2.modeling.timm_backbone.build_timm_backbone"


def _target_name(node: DictConfig) -> str:
    target = node.get("_target_")
    if isinstance(target, str):
        return target
    return f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', '')}"


def _lazy_calls(node: Any) -> Iterator[DictConfig]:
    """Every DictConfig in ``node`` (itself included), depth first, interpolations unresolved."""
    if isinstance(node, DictConfig):
        yield node
        for key in node:
            yield from _lazy_calls(node._get_node(key))
    elif isinstance(node, ListConfig):
        for i in range(len(node)):
            yield from _lazy_calls(node._get_node(i))


def check_lazy_input_format(cfg: DictConfig) -> None:
    """One-line error when a data mapper's ``image_format`` is not ``model.input_format`` (the
    channel order the predictor and exported graphs feed): evaluation would see other images."""
    want = cfg.model.get("input_format", "BGR")
    for split in ("train", "test"):
        mapper = cfg.dataloader.get(split, {}).get("mapper", {})
        got = mapper.get("image_format", want) if isinstance(mapper, DictConfig) else want
        if got != want:
            raise ValueError(
                f"dataloader.{split}.mapper.image_format={got!r} is not model.input_format="
                f"{want!r}: set both to the channel order the weights expect"
            )


def lazy_weights(cfg: DictConfig) -> str:
    return str(cfg.train.init_checkpoint)


def lazy_test_augmentations(cfg: DictConfig) -> List[T.Augmentation]:
    """The test mapper's augmentations (detectron2's configs: one ``ResizeShortestEdge``)."""
    return list(instantiate(cfg.dataloader.test.mapper.augmentations))


def lazy_test_datasets(cfg: DictConfig) -> Tuple[str, ...]:
    """The test datasets' names (``dataloader.test.dataset.names``: one name or a list)."""
    names = cfg.dataloader.test.dataset.get("names") if "test" in cfg.dataloader else None
    if names is None:
        return ()
    return (str(names),) if isinstance(names, str) else tuple(str(n) for n in names)


def lazy_test_dataset(cfg: DictConfig) -> Optional[str]:
    """The first test dataset's name, or None."""
    names = lazy_test_datasets(cfg)
    return names[0] if names else None


def set_lazy_score_thresh(cfg: DictConfig, threshold: float) -> None:
    cfg.model.core.postprocess.score_thresh = float(threshold)


def set_lazy_class_thresholds(cfg: DictConfig, path: str) -> None:
    cfg.model.class_thresholds = L(read_class_thresholds)(
        path=path, num_classes="${..head.num_classes}"
    )
