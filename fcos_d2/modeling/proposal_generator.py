"""
FCOS as the region-proposal generator of detectron2's two-stage models (``GeneralizedRCNN``,
``ProposalNetwork``): ``MODEL.PROPOSAL_GENERATOR.NAME: "FCOS"``.

The FCOS head with one foreground class, FCOS's matching and losses, and proposals as detectron2's
RPN returns them (``proposal_boxes``, ``objectness_logits``).

Shape shorthand: N images, L levels, Ri locations of level i, R locations over all levels,
k proposals kept per image.
"""

import warnings
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode, configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import PROPOSAL_GENERATOR_REGISTRY
from detectron2.modeling.meta_arch.dense_detector import permute_to_N_HWA_K
from detectron2.modeling.proposal_generator.proposal_utils import find_top_rpn_proposals
from detectron2.structures import ImageList, Instances
from torch import Tensor, nn

from ..config import check_fcos_config
from .core import FCOSCore, Predictions, build_fcos_core
from .head import FCOSHead
from .postprocess import decode_boxes
from .targets import compute_locations

__all__ = [
    "FCOSProposalGenerator",
    "build_fcos_proposal_generator",
    "proposal_objectness_logits",
]


def proposal_objectness_logits(cls_logits: Tensor, quality_logits: Tensor) -> Tensor:
    """
    Log-odds of FCOS's score p = sqrt(sigmoid(cls) * sigmoid(ctr)), elementwise: the proposal's
    ``objectness_logits``, ordered as the score is and finite for any finite input.
    """
    log_p = 0.5 * (F.logsigmoid(cls_logits) + F.logsigmoid(quality_logits))
    log_p = log_p.clamp(max=-1e-7)  # p = 1 would give an infinite logit
    return log_p - torch.log1p(-torch.exp(log_p))


