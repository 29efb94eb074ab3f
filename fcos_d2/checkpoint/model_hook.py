"""
The one place foreign checkpoint layouts are converted when weights are loaded: a
``load_state_dict`` pre-hook. fcos_d2's models install it on themselves, so that detectron2's own
``DetectionCheckpointer`` and ``DefaultPredictor`` (not only fcos_d2's checkpointer) accept
AdelaiDet, detectron2 and maskrcnn-benchmark FCOS checkpoints as they are.
"""

import logging
from typing import Dict

from torch import Tensor, nn

from .layouts import describe_layout, detect_layout, to_native

__all__ = ["install_foreign_checkpoint_hook", "native_state_dict"]

logger = logging.getLogger(__name__)


def native_state_dict(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """``state_dict`` with a foreign layout's keys converted to fcos_d2's (logged); a native one
    as it is."""
    layout = detect_layout(list(state_dict))
    if layout == "native":
        return state_dict
    logger.info(
        f"Recognised a {describe_layout(layout, list(state_dict))}; converting its keys to "
        "fcos_d2's."
    )
    return to_native(state_dict, layout)


def _foreign_keys_hook(module: nn.Module, state_dict: Dict[str, Tensor], prefix: str, *args):
    """
    Rename foreign keys in place before ``load_state_dict`` reads them. A tensor whose shape
    does not fit the model (e.g. another class count) is skipped with a warning naming the key
    and both shapes, so it is reported as missing (detectron2's fine-tuning convention).
    """
    own = [k for k in state_dict if k.startswith(prefix)]
    layout = detect_layout([k[len(prefix) :] for k in own])
    if layout == "native":
        return
    converted = native_state_dict({k[len(prefix) :]: state_dict.pop(k) for k in own})
    expected = module.state_dict()
    for key, value in converted.items():
        if key in expected and tuple(expected[key].shape) != tuple(value.shape):
            logger.warning(
                f"Skipped checkpoint tensor {key!r} ({layout} layout): shape "
                f"{tuple(value.shape)} in the checkpoint, {tuple(expected[key].shape)} in the "
                "model built from the config"
            )
            continue
        state_dict[prefix + key] = value


def install_foreign_checkpoint_hook(module: nn.Module) -> None:
    """Make ``module.load_state_dict`` (and so every detectron2 checkpointer) accept foreign
    layouts."""
    module.register_load_state_dict_pre_hook(_foreign_keys_hook)
