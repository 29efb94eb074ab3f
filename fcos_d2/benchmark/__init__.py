"""
The benchmark of fcos_d2 against detectron2's built-in FCOS (``python -m fcos_d2.benchmark``):
harness (timing, models), inference, matching and training sections, and the report.
"""

from .harness import DEFAULT_CONFIG, build_models, timeit, timeit_interleaved, variant
from .inference import bench_end_to_end, bench_postprocess, conv_ceiling
from .matching import bench_matching
from .report import summarize
from .training import bench_train, profile_default, training_batch

__all__ = [
    "DEFAULT_CONFIG",
    "build_models",
    "timeit",
    "timeit_interleaved",
    "variant",
    "bench_end_to_end",
    "bench_postprocess",
    "conv_ceiling",
    "bench_matching",
    "bench_train",
    "profile_default",
    "training_batch",
    "summarize",
]
