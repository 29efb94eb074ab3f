"""The ``MODEL.FCOS`` and ``MODEL.TIMM`` config subtrees (and ``SOLVER.OPTIMIZER``)."""

from typing import Optional, Sequence

from detectron2.config import CfgNode as CN

__all__ = [
    "add_fcos_config",
    "check_values",
    "check_fcos_config",
    "check_top_block_config",
    "FCOS_CHOICES",
    "INPUT_FORMATS",
    "TIMM_NORMS",
]


def add_fcos_config(cfg: CN) -> None:
    """
    Add the ``MODEL.FCOS`` keys, the ``MODEL.TIMM`` keys (timm backbones) and
    ``SOLVER.OPTIMIZER`` to ``cfg`` (in place). Nothing else in ``cfg`` is changed.
    Defaults reproduce the AdelaiDet ``FCOS_R_50_1x`` recipe (38.7 AP, AdelaiDet's number).
    """
    _C = cfg
    _C.MODEL.FCOS = CN()
    # Number of foreground classes (one sigmoid classifier each; there is no background channel).
    _C.MODEL.FCOS.NUM_CLASSES = 80
    # Backbone features the head runs on, finest first.
    _C.MODEL.FCOS.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    # Number of conv(3x3)-norm-ReLU blocks in the classification tower.
    _C.MODEL.FCOS.NUM_CLS_CONVS = 4
    # Number of conv(3x3)-norm-ReLU blocks in the box tower (which also feeds centre-ness).
    _C.MODEL.FCOS.NUM_BOX_CONVS = 4
    # Number of blocks shared by both towers, run before them.
    _C.MODEL.FCOS.NUM_SHARE_CONVS = 0
    # Normalisation in the towers: "GN" (32 groups), "BN" (one BatchNorm per level) or "".
    _C.MODEL.FCOS.NORM = "GN"
    # Multiply each level's box regression by a learnable scalar (initialised to 1).
    _C.MODEL.FCOS.USE_SCALE = True
    # Prior probability of foreground used to initialise the classification bias.
    _C.MODEL.FCOS.PRIOR_PROB = 0.01
    # Boundaries between the size ranges of consecutive levels, in pixels (one fewer than levels).
    _C.MODEL.FCOS.SIZES_OF_INTEREST = [64, 128, 256, 512]
    # Centre sampling radius in units of the level's stride; 0 = any location inside the box.
    _C.MODEL.FCOS.CENTER_SAMPLING_RADIUS = 1.5
    # Box regression loss: "iou", "linear_iou" or "giou".
    _C.MODEL.FCOS.BOX_LOSS_TYPE = "giou"
    # Sigmoid focal loss: weight of the positive term.
    _C.MODEL.FCOS.FOCAL_LOSS_ALPHA = 0.25
    # Sigmoid focal loss: focusing exponent.
    _C.MODEL.FCOS.FOCAL_LOSS_GAMMA = 2.0
    # Inference: minimum classification probability of a candidate (location, class) pair.
    _C.MODEL.FCOS.SCORE_THRESH_TEST = 0.05
    # Inference: apply SCORE_THRESH_TEST to cls * centre-ness instead of cls alone.
    _C.MODEL.FCOS.THRESH_WITH_CTR = False
    # Inference: candidates kept per level and image before NMS (best by cls * centre-ness).
    _C.MODEL.FCOS.TOPK_CANDIDATES_TEST = 1000
    # Inference: IoU threshold of the class-wise NMS.
    _C.MODEL.FCOS.NMS_THRESH_TEST = 0.6
    # What the third branch predicts: "ctrness" (centre-ness; box loss weighted by its target) or
    # "iou" (IoU of the decoded box with its target, as AdelaiDet's *_iou models; loss_fcos_iou).
    _C.MODEL.FCOS.BOX_QUALITY = "ctrness"
    # Classification loss normaliser: "fg" (positives, averaged over workers) or "moving_fg"
    # (an EMA of that, momentum 0.9, starting at 100).
    _C.MODEL.FCOS.LOSS_NORMALIZER_CLS = "fg"
    # Deformable convolution (torchvision DeformConv2d, modulated) as the last conv of the
    # classification and box towers (AdelaiDet's USE_DEFORMABLE).
    _C.MODEL.FCOS.USE_DEFORMABLE = False
    # Run backbone and head in channels_last memory format where it was measured faster: on GPUs,
    # for CPU inference, and for CPU training on CPUs with AVX-512 (NCHW trains faster on AVX2-only
    # CPUs). Results equal up to float rounding; the weights keep their layout either way.
    _C.MODEL.FCOS.CHANNELS_LAST = True
    # Fold each FrozenBatchNorm2d of the backbone into the conv before it (one conv with scaled
    # weights instead of conv + affine pass; same results up to float rounding, same checkpoints).
    _C.MODEL.FCOS.FOLD_FROZEN_BN = True
    # With FOLD_FROZEN_BN, CPU float32 inference runs each ResNet (bottleneck) conv with the ReLU or
    # residual add after it as one oneDNN call, adding into the shortcut's memory: one pass over
    # the activations fewer per conv and no fresh buffer for the largest maps. Same operations,
    # results equal up to float rounding.
    _C.MODEL.FCOS.FUSE_RESNET_BLOCKS = True
    # Float32 training on a CPU: compute the 3 x 3 convolutions of 256 channels or more on enough
    # pixels (the FPN's and the head towers' on P3/P4, ResNet's res4) as Winograd F(4x4, 3x3),
    # measured faster there; results equal up to float rounding (~1e-5 of their scale). GPUs,
    # inference and bfloat16 are untouched.
    _C.MODEL.FCOS.WINOGRAD = True
    # Inference precision of backbone and head: "float32" (exact), "bfloat16" or "float16"
    # (autocast); decoding, thresholds and NMS always run in float32.
    _C.MODEL.FCOS.INFERENCE_DTYPE = "float32"
    # Training precision of backbone and head: "float32" or "bfloat16" (autocast; faster where
    # the CPU or GPU has bfloat16 units; weights, gradients, matching and losses stay float32).
    _C.MODEL.FCOS.TRAIN_DTYPE = "float32"
    # Source of P6/P7: "p5" (FPN output, FCOS default), "res5" (backbone C5) or "" (no P6/P7).
    _C.MODEL.FCOS.TOP_BLOCK_IN_FEATURE = "p5"
    # Inference: a JSON file of per-class score thresholds (python -m fcos_d2.analyze results
    # writes one: the best-F1 threshold of each class); detections scoring below their class's
    # threshold are dropped after the NMS. "" = none.
    _C.MODEL.FCOS.CLASS_THRESHOLDS_FILE = ""
    # The original FCOS's (maskrcnn-benchmark's) conventions, for its checkpoints
    # (configs/compat/Official-*): box areas (x1 - x0 + 1) * (y1 - y0 + 1) in the min-area
    # matching and the NMS, boxes clipped to (w - 1, h - 1) before the NMS and none dropped after
    # it, frozen BatchNorm without epsilon. Off: AdelaiDet's conventions.
    _C.MODEL.FCOS.LEGACY_CONVENTIONS = False
    # The timm backbone of MODEL.BACKBONE.NAME "build_fcos_timm_fpn_backbone" (pip install
    # "fcos_d2[timm]"); its features are the strides of MODEL.FPN.IN_FEATURES (stride 8 = "res3",
    # as detectron2's ResNet names them) and MODEL.BACKBONE.FREEZE_AT freezes its first stages.
    _C.MODEL.TIMM = CN()
    # timm model name (timm.list_models(); any model with features_only), e.g. "convnext_tiny".
    _C.MODEL.TIMM.NAME = ""
    # Start from timm's pretrained weights (its default tag; downloaded from timm's hub once).
    # Not loaded when MODEL.WEIGHTS is set: those weights replace them anyway.
    _C.MODEL.TIMM.PRETRAINED = False
    # A local file of those weights (the timm model's state dict), for machines without network
    # (timm's pretrained_cfg_overlay file); "" = timm's hub. Needs PRETRAINED True.
    _C.MODEL.TIMM.PRETRAINED_FILE = ""
    # "FrozenBN": every BatchNorm frozen (timm's freeze_batch_norm_2d, for small per-GPU batches)
    # or "": the model's norms as they are (frozen in the FREEZE_AT stages only).
    _C.MODEL.TIMM.NORM = "FrozenBN"
    if "OPTIMIZER" not in _C.SOLVER:  # a project that defines it (Panoptic-DeepLab) keeps its own
        # fcos_d2's trainer (train_net.py): "SGD" (detectron2's, with SOLVER.MOMENTUM) or "ADAMW"
        # (decoupled SOLVER.WEIGHT_DECAY); detectron2's DefaultTrainer always uses SGD.
        _C.SOLVER.OPTIMIZER = "SGD"


