"""
The pure layout table: checkpoint key layouts of other FCOS implementations and their renaming
to and from fcos_d2's. It knows nothing of files, models or checkpointers (like detectron2's
``c2_model_loading.py``).

Layouts: "native" (fcos_d2), "adelaidet" (AdelaiDet's OneStageDetector + FCOS proposal
generator), "d2" (detectron2's built-in ``meta_arch.fcos.FCOS``), "maskrcnn_benchmark" (the
original FCOS code, tianzhi0549/FCOS, built on maskrcnn-benchmark; "official" is its old name).
Conversion is by key name only; tensors are never changed.
"""

import functools
import re
import warnings
from typing import Dict, Iterable, List, Mapping, Tuple

from torch import Tensor

__all__ = ["LAYOUTS", "detect_layout", "describe_layout", "to_native", "from_native"]

LAYOUTS = ("adelaidet", "d2", "maskrcnn_benchmark")
# Old spelling of a layout name -> its name now (still accepted, with a deprecation warning).
RENAMED_LAYOUTS = {"official": "maskrcnn_benchmark"}

# Key correspondences per layout, (fcos_d2 template, foreign template), used in both directions
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
    "maskrcnn_benchmark": [
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

# Keys of each layout that only it has (used to recognise it).
_SIGNATURES = {
    "adelaidet": ("proposal_generator.fcos_head.",),
    "d2": ("head.cls_subnet.", "head.cls_score.", "head.bbox_subnet."),
    "maskrcnn_benchmark": ("rpn.head.", "backbone.body.", "backbone.fpn.fpn_inner"),
}
# Buffers other detectors saved that fcos_d2 does not keep in its state dict.
_DROP = ("pixel_mean", "pixel_std")


def detect_layout(keys: Iterable[str]) -> str:
    """The layout of a checkpoint from its key names (``module.`` prefixes ignored)."""
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


def canonical_layout(layout: str) -> str:
    """``layout`` with an old spelling replaced by its name now; an unknown one raises."""
    if layout in RENAMED_LAYOUTS:
        new = RENAMED_LAYOUTS[layout]
        warnings.warn(  # stacklevel: the caller of to_native / from_native
            f"checkpoint layout {layout!r} is now called {new!r}", DeprecationWarning, stacklevel=3
        )
        layout = new
    if layout != "native" and layout not in LAYOUTS:
        raise ValueError(f"unknown checkpoint layout {layout!r}; expected one of {LAYOUTS}")
    return layout


def to_native(state_dict: Mapping[str, Tensor], fmt: str) -> Dict[str, Tensor]:
    """Rename the keys of a state dict in layout ``fmt`` to fcos_d2's."""
    fmt = canonical_layout(fmt)
    if fmt == "native":
        return dict(state_dict)
    return {
        _rename(fmt, _strip_module(k), to_foreign=False): v
        for k, v in state_dict.items()
        if _strip_module(k) not in _DROP
    }


def from_native(state_dict: Mapping[str, Tensor], fmt: str) -> Dict[str, Tensor]:
    """Rename the keys of an fcos_d2 state dict to layout ``fmt``'s."""
    fmt = canonical_layout(fmt)
    if fmt == "native":
        return dict(state_dict)
    prefix = "module." if fmt == "maskrcnn_benchmark" else ""
    return {prefix + _rename(fmt, k, to_foreign=True): v for k, v in state_dict.items()}


def describe_layout(fmt: str, keys: Iterable[str]) -> str:
    """How log messages name a checkpoint of layout ``fmt`` with these keys."""
    if fmt == "d2" and not any(_strip_module(k).startswith("head.ctrness.") for k in keys):
        # detectron2's RetinaNet shares the built-in FCOS head names but has no centre-ness.
        return (
            "detectron2 RetinaNet-style checkpoint (head.cls_subnet.* keys but no head.ctrness.*: "
            "not an FCOS checkpoint)"
        )
    return f"{fmt} FCOS checkpoint"
