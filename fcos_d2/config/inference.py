"""
What a run needs for inference, read once from a YAML (``CfgNode``) or Python (LazyConfig)
config: :class:`InferenceSettings`, and the few settings a command sets on either kind
(:func:`set_weights`, :func:`set_device`, :func:`set_output_dir`, :func:`set_score_thresh`,
:func:`set_class_thresholds`). Predict, evaluate, export, analyze and serve read these and never
ask which kind of config they were given.

The two kinds name the same things differently:

=====================  ===================================  ======================================
setting                YAML key                             Python config
=====================  ===================================  ======================================
weights                ``MODEL.WEIGHTS``                    ``train.init_checkpoint``
device                 ``MODEL.DEVICE``                     ``train.device``
output folder          ``OUTPUT_DIR``                       ``train.output_dir``
resizing               ``INPUT.MIN/MAX_SIZE_TEST``          ``dataloader.test.mapper.augmentations``
test datasets          ``DATASETS.TEST``                    ``dataloader.test.dataset.names``
score threshold        ``MODEL.FCOS.SCORE_THRESH_TEST``     ``model.core.postprocess.score_thresh``
=====================  ===================================  ======================================
"""

import logging
from dataclasses import dataclass
from typing import List, Optional, Tuple, Union

from detectron2.config import CfgNode, LazyConfig, instantiate
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from omegaconf import DictConfig, OmegaConf
from torch import nn

from .class_thresholds import read_class_thresholds
from .lazy import (
    build_lazy_model,
    lazy_test_augmentations,
    lazy_test_datasets,
    lazy_weights,
    set_lazy_class_thresholds,
    set_lazy_score_thresh,
)

__all__ = [
    "AnyConfig",
    "InferenceSettings",
    "build_inference_model",
    "class_threshold_values",
    "config_text",
    "inference_settings",
    "test_augmentations",
    "set_weights",
    "set_device",
    "set_output_dir",
    "set_score_thresh",
    "set_class_thresholds",
    "set_test_datasets",
]

AnyConfig = Union[CfgNode, DictConfig]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InferenceSettings:
    """
    The inference side of a config, either kind.

    Attributes:
        weights: the checkpoint to load ("" = none). device: "cpu", "cuda", ...
        input_format: channel order the model takes ("BGR" / "RGB").
        min_size_test, max_size_test: the test-time ``ResizeShortestEdge`` (None when a Python
            config's test mapper resizes otherwise).
        test_datasets, train_datasets: dataset names.
        num_classes: K. score_thresh, nms_thresh, topk, max_detections, thresh_with_ctr: the
            FCOS decoding (``MODEL.FCOS.*_TEST``, ``TEST.DETECTIONS_PER_IMAGE``; 0 for a Python
            config of another model).
        class_thresholds_file: per-class thresholds file ("" = none).
        output_dir: the run's output folder.
    """

    weights: str
    device: str
    input_format: str
    min_size_test: Optional[int]
    max_size_test: Optional[int]
    test_datasets: Tuple[str, ...]
    train_datasets: Tuple[str, ...]
    num_classes: int
    score_thresh: float
    nms_thresh: float
    topk: int
    max_detections: int
    thresh_with_ctr: bool
    class_thresholds_file: str
    output_dir: str = "output"

    @property
    def test_dataset(self) -> Optional[str]:
        """The first test dataset, whose metadata (class names, ids) a command shows."""
        return self.test_datasets[0] if self.test_datasets else None


def _names(value) -> Tuple[str, ...]:
    if value is None:
        return ()
    return (str(value),) if isinstance(value, str) else tuple(str(v) for v in value)


