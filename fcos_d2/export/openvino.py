"""
The exported graph in OpenVINO (``pip install 'fcos_d2[openvino]'``): the ONNX graph converted to
an OpenVINO IR (``model.xml`` / ``model.bin``, float32 weights), run in float32 or bfloat16 (an
inference precision of OpenVINO's CPU plugin, same IR), or quantized to int8 by NNCF's
post-training quantization calibrated as ``--quantize int8`` is (images of a registered dataset,
resized as the exported predictor feeds them); the head's three predictor convs and the
post-processing stay float32. Same contract as the ONNX graph: uint8 (3, H, W) in, boxes,
scores, classes out, NMS inside, any H and W.
"""

import os
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from ..utils.logger import quiet_quantization_tools

__all__ = [
    "OPENVINO_PRECISIONS",
    "compile_openvino",
    "convert_onnx",
    "quantize_openvino_int8",
    "openvino_runner",
    "openvino_cpu_problem",
]

# --precision of the OpenVINO export -> OpenVINO's INFERENCE_PRECISION_HINT at run time
OPENVINO_PRECISIONS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
# NNCF name patterns of what stays float32: the head's predictor convs (as FLOAT_MODULES of the
# ONNX int8 export) and everything outside backbone and head (normalisation, decoding,
# thresholds, NMS: quantizing the scores on their way to the thresholds cost the demo model
# 9 AP, 88.98 -> 80.1; with them float32, 88.87)
_FLOAT_PATTERNS = (
    ".*head/cls_logits.*",
    ".*head/bbox_pred.*",
    ".*head/ctrness.*",
    "^(?!/model/(backbone|head)/).*",
)

Outputs = Tuple[np.ndarray, np.ndarray, np.ndarray]


# oneDNN ISA caps below AVX-512 under which OpenVINO 2026.4's CPU plugin dies with a segmentation
# fault on an AVX-512 CPU (measured here, float32 and int8 IRs alike; AVX512_CORE runs)
_CRASHING_CAPS = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2")


def openvino_cpu_problem() -> Optional[str]:
    """Why OpenVINO's CPU plugin cannot run in this process, or None."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if cap in _CRASHING_CAPS:
        return (
            f"ONEDNN_MAX_CPU_ISA={cap}: OpenVINO's CPU plugin crashes under this oneDNN ISA cap "
            "(a CPU emulated below its own ISA); unset it to run OpenVINO"
        )
    return None


def _check_cpu() -> None:
    problem = openvino_cpu_problem()
    if problem:
        raise RuntimeError(problem)


def _openvino():
    try:
        import openvino
    except ImportError as e:
        raise ImportError(
            "OpenVINO export and runs need openvino: pip install 'fcos_d2[openvino]'"
        ) from e
    return openvino


def convert_onnx(onnx_path: str, xml_path: str) -> None:
    """The ONNX graph at ``onnx_path`` as an OpenVINO IR at ``xml_path`` (float32 weights)."""
    ov = _openvino()
    ov.save_model(ov.convert_model(onnx_path), xml_path, compress_to_fp16=False)


def quantize_openvino_int8(
    settings, onnx_path: str, xml_path: str, dataset: str, count: int
) -> Dict[str, Any]:
    """NNCF int8 post-training quantization of the ONNX graph at ``onnx_path``, calibrated on
    ``count`` images of ``dataset``, written as an IR; returns what export.json records."""
    ov = _openvino()
    _check_cpu()  # NNCF runs the model on the calibration images
    try:
        import nncf
    except ImportError as e:
        raise ImportError("int8 OpenVINO export needs nncf: pip install 'fcos_d2[openvino]'") from e
    from .quantize import calibration_images

    images = calibration_images(settings, dataset, count)
    model = ov.convert_model(onnx_path)
    with quiet_quantization_tools():
        quantized = nncf.quantize(
            model,
            nncf.Dataset(images),
            subset_size=len(images),
            ignored_scope=nncf.IgnoredScope(patterns=list(_FLOAT_PATTERNS), validate=False),
        )
    ov.save_model(quantized, xml_path, compress_to_fp16=False)
    return {
        "quantization": {
            "tool": f"NNCF {nncf.__version__} post-training quantization",
            "calibration_dataset": dataset,
            "calibration_images": len(images),
            "float32": list(_FLOAT_PATTERNS),
        }
    }


def compile_openvino(
    path: str, precision: str, num_threads: Optional[int] = None, profile: bool = False
):
    """The IR at ``path`` compiled for OpenVINO's CPU plugin in the inference precision of
    ``precision`` ("fp32", "bf16", "int8"): float32 is asked for explicitly, since the plugin
    defaults to bfloat16 on CPUs with AMX. ``profile``: its requests keep per-node times
    (``profiling_info``)."""
    ov = _openvino()
    _check_cpu()
    if precision not in OPENVINO_PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {list(OPENVINO_PRECISIONS)}")
    core = ov.Core()
    hint = OPENVINO_PRECISIONS[precision]
    if hint == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        raise RuntimeError(
            f"{path}: bfloat16 inference needs a CPU with bfloat16 support (AVX512_BF16 or AMX); "
            "this one has none (export with --precision fp32 or int8)"
        )
    config: Dict[str, Any] = {"INFERENCE_PRECISION_HINT": hint}
    if num_threads:
        config["INFERENCE_NUM_THREADS"] = int(num_threads)
    if profile:
        config["PERF_COUNT"] = True
    return core.compile_model(path, "CPU", config)


def openvino_runner(
    path: str, precision: str, num_threads: Optional[int] = None
) -> Callable[[np.ndarray], Outputs]:
    """``image -> (boxes, scores, classes)`` of the IR at ``path`` on OpenVINO's CPU plugin (see
    :func:`compile_openvino`)."""
    compiled = compile_openvino(path, precision, num_threads)
    outputs = compiled.outputs
    request = compiled.create_infer_request()

    def run(image: np.ndarray) -> Outputs:
        result = request.infer([np.ascontiguousarray(image)])
        return tuple(np.asarray(result[o]) for o in outputs)

    return run
