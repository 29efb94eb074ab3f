"""
timm backbones (any timm model with ``features_only``) under detectron2's FPN with FCOS's P6/P7.

timm is an optional extra (``pip install "fcos_d2[timm]"``): it is imported only when a timm
backbone is built or frozen, so ``import fcos_d2`` works without it.
"""

import math
import os
import socket
import urllib.parse
import urllib.request
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, FPN, Backbone
from torch import Tensor, nn

from ..config import TIMM_NORMS, check_top_block_config
from .backbone import build_fcos_fpn

__all__ = ["TimmBackbone", "build_timm_backbone", "build_fcos_timm_fpn_backbone", "feature_name"]

_INSTALL = (
    'MODEL.BACKBONE.NAME build_fcos_timm_fpn_backbone needs timm: pip install "fcos_d2[timm]"'
)


def _level(stride: int) -> Optional[int]:
    """log2 of ``stride`` when it is a power of 2, else None."""
    level = int(round(math.log2(stride))) if stride > 0 else -1
    return level if level >= 0 and 2**level == stride else None


def feature_name(stride: int) -> str:
    """The detectron2 ResNet name of the feature at ``stride`` (4 -> "res2", 32 -> "res5"), so
    that configs written for ResNets (``MODEL.FPN.IN_FEATURES``) work unchanged."""
    level = _level(stride)
    if level is None:
        raise ValueError(f"timm feature stride {stride} is not a power of 2")
    return f"res{level}"


def _import_timm():
    try:
        import timm
    except ImportError as e:
        raise ImportError(_INSTALL) from e
    return timm


class TimmBackbone(Backbone):
    """
    A detectron2 ``Backbone`` over an already-built timm ``features_only`` model, its outputs
    named by stride as detectron2's ResNet names them (:func:`feature_name`). Only the
    ``out_features`` asked for are returned (all of the model's, by default).
    """

    def __init__(self, model: nn.Module, out_features: Optional[Sequence[str]] = None):
        """
        Args:
            model: a timm model built with ``features_only=True`` (it has ``feature_info`` and
                returns the list of its ``feature_info.out_indices`` features).
            out_features: the names of the features to return; all of them when None.
        """
        super().__init__()
        self.model = model
        info = model.feature_info
        strides, channels = list(info.reduction()), list(info.channels())
        self._model_features = [feature_name(s) for s in strides]
        if len(set(self._model_features)) != len(strides):
            raise ValueError(f"timm model returns two features of one stride: {strides}")
        if out_features is None:
            out_features = self._model_features
        missing = [f for f in out_features if f not in self._model_features]
        if missing or not out_features:
            raise ValueError(
                f"out_features {list(out_features)}: {missing or 'empty'} not among the timm "
                f"model's {self._model_features}"
            )
        self._out_features = list(out_features)
        self._out_feature_strides = dict(zip(self._model_features, strides))
        self._out_feature_channels = dict(zip(self._model_features, channels))

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        features = self.model(x)
        return {
            name: f for name, f in zip(self._model_features, features) if name in self._out_features
        }

    @property
    def size_divisibility(self) -> int:
        # The features of consecutive strides line up (as FPN's top-down path needs) only on
        # inputs divisible by the coarsest stride the model computes.
        return max(self._out_feature_strides.values())

    @property
    def padding_constraints(self) -> Dict[str, int]:
        return {"size_divisibility": self.size_divisibility}

    def freeze_batchnorm(self) -> "TimmBackbone":
        """Every BatchNorm of the model frozen by timm's ``freeze_batch_norm_2d`` (statistics and
        affine fixed, for small per-GPU batches); it keeps the activation and drop of timm's
        fused BatchNormAct2d, which detectron2's FrozenBatchNorm2d conversion would lose."""
        from timm.layers import freeze_batch_norm_2d

        self.model = freeze_batch_norm_2d(self.model)
        return self

    def freeze(self, freeze_at: int = 0, key: str = "freeze_at") -> "TimmBackbone":
        """
        ``MODEL.BACKBONE.FREEZE_AT`` as detectron2's ResNet reads it: 0 nothing, 1 the stem (all
        the model runs before the stage of its stride-4 feature), k >= 2 the stem and the stages
        up to the one of the stride 2**k feature ("res{k}"). Frozen parts get no gradient and
        their BatchNorms are frozen (timm's ``freeze_batch_norm_2d``). ``key`` names the setting
        in errors.
        """
        if freeze_at <= 0:
            return self
        from timm.layers import freeze_batch_norm_2d

        units = self._units()
        for parent, name, unit in units[: self._frozen_unit_count(units, freeze_at, key)]:
            for p in unit.parameters():
                p.requires_grad_(False)
            frozen = freeze_batch_norm_2d(unit)
            if frozen is not unit:  # the unit is a norm layer itself (EfficientNet's bn1)
                parent.add_module(name, frozen)
        return self

    def _units(self) -> List[Tuple[nn.Module, str, nn.Module]]:
        """(parent, name, module) of the model's parts in the order they run: its children,
        with a Sequential child (EfficientNet's blocks) opened into its stages."""
        units = []
        for name, child in self.model.named_children():
            if isinstance(child, nn.Sequential):
                units += [(child, n, c) for n, c in child.named_children()]
            else:
                units.append((self.model, name, child))
        return units

    def _frozen_unit_count(
        self, units: List[Tuple[nn.Module, str, nn.Module]], k: int, key: str
    ) -> int:
        """How many of ``units`` (from the first) FREEZE_AT ``k`` freezes."""
        info = self.model.feature_info
        strides = [info.get("reduction", i) for i in range(len(info))]
        if k == 1:  # the stem: everything before the first stage of stride 4 or more
            index = next((i for i, s in enumerate(strides) if s >= 4), None)
        else:
            index = max((i for i, s in enumerate(strides) if s == 2**k), default=None)
        if index is None:
            raise ValueError(
                f"{key}={k}: the timm model has no feature of stride "
                f"{4 if k == 1 else 2 ** k} (its strides: {strides})"
            )
        module = self._feature_module(info.get("module", index), key)
        inside = {id(m) for m in module.modules()}
        span = [
            i
            for i, (_, _, unit) in enumerate(units)
            if id(unit) in inside or any(m is module for m in unit.modules())
        ]
        if not span:
            raise ValueError(f"{key}={k}: {module} is not part of the model")
        return span[0] if k == 1 else span[-1] + 1

    def _feature_module(self, name: str, key: str) -> nn.Module:
        # timm's FeatureListNet renames the modules it flattens ("stages.0" -> "stages_0");
        # EfficientNet's feature classes keep the names.
        for candidate in (name, name.replace(".", "_")):
            try:
                return self.model.get_submodule(candidate)
            except AttributeError:
                continue
        raise ValueError(f"{key}: no module {name!r} in the timm model")


