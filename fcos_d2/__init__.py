"""
fcos_d2: FCOS as a Detectron2 extension. ``import fcos_d2`` registers the ``FCOS``
meta-architecture, the ``FCOS`` proposal generator and the ``build_fcos_resnet_fpn_backbone`` and
``build_fcos_timm_fpn_backbone`` backbones, and nothing else (no dataset, no trainer, no timm);
``add_fcos_config(cfg)`` adds the ``MODEL.FCOS`` and ``MODEL.TIMM`` keys.
"""

import warnings

with warnings.catch_warnings():
    # detectron2 and fvcore script a few helpers when imported, which torch 2.14 warns about at
    # every start; nothing fcos_d2's users can act on.
    warnings.filterwarnings("ignore", r"`torch\.jit\.script` is deprecated", FutureWarning)
    from .config import add_fcos_config, load_config
    from .modeling import FCOS, FCOSHead, build_fcos_resnet_fpn_backbone

__version__ = "0.1.0"
__all__ = ["add_fcos_config", "load_config", "FCOS", "FCOSHead", "build_fcos_resnet_fpn_backbone"]
__all__ += ["Predictor", "check_image"]


def __getattr__(name: str):
    # The predictor imports detectron2's engine; only who uses it pays for that import.
    if name in ("Predictor", "check_image"):
        from . import predictor

        return getattr(predictor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
