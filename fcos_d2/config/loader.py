"""
``load_config``: one entry point for fcos_d2 YAML files, AdelaiDet FCOS YAML files and LazyConfig
(Python) files.

AdelaiDet files (``META_ARCHITECTURE: OneStageDetector`` with ``PROPOSAL_GENERATOR.NAME: FCOS``)
are translated to fcos_d2's keys; keys with no equivalent are listed in one warning.
"""

import ast
import logging
from typing import Any, Dict, List, Sequence, Union

from detectron2.config import CfgNode, LazyConfig, get_cfg
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .adelaidet import is_adelaidet_config, split_known, translate_adelaidet
from .keys import add_fcos_config

__all__ = ["load_config", "is_lazy_config"]

logger = logging.getLogger(__name__)

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
    if len(opts) % 2:
        raise ValueError(
            f"config overrides must be KEY VALUE pairs; {str(opts[-1])!r} has no value"
        )
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
    known = split_known(cfg, translated, "", dropped)
    cfg.merge_from_other_cfg(CfgNode(known))
    logger.info(f"Translated AdelaiDet config {config_file} to fcos_d2 keys.")
    if dropped:
        logger.warning(
            f"AdelaiDet config {config_file}: no fcos_d2 equivalent for {', '.join(dropped)}"
        )
    return cfg
