"""
fcos_d2's configs, shipped inside the package (as detectron2's ``model_zoo``), so that they are
found after a plain ``pip install`` as well as in a clone (where ``configs/`` links here)::

    from fcos_d2 import model_zoo
    cfg = model_zoo.get_config("FCOS_R_50_FPN_1x.yaml")          # a CfgNode with MODEL.FCOS
    path = model_zoo.get_config_file("demo/FCOS_R18_shapes_demo.yaml")
    lazy = model_zoo.get_config("lazy/fcos_R_50_FPN_1x.py")      # a LazyConfig (DictConfig)
    model = model_zoo.get_config("lazy/common/models/fcos.py").model
"""

import os
from typing import List, Sequence, Union

from detectron2.config import CfgNode
from omegaconf import DictConfig

from ..config import load_config

__all__ = ["CONFIG_DIR", "get_config_file", "get_config", "list_configs"]

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


def list_configs() -> List[str]:
    """Every config name, relative to the config directory (e.g. "compat/D2-Builtin-...yaml",
    "lazy/fcos_R_50_FPN_1x.py")."""
    names = []
    for root, _, files in os.walk(CONFIG_DIR):
        for f in files:
            if f.endswith((".yaml", ".py")):
                names.append(os.path.relpath(os.path.join(root, f), CONFIG_DIR))
    return sorted(n.replace(os.sep, "/") for n in names)


def get_config_file(name: str) -> str:
    """
    The path of config ``name``, relative to fcos_d2's config directory (a leading "configs/" is
    accepted, as the README writes the paths); a ``ValueError`` names the configs there if there
    is no such config.
    """
    rel = name[len("configs/") :] if name.startswith("configs/") else name
    path = os.path.normpath(os.path.join(CONFIG_DIR, rel))
    if not path.startswith(CONFIG_DIR + os.sep) or not os.path.isfile(path):
        raise ValueError(
            f"fcos_d2 has no config {name!r} (in {CONFIG_DIR}); its configs: "
            + ", ".join(list_configs())
        )
    return path


def get_config(name: str, opts: Sequence[str] = ()) -> Union[CfgNode, DictConfig]:
    """Config ``name`` (see :func:`get_config_file`) loaded by :func:`fcos_d2.load_config`:
    a ``CfgNode`` with ``KEY VALUE`` overrides ``opts`` for a YAML file, a LazyConfig
    ``DictConfig`` with ``key=value`` overrides for a Python file."""
    return load_config(get_config_file(name), opts)
