"""
FCOS's algorithm once, for both of its roles (the ``FCOS`` detector and the ``FCOS`` proposal
generator of two-stage models): the matching of locations to boxes, the losses and the decoding
of one image's detections, each a small frozen object holding its settings (as detectron2's
``Matcher`` and ``Box2BoxTransform``), and :func:`build_fcos_core`, the one place that reads
their ``MODEL.FCOS`` keys (through :func:`make_fcos_core`, which LazyConfig configs call). The settings have no defaults of their own: those live in
:mod:`fcos_d2.config` only.

Shape shorthand: N images, L levels, Hi x Wi locations of level i, Ri = Hi * Wi, R locations over
all levels, K classes (1 for the proposal generator), M boxes of an image.
"""

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from detectron2.config import CfgNode
from detectron2.modeling.meta_arch.dense_detector import permute_to_N_HWA_K
from detectron2.structures import Instances
from torch import Tensor

from ..config import check_values
from .losses import fcos_losses
from .postprocess import FCOSPostprocess
from .targets import (
    LevelGrid,
    batch_targets,
    candidate_pairs,
    level_size_ranges,
    match_locations,
)

__all__ = [
    "FCOSMatcher",
    "FCOSLoss",
    "FCOSPostprocess",
    "FCOSCore",
    "build_fcos_core",
    "make_fcos_core",
    "flatten_predictions",
]

# Per level: class logits (N, K, Hi, Wi), box regression (N, 4, Hi, Wi) in strides, quality
# logits (N, 1, Hi, Wi): centre-ness, or IoU with BOX_QUALITY "iou".
Predictions = Tuple[List[Tensor], List[Tensor], List[Tensor]]


