"""
Side-by-side benchmark of fcos_d2 and detectron2's built-in FCOS carrying the same weights.

    python -m fcos_d2.benchmark [--device cpu|cuda] [--size 800 1216] [--iters 3] [--json F]
        [--no-deploy] [--demo-weights output/demo/model_final.pth]
    python -m fcos_d2.benchmark --profile
    python -m fcos_d2.benchmark --pick   (the fastest deploy mode within 1 AP of float32)
    python -m fcos_d2.benchmark --eval-only [--eval-images 5000]   (COCO evaluation time)

Everything printed is measured in this run; results also go to OUTPUT/benchmark.{json,png}.
"""

import argparse
import os
import sys
import time
import warnings
from typing import Dict

import torch

from ..data import register_shapes
from ..model_zoo import get_config_file
from ..utils.jsonio import write_json
from .deploy import bench_deploy, bench_deploy_ap
from .evaluation import bench_coco_eval
from .floors import BF16_LEFT_OUT, native_bfloat16
from .harness import DEFAULT_CONFIG, build_models, in_fresh_process
from .inference import bench_end_to_end, bench_postprocess
from .matching import bench_matching
from .report import machine_info, print_profile, print_report, summarize, write_chart
from .training import bench_train, profile_default, training_batch

__all__ = ["add_arguments", "main", "run"]

DEMO_CONFIG = get_config_file("demo/FCOS_R18_shapes_demo.yaml")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options (``fcos-d2 benchmark``)."""
    parser.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="cpu or cuda (default: cuda where there is one)",
    )
    parser.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=[800, 1216],
        metavar=("H", "W"),
        help="image size of the timed rows (default 800 1216)",
    )
    parser.add_argument(
        "--batches",
        type=int,
        nargs="+",
        default=[1, 4],
        metavar="N",
        help="batch sizes of the end-to-end rows (default 1 4)",
    )
    parser.add_argument(
        "--iters", type=int, default=3, help="timed repeats per row; the minimum is reported"
    )
    parser.add_argument(
        "--config-file",
        "--config",
        dest="config",
        metavar="FILE",
        default=DEFAULT_CONFIG,
        help="model of the timed rows (default: R-50-FPN)",
    )
    parser.add_argument(
        "--output", metavar="DIR", default="output/benchmark", help="folder of the results"
    )
    parser.add_argument("--json", default=None, help="JSON path (default OUTPUT/benchmark.json)")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also time the default model under torch.compile (Inductor, freezing) in the "
        "end-to-end rows (compiled first, for each input shape)",
    )
    parser.add_argument("--no-deploy", action="store_true", help="skip the exported-model rows")
    parser.add_argument(
        "--deploy-only", action="store_true", help="only the exported-model rows and their goals"
    )
    parser.add_argument(
        "--demo-weights",
        default="output/demo/model_final.pth",
        help="trained demo model for the AP-per-format rows (skipped if missing)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="only where the time goes: fcos_d2's default model by operator, and on a CPU the "
        "OpenVINO int8 graph by node type (~2 min)",
    )
    parser.add_argument(
        "--eval-images",
        type=int,
        default=5000,
        help="images of the COCO evaluation timing (x 100 detections; COCO val has 5,000)",
    )
    parser.add_argument(
        "--eval-only",
        action="store_true",
        help="only the COCO evaluation timing (pycocotools against faster-coco-eval)",
    )
    parser.add_argument(
        "--backbones",
        nargs="*",
        metavar="CONFIG",
        help="only params, GMACs and latency of these configs (default: the R-50 and timm ones)",
    )
    parser.add_argument(
        "--pick",
        action="store_true",
        help="the deploy rows and the demo AP per mode, then the fastest mode within 1 AP of "
        "float32 and the command that gives it",
    )
    parser.add_argument(
        "--serving",
        action="store_true",
        help="only the serving rows: fcos-d2 serve at 1, 4 and 16 clients, --max-batch-size 1 "
        "and the default, on the demo model and the config (needs fcos_d2[serve])",
    )
    parser.add_argument(
        "--serving-requests", type=int, default=48, metavar="N", help="requests per serving row"
    )
    parser.add_argument(
        "--serving-seconds",
        type=float,
        default=30.0,
        metavar="S",
        help="time limit of a serving row (it ends at N requests or S seconds)",
    )


def main(argv=None) -> Dict:
    """Deprecated: ``fcos-d2 benchmark`` (this form goes in the next release)."""
    warnings.warn(
        "python -m fcos_d2.benchmark is deprecated: use fcos-d2 benchmark", DeprecationWarning
    )
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> Dict:
    """The benchmark of ``args``; returns the rows it printed."""
    torch.set_num_threads(os.cpu_count() or 1)
    if args.backbones is not None:
        from .backbones import DEFAULT_CONFIGS, run_backbones

        configs = args.backbones or list(DEFAULT_CONFIGS)
        return run_backbones(argparse.Namespace(**{**vars(args), "configs": configs}))
    if args.eval_only:
        return _eval_only(args)
    if args.serving:
        return _serving(args)
    register_shapes(replace=False)  # calibration and AP rows use the demo's datasets
    cfg, ours, d2 = build_models(args.config, args.device)
    if args.deploy_only or args.pick:
        return _deploy_only(args, cfg, ours, d2)
    if args.profile:
        rows = profile_default(ours, args.size, args.device, training_batch(ours.num_classes))
        if args.device == "cpu":
            from .deploy import profile_openvino_int8

            int8 = profile_openvino_int8(cfg, ours, args.size)  # None without OpenVINO
            if int8:
                rows.append(int8)
        print_profile(rows)
        return {"machine": machine_info(args.device), "profile": rows}
    progress = Progress()
    rows = progress(
        "end-to-end latency",
        bench_end_to_end,
        cfg,
        ours,
        d2,
        args.device,
        args.size,
        args.iters,
        args.batches,
        args.compile,
    )
    rows += progress(
        "post-processing", bench_postprocess, ours, d2, args.size, args.device, args.iters
    )
    rows += progress("matching", bench_matching, args.size, args.device, args.config)
    rows += progress("training iteration", bench_train, cfg, ours, d2, args.device, args.iters)
    if not args.no_deploy and args.device == "cpu":
        rows += progress("exported runtimes", bench_deploy, cfg, ours, d2, args.size, args.iters)
        rows += progress(
            "AP of the demo model per export mode",
            lambda: in_fresh_process(bench_deploy_ap, DEMO_CONFIG, args.demo_weights, "shapes_val")
            or [],
        )
        rows += progress("COCO evaluation", in_fresh_process, bench_coco_eval, args.eval_images)
    result = {
        "machine": machine_info(args.device),
        "size": args.size,
        "rows": rows,
        "goals": summarize(rows),
        "left_out": [] if native_bfloat16() or args.device != "cpu" else [BF16_LEFT_OUT],
        "seconds": time.perf_counter() - progress.start,
    }
    os.makedirs(args.output, exist_ok=True)
    write_json(args.json or os.path.join(args.output, "benchmark.json"), result)
    write_chart(rows, os.path.join(args.output, "benchmark.png"))
    print_report(result)
    print(f"\nwrote {args.output}/benchmark.json and benchmark.png ({result['seconds']:.0f} s)")
    return result


class Progress:
    """Runs the benchmark's parts, saying on stderr which one runs and how long each took."""

    def __init__(self):
        self.start = time.perf_counter()

    def __call__(self, what: str, fn, *args):
        print(f"[benchmark] {what} ...", file=sys.stderr, flush=True)
        begin = time.perf_counter()
        rows = fn(*args)
        now = time.perf_counter()
        print(
            f"[benchmark] {what}: {len(rows)} rows in {now - begin:.0f} s "
            f"({now - self.start:.0f} s in all)",
            file=sys.stderr,
            flush=True,
        )
        return rows


