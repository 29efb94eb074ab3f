"""
The FCOS meta-architecture.

Shape shorthand: N images, L levels, R locations over all levels, K classes.
"""

import dataclasses
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode, configurable
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone
from detectron2.modeling.meta_arch.dense_detector import DenseDetector
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, ImageList, Instances
from torch import Tensor, nn

from ..checkpoint.model_hook import install_foreign_checkpoint_hook
from ..config import check_fcos_config, check_values, read_class_thresholds
from ..layers import (
    channels_last_helps,
    exporting,
    fold_frozen_batchnorm,
    fuse_resnet_blocks,
    one_image_at_a_time,
    set_frozen_batchnorm_eps,
    winograd_convolutions,
)
from .core import FCOSCore, Predictions, build_fcos_core
from .head import FCOSHead
from .losses import positive_count
from .postprocess import (
    FCOSPostprocess,
    apply_class_thresholds,
    fcos_detections,
    legacy_rescale,
)
from .targets import compute_locations

__all__ = ["FCOS"]


@META_ARCH_REGISTRY.register()
class FCOS(DenseDetector):
    """
    FCOS: Fully Convolutional One-Stage object detection (Tian et al., ICCV 2019).
    Each location of each FPN level classifies (K sigmoid classifiers), regresses its distances
    to the four sides of a box and predicts the box's centre-ness. Matching, losses and
    decoding are the :class:`~fcos_d2.modeling.core.FCOSCore` it is given (shared with the FCOS
    proposal generator); this class runs the network and wires them.
    """

    __jit_ignored_attributes__ = ["core"]
    __jit_unused_properties__ = [
        "test_score_thresh",
        "test_topk_candidates",
        "test_nms_thresh",
        "max_detections_per_image",
    ]
    postprocess: FCOSPostprocess  # the decoding settings; TorchScript reads this annotation

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        head: nn.Module,
        head_in_features: List[str],
        core: FCOSCore,
        pixel_mean: Tuple[float, ...],
        pixel_std: Tuple[float, ...],
        input_format: str = "BGR",
        channels_last: bool,
        winograd: bool = False,
        loss_normalizer_cls: str,
        inference_dtype: str,
        train_dtype: str,
        class_thresholds: Optional[Sequence[float]] = None,
    ):
        """
        Args:
            backbone: produces the features named in ``head_in_features``.
            head: maps the list of those features to (logits, box_reg, quality logits) per
                level, shaped (N, K, Hi, Wi), (N, 4, Hi, Wi) in strides, (N, 1, Hi, Wi).
            core: matching, losses and decoding (with a ``postprocess``), for the strides of
                ``head_in_features`` (a core made without strides gets those).
            channels_last: run backbone and head in channels_last memory format where that was
                measured faster (see ``fcos_d2.layers.layout``: GPUs, CPU inference, CPU training
                with AVX-512), by giving them their input in it; the weights keep their layout.
            winograd: in float32 training on a CPU, run the 3 x 3 convolutions that have enough
                channels and pixels as Winograd F(4x4, 3x3) (``fcos_d2.layers.winograd``:
                measured faster; results equal up to float rounding). Off unless asked for, as
                the other speed settings of modules passed in; ``MODEL.FCOS.WINOGRAD`` turns it on.
            loss_normalizer_cls, inference_dtype, train_dtype: the ``MODEL.FCOS`` keys.
            class_thresholds: (K,) minimum score of each class's detections (after the NMS), or
                None (``MODEL.FCOS.CLASS_THRESHOLDS_FILE``'s values).

        The modules passed in are used as they are. The one thing construction adds is a
        state-dict pre-hook on this model, so that checkpoints in the layouts of AdelaiDet,
        detectron2's built-in FCOS and maskrcnn-benchmark load wherever ``MODEL.WEIGHTS`` is
        read (``DetectionCheckpointer``, ``DefaultPredictor``, ``train_net.py``).
        """
        check_values(
            loss_normalizer_cls=loss_normalizer_cls,
            inference_dtype=inference_dtype,
            train_dtype=train_dtype,
        )
        super().__init__(
            backbone, head, head_in_features, pixel_mean=pixel_mean, pixel_std=pixel_std
        )
        shapes = backbone.output_shape()
        missing = [f for f in head_in_features if f not in shapes]
        if missing:
            raise ValueError(
                f"head_in_features {missing} are not among the backbone's outputs {list(shapes)}"
            )
        strides = tuple(shapes[f].stride for f in head_in_features)
        expected = (getattr(head, "in_channels", None), getattr(head, "num_levels", None))
        got = ({shapes[f].channels for f in head_in_features}, len(head_in_features))
        if expected[0] is not None and (got[0] != {expected[0]} or got[1] != expected[1]):
            raise ValueError(
                f"the head takes {expected[1]} levels of {expected[0]} channels (its input_shape); "
                f"the backbone's {list(head_in_features)} have {sorted(got[0])} channels"
            )
        if not core.strides:  # made without strides (Python configs): the backbone's
            core = core.with_strides(strides)
        if core.strides != strides or core.postprocess is None:
            raise ValueError(
                f"core for strides {core.strides} (postprocess {core.postprocess}) does not fit "
                f"the backbone's {head_in_features}, of strides {strides}"
            )
        self.core = core
        # TorchScript cannot hold the core's dataclasses (``core`` is hidden from it, see
        # __jit_ignored_attributes__); the decoding settings are a NamedTuple it can hold.
        self.postprocess = core.postprocess
        self.num_classes = core.num_classes
        self.strides = list(core.strides)
        self.input_format = input_format
        self.channels_last = channels_last
        self.winograd = winograd
        self.loss_normalizer_cls = loss_normalizer_cls
        self.inference_dtype = getattr(torch, inference_dtype)
        self.train_dtype = getattr(torch, train_dtype)
        self._use_class_thresholds = class_thresholds is not None
        if class_thresholds is not None and len(class_thresholds) != core.num_classes:
            raise ValueError(
                f"{len(class_thresholds)} class thresholds for {core.num_classes} classes"
            )
        # Not in the state dict: checkpoints stay the same with or without thresholds.
        values = [0.0] * core.num_classes if class_thresholds is None else list(class_thresholds)
        thresholds = torch.tensor(values, dtype=torch.float32)
        self.register_buffer("class_thresholds", thresholds, persistent=False)
        install_foreign_checkpoint_hook(self)

    @classmethod
    def from_config(cls, cfg: CfgNode) -> Dict:
        fcos = cfg.MODEL.FCOS
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        check_fcos_config(cfg, list(shapes))
        head = FCOSHead(cfg, [shapes[f] for f in fcos.IN_FEATURES])
        if fcos.LEGACY_CONVENTIONS:
            set_frozen_batchnorm_eps(backbone, 0.0)  # maskrcnn-benchmark's has none
        # Speed settings, applied to the modules built here (never to modules passed in).
        if fcos.FOLD_FROZEN_BN:
            fold_frozen_batchnorm(backbone)
        if fcos.FUSE_RESNET_BLOCKS:
            fuse_resnet_blocks(backbone)  # folded convs only
        strides = [shapes[f].stride for f in fcos.IN_FEATURES]
        return {
            "backbone": backbone,
            "head": head,
            "head_in_features": list(fcos.IN_FEATURES),
            "core": build_fcos_core(cfg, strides, fcos.NUM_CLASSES),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "input_format": cfg.INPUT.FORMAT,
            "channels_last": fcos.CHANNELS_LAST,
            "winograd": fcos.WINOGRAD,
            "loss_normalizer_cls": fcos.LOSS_NORMALIZER_CLS,
            "inference_dtype": fcos.INFERENCE_DTYPE,
            "train_dtype": fcos.TRAIN_DTYPE,
            "class_thresholds": _class_thresholds(cfg),
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
        if self._use_class_thresholds:
            results = [apply_class_thresholds(r, self.class_thresholds) for r in results]
        if not do_postprocess or torch.jit.is_scripting():
            return results
        rescale = legacy_rescale if self.postprocess.legacy_conventions else detector_postprocess
        return [
            {"instances": rescale(r, x.get("height", hw[0]), x.get("width", hw[1]))}
            for r, x, hw in zip(results, batched_inputs, images.image_sizes)
        ]

    def image_detections(self, image: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """
        Detections of one (C, H, W) image as tensors: boxes (D, 4) XYXY in the image's pixels,
        clipped to it, empty ones dropped; scores (D,), by decreasing score; classes (D,):
        what ``forward`` returns for an input without "height"/"width", without ``Instances``
        (whose length checks ``torch.export`` cannot follow when D is a symbol).
        """
        if exporting():
            images = self._padded_for_export(image)
        else:
            images = self.preprocess_image([{"image": image}])
        features, predictions = self._network(images.tensor)
        boxes, scores, classes = self._detections(images, features, predictions)[0]
        if self._use_class_thresholds:
            keep = scores >= self.class_thresholds[classes]
            boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
        height, width = image.shape[-2], image.shape[-1]
        x0, y0, x1, y1 = boxes.unbind(1)  # Boxes.clip, then Boxes.nonempty
        boxes = torch.stack(
            [x0.clamp(0, width), y0.clamp(0, height), x1.clamp(0, width), y1.clamp(0, height)],
            dim=1,
        )
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        return boxes[keep], scores[keep], classes[keep]

    def _padded_for_export(self, image: Tensor) -> ImageList:
        """``preprocess_image`` of one image under ``torch.export``: detectron2's padding computes
        the padded size with tensors, data-dependent there; the same size in (symbolic) ints."""
        image = (self._move_to_current_device(image) - self.pixel_mean) / self.pixel_std
        d = max(self.backbone.size_divisibility, 1)
        height, width = image.shape[-2], image.shape[-1]
        pad = [0, (width + d - 1) // d * d - width, 0, (height + d - 1) // d * d - height]
        return ImageList(F.pad(image, pad).unsqueeze(0), [(height, width)])

    def _network(self, images: Tensor) -> Tuple[List[Tensor], Predictions]:
        """
        Backbone and head on normalised (N, 3, H, W) images: the features of ``head_in_features``
        and the head's predictions, all in float32. On a CPU in inference, one image at a time
        (measured faster; every layer is per image there, so the results are the same).
        """
        if (
            not torch.jit.is_scripting()
            and images.shape[0] > 1
            and one_image_at_a_time(images.device.type, self.training)
        ):
            return _concatenated([self._network(image) for image in images.split(1)])
        if self.channels_last and (
            torch.jit.is_scripting() or channels_last_helps(images.device.type, self.training)
        ):
            images = images.contiguous(memory_format=torch.channels_last)
        dtype = self.train_dtype if self.training else self.inference_dtype
        if dtype == torch.float32 or torch.jit.is_scripting():
            cpu_training = self.training and images.device.type == "cpu"
            if cpu_training and self.winograd and not torch.jit.is_scripting():
                return self._winograd_backbone_and_head(images)
            return self._backbone_and_head(images)
        with torch.autocast(self.device.type, dtype=dtype):
            return self._backbone_and_head(images)

    @torch.jit.unused
    def _winograd_backbone_and_head(self, images: Tensor) -> Tuple[List[Tensor], Predictions]:
        with winograd_convolutions():  # only CPU float32 convs that gain are changed
            return self._backbone_and_head(images)

    def _backbone_and_head(self, images: Tensor) -> Tuple[List[Tensor], Predictions]:
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
        predictions: Predictions,
        gt_instances: List[Instances],
    ) -> Dict[str, Tensor]:
        sizes = [tuple(f.shape[-2:]) for f in features]
        labels, reg_targets = self.label_locations(sizes, gt_instances)
        if self.loss_normalizer_cls != "moving_fg":
            return self.core.loss(predictions, labels, reg_targets)
        num_pos = positive_count(labels, self.num_classes)  # one reduction for both uses
        cls_normalizer = self._ema_update("moving_num_fg", num_pos.item(), 100.0, 0.9)
        return self.core.loss(predictions, labels, reg_targets, num_pos, cls_normalizer)

    @torch.no_grad()
    def label_locations(
        self, level_sizes: List[Tuple[int, int]], gt_instances: List[Instances]
    ) -> Tuple[Tensor, Tensor]:
        """
        Feature sizes (Hi, Wi) per level and ground truth -> labels (N, R) with K for
        background, and stride-normalised regression targets (N, R, 4).
        """
        self._check_gt_classes(gt_instances)
        return self.core.targets(level_sizes, gt_instances, self.device)

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
        self, images: ImageList, features: List[Tensor], predictions: Predictions
    ) -> List[Instances]:
        return [
            Instances(size, pred_boxes=Boxes(boxes), scores=scores, pred_classes=classes)
            for (boxes, scores, classes), size in zip(
                self._detections(images, features, predictions), images.image_sizes
            )
        ]

    def _detections(
        self, images: ImageList, features: List[Tensor], predictions: Predictions
    ) -> List[Tuple[Tensor, Tensor, Tensor]]:
        """(boxes, scores, classes) of each image, in its resized image's pixels, unclipped."""
        # Channel-first views (N, C, Hi * Wi): post-processing needs no transposed copies.
        logits = [p.flatten(2) for p in predictions[0]]
        box_reg = [p.flatten(2) for p in predictions[1]]
        quality = [p.flatten(2) for p in predictions[2]]
        sizes = [(f.shape[-2], f.shape[-1]) for f in features]
        locations = compute_locations(sizes, self.strides, features[0].device)
        return [
            fcos_detections(
                locations,
                self.strides,
                [x[i] for x in logits],
                [x[i] for x in box_reg],
                [x[i, 0] for x in quality],
                self.postprocess,
                image_size,
            )
            for i, image_size in enumerate(images.image_sizes)
        ]

    # The inference settings under detectron2's dense-detector names (RetinaNet's), read and
    # set on a built model: ``model.test_score_thresh = 0.3``. Each changes ``postprocess`` (and
    # the core's copy) as a whole, checked as the config keys are.
    def set_postprocess(self, **changes) -> None:
        """Replace fields of :attr:`postprocess` (``score_thresh``, ``topk``, ``nms_thresh``,
        ``max_detections``, ``thresh_with_ctr``); a bad value is a one-line ``ValueError``."""
        unknown = set(changes) - (set(FCOSPostprocess._fields) - {"legacy_conventions"})
        if unknown:
            raise ValueError(f"cannot set {sorted(unknown)} of a built FCOS model's postprocess")
        check_values(**{k: v for k, v in changes.items() if k != "max_detections"})
        if "max_detections" in changes and changes["max_detections"] < 1:
            raise ValueError(f"max_detections={changes['max_detections']} must be at least 1")
        types = {"score_thresh": float, "nms_thresh": float, "topk": int, "max_detections": int}
        post = self.postprocess._replace(**{k: types.get(k, bool)(v) for k, v in changes.items()})
        self.postprocess = post
        self.core = dataclasses.replace(self.core, postprocess=post)

    @property
    def test_score_thresh(self) -> float:
        return self.postprocess.score_thresh

    @test_score_thresh.setter
    def test_score_thresh(self, value: float) -> None:
        self.set_postprocess(score_thresh=value)

    @property
    def test_topk_candidates(self) -> int:
        return self.postprocess.topk

    @test_topk_candidates.setter
    def test_topk_candidates(self, value: int) -> None:
        self.set_postprocess(topk=value)

    @property
    def test_nms_thresh(self) -> float:
        return self.postprocess.nms_thresh

    @test_nms_thresh.setter
    def test_nms_thresh(self, value: float) -> None:
        self.set_postprocess(nms_thresh=value)

    @property
    def max_detections_per_image(self) -> int:
        return self.postprocess.max_detections

    @max_detections_per_image.setter
    def max_detections_per_image(self, value: int) -> None:
        self.set_postprocess(max_detections=value)

    # The previous release's name, as an alias outside the class's attributes (so that
    # TorchScript, which reads every attribute, does not trip its warning).
    def __getattr__(self, name: str):
        if name in _RENAMED:
            warnings.warn(_renamed_message(name), DeprecationWarning, stacklevel=2)
            return getattr(self, _RENAMED[name])
        return super().__getattr__(name)

    def __setattr__(self, name: str, value) -> None:
        if name in _RENAMED:
            warnings.warn(_renamed_message(name), DeprecationWarning, stacklevel=2)
            name = _RENAMED[name]
        super().__setattr__(name, value)


# The previous release's attribute names -> detectron2's (goes in the next release).
_RENAMED = {
    "score_thresh_test": "test_score_thresh",
    "topk_candidates_test": "test_topk_candidates",
    "nms_thresh_test": "test_nms_thresh",
}


def _renamed_message(name: str) -> str:
    return f"FCOS.{name} is now FCOS.{_RENAMED[name]} (detectron2's name)"


def _class_thresholds(cfg: CfgNode) -> Optional[List[float]]:
    path = cfg.MODEL.FCOS.CLASS_THRESHOLDS_FILE
    if not path:
        return None
    try:
        return read_class_thresholds(path, cfg.MODEL.FCOS.NUM_CLASSES)
    except ValueError as e:
        raise ValueError(f"MODEL.FCOS.CLASS_THRESHOLDS_FILE: {e}") from None


def _concatenated(
    parts: List[Tuple[List[Tensor], Predictions]],
) -> Tuple[List[Tensor], Predictions]:
    """The network's outputs of single images as those of their batch."""
    features = [torch.cat(level) for level in zip(*[p[0] for p in parts])]
    predictions = tuple(
        [torch.cat(level) for level in zip(*[p[1][i] for p in parts])] for i in range(3)
    )
    return features, predictions  # type: ignore[return-value]
