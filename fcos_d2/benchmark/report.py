"""
The report of ``python -m fcos_d2.benchmark``: machine facts, the goals of the performance issue
as measured ratios, the tables it prints and the bar chart it writes.
"""

import platform
import time
from typing import Dict, List

import torch

__all__ = ["machine_info", "summarize", "print_report", "print_profile", "write_chart"]

END_TO_END_TARGETS = {"float32": 0.75, "bfloat16": 0.45}


def machine_info(device: str) -> Dict:
    info = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": device,
        "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        info["cpu"] = next(
            l.split(":", 1)[1].strip() for l in text.splitlines() if l.startswith("model name")
        )
        flags = next(l for l in text.splitlines() if l.startswith("flags")).split()
        info["cpu_flags"] = sorted(x for x in flags if x.startswith(("avx", "amx", "fma")))
    except (OSError, StopIteration):
        info["cpu"] = platform.processor()
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _row(rows: List[Dict], what: str, mode: str) -> Dict:
    return next(r for r in rows if r["what"] == what and r["mode"].startswith(mode))


def _ratio(rows, what, mode, key="min_s", ref="d2 built-in") -> float:
    return _row(rows, what, mode)[key] / max(_row(rows, what, ref)[key], 1e-12)


def _end_to_end_goals(rows: List[Dict], batch: int) -> List[Dict]:
    what = f"end-to-end batch {batch}"
    d2_time = _row(rows, what, "d2")["min_s"]
    exact = [
        r
        for r in rows
        if r["what"] == what
        and r["mode"].startswith("fcos_d2 float32")
        and r["same_detections_as_d2"]
    ]
    best = min(exact, key=lambda r: r["min_s"]) if exact else None
    goals = [
        {
            "goal": f"{what}, float32, identical ({best['mode'] if best else 'none'})",
            "target": END_TO_END_TARGETS["float32"],
            "ratio": best["min_s"] / d2_time if best else float("nan"),
        },
        {
            "goal": f"{what}, bfloat16 mode",
            "target": END_TO_END_TARGETS["bfloat16"],
            "ratio": _ratio(rows, what, "fcos_d2 bfloat16", ref="d2"),
        },
    ]
    floor = [r for r in rows if r["what"] == what and r["mode"] == "conv-bound floor (float32)"]
    if floor:  # not a goal: where the float32 ratio would be with zero overhead
        goals.append(
            {
                "goal": f"{what}, float32 conv-bound floor (reference, not a goal)",
                "target": float("nan"),
                "ratio": floor[0]["min_s"] / d2_time,
            }
        )
    return goals


def summarize(rows: List[Dict]) -> List[Dict]:
    """The goals of the performance issue, as measured ratios (fcos_d2 / built-in)."""
    goals = _end_to_end_goals(rows, 1) + _end_to_end_goals(rows, 4)
    goals.append(
        {
            "goal": "post-processing",
            "target": 0.5,
            "ratio": _ratio(rows, "post-processing", "fcos_d2"),
        }
    )
    goals.append(
        {
            "goal": "matching M=100 time",
            "target": 0.5,
            "ratio": _ratio(rows, "matching M=100", "fcos_d2"),
        }
    )
    for m in (1000, 5000):
        goals.append(
            {
                "goal": f"matching M={m} peak extra memory",
                "target": 0.5,
                "ratio": _ratio(rows, f"matching M={m}", "fcos_d2", "peak_extra_mib"),
            }
        )
    for mode in ("float32", "bfloat16"):
        goals.append(
            {
                "goal": f"training iteration, {mode}",
                "target": 0.9,
                "ratio": _ratio(rows, "training iteration", f"fcos_d2 {mode}"),
            }
        )
    for g in goals:
        g["met"] = None if g["target"] != g["target"] else bool(g["ratio"] <= g["target"])
    return goals


def write_chart(rows: List[Dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timed = [r for r in rows if "min_s" in r and not r["what"].startswith("matching M=0")]
    labels = [f"{r['what']}\n{r['mode']}" for r in timed]
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(timed) + 1))
    ax.barh(
        range(len(timed)),
        [r["min_s"] * 1000 for r in timed],
        color=["tab:gray" if r["mode"].startswith("d2") else "tab:blue" for r in timed],
    )
    ax.set_yticks(range(len(timed)), labels, fontsize=6)
    ax.set_xscale("log")
    ax.set_xlabel("milliseconds (min over runs; log scale); grey = detectron2 built-in FCOS")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


COLUMNS = (
    "what",
    "mode",
    "min_s",
    "median_s",
    "gflops_per_s",
    "peak_extra_mib",
    "same_detections_as_d2",
    "detections",
)


def print_report(result: Dict) -> None:
    from tabulate import tabulate

    print(result["machine"])
    table = [[r.get(c, "") for c in COLUMNS] for r in result["rows"]]
    print(tabulate(table, headers=COLUMNS, floatfmt=".4g", tablefmt="pipe"))
    print()
    met = {True: "yes", False: "NO", None: "-"}
    goals = [[g["goal"], g["target"], g["ratio"], met[g["met"]]] for g in result["goals"]]
    headers = ["goal (fcos_d2 / built-in)", "target", "measured", "met"]
    print(tabulate(goals, headers=headers, floatfmt=".3f", tablefmt="pipe"))


def print_profile(rows: List[Dict]) -> None:
    from tabulate import tabulate

    for r in rows:
        share = r["convolution_s"] / r["total_s"]
        print(
            f"\n{r['what']}: {r['total_s']:.3f} s under the profiler, convolutions "
            f"{r['convolution_s']:.3f} s ({share:.0%}); operators by own time:"
        )
        print(tabulate(r["top_ops"], headers=["operator", "calls", "s"], floatfmt=".4f"))
