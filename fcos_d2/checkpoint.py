"""
Checkpoint key layouts of other FCOS implementations, and their conversion to fcos_d2's.

Formats: "native" (fcos_d2), "adelaidet" (AdelaiDet's OneStageDetector + FCOS proposal generator),
"d2" (detectron2's built-in ``meta_arch.fcos.FCOS``), "official" (maskrcnn-benchmark FCOS).
Conversion is by key name only; tensors are never changed.
"""

import functools
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
    "describe_format",
    "load_for_inference",
]

logger = logging.getLogger(__name__)

FORMATS = ("adelaidet", "d2", "official")

# Key correspondences per format, (fcos_d2 template, foreign template), used in both directions
# and tried in order. ``*`` is the rest of the key; ``{X}`` is a number, and ``{X-1}`` the same
# number minus one: maskrcnn-benchmark numbers ResNet stages and FPN levels one lower than
# detectron2 (res2 = layer1, fpn_lateral3 = fpn_inner2).
_RULES: Dict[str, List[Tuple[str, str]]] = {
    "adelaidet": [("head.*", "proposal_generator.fcos_head.*")],
    "d2": [
        ("head.cls_tower.*", "head.cls_subnet.*"),
        ("head.bbox_tower.*", "head.bbox_subnet.*"),
        ("head.cls_logits.*", "head.cls_score.*"),
    ],
    "official": [
        ("backbone.bottom_up.stem.conv1.norm.*", "backbone.body.stem.bn1.*"),
        ("backbone.bottom_up.stem.conv1.*", "backbone.body.stem.conv1.*"),
        ("backbone.bottom_up.res{S}.{B}.conv{C}.norm.*", "backbone.body.layer{S-1}.{B}.bn{C}.*"),
        ("backbone.bottom_up.res{S}.{B}.conv{C}.*", "backbone.body.layer{S-1}.{B}.conv{C}.*"),
        (
            "backbone.bottom_up.res{S}.{B}.shortcut.norm.*",
            "backbone.body.layer{S-1}.{B}.downsample.1.*",
        ),
        (
            "backbone.bottom_up.res{S}.{B}.shortcut.*",
            "backbone.body.layer{S-1}.{B}.downsample.0.*",
        ),
        ("backbone.fpn_lateral{L}.*", "backbone.fpn.fpn_inner{L-1}.*"),
        ("backbone.fpn_output{L}.*", "backbone.fpn.fpn_layer{L-1}.*"),
        ("backbone.top_block.*", "backbone.fpn.top_blocks.*"),
        ("head.ctrness.*", "rpn.head.centerness.*"),
        ("head.*", "rpn.head.*"),
    ],
}
_FIELD = re.compile(r"\{(\w+)([+-]\d+)?\}|\*")

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


@functools.lru_cache(maxsize=None)
def _compile(template: str) -> Tuple["re.Pattern[str]", Tuple[Tuple[str, int], ...]]:
    """A key template -> its regex, and its fields in order as (name, offset); ``*`` is "*"."""
    parts, fields, pos = [], [], 0
    for m in _FIELD.finditer(template):
        parts.append(re.escape(template[pos : m.start()]))
        if m.group(0) == "*":
            parts.append("(.*)")
            fields.append(("*", 0))
        else:
            parts.append(r"(\d+)")
            fields.append((m.group(1), int(m.group(2) or 0)))
        pos = m.end()
    parts.append(re.escape(template[pos:]))
    return re.compile("".join(parts)), tuple(fields)


def _fill(template: str, values: Dict[str, object]) -> str:
    def field(m: "re.Match[str]") -> str:
        if m.group(0) == "*":
            return values["*"]
        return str(values[m.group(1)] + int(m.group(2) or 0))

    return _FIELD.sub(field, template)


def _rename(fmt: str, key: str, to_foreign: bool) -> str:
    for native, foreign in _RULES[fmt]:
        source, target = (native, foreign) if to_foreign else (foreign, native)
        pattern, fields = _compile(source)
        match = pattern.fullmatch(key)
        if match:
            values = {
                name: text if name == "*" else int(text) - offset
                for (name, offset), text in zip(fields, match.groups())
            }
            return _fill(target, values)
    return key  # keys both layouts share (e.g. detectron2's backbone names)


def _strip_module(key: str) -> str:
    return key[len("module.") :] if key.startswith("module.") else key


def to_native(state_dict: Mapping[str, Tensor], fmt: str) -> Dict[str, Tensor]:
    """Rename the keys of a ``fmt`` state dict to fcos_d2's."""
    if fmt == "native":
        return dict(state_dict)
    return {
        _rename(fmt, _strip_module(k), to_foreign=False): v
        for k, v in state_dict.items()
        if _strip_module(k) not in _DROP
    }


def from_native(state_dict: Mapping[str, Tensor], fmt: str) -> Dict[str, Tensor]:
    """Rename the keys of an fcos_d2 state dict to ``fmt``'s."""
    if fmt == "native":
        return dict(state_dict)
    prefix = "module." if fmt == "official" else ""
    return {prefix + _rename(fmt, k, to_foreign=True): v for k, v in state_dict.items()}


def describe_format(fmt: str, keys: Iterable[str]) -> str:
    """How log messages name a checkpoint of format ``fmt`` with these keys."""
    if fmt == "d2" and not any(_strip_module(k).startswith("head.ctrness.") for k in keys):
        # detectron2's RetinaNet shares the built-in FCOS head names but has no centre-ness.
        return (
            "detectron2 RetinaNet-style checkpoint (head.cls_subnet.* keys but no head.ctrness.*: "
            "not an FCOS checkpoint)"
        )
    return f"{fmt} FCOS checkpoint"


def _foreign_keys_hook(module: nn.Module, state_dict, prefix, *args) -> None:
    """
    Rename foreign keys in place before ``load_state_dict`` reads them. A tensor whose shape
    does not fit the model (e.g. another class count) is skipped with a warning naming the key
    and both shapes, so it is reported as missing (detectron2's fine-tuning convention).
    """
    own = [k for k in state_dict if k.startswith(prefix)]
    fmt = detect_format([k[len(prefix) :] for k in own])
    if fmt == "native":
        return
    logger.info(f"Recognised a {describe_format(fmt, own)}; converting its keys to fcos_d2's.")
    converted = to_native({k[len(prefix) :]: state_dict.pop(k) for k in own}, fmt)
    expected = module.state_dict()
    for key, value in converted.items():
        if key in expected and tuple(expected[key].shape) != tuple(value.shape):
            logger.warning(
                f"Skipped checkpoint tensor {key!r} ({fmt} format): shape {tuple(value.shape)} "
                f"in the checkpoint, {tuple(expected[key].shape)} in the model built from the "
                "config"
            )
            continue
        state_dict[prefix + key] = value


def install_foreign_checkpoint_hook(module: nn.Module) -> None:
    """Make ``module.load_state_dict`` (and detectron2 checkpointers) accept foreign layouts."""
    module.register_load_state_dict_pre_hook(_foreign_keys_hook)


def load_for_inference(model: nn.Module, path: str):
    """Strict loading for evaluation/inference; see ``fcos_d2.engine.checkpointer``."""
    from .engine.checkpointer import load_for_inference as load

    return load(model, path)
