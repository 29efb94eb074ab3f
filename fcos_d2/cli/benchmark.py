"""``fcos-d2 benchmark``: fcos_d2 against detectron2's built-in FCOS with the same weights
(latency, training step, matching, exported runtimes), on this machine."""

import argparse

HELP = "speed of fcos_d2 vs detectron2's built-in FCOS on this machine (same weights)"
EXAMPLES = [
    "fcos-d2 benchmark --output output/benchmark",
    "fcos-d2 benchmark --size 512 768 --iters 2 --no-deploy --output out/bench",
    "fcos-d2 benchmark --profile",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..benchmark.__main__ import add_arguments as benchmark_arguments

    benchmark_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..benchmark.__main__ import run as run_benchmark
    from ..config import is_lazy_config
    from .common import CommandError, resolve_config_file

    args.config = resolve_config_file(args.config)
    if is_lazy_config(args.config):
        raise CommandError(
            f"--config-file {args.config}: the benchmark builds detectron2's built-in FCOS from "
            "the same YAML keys, so it reads YAML configs only"
        )
    run_benchmark(args)
    return 0
