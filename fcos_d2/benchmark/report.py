"""
The report of ``python -m fcos_d2.benchmark``: machine facts, the goals of the performance issue
as measured ratios, the tables it prints and the bar chart it writes.
"""

import platform
import time
from typing import Dict, List

import torch

from ..utils import cpu_info
from .floors import FLOOR
from .inference import COMPILED, DEFAULT, ONE_BY_ONE
from .training import DIRECT

__all__ = [
    "machine_info",
    "summarize",
    "deploy_goals",
    "print_report",
    "print_profile",
    "write_chart",
]

# Ratios to the built-in are reported without a target (NaN) where a floor ratio states the
# goal: how far the built-in is from a CPU's floor differs from CPU to CPU.
REFERENCE = float("nan")
# Each precision's time over its conv-bound floor (the network's multiply-adds at the rate of
# one 256 -> 256 3x3 conv in that precision on this CPU): how much of it is overhead.
FLOOR_TARGETS = {"float32": 1.15, "int8": 1.1, "bfloat16": 1.5}
TRAINING_TARGET = 0.9


def machine_info(device: str) -> Dict:
    info = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": device,
        "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(),
    }
    cpu = cpu_info()
    info["cpu"] = cpu["model"]
    info["cpu_flags"] = cpu["flags"]
    info["cpu_isa"] = f"ATen {cpu['aten']}, oneDNN {cpu['onednn_max_isa']}"
    info["native_bfloat16"] = cpu["native_bfloat16"]
    try:  # what OpenVINO's CPU plugin reports it can use here
        import openvino

        info["openvino_cpu"] = list(
            openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        )
    except ImportError:
        pass
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _row(rows: List[Dict], what: str, mode: str) -> Dict:
    return next(r for r in rows if r["what"] == what and r["mode"].startswith(mode))


def _ratio(rows, what, mode, key="min_s", ref="d2 built-in") -> float:
    return _row(rows, what, mode)[key] / max(_row(rows, what, ref)[key], 1e-12)


def _rows(rows: List[Dict], what: str, mode: str) -> List[Dict]:
    return [r for r in rows if r["what"] == what and r["mode"].startswith(mode)]


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
            "target": REFERENCE,
            "ratio": best["min_s"] / d2_time if best else float("nan"),
        }
    ]
    if _rows(rows, what, "fcos_d2 bfloat16"):  # measured where the CPU has bfloat16 units
        goals.append(
            {
                "goal": f"{what}, bfloat16 mode",
                "target": REFERENCE,
                "ratio": _ratio(rows, what, "fcos_d2 bfloat16", ref="d2"),
            }
        )
    default = _rows(rows, what, DEFAULT)
    floor = _rows(rows, what, FLOOR)
    if batch == 1 and default and floor:
        goals.append(
            {
                "goal": f"{what}, float32 default / the float32 conv-bound floor",
                "target": FLOOR_TARGETS["float32"],
                "ratio": default[0]["min_s"] / floor[0]["min_s"],
            }
        )
    compiled = _rows(rows, what, COMPILED)
    if compiled and default:
        goals.append(
            {
                "goal": f"{what}, torch.compile / eager default",
                "target": REFERENCE,
                "ratio": compiled[0]["min_s"] / default[0]["min_s"],
            }
        )
    one = _rows(rows, "end-to-end batch 1", DEFAULT)
    one_by_one = _rows(rows, what, ONE_BY_ONE)
    if batch > 1 and default and (one_by_one or one):
        # against the same images one call each, timed in the same rounds, where measured
        alone = one_by_one[0]["min_s"] / batch if one_by_one else one[0]["min_s"]
        goals.append(
            {
                "goal": f"{what}, float32 default, time per image / batch 1's",
                "target": 1.0,
                "ratio": default[0]["min_s"] / batch / alone,
            }
        )
    return goals


