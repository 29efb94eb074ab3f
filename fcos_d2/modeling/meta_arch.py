"""
The FCOS meta-architecture.

Shape shorthand: N images, L levels, R locations over all levels, K classes.
"""

from typing import Dict, List, Sequence, Tuple

import torch
from detectron2.config import CfgNode, configurable
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone
from detectron2.modeling.meta_arch.dense_detector import DenseDetector
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import ImageList, Instances
from torch import Tensor, nn

from ..checkpoint.model_hook import install_foreign_checkpoint_hook
from ..config import check_fcos_config
from .frozen_bn import fold_frozen_batchnorm, set_frozen_batchnorm_eps
from .head import FCOSHead
from .losses import fcos_losses, reduce_mean
from .postprocess import fcos_inference_single_image, legacy_rescale
from .targets import LevelGrid, batch_targets, compute_locations, level_size_ranges

__all__ = ["FCOS"]

# Per level: class logits (N, K, Hi, Wi), box regression (N, 4, Hi, Wi), centre-ness (N, 1, Hi, Wi).
Predictions = Tuple[List[Tensor], List[Tensor], List[Tensor]]
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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
        channels_last: bool = False,
        box_quality: str = "ctrness",
        loss_normalizer_cls: str = "fg",
        inference_dtype: str = "float32",
        train_dtype: str = "float32",
        legacy_conventions: bool = False,
    ):
        """
        Args:
            backbone: produces the features named in ``head_in_features``.
            head: maps the list of those features to (logits, box_reg, ctr_logits) per level,
                shaped (N, K, Hi, Wi), (N, 4, Hi, Wi) in strides, (N, 1, Hi, Wi).
            channels_last: give the network its input in channels_last memory format (use it
                with a backbone and head converted to that format, as ``from_config`` does).
            legacy_conventions: the original FCOS's box conventions (maskrcnn-benchmark's "+1"
                areas in matching and NMS, boxes clipped to (w - 1, h - 1) before the NMS, no
                box dropped after it); the backbone's frozen BN epsilon is ``from_config``'s part.
            Others: see the ``MODEL.FCOS`` keys of the same name in :mod:`fcos_d2.config`.

        The modules passed in are used as they are. The one thing construction adds is a
        state-dict pre-hook on this model, so that checkpoints in the layouts of AdelaiDet,
        detectron2's built-in FCOS and maskrcnn-benchmark load wherever ``MODEL.WEIGHTS`` is
        read (``DetectionCheckpointer``, ``DefaultPredictor``, ``train_net.py``).
        """
        super().__init__(
            backbone, head, head_in_features, pixel_mean=pixel_mean, pixel_std=pixel_std
        )
        shapes = backbone.output_shape()
        self.strides = [shapes[f].stride for f in head_in_features]
        self.size_ranges = level_size_ranges(sizes_of_interest, len(head_in_features))
        self.num_classes = num_classes
        self.center_sampling_radius = center_sampling_radius
        # Sparse matching visits only cells near box centres; it needs centre sampling.
        self.matching_method = "sparse" if center_sampling_radius > 0 else "dense"
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
        self.inference_dtype = _DTYPES[inference_dtype]
        self.train_dtype = _DTYPES[train_dtype]
        self.legacy_conventions = legacy_conventions
        install_foreign_checkpoint_hook(self)

    @classmethod
    def from_config(cls, cfg: CfgNode) -> Dict:
        fcos = cfg.MODEL.FCOS
        backbone = build_backbone(cfg)  # fcos_d2's backbone builder checks MODEL.FCOS first
        shapes = backbone.output_shape()
        check_fcos_config(cfg, list(shapes))
        head = FCOSHead(cfg, [shapes[f] for f in fcos.IN_FEATURES])
        if fcos.LEGACY_CONVENTIONS:
            set_frozen_batchnorm_eps(backbone, 0.0)  # maskrcnn-benchmark's has none
        # Speed settings, applied to the modules built here (never to modules passed in).
        if fcos.FOLD_FROZEN_BN:
            fold_frozen_batchnorm(backbone)
        if fcos.CHANNELS_LAST:
            backbone.to(memory_format=torch.channels_last)
            head.to(memory_format=torch.channels_last)
        return {
            "backbone": backbone,
            "head": head,
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
            "box_quality": fcos.BOX_QUALITY,
            "loss_normalizer_cls": fcos.LOSS_NORMALIZER_CLS,
            "inference_dtype": fcos.INFERENCE_DTYPE,
            "train_dtype": fcos.TRAIN_DTYPE,
            "legacy_conventions": fcos.LEGACY_CONVENTIONS,
        }

    def forward(self, batched_inputs: List[Dict[str, Tensor]]):
        """
        detectron2's dense-detector forward, with one precision boundary: backbone and head run
        in ``TRAIN_DTYPE`` / ``INFERENCE_DTYPE`` (autocast), their outputs are cast to float32
        once, and matching, losses and decoding always run in float32.
        """
        if self.training and not torch.jit.is_scripting():
            return self._training_losses(batched_inputs)
        return self.inference(batched_inputs)

    @torch.jit.unused
    def _training_losses(self, batched_inputs: List[Dict[str, Tensor]]) -> Dict[str, Tensor]:
        if "instances" not in batched_inputs[0]:
            raise ValueError("FCOS training needs 'instances' in every input dict")
        images = self.preprocess_image(batched_inputs)
        features, predictions = self._network(images.tensor)
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        return self.forward_training(images, features, predictions, gt_instances)

    def inference(self, batched_inputs: List[Dict[str, Tensor]], do_postprocess: bool = True):
        """
        Detections of each input. With ``do_postprocess`` (what ``forward`` returns):
        ``[{"instances": Instances}]`` rescaled to each input's "height"/"width" and clipped
        there, as detectron2's ``detector_postprocess`` does. Without: one ``Instances`` per
        input in the coordinates of the (resized) image the model saw, boxes not clipped (what
        test-time augmentation merges before it clips; with ``legacy_conventions`` clipped to
        (w - 1, h - 1), as the original FCOS does before its NMS).
        """
        images = self.preprocess_image(batched_inputs)
        features, predictions = self._network(images.tensor)
        results = self.forward_inference(images, features, predictions)
        if not do_postprocess or torch.jit.is_scripting():
            return results
        rescale = legacy_rescale if self.legacy_conventions else detector_postprocess
        return [
            {"instances": rescale(r, x.get("height", hw[0]), x.get("width", hw[1]))}
            for r, x, hw in zip(results, batched_inputs, images.image_sizes)
        ]

    def _network(self, images: Tensor) -> Tuple[List[Tensor], Predictions]:
        """
        Backbone and head on normalised (N, 3, H, W) images: the features of ``head_in_features``
        and the head's predictions, all in float32.
        """
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        dtype = self.train_dtype if self.training else self.inference_dtype
        if dtype == torch.float32 or torch.jit.is_scripting():
            return self._run_network(images)
        with torch.autocast(self.device.type, dtype=dtype):
            return self._run_network(images)

    def _run_network(self, images: Tensor) -> Tuple[List[Tensor], Predictions]:
        features = self.backbone(images)
        features = [features[f] for f in self.head_in_features]
        logits, box_reg, ctr = self.head(features)
        return features, (
            [p.float() for p in logits],
            [p.float() for p in box_reg],
            [p.float() for p in ctr],
        )

    def forward_training(
        self,
        images: ImageList,
        features: List[Tensor],
        predictions: Tuple[List[Tensor], List[Tensor], List[Tensor]],
        gt_instances: List[Instances],
    ) -> Dict[str, Tensor]:
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
        self._check_gt_classes(gt_instances)
        return batch_targets(
            LevelGrid.build(level_sizes, self.strides, self.size_ranges, self.device),
            [gt.gt_boxes.tensor for gt in gt_instances],
            [gt.gt_classes for gt in gt_instances],
            self.num_classes,
            self.center_sampling_radius,
            self.matching_method,
            legacy_areas=self.legacy_conventions,
        )

    def _check_gt_classes(self, gt_instances: List[Instances]) -> None:
        """Class ids outside [0, K) are an error; checked once per batch (one host sync)."""
        classes = torch.cat([gt.gt_classes for gt in gt_instances])
        if len(classes) == 0:
            return
        lo, hi = torch.stack([classes.min(), classes.max()]).tolist()
        if lo < 0 or hi >= self.num_classes:
            raise ValueError(
                f"ground-truth class id {hi if hi >= self.num_classes else lo} is outside "
                f"[0, MODEL.FCOS.NUM_CLASSES={self.num_classes})"
            )

    def forward_inference(
        self,
        images: ImageList,
        features: List[Tensor],
        predictions: Tuple[List[Tensor], List[Tensor], List[Tensor]],
    ) -> List[Instances]:
        # Channel-first views (N, C, Hi * Wi): post-processing needs no transposed copies.
        logits = [p.flatten(2) for p in predictions[0]]
        box_reg = [p.flatten(2) for p in predictions[1]]
        ctr = [p.flatten(2) for p in predictions[2]]
        sizes = [(f.shape[-2], f.shape[-1]) for f in features]
        locations = compute_locations(sizes, self.strides, features[0].device)
        return self._decode(images, locations, logits, box_reg, ctr)

    def _decode(
        self,
        images: ImageList,
        locations: List[Tensor],
        logits: List[Tensor],
        box_reg: List[Tensor],
        ctr: List[Tensor],
    ) -> List[Instances]:
        results: List[Instances] = []
        for i, image_size in enumerate(images.image_sizes):
            results.append(
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
                    legacy_conventions=self.legacy_conventions,
                )
            )
        return results
