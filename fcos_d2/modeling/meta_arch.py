"""
The FCOS meta-architecture.

Shape shorthand: N images, L levels, R locations over all levels, K classes.
"""

from typing import Dict, List, Sequence, Tuple

import torch
from detectron2.config import CfgNode, configurable
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone
from detectron2.modeling.meta_arch.dense_detector import DenseDetector
from detectron2.structures import ImageList, Instances
from torch import Tensor, nn

from ..checkpoint import install_foreign_checkpoint_hook
from .frozen_bn import fold_frozen_batchnorm
from .head import FCOSHead
from .losses import BOX_LOSS_TYPES, BOX_QUALITIES, fcos_losses, reduce_mean
from .postprocess import fcos_inference_single_image
from .targets import compute_locations, compute_targets, flatten_levels, level_size_ranges

__all__ = ["FCOS"]

CLS_NORMALIZERS = ("fg", "moving_fg")
INFERENCE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# No float16: without loss scaling its gradients underflow (detectron2's SOLVER.AMP does that on
# CUDA); bfloat16 has float32's range.
TRAIN_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _check_config(cfg: CfgNode, backbone_features: Sequence[str]) -> None:
    """One-line errors for config values the model cannot be built with."""
    fcos = cfg.MODEL.FCOS
    missing = [f for f in fcos.IN_FEATURES if f not in backbone_features]
    if missing or not fcos.IN_FEATURES:
        raise ValueError(
            f"MODEL.FCOS.IN_FEATURES={list(fcos.IN_FEATURES)}: {missing or 'empty'} not produced "
            f"by the backbone, which gives {list(backbone_features)}"
        )
    choices = (
        ("BOX_LOSS_TYPE", BOX_LOSS_TYPES),
        ("BOX_QUALITY", BOX_QUALITIES),
        ("LOSS_NORMALIZER_CLS", CLS_NORMALIZERS),
        ("INFERENCE_DTYPE", tuple(INFERENCE_DTYPES)),
        ("TRAIN_DTYPE", tuple(TRAIN_DTYPES)),
    )
    for key, allowed in choices:
        if fcos[key] not in allowed:
            raise ValueError(f"MODEL.FCOS.{key}={fcos[key]!r} is not one of {list(allowed)}")
    if fcos.NUM_CLASSES < 1:
        raise ValueError(f"MODEL.FCOS.NUM_CLASSES={fcos.NUM_CLASSES} must be at least 1")