# Allowed values of the choice keys of ``MODEL.FCOS``: the one list users and the code read.
FCOS_CHOICES = {
    "NORM": ("GN", "BN", "SyncBN", ""),
    "BOX_LOSS_TYPE": ("iou", "linear_iou", "giou"),
    "BOX_QUALITY": ("ctrness", "iou"),
    "LOSS_NORMALIZER_CLS": ("fg", "moving_fg"),
    "INFERENCE_DTYPE": ("float32", "bfloat16", "float16"),
    # No float16: without loss scaling its gradients underflow (detectron2's SOLVER.AMP does that
    # on CUDA); bfloat16 has float32's range.
    "TRAIN_DTYPE": ("float32", "bfloat16"),
    "TOP_BLOCK_IN_FEATURE": ("p5", "res5", ""),
}

# Allowed values of MODEL.TIMM.NORM.
TIMM_NORMS = ("FrozenBN", "")

# Channel orders of INPUT.FORMAT an FCOS model (its 3-channel pixel mean) can take.
INPUT_FORMATS = ("BGR", "RGB")

# (key, test, what the value must be) for the numeric keys.
_RANGES = (
    ("NUM_CLASSES", lambda v: v >= 1, "at least 1"),
    ("NUM_CLS_CONVS", lambda v: v >= 0, "at least 0"),
    ("NUM_BOX_CONVS", lambda v: v >= 0, "at least 0"),
    ("NUM_SHARE_CONVS", lambda v: v >= 0, "at least 0"),
    ("PRIOR_PROB", lambda v: 0 < v < 1, "in (0, 1)"),
    ("CENTER_SAMPLING_RADIUS", lambda v: v >= 0, "at least 0"),
    ("FOCAL_LOSS_GAMMA", lambda v: v >= 0, "at least 0"),
    ("SCORE_THRESH_TEST", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("TOPK_CANDIDATES_TEST", lambda v: v >= 1, "at least 1"),
    ("NMS_THRESH_TEST", lambda v: 0 <= v <= 1, "in [0, 1]"),
)


# Argument names of the modules (LazyConfig configs) whose MODEL.FCOS key is named otherwise.
_ARGUMENT_KEYS = {
    "score_thresh": "SCORE_THRESH_TEST",
    "topk": "TOPK_CANDIDATES_TEST",
    "nms_thresh": "NMS_THRESH_TEST",
}
_RANGE_OF = {key: (ok, what) for key, ok, what in _RANGES}


def _check_value(name: str, key: str, value) -> None:
    """One-line ``ValueError`` naming ``name`` when ``value`` of ``MODEL.FCOS`` key ``key`` is
    outside its :data:`FCOS_CHOICES` or its range: the one check of both config kinds."""
    if key in FCOS_CHOICES and value not in FCOS_CHOICES[key]:
        raise ValueError(f"{name}={value!r} is not one of {list(FCOS_CHOICES[key])}")
    if key in _RANGE_OF and not _RANGE_OF[key][0](value):
        raise ValueError(f"{name}={value!r} must be {_RANGE_OF[key][1]}")


def check_values(**values) -> None:
    """:func:`check_fcos_config`'s choice and range rules for module arguments, named by their
    lower-case ``MODEL.FCOS`` key (``score_thresh``, ``topk``, ``nms_thresh``: the ``*_TEST``
    keys), as LazyConfig configs pass them."""
    for name, value in values.items():
        _check_value(name, _ARGUMENT_KEYS.get(name, name.upper()), value)


def _check_key(fcos: CN, key: str) -> None:
    _check_value(f"MODEL.FCOS.{key}", key, fcos[key])


def check_top_block_config(cfg: CN) -> None:
    """The part of :func:`check_fcos_config` the backbone builder needs: where P6/P7 come
    from."""
    _check_key(cfg.MODEL.FCOS, "TOP_BLOCK_IN_FEATURE")
    source = cfg.MODEL.FCOS.TOP_BLOCK_IN_FEATURE
    if source == "res5" and "res5" not in cfg.MODEL.RESNETS.OUT_FEATURES:
        raise ValueError(
            "MODEL.FCOS.TOP_BLOCK_IN_FEATURE='res5' needs 'res5' in MODEL.RESNETS.OUT_FEATURES="
            f"{list(cfg.MODEL.RESNETS.OUT_FEATURES)}"
        )


def check_fcos_config(cfg: CN, backbone_features: Optional[Sequence[str]] = None) -> None:
    """
    Raise a one-line ``ValueError`` naming key, value and what is allowed for any ``MODEL.FCOS``
    value the model cannot be built with. ``backbone_features``: the features the built backbone
    produces; with them ``IN_FEATURES`` and the level count of ``SIZES_OF_INTEREST`` are checked
    too (before the backbone exists only the values that it needs are).
    """
    fcos = cfg.MODEL.FCOS
    for key in list(FCOS_CHOICES) + list(_RANGE_OF):
        _check_key(fcos, key)
    check_top_block_config(cfg)
    if cfg.INPUT.FORMAT not in INPUT_FORMATS:
        raise ValueError(f"INPUT.FORMAT={cfg.INPUT.FORMAT!r} is not one of {list(INPUT_FORMATS)}")
    if fcos.LEGACY_CONVENTIONS and (cfg.MODEL.META_ARCHITECTURE != "FCOS" or cfg.TEST.AUG.ENABLED):
        raise ValueError(
            "MODEL.FCOS.LEGACY_CONVENTIONS=True reproduces the original FCOS detector only: not "
            f"with MODEL.META_ARCHITECTURE={cfg.MODEL.META_ARCHITECTURE!r} or TEST.AUG.ENABLED="
            f"{cfg.TEST.AUG.ENABLED} (test-time augmentation merges with fcos_d2's conventions)"
        )
    if backbone_features is None:
        return
    missing = [f for f in fcos.IN_FEATURES if f not in backbone_features]
    if missing or not fcos.IN_FEATURES:
        raise ValueError(
            f"MODEL.FCOS.IN_FEATURES={list(fcos.IN_FEATURES)}: {missing or 'empty'} not produced "
            f"by the backbone, which gives {list(backbone_features)}"
        )
    num_levels = len(fcos.IN_FEATURES)
    if len(fcos.SIZES_OF_INTEREST) != num_levels - 1:
        raise ValueError(
            f"MODEL.FCOS.SIZES_OF_INTEREST={list(fcos.SIZES_OF_INTEREST)} has "
            f"{len(fcos.SIZES_OF_INTEREST)} values; the {num_levels} levels of "
            f"MODEL.FCOS.IN_FEATURES need {num_levels - 1}"
        )
