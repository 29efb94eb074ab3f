"""
Checkpoint key layouts of other FCOS implementations, and their conversion to fcos_d2's.

Formats: "native" (fcos_d2), "adelaidet" (AdelaiDet's OneStageDetector + FCOS proposal generator),
"d2" (detectron2's built-in ``meta_arch.fcos.FCOS``), "official" (maskrcnn-benchmark FCOS).
Conversion is by key name only; tensors are never changed.
"""

import logging
import re
from typing import Dict, Iterable, List, Mapping, Tuple

from torch import Tensor, nn

__all__ = [
    "FORMATS",
    "detect_format",
    "to_native",
    "from_native",
    "install_foreign_checkpoint_hook",
]

logger = logging.getLogger(__name__)

FORMATS = ("adelaidet", "d2", "official")

# Renaming rules per format: regex -> template (``re.Match.expand`` syntax). In templates, <N>
# and >N< stand for group N plus / minus one: maskrcnn-benchmark numbers ResNet stages and FPN
# levels one lower than detectron2 (res2 = layer1, fpn_lateral3 = fpn_inner2).
_B, _R = r"backbone\.bottom_up\.", r"backbone\.body\."
_TO_FOREIGN: Dict[str, List[Tuple[str, str]]] = {
    "adelaidet": [(r"head\.(.*)", r"proposal_generator.fcos_head.\1")],
    "d2": [
        (r"head\.cls_tower\.(.*)", r"head.cls_subnet.\1"),
        (r"head\.bbox_tower\.(.*)", r"head.bbox_subnet.\1"),
        (r"head\.cls_logits\.(.*)", r"head.cls_score.\1"),
    ],
    "official": [
        (_B + r"stem\.conv1\.norm\.(.*)", r"backbone.body.stem.bn1.\1"),
        (_B + r"stem\.conv1\.(.*)", r"backbone.body.stem.conv1.\1"),
        (_B + r"res(\d)\.(\d+)\.conv(\d)\.norm\.(.*)", r"backbone.body.layer>1<.\2.bn\3.\4"),
        (_B + r"res(\d)\.(\d+)\.conv(\d)\.(.*)", r"backbone.body.layer>1<.\2.conv\3.\4"),
        (
            _B + r"res(\d)\.(\d+)\.shortcut\.norm\.(.*)",
            r"backbone.body.layer>1<.\2.downsample.1.\3",
        ),
        (_B + r"res(\d)\.(\d+)\.shortcut\.(.*)", r"backbone.body.layer>1<.\2.downsample.0.\3"),
        (r"backbone\.fpn_lateral(\d)\.(.*)", r"backbone.fpn.fpn_inner>1<.\2"),
        (r"backbone\.fpn_output(\d)\.(.*)", r"backbone.fpn.fpn_layer>1<.\2"),
        (r"backbone\.top_block\.(.*)", r"backbone.fpn.top_blocks.\1"),
        (r"head\.ctrness\.(.*)", r"rpn.head.centerness.\1"),
        (r"head\.(.*)", r"rpn.head.\1"),
    ],
}
_TO_NATIVE: Dict[str, List[Tuple[str, str]]] = {
    "adelaidet": [(r"proposal_generator\.fcos_head\.(.*)", r"head.\1")],
    "d2": [
        (r"head\.cls_subnet\.(.*)", r"head.cls_tower.\1"),
        (r"head\.bbox_subnet\.(.*)", r"head.bbox_tower.\1"),
        (r"head\.cls_score\.(.*)", r"head.cls_logits.\1"),
    ],
    "official": [
        (_R + r"stem\.bn1\.(.*)", r"backbone.bottom_up.stem.conv1.norm.\1"),
        (_R + r"stem\.conv1\.(.*)", r"backbone.bottom_up.stem.conv1.\1"),
        (_R + r"layer(\d)\.(\d+)\.bn(\d)\.(.*)", r"backbone.bottom_up.res<1>.\2.conv\3.norm.\4"),
        (_R + r"layer(\d)\.(\d+)\.conv(\d)\.(.*)", r"backbone.bottom_up.res<1>.\2.conv\3.\4"),
        (
            _R + r"layer(\d)\.(\d+)\.downsample\.1\.(.*)",
            r"backbone.bottom_up.res<1>.\2.shortcut.norm.\3",
        ),
        (
            _R + r"layer(\d)\.(\d+)\.downsample\.0\.(.*)",
            r"backbone.bottom_up.res<1>.\2.shortcut.\3",
        ),
        (r"backbone\.fpn\.fpn_inner(\d)\.(.*)", r"backbone.fpn_lateral<1>.\2"),
        (r"backbone\.fpn\.fpn_layer(\d)\.(.*)", r"backbone.fpn_output<1>.\2"),
        (r"backbone\.fpn\.top_blocks\.(.*)", r"backbone.top_block.\1"),
        (r"rpn\.head\.centerness\.(.*)", r"head.ctrness.\1"),
        (r"rpn\.head\.(.*)", r"head.\1"),
    ],
}

