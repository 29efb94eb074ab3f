"""
Exported models (python -m fcos_d2.export) against detectron2's built-in FCOS in eager PyTorch:
latency of the float32 and int8 ONNX graphs in ONNX Runtime, interleaved with the built-in in
one run, and the demo model's bbox AP per format.
"""

import os
import tempfile
from typing import Dict, List, Optional

import torch

from ..data import register_shapes
from .harness import timeit_interleaved

__all__ = ["bench_deploy", "bench_deploy_ap"]

DEPLOY_TARGETS = {"float32": 0.70, "int8": 0.30}


def _onnx_sessions(cfg, ours, size, calibration_dataset: str, calibration_images: int):
    import onnxruntime as ort

    from ..export.graph import DeployFCOS, sample_image
    from ..export.quantize import quantize_int8
    from ..export.writers import write_onnx

    folder = tempfile.mkdtemp(prefix="fcos_d2_bench_")
    fp32, int8 = os.path.join(folder, "fp32.onnx"), os.path.join(folder, "int8.onnx")
    write_onnx(DeployFCOS(ours), sample_image(*size), fp32)
    quantize_int8(cfg, fp32, int8, calibration_dataset, calibration_images)
    make = lambda p: ort.InferenceSession(p, providers=["CPUExecutionProvider"])  # noqa: E731
    return {"float32": make(fp32), "int8": make(int8)}, ort.__version__


def bench_deploy(
    cfg, ours, d2, size, iters, calibration_dataset: str = "shapes_train", calibration_images=4
) -> List[Dict]:
    """
    Rows "deploy batch 1": the built-in (float32 eager), fcos_d2 eager, and the exported float32
    and int8 graphs in ONNX Runtime on one uint8 image of ``size``, timed round by round. The
    int8 graph is calibrated on ``calibration_images`` images of ``calibration_dataset`` (the
    count does not change its speed). ``matched_to_eager``: the share of fcos_d2's eager
    detections the graph gives (one-to-one, same class, IoU >= 0.999, |d score| <= 1e-4).
    """
    from ..export.compare import matched_fractions

    sessions, version = _onnx_sessions(cfg, ours, size, calibration_dataset, calibration_images)
    gen = torch.Generator().manual_seed(0)
    image = (torch.rand(3, *size, generator=gen) * 255).to(torch.uint8)
    array = image.numpy()
    runs = {
        "d2 built-in (float32, eager)": lambda: d2([{"image": image.float()}]),
        "fcos_d2 eager (float32, default)": lambda: ours([{"image": image}]),
    }
    for precision, session in sessions.items():
        runs[f"exported {precision}, ONNX Runtime {version}"] = lambda s=session: s.run(
            None, {"image": array}
        )
    with torch.no_grad():
        eager = ours([{"image": image}])[0]["instances"]
        eager = (eager.pred_boxes.tensor, eager.scores, eager.pred_classes)
        times = timeit_interleaved(runs, iters, "cpu")
    rows = []
    for name, t in times.items():
        row = {"what": "deploy batch 1", "mode": name, **t}
        for precision, session in sessions.items():
            if name.startswith(f"exported {precision}"):
                got = tuple(torch.from_numpy(o) for o in session.run(None, {"image": array}))
                row["matched_to_eager"] = min(matched_fractions(eager, got))
                row["detections"] = len(got[0])
        rows.append(row)
    return rows


def bench_deploy_ap(
    config: str, weights: str, dataset: str, calibration_images: int = 64
) -> Optional[List[Dict]]:
    """
    bbox AP of a trained model on ``dataset``: eager, exported float32 and int8 (ONNX
    Runtime); None when ``weights`` does not exist (e.g. before ``make demo``)."""
    if not os.path.isfile(weights):
        return None
    register_shapes(replace=False)  # the demo's datasets, also when called on its own
    from detectron2.data import build_detection_test_loader
    from detectron2.evaluation import COCOEvaluator, inference_on_dataset

    from ..config_loader import load_config
    from ..export.evaluate import evaluate_exported
    from ..export.writers import build_deploy_model, export_model

    cfg = load_config(config, ["MODEL.WEIGHTS", weights, "MODEL.DEVICE", "cpu"])
    model = build_deploy_model(cfg).model
    loader = build_detection_test_loader(cfg, dataset)
    eager = inference_on_dataset(model, loader, COCOEvaluator(dataset, output_dir=None))
    rows = [{"what": f"bbox AP on {dataset}", "mode": "eager float32", **eager["bbox"]}]
    folder = tempfile.mkdtemp(prefix="fcos_d2_bench_ap_")
    for precision in ("float32", "int8"):
        out = os.path.join(folder, precision)
        quantize = "int8" if precision == "int8" else None
        export_model(cfg, "onnx", out, quantize=quantize, calibration_images=calibration_images)
        result = evaluate_exported(out, dataset)["bbox"]
        rows.append({"what": f"bbox AP on {dataset}", "mode": f"exported {precision}", **result})
    return rows
