"""
The FCOS paper's analyses as tools: what matching does with a dataset (best possible recall,
ambiguous samples, level usage; :mod:`.data`) and where a model fails (per-class AP, F1
thresholds, error breakdown; :mod:`.results`). Command line: ``python -m fcos_d2.analyze``.
"""

from .matching import REASONS, ImageMatch, analyse_matching

__all__ = ["REASONS", "ImageMatch", "analyse_matching"]
