"""
Writing an exported directory: ``model.onnx`` (ONNX, opset 17) or ``model.ts`` (TorchScript),
plus ``export.json`` with what a runtime needs to feed the graph and read its outputs.
"""

import json
import os
import warnings
from typing import Any, Dict, Optional, Union

import torch
from detectron2.config import CfgNode
from omegaconf import DictConfig
from torch import nn

from ..data import dataset_metadata
from .graph import INPUT_NAME, OUTPUT_NAMES, DeployFCOS, sample_image
from .settings import ExportSettings, build_export_model, export_settings

__all__ = [
    "FORMATS",
    "MODEL_FILES",
    "RUNTIMES",
    "build_deploy_model",
    "trace",
    "write_onnx",
    "export_model",
    "read_export_json",
]

FORMATS = ("onnx", "torchscript", "openvino")
MODEL_FILES = {"onnx": "model.onnx", "torchscript": "model.ts", "openvino": "model.xml"}
# runtime of each format, and the precision names export.json records
RUNTIMES = {"onnx": "onnxruntime", "torchscript": "torchscript", "openvino": "openvino"}
PRECISION_NAMES = {"fp32": "float32", "bf16": "bfloat16", "int8": "int8"}
ONNX_OPSET = 17
EXPORT_JSON = "export.json"


def build_deploy_model(cfg: Union[CfgNode, DictConfig]) -> DeployFCOS:
    """The eval-mode model of ``cfg`` (YAML or Python) on the CPU, with its weights loaded (any
    layout fcos_d2 loads), wrapped as a :class:`DeployFCOS`."""
    return DeployFCOS(build_export_model(cfg))