def summarize(rows: List[Dict]) -> List[Dict]:
    """The goals of the performance issue, as measured ratios (fcos_d2 / built-in)."""
    batches = sorted({int(r["what"].split()[-1]) for r in rows if r["what"].startswith("end-to")})
    goals = [g for b in batches for g in _end_to_end_goals(rows, b)]
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
        if _rows(rows, "training iteration", f"fcos_d2 {mode}"):
            goals.append(
                {
                    "goal": f"training iteration, {mode}",
                    "target": TRAINING_TARGET,
                    "ratio": _ratio(rows, "training iteration", f"fcos_d2 {mode}"),
                }
            )
    direct = _rows(rows, "training iteration", DIRECT)
    if direct:
        goals.append(
            {
                "goal": "training iteration, float32 default / direct 3x3 convolutions",
                "target": REFERENCE,
                "ratio": _row(rows, "training iteration", "fcos_d2 float32")["min_s"]
                / direct[0]["min_s"],
            }
        )
    goals += deploy_goals(rows)
    return _with_met(goals)


def _with_met(goals: List[Dict]) -> List[Dict]:
    """Each goal with ``met``: ratio <= target, or None where either is not a number."""
    for g in goals:
        unknown = g["target"] != g["target"] or g["ratio"] != g["ratio"]
        g["met"] = None if unknown else bool(g["ratio"] <= g["target"])
    return goals


def _has_amx(rows: List[Dict]) -> bool:
    flags = next((r["cpu_flags"] for r in rows if "cpu_flags" in r), None)
    if flags is None:
        flags = cpu_info()["flags"]
    return any(f.startswith("amx") for f in flags)


# Ratios to the built-in: (AMX CPU, other CPUs); NaN: no such goal on that kind of CPU (without
# VNNI or bfloat16 units the floors themselves are above what a ratio to the built-in could ask).
RUNTIME_TARGETS = {
    "best int8 mode": (0.06, float("nan")),
    "best bfloat16 mode": (0.12, float("nan")),
}
AP_DROP_TARGET = 1.0  # demo AP drop of every reduced-precision mode


def deploy_goals(rows: List[Dict]) -> List[Dict]:
    """Exported graphs and reduced-precision modes / the built-in, each mode over its own
    floor, and the AP of each mode (when measured), with ``met``: the AP "ratio" is an
    absolute AP difference, as the goals state them."""
    goals = []
    if any(r["what"] == "deploy batch 1" for r in rows):
        for precision in ("float32", "int8"):
            goals.append(
                {
                    "goal": f"deploy batch 1, exported {precision} in ONNX Runtime",
                    "target": REFERENCE,
                    "ratio": _ratio(rows, "deploy batch 1", f"exported {precision}", ref="d2"),
                }
            )
        goals += _runtime_goals(rows)
    goals += _ap_goals(rows)
    goals += _eval_goals(rows)
    return _with_met(goals)


def _eval_goals(rows: List[Dict]) -> List[Dict]:
    timed = {r["mode"]: r for r in rows if r["what"].startswith("COCO evaluation")}
    if "faster-coco-eval" not in timed or "pycocotools" not in timed:
        return []
    fast, slow = timed["faster-coco-eval"], timed["pycocotools"]
    same = abs(fast["AP"] - slow["AP"]) <= 1e-4 * 100  # AP in points: 1e-4 of AP as a fraction
    return [
        {
            "goal": "COCO evaluation time, faster-coco-eval / pycocotools "
            f"({'same AP' if same else 'AP DIFFERS'})",
            "target": 0.3 if same else float("nan"),
            "ratio": fast["min_s"] / slow["min_s"],
        }
    ]


