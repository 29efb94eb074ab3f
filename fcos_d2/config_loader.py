"""
``load_config``: one entry point for fcos_d2 YAML files, AdelaiDet FCOS YAML files and LazyConfig
(Python) files.

AdelaiDet files (``META_ARCHITECTURE: OneStageDetector`` with ``PROPOSAL_GENERATOR.NAME: FCOS``)
are translated to fcos_d2's keys; keys with no equivalent are listed in one warning.
"""

import ast
import logging
from typing import Any, Dict, List, Sequence, Tuple, Union

from detectron2.config import CfgNode, LazyConfig, get_cfg
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .config import add_fcos_config

__all__ = ["load_config", "is_lazy_config", "is_adelaidet_config", "translate_adelaidet"]

logger = logging.getLogger(__name__)

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


_ABSENT = object()
try:  # detectron2's LazyConfig parses overrides with hydra
    from hydra.errors import HydraException as _HydraException
except ImportError:  # pragma: no cover

    class _HydraException(Exception):
        pass


def _load_lazy(config_file: str, opts: List[str]) -> DictConfig:
    bad = [o for o in opts if "=" not in o]
    if bad:
        raise ValueError(
            f"override {bad[0]!r} of Python config {config_file}: Python configs take key=value "
            "overrides (e.g. train.max_iter=100), not KEY VALUE pairs"
        )
    cfg = LazyConfig.load(config_file)
    try:
        for o in opts:  # a mistyped key would otherwise be added silently ("+key=value" adds one)
            key = o.split("=", 1)[0]
            if key.startswith("+"):
                continue
            found = OmegaConf.select(
                cfg, key, default=_ABSENT, throw_on_resolution_failure=False, throw_on_missing=False
            )
            if found is _ABSENT:
                raise ValueError(
                    f"override {o!r}: Python config {config_file} has no key {key!r} "
                    f"(write +{key}=... to add one)"
                )
        opts = [o[1:] if o.startswith("+") else o for o in opts]
        return LazyConfig.apply_overrides(cfg, opts)
    except ValueError:
        raise
    except (KeyError, AttributeError, OmegaConfBaseException, _HydraException) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"overrides {opts} of Python config {config_file}: {first}") from None


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


def _split_known(cfg: CfgNode, data: Dict[str, Any], prefix: str, dropped: List[str]) -> Dict:
    """The part of ``data`` whose keys exist in ``cfg``; the rest is appended to ``dropped``."""
    known = {}
    for key, value in data.items():
        if key not in cfg:
            dropped.append(prefix + key)
        elif isinstance(cfg[key], CfgNode) and isinstance(value, dict):
            known[key] = _split_known(cfg[key], value, f"{prefix}{key}.", dropped)
        else:
            known[key] = value
    return known


def _opts_to_dict(opts: Sequence[str]) -> Dict[str, Any]:
    if len(opts) % 2:
        raise ValueError(f"config overrides must be KEY VALUE pairs, got {list(opts)}")
    out: Dict[str, Any] = {}
    for key, value in zip(opts[0::2], opts[1::2]):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def _deep_update(base: Dict, extra: Dict) -> Dict:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value
    return base


def is_lazy_config(config_file: str) -> bool:
    """Whether ``config_file`` is a LazyConfig (Python) config."""
    return str(config_file).endswith(".py")


def load_config(config_file: str, opts: Sequence[str] = ()) -> Union[CfgNode, DictConfig]:
    """
    A detectron2 ``CfgNode`` with the ``MODEL.FCOS`` keys, from an fcos_d2 or an AdelaiDet FCOS
    YAML file, plus ``KEY VALUE`` overrides (in the file's own key names); or, from a Python
    file, detectron2's LazyConfig (a ``DictConfig``) with ``key=value`` overrides.
    """
    options = [o for o in opts if str(o).startswith("--")]
    if options:  # argparse's REMAINDER swallowed an option given after the overrides
        raise ValueError(f"{options[0]} after the overrides: give options before them")
    if is_lazy_config(config_file):
        return _load_lazy(config_file, [str(o) for o in opts])
    cfg = get_cfg()
    add_fcos_config(cfg)
    raw = CfgNode.load_yaml_with_base(config_file, allow_unsafe=True)
    if not is_adelaidet_config(raw):
        cfg.merge_from_file(config_file)
        cfg.merge_from_list(list(opts))
        return cfg
    raw = _deep_update(raw, _opts_to_dict(opts))
    translated, dropped = translate_adelaidet(raw)
    translated.pop("VERSION", None)
    known = _split_known(cfg, translated, "", dropped)
    cfg.merge_from_other_cfg(CfgNode(known))
    logger.info(f"Translated AdelaiDet config {config_file} to fcos_d2 keys.")
    if dropped:
        logger.warning(
            f"AdelaiDet config {config_file}: no fcos_d2 equivalent for {', '.join(dropped)}"
        )
    return cfg