def trace(module: nn.Module, image: torch.Tensor) -> torch.jit.ScriptModule:
    """``torch.jit.trace`` of a :class:`DeployFCOS` (its graph has no data-dependent branch, so
    the trace serves every image size and detection count)."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return torch.jit.trace(module, (image,), check_trace=False)


def write_onnx(module: nn.Module, image: torch.Tensor, path: str) -> None:
    """ONNX export with dynamic H, W and detection count (TorchScript-based exporter: the graph's
    data-dependent sizes (nonzero, top-k, NMS) export as ONNX ops)."""
    import onnx

    dynamic = {INPUT_NAME: {1: "height", 2: "width"}}
    dynamic.update({name: {0: "detections"} for name in OUTPUT_NAMES})
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and exporter deprecation warnings
        torch.onnx.export(
            module,
            (image,),
            path,
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=dynamic,
            opset_version=ONNX_OPSET,
        )
    onnx.checker.check_model(path)


def _class_names(settings: ExportSettings) -> Optional[list]:
    """thing_classes of the config's datasets (a COCO-format dataset fills them when loaded);
    None when no dataset has them or their files are not there."""
    for name in settings.test_datasets + settings.train_datasets:
        names = dataset_metadata(name).get("thing_classes")
        if names:
            return list(names)
    return None


def _export_json(
    settings: ExportSettings, fmt: str, sample: torch.Tensor, extra: Dict[str, Any]
) -> Dict:
    import fcos_d2

    thresholds = settings.class_thresholds
    info = {
        "format": fmt,
        "file": MODEL_FILES[fmt],
        "runtime": RUNTIMES[fmt],
        "precision": "float32",
        "input": {
            "name": INPUT_NAME,
            "dtype": "uint8",
            "shape": [3, "height", "width"],
            "format": settings.input_format,
        },
        "outputs": {
            "boxes": "float32 (D, 4) XYXY in the input image's pixels, clipped to it",
            "scores": "float32 (D,), by decreasing score",
            "classes": "int64 (D,)",
        },
        "resize": {
            "min_size_test": settings.min_size_test,
            "max_size_test": settings.max_size_test,
        },
        "num_classes": settings.num_classes,
        "class_names": _class_names(settings),
        "score_thresh": settings.score_thresh,
        # in the graph: detections below their class's threshold are already dropped
        "class_thresholds": (
            None if thresholds is None else {"file": thresholds[0], "values": thresholds[1]}
        ),
        "detections_per_image": settings.detections_per_image,
        "trace_size": list(sample.shape[1:]),
        "fcos_d2_version": fcos_d2.__version__,
        "torch_version": torch.__version__,
        "config": settings.config_text,
    }
    if fmt == "onnx":
        info["opset"] = ONNX_OPSET
    info.update(extra)
    return info


def export_model(
    cfg: Union[CfgNode, DictConfig],
    fmt: str,
    output_dir: str,
    *,
    quantize: Optional[str] = None,
    precision: Optional[str] = None,
    calibration_dataset: Optional[str] = None,
    calibration_images: int = 64,
) -> Dict[str, Any]:
    """
    Export the model of ``cfg`` (with ``MODEL.WEIGHTS``; a Python config: with
    ``train.init_checkpoint``) to ``output_dir``: the model file and ``export.json``, whose
    content is returned.

    Args:
        fmt: "onnx", "torchscript" or "openvino".
        quantize: None, or "int8" (ONNX only): static post-training quantization calibrated on
            ``calibration_images`` images of the registered dataset ``calibration_dataset``
            (default: the first of ``DATASETS.TRAIN``).
        precision: OpenVINO only: "fp32" (default), "bf16" (OpenVINO's bfloat16 inference of
            the float32 IR) or "int8" (NNCF quantization, calibrated as ``quantize``).
    """
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {list(FORMATS)}")
    if quantize not in (None, "int8"):
        raise ValueError(f"quantize={quantize!r} is not one of [None, 'int8']")
    if quantize and fmt != "onnx":
        raise ValueError("--quantize int8 needs --format onnx (for OpenVINO use --precision int8)")
    if precision is not None and fmt != "openvino":
        raise ValueError(f"--precision {precision} needs --format openvino")
    precision = precision or ("fp32" if fmt == "openvino" else None)
    if precision is not None and precision not in PRECISION_NAMES:
        raise ValueError(f"--precision {precision!r} is not one of {list(PRECISION_NAMES)}")
    extra: Dict[str, Any] = {}
    settings = export_settings(cfg)
    if quantize or precision == "int8":
        from .quantize import check_calibration_dataset

        calibration_dataset = check_calibration_dataset(settings, calibration_dataset)
    deploy = build_deploy_model(cfg)
    min_size = settings.min_size_test
    sample = sample_image(min_size, min_size * 4 // 3 + 3)  # an odd width, like real images
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, MODEL_FILES[fmt])
    if fmt == "torchscript":
        trace(deploy, sample).save(path)
    elif fmt == "openvino":
        extra = _write_openvino(
            settings, deploy, sample, output_dir, precision, calibration_dataset, calibration_images
        )
    elif quantize:
        from .quantize import quantize_int8

        float_path = os.path.join(output_dir, "model_float32.onnx")
        write_onnx(deploy, sample, float_path)
        extra = quantize_int8(settings, float_path, path, calibration_dataset, calibration_images)
        os.remove(float_path)
    else:
        write_onnx(deploy, sample, path)
    info = _export_json(settings, fmt, sample, extra)
    with open(os.path.join(output_dir, EXPORT_JSON), "w") as f:
        json.dump(info, f, indent=2)
    return info


def _write_openvino(settings, deploy, sample, output_dir, precision, dataset, count) -> Dict:
    """model.xml / model.bin from the ONNX graph (removed afterwards); what export.json adds."""
    from .openvino import convert_onnx, quantize_openvino_int8

    onnx_path = os.path.join(output_dir, "model_float32.onnx")
    xml_path = os.path.join(output_dir, MODEL_FILES["openvino"])
    write_onnx(deploy, sample, onnx_path)
    try:
        if precision == "int8":
            extra = quantize_openvino_int8(settings, onnx_path, xml_path, dataset, count)
        else:
            convert_onnx(onnx_path, xml_path)
            extra = {}
    finally:
        os.remove(onnx_path)
    import openvino

    return {
        **extra,
        "precision": PRECISION_NAMES[precision],
        "openvino_precision": precision,
        "openvino_version": openvino.__version__,
    }


def read_export_json(directory: str) -> Dict[str, Any]:
    """``export.json`` of an exported directory; a one-line error naming what is missing."""
    path = os.path.join(directory, EXPORT_JSON)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: not a directory written by fcos_d2.export")
    with open(path) as f:
        info = json.load(f)
    model_path = os.path.join(directory, info["file"])
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"{model_path} (named in {path}) not found")
    return info
