"""
What an export reads from its config, for YAML (``CfgNode``) and Python (LazyConfig) configs
alike: the model with its weights, and the settings ``export.json`` records.
"""

import copy
import logging
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple, Union

from detectron2.config import CfgNode, LazyConfig, instantiate
from detectron2.data import DatasetMapper
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from omegaconf import DictConfig
from torch import nn

from ..lazy_config import (
    build_lazy_model,
    check_lazy_input_format,
    lazy_test_augmentations,
    lazy_test_datasets,
    lazy_weights,
)
from ..modeling import FCOS
from ..modeling.class_thresholds import read_class_thresholds
from .graph import check_exportable, graph_problems, raise_if_problems

__all__ = ["ExportSettings", "export_settings", "build_export_model", "test_mapper"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportSettings:
    """The inference settings an exported graph is fed and recorded with."""

    input_format: str
    min_size_test: int
    max_size_test: int
    score_thresh: float
    detections_per_image: int
    num_classes: int
    class_thresholds: Optional[Tuple[str, List[float]]]  # (file, values) or None
    test_datasets: Tuple[str, ...]
    train_datasets: Tuple[str, ...]
    config_text: str  # the YAML dump, or the Python config as code


def _names(value: Any) -> Tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def test_mapper(min_size: int, max_size: int, input_format: str) -> DatasetMapper:
    """detectron2's test-time ``DatasetMapper`` with an export's resizing and channel order
    (what the exported graph is fed, and what ``DatasetMapper(cfg, is_train=False)`` does)."""
    resize = T.ResizeShortestEdge([min_size, min_size], max_size)
    return DatasetMapper(is_train=False, augmentations=[resize], image_format=input_format)


def _yaml_settings(cfg: CfgNode) -> ExportSettings:
    fcos = cfg.MODEL.FCOS
    thresholds = None
    if fcos.CLASS_THRESHOLDS_FILE:
        path = fcos.CLASS_THRESHOLDS_FILE
        thresholds = (path, read_class_thresholds(path, fcos.NUM_CLASSES))
    return ExportSettings(
        input_format=cfg.INPUT.FORMAT,
        min_size_test=int(cfg.INPUT.MIN_SIZE_TEST),
        max_size_test=int(cfg.INPUT.MAX_SIZE_TEST),
        score_thresh=float(fcos.SCORE_THRESH_TEST),
        detections_per_image=int(cfg.TEST.DETECTIONS_PER_IMAGE),
        num_classes=int(fcos.NUM_CLASSES),
        class_thresholds=thresholds,
        test_datasets=_names(cfg.DATASETS.TEST),
        train_datasets=_names(cfg.DATASETS.TRAIN),
        config_text=cfg.dump(),
    )


def _lazy_resize(cfg: DictConfig) -> T.ResizeShortestEdge:
    augmentations = lazy_test_augmentations(cfg)
    if len(augmentations) != 1 or not isinstance(augmentations[0], T.ResizeShortestEdge):
        raise ValueError(
            "dataloader.test.mapper.augmentations must be one ResizeShortestEdge for an export "
            f"(the graph's runtimes resize by that rule); got {augmentations}"
        )
    resize = augmentations[0]
    if len(set(resize.short_edge_length)) != 1:
        raise ValueError(
            "dataloader.test.mapper.augmentations: ResizeShortestEdge of one short edge length "
            f"for an export, got {resize.short_edge_length}"
        )
    return resize


def _lazy_settings(cfg: DictConfig) -> ExportSettings:
    if cfg.model.get("_target_") is not FCOS:
        raise ValueError(f"model._target_={cfg.model.get('_target_')!r}: only fcos_d2's FCOS")
    check_lazy_input_format(cfg)
    resize = _lazy_resize(cfg)
    post = cfg.model.core.postprocess
    thresholds = None
    spec = cfg.model.get("class_thresholds")
    if spec is not None:  # a list, or L(read_class_thresholds)(path=...) (demo/export's option)
        lazy = isinstance(spec, DictConfig)
        values = instantiate(spec) if lazy else spec
        thresholds = (str(spec.get("path", "")) if lazy else "", [float(v) for v in values])
    try:
        text = LazyConfig.to_py(cfg)
    except Exception as e:  # detectron2's to_py is best effort (objects it cannot write as code)
        logger.warning(f"export.json gets no config: LazyConfig.to_py failed ({e})")
        text = ""
    train = cfg.dataloader.get("train")
    return ExportSettings(
        input_format=str(cfg.model.input_format),
        min_size_test=int(resize.short_edge_length[0]),
        max_size_test=int(resize.max_size),
        score_thresh=float(post.score_thresh),
        detections_per_image=int(post.max_detections),
        num_classes=int(cfg.model.head.num_classes),
        class_thresholds=thresholds,
        test_datasets=lazy_test_datasets(cfg),
        train_datasets=_names(train.get("dataset_names")) if train is not None else (),
        config_text=text,
    )


def export_settings(cfg: Union[CfgNode, DictConfig]) -> ExportSettings:
    """The :class:`ExportSettings` of a YAML or Python config."""
    return _lazy_settings(cfg) if isinstance(cfg, DictConfig) else _yaml_settings(cfg)


def build_export_model(cfg: Union[CfgNode, DictConfig]) -> nn.Module:
    """The eval-mode model of ``cfg`` on the CPU with its weights (``MODEL.WEIGHTS`` /
    ``train.init_checkpoint``, any layout fcos_d2 loads) or none when those are empty."""
    from ..checkpoint import load_for_inference

    if isinstance(cfg, DictConfig):
        cfg = copy.deepcopy(cfg)
        cfg.train.device = "cpu"
        model, weights = build_lazy_model(cfg).eval(), lazy_weights(cfg)
        dtype = str(model.inference_dtype).replace("torch.", "")
        raise_if_problems(
            graph_problems(
                dtype,
                model._legacy_conventions,
                "model.inference_dtype",
                "model.core.legacy_conventions",
            )
        )
    else:
        check_exportable(cfg)
        cfg = cfg.clone()
        cfg.defrost()
        cfg.MODEL.DEVICE = "cpu"
        model, weights = build_model(cfg).eval(), cfg.MODEL.WEIGHTS
    if weights:
        load_for_inference(model, weights)
    return model
