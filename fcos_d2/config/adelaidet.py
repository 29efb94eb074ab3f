"""
AdelaiDet FCOS configs in fcos_d2's keys: which YAML files are AdelaiDet's, and the translation of
their ``MODEL.FCOS`` keys (keys with no equivalent are returned, for one warning).
"""

from typing import Any, Dict, List, Tuple

from detectron2.config import CfgNode, get_cfg

from .keys import add_fcos_config

__all__ = ["is_adelaidet_config", "translate_adelaidet", "split_known"]

# AdelaiDet MODEL.FCOS key -> fcos_d2 MODEL.FCOS key, where only the name differs.
_RENAMED = {
    "INFERENCE_TH_TEST": "SCORE_THRESH_TEST",
    "NMS_TH": "NMS_THRESH_TEST",
    "PRE_NMS_TOPK_TEST": "TOPK_CANDIDATES_TEST",
    "LOC_LOSS_TYPE": "BOX_LOSS_TYPE",
    "LOSS_ALPHA": "FOCAL_LOSS_ALPHA",
    "LOSS_GAMMA": "FOCAL_LOSS_GAMMA",
}
_SAME = {
    "NUM_CLASSES",
    "IN_FEATURES",
    "PRIOR_PROB",
    "NUM_CLS_CONVS",
    "NUM_BOX_CONVS",
    "NUM_SHARE_CONVS",
    "USE_SCALE",
    "THRESH_WITH_CTR",
    "SIZES_OF_INTEREST",
    "BOX_QUALITY",
    "LOSS_NORMALIZER_CLS",
    "USE_DEFORMABLE",
}
# Keys without an equivalent, with the AdelaiDet default that fcos_d2's behaviour matches: a
# file that sets another value is warned about. FPN_STRIDES is read from the backbone instead.
_NO_EQUIVALENT = {
    "INFERENCE_TH_TRAIN": None,
    "PRE_NMS_TOPK_TRAIN": None,
    "POST_NMS_TOPK_TRAIN": None,
    "YIELD_PROPOSAL": False,
    "YIELD_BOX_FEATURES": False,
    "LOSS_WEIGHT_CLS": 1.0,
    "USE_RELU": True,
    "FPN_STRIDES": "derived",
}
_NORMS = {"none": "", "NaiveGN": "GN"}
_TOP_LEVELS = {0: "", 2: "p5"}


def is_adelaidet_config(raw: Dict[str, Any]) -> bool:
    """Whether a YAML dict (bases merged) is an AdelaiDet FCOS config."""
    model = raw.get("MODEL", {}) or {}
    generator = (model.get("PROPOSAL_GENERATOR", {}) or {}).get("NAME")
    meta_arch = model.get("META_ARCHITECTURE")
    # detectron2's two-stage models with fcos_d2's FCOS proposal generator are fcos_d2 files.
    two_stage = meta_arch in ("GeneralizedRCNN", "ProposalNetwork")
    return meta_arch == "OneStageDetector" or (generator == "FCOS" and not two_stage)


def _translate_fcos(adet: Dict[str, Any], dropped: List[str]) -> Tuple[Dict, Dict]:
    """AdelaiDet MODEL.FCOS dict -> (fcos_d2 MODEL.FCOS dict, TEST dict)."""
    fcos, test = {}, {}
    native = get_cfg()
    add_fcos_config(native)
    native_keys = set(native.MODEL.FCOS)
    for key, value in adet.items():
        if key in _SAME:
            fcos[key] = value
        elif key in _RENAMED:
            fcos[_RENAMED[key]] = value
        elif key == "POST_NMS_TOPK_TEST":
            test["DETECTIONS_PER_IMAGE"] = value
        elif key == "NORM":
            fcos["NORM"] = _NORMS.get(value, value)
        elif key == "TOP_LEVELS" and value in _TOP_LEVELS:
            fcos["TOP_BLOCK_IN_FEATURE"] = _TOP_LEVELS[value]
        elif key in native_keys:
            fcos[key] = value  # already an fcos_d2 key (e.g. inherited from an fcos_d2 base)
        elif key in ("CENTER_SAMPLE", "POS_RADIUS"):
            continue  # combined below
        elif key in _NO_EQUIVALENT and _NO_EQUIVALENT[key] in (None, "derived", value):
            continue  # fcos_d2 behaves like AdelaiDet's value here (or the key is train-only)
        else:
            dropped.append(f"MODEL.FCOS.{key}={value!r}")
    if "CENTER_SAMPLE" in adet or "POS_RADIUS" in adet:
        radius = adet.get("POS_RADIUS", 1.5)
        fcos["CENTER_SAMPLING_RADIUS"] = radius if adet.get("CENTER_SAMPLE", True) else 0.0
    return fcos, test


def translate_adelaidet(raw: Dict[str, Any]) -> Tuple[Dict[str, Any], List[str]]:
    """AdelaiDet config dict -> (fcos_d2 config dict, keys without an equivalent)."""
    dropped: List[str] = []
    out = {k: v for k, v in raw.items() if k != "MODEL"}
    model = dict(raw.get("MODEL", {}) or {})
    model["META_ARCHITECTURE"] = "FCOS"
    generator = dict(model.pop("PROPOSAL_GENERATOR", {}) or {})
    if generator.pop("NAME", "FCOS") != "FCOS":
        dropped.append("MODEL.PROPOSAL_GENERATOR.NAME")
    if generator:
        model["PROPOSAL_GENERATOR"] = generator
    fcos, test = _translate_fcos(model.pop("FCOS", {}) or {}, dropped)
    model["FCOS"] = fcos
    out["MODEL"] = model
    if test:
        out["TEST"] = {**(out.get("TEST") or {}), **test}
    return out, dropped


def split_known(cfg: CfgNode, data: Dict[str, Any], prefix: str, dropped: List[str]) -> Dict:
    """The part of ``data`` whose keys exist in ``cfg``; the rest is appended to ``dropped``."""
    known = {}
    for key, value in data.items():
        if key not in cfg:
            dropped.append(prefix + key)
        elif isinstance(cfg[key], CfgNode) and isinstance(value, dict):
            known[key] = split_known(cfg[key], value, f"{prefix}{key}.", dropped)
        else:
            known[key] = value
    return known