def _yaml_settings(cfg: CfgNode) -> InferenceSettings:
    fcos = cfg.MODEL.FCOS
    return InferenceSettings(
        weights=str(cfg.MODEL.WEIGHTS),
        device=str(cfg.MODEL.DEVICE),
        input_format=str(cfg.INPUT.FORMAT),
        min_size_test=int(cfg.INPUT.MIN_SIZE_TEST),
        max_size_test=int(cfg.INPUT.MAX_SIZE_TEST),
        test_datasets=_names(cfg.DATASETS.TEST),
        train_datasets=_names(cfg.DATASETS.TRAIN),
        num_classes=int(fcos.NUM_CLASSES),
        score_thresh=float(fcos.SCORE_THRESH_TEST),
        nms_thresh=float(fcos.NMS_THRESH_TEST),
        topk=int(fcos.TOPK_CANDIDATES_TEST),
        max_detections=int(cfg.TEST.DETECTIONS_PER_IMAGE),
        thresh_with_ctr=bool(fcos.THRESH_WITH_CTR),
        class_thresholds_file=str(fcos.CLASS_THRESHOLDS_FILE),
        output_dir=str(cfg.OUTPUT_DIR),
    )


def _lazy_resize(cfg: DictConfig) -> Tuple[Optional[int], Optional[int]]:
    augmentations = lazy_test_augmentations(cfg)
    if len(augmentations) == 1 and isinstance(augmentations[0], T.ResizeShortestEdge):
        lengths = set(augmentations[0].short_edge_length)
        if len(lengths) == 1:
            return int(lengths.pop()), int(augmentations[0].max_size)
    return None, None


def _lazy_settings(cfg: DictConfig) -> InferenceSettings:
    # A model other than fcos_d2's FCOS (an R-CNN on FCOS proposals) has no such settings.
    post = OmegaConf.select(cfg, "model.core.postprocess", default=None) or {}
    spec = cfg.model.get("class_thresholds")
    path = str(spec.get("path", "")) if isinstance(spec, DictConfig) else ""
    train = cfg.dataloader.get("train")
    min_size, max_size = _lazy_resize(cfg)
    return InferenceSettings(
        weights=lazy_weights(cfg),
        device=str(cfg.train.get("device", "cpu")),
        input_format=str(cfg.model.get("input_format", "BGR")),
        min_size_test=min_size,
        max_size_test=max_size,
        test_datasets=lazy_test_datasets(cfg),
        train_datasets=_names(train.get("dataset_names")) if train is not None else (),
        num_classes=int(OmegaConf.select(cfg, "model.head.num_classes", default=0)),
        score_thresh=float(post.get("score_thresh", 0.0)),
        nms_thresh=float(post.get("nms_thresh", 0.0)),
        topk=int(post.get("topk", 0)),
        max_detections=int(post.get("max_detections", 0)),
        thresh_with_ctr=bool(post.get("thresh_with_ctr", False)),
        class_thresholds_file=path,
        output_dir=str(cfg.train.get("output_dir", "output")),
    )


def inference_settings(cfg: AnyConfig) -> InferenceSettings:
    """The :class:`InferenceSettings` of a YAML or Python config."""
    return _lazy_settings(cfg) if isinstance(cfg, DictConfig) else _yaml_settings(cfg)


def test_augmentations(cfg: AnyConfig) -> List[T.Augmentation]:
    """The test-time augmentations: detectron2's ``ResizeShortestEdge`` of the YAML keys, or a
    Python config's test mapper's."""
    if isinstance(cfg, DictConfig):
        return lazy_test_augmentations(cfg)
    size = cfg.INPUT.MIN_SIZE_TEST
    return [T.ResizeShortestEdge([size, size], cfg.INPUT.MAX_SIZE_TEST)]


def build_inference_model(cfg: AnyConfig) -> nn.Module:
    """The eval-mode model of ``cfg`` on its device, without weights (``MODEL.WEIGHTS`` /
    ``train.init_checkpoint`` are for the caller to load: fcos_d2's loader refuses partial
    ones). Given weights, a timm backbone is built without its pretrained ones (nothing is
    downloaded: the checkpoint replaces them)."""
    if isinstance(cfg, DictConfig):
        return build_lazy_model(cfg).eval()
    cfg = cfg.clone()
    cfg.defrost()
    if "TIMM" in cfg.MODEL and cfg.MODEL.WEIGHTS:
        cfg.MODEL.TIMM.PRETRAINED = False
    return build_model(cfg).eval()


