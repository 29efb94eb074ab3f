"""
What an export reads from its config, for YAML (``CfgNode``) and Python (LazyConfig) configs
alike: the model with its weights, and the settings ``export.json`` records.
"""

import copy
from dataclasses import dataclass
from typing import List, Optional, Tuple

from detectron2.data import DatasetMapper
from detectron2.data import transforms as T
from omegaconf import DictConfig
from torch import nn

from ..config import (
    AnyConfig,
    build_inference_model,
    class_threshold_values,
    config_text,
    inference_settings,
    set_device,
)
from ..config.lazy import check_lazy_input_format, lazy_test_augmentations
from ..modeling import FCOS
from .graph import check_exportable, graph_problems, raise_if_problems

__all__ = ["ExportSettings", "export_settings", "build_export_model", "test_mapper"]


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


def test_mapper(min_size: int, max_size: int, input_format: str) -> DatasetMapper:
    """detectron2's test-time ``DatasetMapper`` with an export's resizing and channel order
    (what the exported graph is fed, and what ``DatasetMapper(cfg, is_train=False)`` does)."""
    resize = T.ResizeShortestEdge([min_size, min_size], max_size)
    return DatasetMapper(is_train=False, augmentations=[resize], image_format=input_format)


def _check_lazy(cfg: DictConfig) -> None:
    """What a Python config's export needs beyond what its inference does."""
    if cfg.model.get("_target_") is not FCOS:
        raise ValueError(f"model._target_={cfg.model.get('_target_')!r}: only fcos_d2's FCOS")
    check_lazy_input_format(cfg)
    augmentations = lazy_test_augmentations(cfg)
    if len(augmentations) != 1 or not isinstance(augmentations[0], T.ResizeShortestEdge):
        raise ValueError(
            "dataloader.test.mapper.augmentations must be one ResizeShortestEdge for an export "
            f"(the graph's runtimes resize by that rule); got {augmentations}"
        )
    if len(set(augmentations[0].short_edge_length)) != 1:
        raise ValueError(
            "dataloader.test.mapper.augmentations: ResizeShortestEdge of one short edge length "
            f"for an export, got {augmentations[0].short_edge_length}"
        )


def export_settings(cfg: AnyConfig) -> ExportSettings:
    """The :class:`ExportSettings` of a YAML or Python config."""
    if isinstance(cfg, DictConfig):
        _check_lazy(cfg)
    settings = inference_settings(cfg)
    return ExportSettings(
        input_format=settings.input_format,
        min_size_test=settings.min_size_test,
        max_size_test=settings.max_size_test,
        score_thresh=settings.score_thresh,
        detections_per_image=settings.max_detections,
        num_classes=settings.num_classes,
        class_thresholds=class_threshold_values(cfg),
        test_datasets=settings.test_datasets,
        train_datasets=settings.train_datasets,
        config_text=config_text(cfg),
    )


def build_export_model(cfg: AnyConfig) -> nn.Module:
    """The eval-mode model of ``cfg`` on the CPU with its weights (``MODEL.WEIGHTS`` /
    ``train.init_checkpoint``, any layout fcos_d2 loads) or none when those are empty."""
    from ..checkpoint import load_for_inference

    if isinstance(cfg, DictConfig):
        cfg = copy.deepcopy(cfg)
    else:
        check_exportable(cfg)
        cfg = cfg.clone()
    set_device(cfg, "cpu")
    model = build_inference_model(cfg)
    if isinstance(cfg, DictConfig):  # what check_exportable checks on the YAML keys
        dtype = str(model.inference_dtype).replace("torch.", "")
        raise_if_problems(
            graph_problems(
                dtype,
                model.postprocess.legacy_conventions,
                "model.inference_dtype",
                "model.core.legacy_conventions",
            )
        )
    weights = inference_settings(cfg).weights
    if weights:
        load_for_inference(model, weights)
    return model