# Keys of each format that only it has (used to recognise it).
_SIGNATURES = {
    "adelaidet": ("proposal_generator.fcos_head.",),
    "d2": ("head.cls_subnet.", "head.cls_score.", "head.bbox_subnet."),
    "official": ("rpn.head.", "backbone.body.", "backbone.fpn.fpn_inner"),
}
# Buffers other detectors saved that fcos_d2 does not keep in its state dict.
_DROP = ("pixel_mean", "pixel_std")


def detect_format(keys: Iterable[str]) -> str:
    """The format of a checkpoint from its key names (``module.`` prefixes ignored)."""
    keys = [_strip_module(k) for k in keys]
    for fmt, prefixes in _SIGNATURES.items():
        if any(k.startswith(prefixes) for k in keys):
            return fmt
    return "native"


def _rename(rules: List[Tuple[str, str]], key: str) -> str:
    for pattern, template in rules:
        match = re.fullmatch(pattern, key)
        if match:
            out = re.sub(r"<(\d)>", lambda m: str(int(match.group(int(m.group(1)))) + 1), template)
            out = re.sub(r">(\d)<", lambda m: str(int(match.group(int(m.group(1)))) - 1), out)
            return match.expand(out)
    return key  # keys both layouts share (e.g. detectron2's backbone names)


def _strip_module(key: str) -> str:
    return key[len("module.") :] if key.startswith("module.") else key


def to_native(state_dict: Mapping[str, Tensor], fmt: str) -> Dict[str, Tensor]:
    """Rename the keys of a ``fmt`` state dict to fcos_d2's."""
    if fmt == "native":
        return dict(state_dict)
    return {
        _rename(_TO_NATIVE[fmt], _strip_module(k)): v
        for k, v in state_dict.items()
        if _strip_module(k) not in _DROP
    }


def from_native(state_dict: Mapping[str, Tensor], fmt: str) -> Dict[str, Tensor]:
    """Rename the keys of an fcos_d2 state dict to ``fmt``'s."""
    if fmt == "native":
        return dict(state_dict)
    prefix = "module." if fmt == "official" else ""
    return {prefix + _rename(_TO_FOREIGN[fmt], k): v for k, v in state_dict.items()}


def _foreign_keys_hook(module: nn.Module, state_dict, prefix, *args) -> None:
    """Rename foreign keys in place before ``load_state_dict`` reads them; check shapes."""
    own = [k for k in state_dict if k.startswith(prefix)]
    fmt = detect_format([k[len(prefix) :] for k in own])
    if fmt == "native":
        return
    logger.info(f"Recognised a {fmt} FCOS checkpoint; converting its keys to fcos_d2's.")
    converted = to_native({k[len(prefix) :]: state_dict.pop(k) for k in own}, fmt)
    expected = module.state_dict()
    for key, value in converted.items():
        if key in expected and tuple(expected[key].shape) != tuple(value.shape):
            raise ValueError(
                f"checkpoint tensor {key!r} ({fmt} format) has shape {tuple(value.shape)}, but "
                f"the model built from the config needs {tuple(expected[key].shape)}"
            )
        state_dict[prefix + key] = value


def install_foreign_checkpoint_hook(module: nn.Module) -> None:
    """Make ``module.load_state_dict`` (and detectron2 checkpointers) accept foreign layouts."""
    module.register_load_state_dict_pre_hook(_foreign_keys_hook)
