#!/usr/bin/env python3
"""
Page faults and time per forward pass of fcos_d2's default model and detectron2's built-in FCOS
(the benchmark's R-50-FPN with random weights, one image), with glibc's malloc as it is and with
``fcos_d2.utils.keep_freed_memory`` (what ``fcos-d2`` commands run with), each setting in a
fresh process (docs/benchmarks.md):

    python scripts/page_faults.py [--size 800 1216] [--iters 3] [--threads 2]
"""

import argparse
import resource
import time

SETTINGS = ("malloc as it is", "keep_freed_memory()")


def measure(keep: bool, size, iters: int, threads: int):
    import torch

    from fcos_d2.benchmark.harness import DEFAULT_CONFIG, build_models
    from fcos_d2.utils import keep_freed_memory

    applied = keep_freed_memory() if keep else False
    torch.set_num_threads(threads)
    _, ours, d2 = build_models(DEFAULT_CONFIG, "cpu")
    gen = torch.Generator().manual_seed(0)
    images = [{"image": torch.rand(3, *size, generator=gen) * 255}]
    rows = {}
    with torch.no_grad():
        for name, model in (("fcos_d2 default", ours), ("d2 built-in", d2)):
            model(images)  # warm-up: the first pass's memory is fresh in any case
            model(images)
            faults, seconds = [], []
            for _ in range(iters):
                before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                start = time.perf_counter()
                model(images)
                seconds.append(time.perf_counter() - start)
                faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
            rows[name] = (min(faults), max(faults), min(seconds))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return applied, rows, peak_mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, nargs=2, default=(800, 1216))
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from fcos_d2.benchmark.harness import in_fresh_process
    from fcos_d2.utils import describe_cpu

    print(describe_cpu())
    try:  # "always" maps large blocks in 2 MB pages: far fewer faults, each costlier
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            print("transparent huge pages:", f.read().strip())
    except OSError:
        pass
    print("| malloc | model | page faults per pass (min-max) | seconds (min) |")
    print("|---|---|---|---|")
    for keep, setting in zip((False, True), SETTINGS):
        applied, rows, peak = in_fresh_process(measure, keep, args.size, args.iters, args.threads)
        if keep and not applied:
            setting += " (not applied: not glibc, or FCOS_D2_KEEP_FREED_MEMORY=0)"
        for name, (low, high, seconds) in rows.items():
            print(f"| {setting} | {name} | {low}-{high} | {seconds:.3f} |")
        print(f"| {setting} | peak resident memory of the process | {peak:.0f} MB | |")


if __name__ == "__main__":
    main()