def _serving(args) -> Dict:
    from tabulate import tabulate

    from .serving import run_serving

    result = {"machine": machine_info(args.device), **run_serving(args)}
    keys = ["model", "mode", "batch", "clients", "throughput", "p50_ms", "p99_ms", "errors"]
    keys += ["service_cpu_ms", "client_cpu_ms"]
    table = [[r.get(k, "") for k in keys] for r in result["rows"] if "clients" in r]
    print(tabulate(table, headers=keys, floatfmt=".2f"))
    offline = [r for r in result["rows"] if "clients" not in r]
    print(tabulate(offline, headers="keys", floatfmt=".2f"))
    print(tabulate(result["goals"], headers="keys"))
    os.makedirs(args.output, exist_ok=True)
    path = args.json or os.path.join(args.output, "serving.json")
    write_json(path, result)
    print(f"\nwrote {path}")
    return result


def _deploy_only(args, cfg, ours, d2) -> Dict:
    from tabulate import tabulate

    from .deploy import pick_fastest
    from .report import COLUMNS, deploy_goals

    rows = bench_deploy(cfg, ours, d2, args.size, args.iters)
    rows += in_fresh_process(bench_deploy_ap, DEMO_CONFIG, args.demo_weights, "shapes_val") or []
    rows += in_fresh_process(bench_coco_eval, args.eval_images)
    result = {"machine": machine_info(args.device), "size": args.size, "rows": rows}
    result["goals"] = deploy_goals(rows)
    print(result["machine"])
    print(
        tabulate([[r.get(c, "") for c in COLUMNS] for r in rows], headers=COLUMNS, floatfmt=".4g")
    )
    print(tabulate([[g["goal"], g["target"], g["ratio"], g["met"]] for g in result["goals"]]))
    result["pick"] = pick_fastest(rows)
    if args.pick:
        print(_pick_text(result["pick"], args.demo_weights))
    os.makedirs(args.output, exist_ok=True)
    write_json(args.json or os.path.join(args.output, "deploy.json"), result)
    return result


def _eval_only(args) -> Dict:
    from tabulate import tabulate

    from .report import deploy_goals

    rows = bench_coco_eval(args.eval_images)
    result = {"machine": machine_info("cpu"), "rows": rows, "goals": deploy_goals(rows)}
    print(result["machine"])
    print(
        tabulate(
            [[r["mode"], r["min_s"], r["AP"], r["AP50"]] for r in rows],
            headers=[rows[0]["what"], "s", "AP", "AP50"],
            floatfmt=".4g",
        )
    )
    print(tabulate([[g["goal"], g["target"], g["ratio"], g["met"]] for g in result["goals"]]))
    return result


def _pick_text(pick, weights: str) -> str:
    if pick is None:
        return (
            f"--pick needs the demo model's AP per mode: train it first (make demo; {weights!r} "
            "is missing)"
        )
    return (
        f"fastest mode within 1 AP of float32 on this machine: {pick['deploy_mode']} "
        f"({pick['min_s']:.3f} s per image here, demo AP {pick['AP']:.2f} vs "
        f"{pick['AP_float32']:.2f}); get it with: {pick['command']}"
    )


if __name__ == "__main__":
    main()