class FCOSProposalGenerator(nn.Module):
    """
    Class-agnostic FCOS: each location of each level scores "object" (one sigmoid classifier),
    regresses (l, t, r, b) and predicts centre-ness; proposals are ranked by
    sqrt(objectness * centre-ness). Matching and losses are the detector's
    (:class:`~fcos_d2.modeling.core.FCOSCore` with one class). Per image: the ``pre_nms_topk``
    best locations of each level, decoded, clipped to the image, boxes smaller than
    ``min_box_size`` dropped, one NMS over all levels (FCOS's; detectron2's RPN runs it per
    level), the best ``post_nms_topk`` kept. In training, proposals are returned too (without
    gradient), as the ROI heads need them.
    """

    @configurable
    def __init__(
        self,
        *,
        in_features: List[str],
        head: nn.Module,
        core: FCOSCore,
        pre_nms_topk: Tuple[int, int],
        post_nms_topk: Tuple[int, int],
        nms_thresh: float,
        min_box_size: float,
        loss_weight: float,
    ):
        """
        Args:
            in_features: backbone features the head runs on, finest first.
            head: maps those features to (logits, box_reg, quality_logits) per level, shaped
                (N, 1, Hi, Wi), (N, 4, Hi, Wi) in strides, (N, 1, Hi, Wi) (an FCOSHead with one
                class).
            core: FCOS's matching and losses for one class, at the strides of ``in_features``.
            pre_nms_topk, post_nms_topk: (training, inference) counts; pre-NMS per level.
            nms_thresh, min_box_size: of the proposals' NMS, and the smallest side kept.
            loss_weight: multiplies every loss.
        """
        super().__init__()
        if core.num_classes != 1:
            raise ValueError(f"the proposal generator's core has {core.num_classes} classes, not 1")
        self.in_features = list(in_features)
        self.head = head
        self.core = core
        self.pre_nms_topk = {True: pre_nms_topk[0], False: pre_nms_topk[1]}
        self.post_nms_topk = {True: post_nms_topk[0], False: post_nms_topk[1]}
        self.nms_thresh = nms_thresh
        self.min_box_size = min_box_size
        self.loss_weight = loss_weight

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: Dict[str, ShapeSpec]) -> Dict:
        fcos, rpn = cfg.MODEL.FCOS, cfg.MODEL.RPN
        check_fcos_config(cfg, list(input_shape))
        if fcos.LOSS_NORMALIZER_CLS != "fg":
            raise ValueError(
                f"MODEL.FCOS.LOSS_NORMALIZER_CLS={fcos.LOSS_NORMALIZER_CLS!r}: the FCOS proposal "
                "generator supports only 'fg'"
            )
        shapes = [input_shape[f] for f in fcos.IN_FEATURES]
        head_args = FCOSHead.from_config(cfg, shapes)
        head_args["num_classes"] = 1  # class-agnostic: one "object" classifier
        strides = [s.stride for s in shapes]
        return {
            "in_features": list(fcos.IN_FEATURES),
            "head": FCOSHead(**head_args),
            "core": build_fcos_core(cfg, strides, num_classes=1, with_postprocess=False),
            "pre_nms_topk": (rpn.PRE_NMS_TOPK_TRAIN, rpn.PRE_NMS_TOPK_TEST),
            "post_nms_topk": (rpn.POST_NMS_TOPK_TRAIN, rpn.POST_NMS_TOPK_TEST),
            "nms_thresh": rpn.NMS_THRESH,
            "min_box_size": cfg.MODEL.PROPOSAL_GENERATOR.MIN_SIZE,
            "loss_weight": rpn.LOSS_WEIGHT,
        }

    @property
    def strides(self) -> List[int]:
        return list(self.core.strides)

    def forward(
        self,
        images: ImageList,
        features: Dict[str, Tensor],
        gt_instances: Optional[List[Instances]] = None,
    ) -> Tuple[List[Instances], Dict[str, Tensor]]:
        """
        Returns:
            N Instances with ``proposal_boxes`` (Boxes, XYXY in input pixels, clipped) and
            ``objectness_logits`` (see :func:`proposal_objectness_logits`), best first; and the
            losses (training only) ``loss_fcos_rpn_cls``, ``loss_fcos_rpn_loc`` and
            ``loss_fcos_rpn_ctr`` (``loss_fcos_rpn_iou`` with ``BOX_QUALITY: "iou"``).
        """
        feats = [features[f] for f in self.in_features]
        predictions = self.head(feats)
        sizes = [tuple(f.shape[-2:]) for f in feats]
        losses = {}
        if self.training:
            if gt_instances is None:
                raise ValueError("FCOS proposal generator: training needs gt_instances")
            losses = self.losses(sizes, predictions, gt_instances)
        proposals = self.predict_proposals(sizes, *predictions, images.image_sizes)
        return proposals, losses

    def losses(
        self,
        sizes: List[Tuple[int, int]],
        predictions: Predictions,
        gt_instances: List[Instances],
    ) -> Dict[str, Tensor]:
        """FCOS's losses with every ground-truth box of class 0, renamed loss_fcos_rpn_*."""
        device = predictions[0][0].device
        labels, reg_targets = self.core.targets(sizes, gt_instances, device)
        losses = self.core.loss(predictions, labels, reg_targets)
        return {
            name.replace("loss_fcos_", "loss_fcos_rpn_"): value * self.loss_weight
            for name, value in losses.items()
        }

    @torch.no_grad()
    def predict_proposals(
        self,
        sizes: List[Tuple[int, int]],
        logits: List[Tensor],
        box_reg: List[Tensor],
        ctr: List[Tensor],
        image_sizes: List[Tuple[int, int]],
    ) -> List[Instances]:
        """Per level (N, 1, Hi, Wi), (N, 4, Hi, Wi), (N, 1, Hi, Wi) -> N proposal Instances."""
        locations = compute_locations(sizes, self.strides, logits[0].device)
        pre_nms_topk = self.pre_nms_topk[self.training]
        boxes, scores = [], []
        for loc, stride, cls_l, reg_l, ctr_l in zip(locations, self.strides, logits, box_reg, ctr):
            objectness = proposal_objectness_logits(cls_l.flatten(1), ctr_l.flatten(1)).float()
            top, idx = objectness.topk(min(pre_nms_topk, objectness.shape[1]), dim=1)  # (N, k)
            dist = permute_to_N_HWA_K(reg_l, 4).float()  # (N, Ri, 4)
            dist = dist.gather(1, idx[..., None].expand(-1, -1, 4)) * stride
            level_boxes = decode_boxes(loc[idx].flatten(0, 1), dist.flatten(0, 1))
            boxes.append(level_boxes.view(*idx.shape, 4))
            scores.append(top)
        boxes, scores = torch.cat(boxes, dim=1), torch.cat(scores, dim=1)
        # One "level" holding every level's candidates: one NMS across levels.
        return find_top_rpn_proposals(
            [boxes],
            [scores],
            image_sizes,
            self.nms_thresh,
            scores.shape[1],
            self.post_nms_topk[self.training],
            self.min_box_size,
            self.training,
        )


def build_fcos_proposal_generator(
    cfg: CfgNode, input_shape: Dict[str, ShapeSpec]
) -> FCOSProposalGenerator:
    """``MODEL.PROPOSAL_GENERATOR.NAME: "FCOS"``: builds :class:`FCOSProposalGenerator`."""
    return FCOSProposalGenerator(cfg, input_shape)


# detectron2's registries name an entry by its ``__name__``: "FCOS" is the name configs give (as
# AdelaiDet's do), while the Python name ``FCOS`` belongs to the meta-architecture class.
build_fcos_proposal_generator.__name__ = "FCOS"
PROPOSAL_GENERATOR_REGISTRY.register(build_fcos_proposal_generator)


def __getattr__(name: str) -> Any:
    if name == "FCOS":  # the builder's name in the previous release
        warnings.warn(
            "fcos_d2.modeling.proposal_generator.FCOS is now build_fcos_proposal_generator",
            DeprecationWarning,
            stacklevel=2,
        )
        return build_fcos_proposal_generator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