@dataclass(frozen=True)
class FCOSMatcher:
    """
    Which box each location learns: a location of level i is a candidate for a box when it lies
    inside the box (within ``center_sampling_radius`` strides of its centre when that is > 0)
    and its largest distance to the box's sides is in level i's size range; among candidates
    the box of smallest area wins (:func:`~fcos_d2.modeling.targets.match_locations`).

    Attributes:
        strides: per level. size_ranges: per level, inclusive (lo, hi) of that distance.
        legacy_areas: maskrcnn-benchmark's "+1" box areas in the tie-break.
    """

    strides: Tuple[int, ...]
    size_ranges: Tuple[Tuple[float, float], ...]
    center_sampling_radius: float
    legacy_areas: bool

    @property
    def method(self) -> str:
        """ "sparse" (visits only cells near box centres; needs centre sampling) or "dense"."""
        return "sparse" if self.center_sampling_radius > 0 else "dense"

    def grid(self, level_sizes: Sequence[Tuple[int, int]], device: torch.device) -> LevelGrid:
        """The locations of levels of sizes (Hi, Wi), with these strides and size ranges."""
        return LevelGrid.build(level_sizes, self.strides, self.size_ranges, device)

    @torch.no_grad()
    def match(self, grid: LevelGrid, boxes: Tensor) -> Tensor:
        """(R,) index of the box each location of ``grid`` learns, -1 for background."""
        return match_locations(
            grid, boxes, self.center_sampling_radius, self.method, self.legacy_areas
        )

    @torch.no_grad()
    def candidates(self, grid: LevelGrid, boxes: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """The (location, box) pairs inside the boxes' centre regions and whether each passes
        the size test (:func:`~fcos_d2.modeling.targets.candidate_pairs`)."""
        return candidate_pairs(grid, boxes, self.center_sampling_radius, self.method)

    @torch.no_grad()
    def __call__(
        self,
        level_sizes: Sequence[Tuple[int, int]],
        boxes: Sequence[Tensor],
        classes: Sequence[Tensor],
        num_classes: int,
        device: torch.device,
    ) -> Tuple[Tensor, Tensor]:
        """
        (Hi, Wi) per level, and per image (M, 4) XYXY boxes and (M,) classes in [0, K) ->
        labels (N, R) with K for background, stride-normalised (l, t, r, b) targets (N, R, 4).
        """
        return batch_targets(
            self.grid(level_sizes, device),
            boxes,
            classes,
            num_classes,
            self.center_sampling_radius,
            self.method,
            legacy_areas=self.legacy_areas,
        )


@dataclass(frozen=True)
class FCOSLoss:
    """
    FCOS's losses (:func:`~fcos_d2.modeling.losses.fcos_losses`): sigmoid focal loss over all
    locations, IoU loss of the positives' boxes, BCE of their quality (centre-ness or IoU).
    """

    box_loss_type: str
    focal_alpha: float
    focal_gamma: float
    box_quality: str

    def __call__(
        self,
        predictions: Predictions,
        labels: Tensor,
        reg_targets: Tensor,
        num_pos: Optional[Tensor] = None,
        cls_normalizer: Optional[float] = None,
    ) -> Dict[str, Tensor]:
        """Per-level predictions, labels (N, R), reg_targets (N, R, 4) -> losses (float32);
        ``num_pos``: the positive count if the caller has it (``positive_count``)."""
        logits, box_reg, quality = flatten_predictions(predictions)
        return fcos_losses(
            logits.float(),
            box_reg.float(),
            quality.float(),
            labels,
            reg_targets,
            box_loss_type=self.box_loss_type,
            focal_alpha=self.focal_alpha,
            focal_gamma=self.focal_gamma,
            box_quality=self.box_quality,
            num_pos=num_pos,
            cls_normalizer=cls_normalizer,
        )


@dataclass(frozen=True)
class FCOSCore:
    """FCOS's matching, losses and (for the detector) decoding, for ``num_classes`` classes."""

    num_classes: int
    matcher: FCOSMatcher
    loss: FCOSLoss
    postprocess: Optional[FCOSPostprocess] = None

    @property
    def strides(self) -> Tuple[int, ...]:
        return self.matcher.strides

    def with_strides(self, strides: Sequence[int]) -> "FCOSCore":
        """This core for levels of ``strides`` (a core made without them, as Python configs
        make it: the detector passes its backbone's)."""
        if len(strides) != len(self.matcher.size_ranges):
            raise ValueError(
                f"{len(strides)} levels of strides {list(strides)}, but sizes_of_interest give "
                f"{len(self.matcher.size_ranges)} levels"
            )
        matcher = dataclasses.replace(self.matcher, strides=tuple(int(s) for s in strides))
        return dataclasses.replace(self, matcher=matcher)

    def targets(
        self,
        level_sizes: Sequence[Tuple[int, int]],
        gt_instances: Sequence[Instances],
        device: torch.device,
    ) -> Tuple[Tensor, Tensor]:
        """labels (N, R) with K for background, reg_targets (N, R, 4); with one class every
        box is of class 0 (the proposal generator's "object")."""
        boxes = [gt.gt_boxes.tensor for gt in gt_instances]
        if self.num_classes == 1:
            classes = [torch.zeros(len(gt), dtype=torch.long, device=device) for gt in gt_instances]
        else:
            classes = [gt.gt_classes for gt in gt_instances]
        return self.matcher(level_sizes, boxes, classes, self.num_classes, device)


def flatten_predictions(predictions: Predictions) -> Tuple[Tensor, Tensor, Tensor]:
    """Per-level (N, C, Hi, Wi) predictions -> logits (N, R, K), box_reg (N, R, 4), quality
    (N, R), levels concatenated finest first (detectron2's ``permute_to_N_HWA_K`` order)."""
    logits, box_reg, quality = predictions
    k = logits[0].shape[1]
    return (
        torch.cat([permute_to_N_HWA_K(x, k) for x in logits], dim=1),
        torch.cat([permute_to_N_HWA_K(x, 4) for x in box_reg], dim=1),
        torch.cat([permute_to_N_HWA_K(x, 1) for x in quality], dim=1)[..., 0],
    )


def make_fcos_core(
    *,
    num_classes: int,
    strides: Optional[Sequence[int]] = None,
    sizes_of_interest: Sequence[float],
    center_sampling_radius: float,
    box_loss_type: str,
    focal_loss_alpha: float,
    focal_loss_gamma: float,
    box_quality: str,
    legacy_conventions: bool,
    postprocess: Optional[Dict[str, Any]] = None,
) -> FCOSCore:
    """
    An :class:`FCOSCore` from its settings by name (the ``MODEL.FCOS`` keys, lower case): the
    builder of LazyConfig model configs (``core=L(make_fcos_core)(...)``) and of
    :func:`build_fcos_core`.

    Args:
        strides: of the head's levels, finest first; None: the detector's backbone's (the
            FCOS model fills them in, :meth:`FCOSCore.with_strides`).
        sizes_of_interest: the L - 1 size boundaries between levels.
        postprocess: the detector's decoding, keys ``score_thresh``, ``topk``, ``nms_thresh``,
            ``max_detections``, ``thresh_with_ctr`` (:class:`FCOSPostprocess`); None for the
            proposal generator.
    """
    check_values(
        box_loss_type=box_loss_type,
        box_quality=box_quality,
        num_classes=num_classes,
        center_sampling_radius=center_sampling_radius,
        focal_loss_gamma=focal_loss_gamma,
    )
    if postprocess is not None:
        check_values(**{k: postprocess[k] for k in ("score_thresh", "topk", "nms_thresh")})
    num_levels = len(sizes_of_interest) + 1
    if strides is not None and len(strides) != num_levels:
        raise ValueError(
            f"sizes_of_interest={list(sizes_of_interest)} has {num_levels - 1} values; the "
            f"{len(strides)} levels of strides {list(strides)} need {len(strides) - 1}"
        )
    matcher = FCOSMatcher(
        strides=tuple(int(s) for s in strides) if strides is not None else (),
        size_ranges=tuple(
            (float(lo), float(hi))
            for lo, hi in level_size_ranges(list(sizes_of_interest), num_levels)
        ),
        center_sampling_radius=float(center_sampling_radius),
        legacy_areas=bool(legacy_conventions),
    )
    loss = FCOSLoss(
        box_loss_type=box_loss_type,
        focal_alpha=float(focal_loss_alpha),
        focal_gamma=float(focal_loss_gamma),
        box_quality=box_quality,
    )
    post = None
    if postprocess is not None:
        post = FCOSPostprocess(
            score_thresh=float(postprocess["score_thresh"]),
            topk=int(postprocess["topk"]),
            nms_thresh=float(postprocess["nms_thresh"]),
            max_detections=int(postprocess["max_detections"]),
            thresh_with_ctr=bool(postprocess["thresh_with_ctr"]),
            legacy_conventions=bool(legacy_conventions),
        )
    return FCOSCore(int(num_classes), matcher, loss, post)


def build_fcos_core(
    cfg: CfgNode, strides: Sequence[int], num_classes: int, with_postprocess: bool = True
) -> FCOSCore:
    """
    The one reading of the algorithm's ``MODEL.FCOS`` keys (matching, losses, decoding) and
    ``TEST.DETECTIONS_PER_IMAGE``, for a head on levels of these ``strides``.
    """
    fcos = cfg.MODEL.FCOS
    postprocess = None
    if with_postprocess:
        postprocess = dict(
            score_thresh=fcos.SCORE_THRESH_TEST,
            topk=fcos.TOPK_CANDIDATES_TEST,
            nms_thresh=fcos.NMS_THRESH_TEST,
            max_detections=cfg.TEST.DETECTIONS_PER_IMAGE,
            thresh_with_ctr=fcos.THRESH_WITH_CTR,
        )
    return make_fcos_core(
        num_classes=num_classes,
        strides=strides,
        sizes_of_interest=fcos.SIZES_OF_INTEREST,
        center_sampling_radius=fcos.CENTER_SAMPLING_RADIUS,
        box_loss_type=fcos.BOX_LOSS_TYPE,
        focal_loss_alpha=fcos.FOCAL_LOSS_ALPHA,
        focal_loss_gamma=fcos.FOCAL_LOSS_GAMMA,
        box_quality=fcos.BOX_QUALITY,
        legacy_conventions=fcos.LEGACY_CONVENTIONS,
        postprocess=postprocess,
    )