def _feature_indices(timm, name: str, in_chans: int, key: str = "name") -> Dict[str, int]:
    """Feature name -> timm ``out_indices`` index of the model ``name`` (of a stride that
    appears twice, the deeper feature), read off a model built on the meta device."""

    def create(**kwargs):
        return timm.create_model(name, features_only=True, in_chans=in_chans, **kwargs)

    try:
        try:
            with torch.device("meta"):  # no memory, no initialisation: only feature_info is read
                probe = create()
        except (RuntimeError, NotImplementedError):  # a model whose __init__ needs real tensors
            probe = create()
    except (RuntimeError, ValueError, TypeError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{key}={name!r}: timm cannot build it features_only ({reason})") from None
    info = probe.feature_info
    indices = {}
    for i in range(len(info)):
        stride = info.get("reduction", i)
        if _level(stride) is not None:
            indices[feature_name(stride)] = i
    return indices


def _no_weights_message(name: str, key: Dict[str, str], reason: object) -> str:
    reason = str(reason).strip().splitlines()[0] if str(reason).strip() else type(reason).__name__
    return (
        f"{key['pretrained']}=True: timm's pretrained weights of {name!r} cannot be loaded "
        f"({reason}); give a local file of them in {key['pretrained_file']}, or set "
        f"{key['pretrained']} False (random weights, or a checkpoint in the weights)"
    )


def _check_hub_weights(timm, name: str, key: Dict[str, str], timeout: float = 3.0) -> None:
    """A one-line error within seconds when timm would have to download the weights of
    ``name`` and their host cannot be reached (timm and huggingface_hub retry for a minute)."""
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        return  # timm itself says there are no weights
    if cfg.hf_hub_id:
        from huggingface_hub import constants, try_to_load_from_cache

        repo = cfg.hf_hub_id.split("@")[0]
        files = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")
        if any(isinstance(try_to_load_from_cache(repo, f), str) for f in files):
            return
        if constants.HF_HUB_OFFLINE:
            raise ValueError(_no_weights_message(name, key, "HF_HUB_OFFLINE is set"))
        url = urllib.parse.urlparse(constants.ENDPOINT)
    elif cfg.url:
        cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(cfg.url))
        if os.path.isfile(cached):
            return
        url = urllib.parse.urlparse(cfg.url)
    else:
        return
    if urllib.request.getproxies():  # the download goes through a proxy: nothing to probe here
        return
    host, port = url.hostname, url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise ValueError(_no_weights_message(name, key, f"{host} unreachable: {e}")) from None


# The config key of each argument of build_timm_backbone, for the YAML builder's messages.
_YAML_KEYS = {
    "name": "MODEL.TIMM.NAME",
    "out_features": "MODEL.FPN.IN_FEATURES",
    "pretrained": "MODEL.TIMM.PRETRAINED",
    "pretrained_file": "MODEL.TIMM.PRETRAINED_FILE",
    "norm": "MODEL.TIMM.NORM",
    "freeze_at": "MODEL.BACKBONE.FREEZE_AT",
}