def _runtime_goals(rows: List[Dict]) -> List[Dict]:
    timed = [r for r in rows if r["what"] == "deploy batch 1" and "deploy_mode" in r]
    if not timed:
        return []
    d2 = _row(rows, "deploy batch 1", "d2")["min_s"]
    amx = _has_amx(rows)
    goals = []
    for precision, key in (("int8", "best int8 mode"), ("bfloat16", "best bfloat16 mode")):
        modes = [r for r in timed if r["precision"] == precision]
        if modes:
            best = min(modes, key=lambda r: r["min_s"])
            goals.append(
                {
                    "goal": f"deploy batch 1, {key} ({best['deploy_mode']}; "
                    f"{'AMX' if amx else 'no AMX'} CPU)",
                    "target": RUNTIME_TARGETS[key][0 if amx else 1],
                    "ratio": best["min_s"] / d2,
                }
            )
    for precision in ("int8", "bfloat16"):
        floored = [r for r in timed if r["precision"] == precision and "floor_ratio" in r]
        if floored:
            best = min(floored, key=lambda r: r["floor_ratio"])
            goals.append(
                {
                    "goal": f"deploy batch 1, best {precision} mode ({best['deploy_mode']}) / "
                    f"the {precision} floor",
                    "target": FLOOR_TARGETS[precision],
                    "ratio": best["floor_ratio"],
                }
            )
    eager = next((r for r in timed if r["deploy_mode"] == "eager float32"), None)
    exported = [r for r in timed if r["precision"] == "float32" and r is not eager]
    if eager and exported:
        best = min(exported, key=lambda r: r["min_s"])
        goals.append(
            {
                "goal": f"deploy batch 1, best exported float32 ({best['deploy_mode']}) / eager "
                "float32",
                "target": 1.0,
                "ratio": best["min_s"] / eager["min_s"],
            }
        )
    return goals


def _ap_goals(rows: List[Dict]) -> List[Dict]:
    ap = {r["mode"]: r["AP"] for r in rows if r["what"].startswith("bbox AP")}
    if not ap:
        return []
    goals = [
        {
            "goal": "demo bbox AP |exported float32 - eager| (AP points, not a ratio)",
            "target": 0.1,
            "ratio": abs(ap["exported float32"] - ap["eager float32"]),
        },
        {
            "goal": "demo bbox AP drop eager float32 -> int8 (AP points, not a ratio)",
            "target": AP_DROP_TARGET,
            "ratio": ap["eager float32"] - ap["exported int8"],
        },
    ]
    reduced = [
        r
        for r in rows
        if r["what"].startswith("bbox AP")
        and r.get("deploy_mode", "").endswith(("int8", "bfloat16"))
        and r["mode"] != "exported int8"
    ]
    for r in reduced:
        goals.append(
            {
                "goal": f"demo bbox AP drop eager float32 -> {r['deploy_mode']} (AP points)",
                "target": AP_DROP_TARGET,
                "ratio": ap["eager float32"] - r["AP"],
            }
        )
    return goals


def write_chart(rows: List[Dict], path: str) -> None:
    """Each speed or memory goal as measured / built-in, with its target marked: green bars met
    it, red ones did not; the dotted line is the built-in (1.0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    goals = [g for g in summarize(rows) if g["target"] == g["target"] and "AP" not in g["goal"]]
    fig, ax = plt.subplots(figsize=(9, 0.4 * len(goals) + 1.2))
    y = range(len(goals))
    ax.barh(
        y,
        [g["ratio"] for g in goals],
        color=["tab:green" if g["met"] else "tab:red" for g in goals],
    )
    ax.scatter(
        [g["target"] for g in goals], y, marker="|", s=400, color="black", label="goal", zorder=3
    )
    for i, g in enumerate(goals):
        ax.text(g["ratio"], i, f" {g['ratio']:.2f}", va="center", fontsize=7)
    ax.axvline(1.0, color="gray", linestyle=":")
    ax.set_yticks(list(y), [g["goal"] for g in goals], fontsize=7)
    ax.set_xlabel("fcos_d2 / detectron2 built-in FCOS (lower is better); | = goal")
    ax.invert_yaxis()
    ax.legend(loc="lower right", fontsize=7)
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
    "vs_builtin",
    "floor_ratio",
    "matched_to_eager",
    "detections",
    "AP",
    "AP50",
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
    for line in result.get("left_out", []):
        print(f"\n{line}")


def print_profile(rows: List[Dict]) -> None:
    from tabulate import tabulate

    for r in rows:
        share = r["convolution_s"] / r["total_s"]
        print(
            f"\n{r['what']}: {r['total_s']:.3f} s under the profiler, torch's convolution "
            f"operators {r['convolution_s']:.3f} s ({share:.0%}; Winograd convolutions are "
            "matrix products); operators by own time:"
        )
        if "floor_s" in r:
            print(f"(its conv-bound floor: {r['floor_s']:.3f} s)")
        print(tabulate(r["top_ops"], headers=["operator", "calls", "s"], floatfmt=".4f"))