@META_ARCH_REGISTRY.register()
class FCOS(DenseDetector):
    """
    FCOS: Fully Convolutional One-Stage object detection (Tian et al., ICCV 2019).
    Each location of each FPN level classifies (K sigmoid classifiers), regresses its distances
    to the four sides of a box and predicts the box's centre-ness.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        head: nn.Module,
        head_in_features: List[str],
        num_classes: int,
        sizes_of_interest: Sequence[float] = (64, 128, 256, 512),
        center_sampling_radius: float = 1.5,
        box_loss_type: str = "giou",
        focal_loss_alpha: float = 0.25,
        focal_loss_gamma: float = 2.0,
        score_thresh_test: float = 0.05,
        thresh_with_ctr: bool = False,
        topk_candidates_test: int = 1000,
        nms_thresh_test: float = 0.6,
        max_detections_per_image: int = 100,
        pixel_mean: Tuple[float, ...],
        pixel_std: Tuple[float, ...],
        input_format: str = "BGR",
        channels_last: bool = True,
        fold_frozen_bn: bool = True,
        box_quality: str = "ctrness",
        loss_normalizer_cls: str = "fg",
        inference_dtype: str = "float32",
        train_dtype: str = "float32",
    ):
        """
        Args:
            backbone: produces the features named in ``head_in_features``.
            head: maps the list of those features to (logits, box_reg, ctr_logits) per level,
                shaped (N, K, Hi, Wi), (N, 4, Hi, Wi) in strides, (N, 1, Hi, Wi).
            Others: see the ``MODEL.FCOS`` keys of the same name in :mod:`fcos_d2.config`.
        """
        super().__init__(
            backbone, head, head_in_features, pixel_mean=pixel_mean, pixel_std=pixel_std
        )
        shapes = backbone.output_shape()
        self.strides = [shapes[f].stride for f in head_in_features]
        self.size_ranges = level_size_ranges(sizes_of_interest, len(head_in_features))
        if box_loss_type not in BOX_LOSS_TYPES:
            raise ValueError(f"box_loss_type={box_loss_type!r} is not one of {BOX_LOSS_TYPES}")
        self.num_classes = num_classes
        self.center_sampling_radius = center_sampling_radius
        self.box_loss_type = box_loss_type
        self.focal_loss_alpha = focal_loss_alpha
        self.focal_loss_gamma = focal_loss_gamma
        self.score_thresh_test = score_thresh_test
        self.thresh_with_ctr = thresh_with_ctr
        self.topk_candidates_test = topk_candidates_test
        self.nms_thresh_test = nms_thresh_test
        self.max_detections_per_image = max_detections_per_image
        self.input_format = input_format
        self.channels_last = channels_last
        self.box_quality = box_quality
        self.loss_normalizer_cls = loss_normalizer_cls
        self.inference_dtype = INFERENCE_DTYPES[inference_dtype]
        self.train_dtype = TRAIN_DTYPES[train_dtype]
        if fold_frozen_bn:
            fold_frozen_batchnorm(self.backbone)
        if channels_last:
            self.to(memory_format=torch.channels_last)
        # AdelaiDet / detectron2-built-in / maskrcnn-benchmark checkpoints load as they are.
        install_foreign_checkpoint_hook(self)

    @classmethod
    def from_config(cls, cfg: CfgNode) -> Dict:
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        _check_config(cfg, list(shapes))
        fcos = cfg.MODEL.FCOS
        return {
            "backbone": backbone,
            "head": FCOSHead(cfg, [shapes[f] for f in fcos.IN_FEATURES]),
            "head_in_features": list(fcos.IN_FEATURES),
            "num_classes": fcos.NUM_CLASSES,
            "sizes_of_interest": list(fcos.SIZES_OF_INTEREST),
            "center_sampling_radius": fcos.CENTER_SAMPLING_RADIUS,
            "box_loss_type": fcos.BOX_LOSS_TYPE,
            "focal_loss_alpha": fcos.FOCAL_LOSS_ALPHA,
            "focal_loss_gamma": fcos.FOCAL_LOSS_GAMMA,
            "score_thresh_test": fcos.SCORE_THRESH_TEST,
            "thresh_with_ctr": fcos.THRESH_WITH_CTR,
            "topk_candidates_test": fcos.TOPK_CANDIDATES_TEST,
            "nms_thresh_test": fcos.NMS_THRESH_TEST,
            "max_detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "input_format": cfg.INPUT.FORMAT,
            "channels_last": fcos.CHANNELS_LAST,
            "fold_frozen_bn": fcos.FOLD_FROZEN_BN,
            "box_quality": fcos.BOX_QUALITY,
            "loss_normalizer_cls": fcos.LOSS_NORMALIZER_CLS,
            "inference_dtype": fcos.INFERENCE_DTYPE,
            "train_dtype": fcos.TRAIN_DTYPE,
        }

    def forward(self, batched_inputs: List[Dict[str, Tensor]]):
        dtype = self.train_dtype if self.training else self.inference_dtype
        if dtype == torch.float32:
            return super().forward(batched_inputs)
        # Backbone and head in low precision; forward_training and forward_inference switch
        # back to float32 for matching, losses and decoding.
        with torch.autocast(self.device.type, dtype=dtype):
            return super().forward(batched_inputs)

    def preprocess_image(self, batched_inputs: List[Dict[str, Tensor]]) -> ImageList:
        images = super().preprocess_image(batched_inputs)
        if self.channels_last:
            images.tensor = images.tensor.contiguous(memory_format=torch.channels_last)
        return images

    def _locations(self, features: List[Tensor]) -> List[Tensor]:
        sizes = [tuple(f.shape[-2:]) for f in features]
        return compute_locations(sizes, self.strides, features[0].device)

    def forward_training(
        self,
        images: ImageList,
        features: List[Tensor],
        predictions: Tuple[List[Tensor], List[Tensor], List[Tensor]],
        gt_instances: List[Instances],
    ) -> Dict[str, Tensor]:
        predictions = tuple([p.float() for p in level] for level in predictions)
        with torch.autocast(self.device.type, enabled=False):
            return self._losses(features, predictions, gt_instances)

    def _losses(self, features, predictions, gt_instances) -> Dict[str, Tensor]:
        logits, box_reg, ctr = self._transpose_dense_predictions(
            predictions, [self.num_classes, 4, 1]
        )
        sizes = [tuple(f.shape[-2:]) for f in features]
        labels, reg_targets = self.label_locations(sizes, gt_instances)
        # One reduction across workers, shared by the EMA and the losses.
        num_pos = reduce_mean((labels != self.num_classes).sum().float()).clamp(min=1.0)
        cls_normalizer = None
        if self.loss_normalizer_cls == "moving_fg":
            cls_normalizer = self._ema_update("moving_num_fg", num_pos.item(), 100.0, 0.9)
        return fcos_losses(
            torch.cat(logits, dim=1),  # (N, R, K)
            torch.cat(box_reg, dim=1),  # (N, R, 4)
            torch.cat(ctr, dim=1).squeeze(2),  # (N, R)
            labels,
            reg_targets,
            box_loss_type=self.box_loss_type,
            focal_alpha=self.focal_loss_alpha,
            focal_gamma=self.focal_loss_gamma,
            box_quality=self.box_quality,
            num_pos=num_pos,
            cls_normalizer=cls_normalizer,
        )

    @torch.no_grad()
    def label_locations(
        self, level_sizes: List[Tuple[int, int]], gt_instances: List[Instances]
    ) -> Tuple[Tensor, Tensor]:
        """
        Feature sizes (Hi, Wi) per level and ground truth -> labels (N, R) with K for
        background, and stride-normalised regression targets (N, R, 4).
        """
        device = self.pixel_mean.device
        locations = compute_locations(level_sizes, self.strides, device)
        points, strides, ranges = flatten_levels(locations, self.strides, self.size_ranges)
        labels, reg_targets = [], []
        for gt in gt_instances:
            lab, reg = compute_targets(
                points,
                strides,
                ranges,
                gt.gt_boxes.tensor,
                gt.gt_classes,
                self.num_classes,
                self.center_sampling_radius,
                level_sizes,
            )
            labels.append(lab)
            reg_targets.append(reg)
        return torch.stack(labels), torch.stack(reg_targets)

    def forward_inference(
        self,
        images: ImageList,
        features: List[Tensor],
        predictions: Tuple[List[Tensor], List[Tensor], List[Tensor]],
    ) -> List[Instances]:
        predictions = tuple([p.float() for p in level] for level in predictions)
        # Channel-first views (N, C, Hi * Wi): post-processing needs no transposed copies.
        logits, box_reg, ctr = ([p.flatten(2) for p in level] for level in predictions)
        locations = self._locations(features)
        with torch.autocast(self.device.type, enabled=False):
            return self._decode(images, locations, logits, box_reg, ctr)

    def _decode(self, images, locations, logits, box_reg, ctr) -> List[Instances]:
        return [
            fcos_inference_single_image(
                locations,
                self.strides,
                [x[i] for x in logits],
                [x[i] for x in box_reg],
                [x[i, 0] for x in ctr],
                image_size,
                score_thresh=self.score_thresh_test,
                topk=self.topk_candidates_test,
                nms_thresh=self.nms_thresh_test,
                max_detections=self.max_detections_per_image,
                thresh_with_ctr=self.thresh_with_ctr,
            )
            for i, image_size in enumerate(images.image_sizes)
        ]