def build_timm_backbone(
    *,
    name: str,
    out_features: Sequence[str],
    pretrained: bool = False,
    pretrained_file: str = "",
    norm: str = "FrozenBN",
    freeze_at: int = 0,
    in_chans: int = 3,
    keys: Optional[Dict[str, str]] = None,
) -> TimmBackbone:
    """
    The timm model ``name`` (``features_only``, the features ``out_features``: "res3" = stride
    8, ...) as a :class:`TimmBackbone`; the builder of LazyConfig configs
    (``bottom_up=L(build_timm_backbone)(name="convnext_tiny", out_features=[...])``) and of
    :func:`build_fcos_timm_fpn_backbone`.

    Args:
        pretrained: timm's pretrained weights (its hub), or with ``pretrained_file`` a local
            file of them.
        norm: "FrozenBN" (every BatchNorm frozen, timm's ``freeze_batch_norm_2d``) or "".
        freeze_at: as ``MODEL.BACKBONE.FREEZE_AT`` (:meth:`TimmBackbone.freeze`).
        keys: the config key naming each argument in error messages (default: the argument).
    """
    key = {**{k: k for k in _YAML_KEYS}, **(keys or {})}
    if norm not in TIMM_NORMS:
        raise ValueError(f"{key['norm']}={norm!r} is not one of {list(TIMM_NORMS)}")
    timm = _import_timm()
    if not name or not timm.is_model(name):
        raise ValueError(
            f"{key['name']}={name!r} is not a timm model (timm.list_models() lists them)"
        )
    if pretrained_file and not pretrained:
        raise ValueError(
            f"{key['pretrained_file']}={pretrained_file!r} is read only with "
            f"{key['pretrained']} True"
        )
    if pretrained and pretrained_file and not os.path.isfile(pretrained_file):
        raise ValueError(f"{key['pretrained_file']}={pretrained_file!r}: no such file")
    indices = _feature_indices(timm, name, in_chans, key["name"])
    wanted = list(out_features)
    missing = [f for f in wanted if f not in indices]
    if missing:
        raise ValueError(
            f"{key['out_features']}={wanted}: {missing} not produced by timm model "
            f"{name!r}, whose features are {list(indices)}"
        )
    kwargs: Dict = {"pretrained": bool(pretrained)}
    if pretrained and pretrained_file:
        kwargs["pretrained_cfg_overlay"] = {"file": pretrained_file}
    kwargs["out_indices"] = sorted(indices[f] for f in wanted)
    if pretrained and not pretrained_file:
        _check_hub_weights(timm, name, key)
    try:
        model = timm.create_model(name, features_only=True, in_chans=in_chans, **kwargs)
    except (OSError, RuntimeError) as e:  # huggingface_hub's and urllib's errors are OSErrors
        raise ValueError(_no_weights_message(name, key, e)) from None
    bottom_up = TimmBackbone(model, wanted)
    if norm == "FrozenBN":
        bottom_up.freeze_batchnorm()
    return bottom_up.freeze(freeze_at, key["freeze_at"])


@BACKBONE_REGISTRY.register()
def build_fcos_timm_fpn_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> FPN:
    """
    The timm model ``MODEL.TIMM.NAME`` (features_only, the strides of ``MODEL.FPN.IN_FEATURES``)
    + detectron2's FPN with P6/P7 from ``MODEL.FCOS.TOP_BLOCK_IN_FEATURE``, as
    :func:`~fcos_d2.modeling.backbone.build_fcos_resnet_fpn_backbone` builds on a ResNet.
    ``MODEL.BACKBONE.FREEZE_AT`` freezes its stem and first stages, ``MODEL.TIMM.NORM``
    "FrozenBN" all its BatchNorms.
    """
    check_top_block_config(cfg)
    spec = cfg.MODEL.TIMM
    wanted = list(cfg.MODEL.FPN.IN_FEATURES)
    keys = dict(_YAML_KEYS)
    # Weights MODEL.WEIGHTS loads replace the backbone's: no download needed then (export,
    # evaluation, resuming on an offline machine).
    pretrained = bool(spec.PRETRAINED) and not cfg.MODEL.WEIGHTS
    if cfg.MODEL.FCOS.TOP_BLOCK_IN_FEATURE == "res5" and "res5" not in wanted:
        wanted.append("res5")  # P6 from C5
        keys["out_features"] = "MODEL.FPN.IN_FEATURES (+ 'res5' of TOP_BLOCK_IN_FEATURE)"
    bottom_up = build_timm_backbone(
        name=spec.NAME,
        out_features=wanted,
        pretrained=pretrained,
        # the file is read with timm's weights only; named in an error without PRETRAINED
        pretrained_file=spec.PRETRAINED_FILE if pretrained or not spec.PRETRAINED else "",
        norm=spec.NORM,
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
        in_chans=input_shape.channels,
        keys=keys,
    )
    return build_fcos_fpn(cfg, bottom_up)
