"""
Every runtime x precision users deploy with, against detectron2's built-in FCOS in eager float32,
interleaved in one run: fcos_d2 eager float32 / bfloat16, the exported graph in ONNX Runtime
float32 / int8 and in OpenVINO float32 / bfloat16 / int8 (those available on this machine), each
with its per-precision conv-bound floor; the demo model's bbox AP per mode; and the fastest mode
whose AP is within 1 point of float32 (``--pick``).
"""

import math
import os
import tempfile
import time
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from ..data import register_shapes
from ..utils import cpu_info
from .floors import conv_rates, floor_seconds, native_bfloat16
from .harness import timeit_interleaved

__all__ = [
    "DEPLOY_MODES",
    "bench_deploy",
    "bench_deploy_ap",
    "pick_fastest",
    "profile_openvino_int8",
]

# mode -> (precision, how to get it); "eager" modes are the PyTorch model itself.
DEPLOY_MODES = {
    "eager float32": ("float32", "fcos_d2.Predictor / fcos-d2 predict (the default)"),
    "eager bfloat16": ("bfloat16", "MODEL.FCOS.INFERENCE_DTYPE bfloat16"),
    "onnxruntime float32": ("float32", "fcos-d2 export --format onnx"),
    "onnxruntime int8": ("int8", "fcos-d2 export --format onnx --quantize int8"),
    "aoti float32": ("float32", "fcos-d2 export --format aoti"),
    "openvino float32": ("float32", "fcos-d2 export --format openvino --precision fp32"),
    "openvino bfloat16": ("bfloat16", "fcos-d2 export --format openvino --precision bf16"),
    "openvino int8": ("int8", "fcos-d2 export --format openvino --precision int8"),
}
_OPENVINO_PRECISION = {
    "openvino float32": "fp32",
    "openvino bfloat16": "bf16",
    "openvino int8": "int8",
}


def _openvino_available() -> bool:
    try:
        import nncf  # noqa: F401
        import openvino  # noqa: F401
    except ImportError:
        return False
    from ..export.openvino import openvino_cpu_problem

    return openvino_cpu_problem() is None


def _openvino_bf16() -> bool:
    """OpenVINO's own view (PyTorch also emulates bfloat16 on AVX-512 without AVX512_BF16;
    OpenVINO's bfloat16 mode needs the CPU's)."""
    import openvino

    return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def _compiler_available() -> bool:
    """AOTInductor compiles C++ with the system's compiler."""
    import shutil

    return any(shutil.which(c) for c in ("c++", "g++", "clang++"))


def available_modes() -> List[str]:
    """The modes this machine and install can run natively (bfloat16 only on a CPU with
    bfloat16 units: elsewhere it is emulated, many times slower than float32)."""
    bf16, ov = native_bfloat16(), _openvino_available()
    wanted = {
        "eager bfloat16": bf16,
        "aoti float32": _compiler_available(),
        "openvino float32": ov,
        "openvino bfloat16": ov and bf16 and _openvino_bf16(),
        "openvino int8": ov,
    }
    return [m for m in DEPLOY_MODES if wanted.get(m, True)]


def _exported_runners(
    cfg, ours, size, modes, calibration_dataset: str, calibration_images: int, folder: str
) -> Dict[str, Tuple[Callable[[np.ndarray], tuple], str]]:
    """
    mode -> (image -> outputs, runtime version) for the exported modes of ``modes``, their
    files written under ``folder``."""
    import onnxruntime as ort

    from ..export.graph import DeployFCOS, sample_image
    from ..export.predictor import aoti_runner, onnx_runner
    from ..export.quantize import quantize_int8
    from ..export.settings import export_settings
    from ..export.writers import write_aoti, write_onnx

    fp32, int8 = os.path.join(folder, "fp32.onnx"), os.path.join(folder, "int8.onnx")
    write_onnx(DeployFCOS(ours), sample_image(*size), fp32)
    settings = export_settings(cfg)
    quantize_int8(settings, fp32, int8, calibration_dataset, calibration_images)

    runners = {
        "onnxruntime float32": (onnx_runner(fp32, None), f"ONNX Runtime {ort.__version__}"),
        "onnxruntime int8": (onnx_runner(int8, None), f"ONNX Runtime {ort.__version__}"),
    }
    if "aoti float32" in modes:
        path = os.path.join(folder, "model.pt2")
        write_aoti(DeployFCOS(ours), sample_image(*size), path)
        runners["aoti float32"] = (
            aoti_runner(path, None, None),  # compiled here: for this CPU
            f"AOTInductor (torch {torch.__version__})",
        )
    ov_modes = [m for m in modes if m.startswith("openvino")]
    if ov_modes:
        import openvino

        from ..export.openvino import convert_onnx, openvino_runner, quantize_openvino_int8

        xml32, xml8 = os.path.join(folder, "fp32.xml"), os.path.join(folder, "int8.xml")
        convert_onnx(fp32, xml32)
        if "openvino int8" in ov_modes:
            quantize_openvino_int8(settings, fp32, xml8, calibration_dataset, calibration_images)
        for mode in ov_modes:
            precision = _OPENVINO_PRECISION[mode]
            path = xml8 if precision == "int8" else xml32
            runners[mode] = (openvino_runner(path, precision), f"OpenVINO {openvino.__version__}")
    return runners