def class_threshold_values(cfg: AnyConfig) -> Optional[Tuple[str, List[float]]]:
    """The per-class thresholds of ``cfg`` as (file, values), or None: ``CLASS_THRESHOLDS_FILE``,
    or a Python config's ``model.class_thresholds`` (a list, or a file read with
    ``read_class_thresholds``; the file is "" for a list)."""
    if isinstance(cfg, DictConfig):
        spec = cfg.model.get("class_thresholds")
        if spec is None:
            return None
        if isinstance(spec, DictConfig):
            return str(spec.get("path", "")), [float(v) for v in instantiate(spec)]
        return "", [float(v) for v in spec]
    path = cfg.MODEL.FCOS.CLASS_THRESHOLDS_FILE
    if not path:
        return None
    return path, read_class_thresholds(path, cfg.MODEL.FCOS.NUM_CLASSES)


def config_text(cfg: AnyConfig) -> str:
    """``cfg`` as text: the YAML dump, or the Python config as code ("" where detectron2's
    best-effort ``LazyConfig.to_py`` cannot write it)."""
    if not isinstance(cfg, DictConfig):
        return cfg.dump()
    try:
        return LazyConfig.to_py(cfg)
    except Exception as e:  # detectron2's to_py is best effort (objects it cannot write as code)
        logger.warning(f"the config cannot be written as code: LazyConfig.to_py failed ({e})")
        return ""


def _set_yaml(cfg: CfgNode, key: str, value) -> None:
    frozen = cfg.is_frozen()
    cfg.defrost()
    node = cfg
    *parents, leaf = key.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value
    if frozen:
        cfg.freeze()


def set_weights(cfg: AnyConfig, path: str) -> None:
    """Load ``path`` (``MODEL.WEIGHTS`` / ``train.init_checkpoint``)."""
    if isinstance(cfg, DictConfig):
        cfg.train.init_checkpoint = str(path)
    else:
        _set_yaml(cfg, "MODEL.WEIGHTS", str(path))


def set_device(cfg: AnyConfig, device: str) -> None:
    """Run on ``device`` (``MODEL.DEVICE`` / ``train.device``)."""
    if isinstance(cfg, DictConfig):
        cfg.train.device = str(device)
    else:
        _set_yaml(cfg, "MODEL.DEVICE", str(device))


def set_output_dir(cfg: AnyConfig, path: str) -> None:
    """Write to ``path`` (``OUTPUT_DIR`` / ``train.output_dir``)."""
    if isinstance(cfg, DictConfig):
        cfg.train.output_dir = str(path)
    else:
        _set_yaml(cfg, "OUTPUT_DIR", str(path))


def set_score_thresh(cfg: AnyConfig, value: float) -> None:
    """The decoding's score threshold (``MODEL.FCOS.SCORE_THRESH_TEST``)."""
    if not 0 <= float(value) < 1:
        raise ValueError(f"score threshold {value} must be in [0, 1)")
    if isinstance(cfg, DictConfig):
        set_lazy_score_thresh(cfg, value)
    else:
        _set_yaml(cfg, "MODEL.FCOS.SCORE_THRESH_TEST", float(value))


def set_test_datasets(cfg: AnyConfig, names: Tuple[str, ...]) -> None:
    """Evaluate on ``names`` (``DATASETS.TEST`` / ``dataloader.test.dataset.names``, whose
    evaluator follows the first)."""
    if isinstance(cfg, DictConfig):
        cfg.dataloader.test.dataset.names = list(names) if len(names) > 1 else names[0]
        if "evaluator" in cfg.dataloader and "dataset_name" in cfg.dataloader.evaluator:
            cfg.dataloader.evaluator.dataset_name = names[0]
    else:
        _set_yaml(cfg, "DATASETS.TEST", tuple(names))


def set_class_thresholds(cfg: AnyConfig, path: str) -> None:
    """Per-class thresholds from ``path`` (``MODEL.FCOS.CLASS_THRESHOLDS_FILE``)."""
    if isinstance(cfg, DictConfig):
        set_lazy_class_thresholds(cfg, path)
    else:
        _set_yaml(cfg, "MODEL.FCOS.CLASS_THRESHOLDS_FILE", str(path))