CALIBRATION_DATASET = "fcos_d2_benchmark_calibration"


def _calibration_dataset(folder: str, images: int) -> str:
    """``images`` synthetic shapes images written under ``folder`` and registered as
    ``CALIBRATION_DATASET``: int8 speed does not depend on what calibrates it, and the
    benchmark then needs no dataset on disk."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import register_coco_instances

    from ..data.shapes import generate_split

    root = os.path.join(folder, "calibration")
    json_file = generate_split(root, "train", images, seed=0)
    if CALIBRATION_DATASET in DatasetCatalog.list():
        DatasetCatalog.remove(CALIBRATION_DATASET)
        MetadataCatalog.remove(CALIBRATION_DATASET)
    register_coco_instances(CALIBRATION_DATASET, {}, json_file, os.path.join(root, "train"))
    return CALIBRATION_DATASET


def bench_deploy(
    cfg, ours, d2, size, iters, calibration_dataset: Optional[str] = None, calibration_images=4
) -> List[Dict]:
    """
    Rows "deploy batch 1": the built-in (float32 eager) and every available mode on one uint8
    image of ``size``, timed round by round, each with ``deploy_mode``, ``precision``,
    ``floor_s`` (the network's multiply-adds at this CPU's rate for one 256 -> 256 3x3 conv of
    that precision), ``floor_ratio`` (min_s / floor_s) and ``vs_builtin`` (min_s / the
    built-in's). int8 graphs are calibrated on ``calibration_images`` images of
    ``calibration_dataset`` (by default synthetic shapes images written for it; neither
    changes their speed). ``matched_to_eager``: the
    share of fcos_d2's eager detections an exported graph gives (one-to-one, same class,
    IoU >= 0.999, |d score| <= 1e-4).
    """
    modes = available_modes()
    # the exported files (hundreds of MB) go when the rows are made, also on an error
    with tempfile.TemporaryDirectory(prefix="fcos_d2_bench_") as folder:
        calibration_dataset = calibration_dataset or _calibration_dataset(
            folder, calibration_images
        )
        runners = _exported_runners(
            cfg, ours, size, modes, calibration_dataset, calibration_images, folder
        )
        return _deploy_rows(cfg, ours, d2, size, iters, modes, runners)


def _uint8_image(size) -> torch.Tensor:
    """The (3, H, W) uint8 image the deploy rows and the int8 profile run (seeded)."""
    return (torch.rand(3, *size, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)


def _deploy_rows(cfg, ours, d2, size, iters, modes, runners) -> List[Dict]:
    """bench_deploy's rows, given the exported modes' runners."""
    from ..export.compare import matched_fractions
    from .floors import model_gmacs
    from .harness import variant

    image = _uint8_image(size)
    array = image.numpy()
    runs = {"d2 built-in (float32, eager)": lambda: d2([{"image": image.float()}])}
    names = {}
    eager = {"eager float32": ours}
    if "eager bfloat16" in modes:
        eager["eager bfloat16"] = variant(cfg, ours, INFERENCE_DTYPE="bfloat16")
    for mode, model in eager.items():
        names[mode] = f"fcos_d2 {mode}" + (" (default)" if mode == "eager float32" else "")
        runs[names[mode]] = lambda m=model: m([{"image": image}])
    for mode, (run, version) in runners.items():
        precision = DEPLOY_MODES[mode][0]
        names[mode] = f"exported {precision}, {version}"
        runs[names[mode]] = lambda r=run: r(array)
    with torch.no_grad():
        reference = ours([{"image": image}])[0]["instances"]
        reference = (reference.pred_boxes.tensor, reference.scores, reference.pred_classes)
        times = timeit_interleaved(runs, iters, "cpu")
    rates = conv_rates(ours.head.cls_logits.in_channels, size)
    gmacs = model_gmacs(ours, size, "cpu")
    rows = [
        {
            "what": "deploy batch 1",
            "mode": "d2 built-in (float32, eager)",
            **times["d2 built-in (float32, eager)"],
            "cpu_flags": cpu_info()["flags"],  # the goals' CPU kind travels with the rows
        }
    ]
    for mode, name in names.items():
        precision = DEPLOY_MODES[mode][0]
        row = {
            "what": "deploy batch 1",
            "mode": name,
            "deploy_mode": mode,
            "precision": precision,
            **times[name],
            "vs_builtin": times[name]["min_s"] / times["d2 built-in (float32, eager)"]["min_s"],
        }
        if precision in rates:
            row["floor_s"] = floor_seconds(gmacs, rates[precision]["gflops_per_s"])
            row["floor_ratio"] = row["min_s"] / row["floor_s"]
        if mode in runners:
            got = tuple(torch.from_numpy(np.asarray(o)) for o in runners[mode][0](array))
            row["matched_to_eager"] = min(matched_fractions(reference, got))
            row["detections"] = len(got[0])
        rows.append(row)
    for precision, r in rates.items():
        rows.append(
            {
                "what": "conv rate (256->256 3x3, P3 map)",
                "mode": f"{precision}, {r['by']}",
                "precision": precision,
                "gflops_per_s": r["gflops_per_s"],
                "min_s": floor_seconds(gmacs, r["gflops_per_s"]),
            }
        )
    return rows


def profile_openvino_int8(
    cfg, ours, size, calibration_dataset: Optional[str] = None, calibration_images: int = 4
) -> Optional[Dict]:
    """
    Where the time of the OpenVINO int8 graph of ``ours`` goes on one image of ``size``: the CPU
    plugin's own per-node times summed by node type and kernel (the kernel's name carries the
    precision it ran in, e.g. ``brgconv_avx512_I8``), as a row of ``profile_default``'s form,
    with the int8 conv-bound floor of that image (``floor_s``). None where OpenVINO cannot run.
    """
    if "openvino int8" not in available_modes():
        return None
    from ..export.graph import DeployFCOS, sample_image
    from ..export.openvino import compile_openvino, quantize_openvino_int8
    from ..export.settings import export_settings
    from ..export.writers import write_onnx
    from .floors import model_gmacs

    image = _uint8_image(size)
    with tempfile.TemporaryDirectory(prefix="fcos_d2_profile_") as folder:
        onnx, xml = os.path.join(folder, "fp32.onnx"), os.path.join(folder, "int8.xml")
        write_onnx(DeployFCOS(ours), sample_image(*size), onnx)
        dataset = calibration_dataset or _calibration_dataset(folder, calibration_images)
        quantize_openvino_int8(export_settings(cfg), onnx, xml, dataset, calibration_images)
        request = compile_openvino(xml, "int8", profile=True).create_infer_request()
        request.infer([image.numpy()])  # warm-up
        start = time.perf_counter()
        request.infer([image.numpy()])
        total = time.perf_counter() - start
        nodes = [
            (f"{p.node_type} {p.exec_type}", p.real_time.total_seconds())
            for p in request.profiling_info
        ]
    by_kind: Dict[str, List] = {}
    for kind, seconds in nodes:
        entry = by_kind.setdefault(kind, [kind, 0, 0.0])
        entry[1] += 1
        entry[2] += seconds
    top = sorted(by_kind.values(), key=lambda e: -e[2])
    rate = conv_rates(ours.head.cls_logits.in_channels, size)["int8"]["gflops_per_s"]
    return {
        "what": "OpenVINO int8 graph, batch 1",
        "total_s": total,
        "convolution_s": sum(e[2] for e in top if e[0].startswith("Convolution")),
        "top_ops": top[:8],
        "by_kind": top,
        "floor_s": floor_seconds(model_gmacs(ours, size, "cpu"), rate),
    }


def bench_deploy_ap(
    config: str, weights: str, dataset: str, calibration_images: int = 64
) -> Optional[List[Dict]]:
    """
    bbox AP of a trained model on ``dataset`` in every available mode (rows with
    ``deploy_mode``); None when ``weights`` does not exist (e.g. before ``make demo``)."""
    if not os.path.isfile(weights):
        return None
    register_shapes(replace=False)  # the demo's datasets, also when called on its own
    from ..config import load_config

    cfg = load_config(config, ["MODEL.WEIGHTS", weights, "MODEL.DEVICE", "cpu"])
    # the exported models go when the rows are made, also on an error
    with tempfile.TemporaryDirectory(prefix="fcos_d2_bench_ap_") as folder:
        return [
            _ap_row(cfg, weights, dataset, mode, folder, calibration_images)
            for mode in available_modes()
        ]


def _ap_row(
    cfg, weights: str, dataset: str, mode: str, folder: str, calibration_images: int
) -> Dict:
    """bench_deploy_ap's row of one mode; an exported mode's files are written under ``folder``."""
    from detectron2.data import build_detection_test_loader
    from detectron2.evaluation import inference_on_dataset
    from detectron2.modeling import build_model

    from ..checkpoint import load_for_inference
    from ..evaluation import FCOSCOCOEvaluator
    from ..export.evaluate import evaluate_exported
    from ..export.writers import export_model

    if mode.startswith("eager"):
        c = cfg.clone()
        c.MODEL.FCOS.INFERENCE_DTYPE = DEPLOY_MODES[mode][0]
        model = build_model(c).eval()
        load_for_inference(model, weights)
        loader = build_detection_test_loader(c, dataset)
        evaluator = FCOSCOCOEvaluator(dataset, output_dir=None)
        result = inference_on_dataset(model, loader, evaluator)["bbox"]
    else:
        out = os.path.join(folder, mode.replace(" ", "_"))
        kwargs = {"calibration_images": calibration_images}
        if mode == "onnxruntime int8":
            kwargs["quantize"] = "int8"
        if mode.startswith("openvino"):
            kwargs["precision"] = _OPENVINO_PRECISION[mode]
        fmt = mode.split()[0].replace("onnxruntime", "onnx")
        export_model(cfg, fmt, out, **kwargs)
        result = evaluate_exported(out, dataset)["bbox"]
    what = f"bbox AP on {dataset}"
    return {"what": what, "mode": _AP_NAMES.get(mode, mode), "deploy_mode": mode, **result}


# AP row names of the previous release (kept for its goals and reports)
_AP_NAMES = {"onnxruntime float32": "exported float32", "onnxruntime int8": "exported int8"}


def pick_fastest(rows: List[Dict], max_ap_drop: float = 1.0) -> Optional[Dict]:
    """
    The fastest ``deploy batch 1`` mode whose demo AP (the ``bbox AP`` row of the same
    ``deploy_mode``) is within ``max_ap_drop`` points of eager float32's, with its time, AP and
    the command that gives it; None without AP rows.
    """
    ap = {
        r["deploy_mode"]: r["AP"]
        for r in rows
        if r["what"].startswith("bbox AP") and "deploy_mode" in r
    }
    if "eager float32" not in ap:
        return None
    timed = [r for r in rows if r["what"] == "deploy batch 1" and r.get("deploy_mode") in ap]
    floor = ap["eager float32"] - max_ap_drop
    ok = [r for r in timed if math.isfinite(ap[r["deploy_mode"]]) and ap[r["deploy_mode"]] >= floor]
    if not ok:
        return None
    best = min(ok, key=lambda r: r["min_s"])
    mode = best["deploy_mode"]
    return {
        "deploy_mode": mode,
        "min_s": best["min_s"],
        "AP": ap[mode],
        "AP_float32": ap["eager float32"],
        "command": DEPLOY_MODES[mode][1],
    }
