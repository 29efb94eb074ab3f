"""
Writing an exported directory: ``model.onnx`` (ONNX, opset 18), ``model.pt2`` (an AOTInductor
package), ``model.xml`` (OpenVINO) or ``model.ts`` (TorchScript), plus ``export.json`` with what a
runtime needs to feed the graph and read its outputs. ONNX, AOTInductor and OpenVINO come from
one ``torch.export`` program; TorchScript from ``torch.jit.trace``, deprecated by torch and kept
while torch ships it.
"""

import ast
import json
import logging
import operator
import os
import warnings
from typing import Any, Dict, Optional, Tuple, Union

import torch
import torch._dynamo
from detectron2.config import CfgNode
from omegaconf import DictConfig
from torch import nn

from ..data import dataset_metadata
from ..utils.logger import quiet_stdout
from .graph import INPUT_NAME, OUTPUT_NAMES, DeployFCOS, sample_image
from .settings import ExportSettings, build_export_model, export_settings

logger = logging.getLogger(__name__)

__all__ = [
    "FORMATS",
    "MODEL_FILES",
    "RUNTIMES",
    "build_deploy_model",
    "export_program",
    "side_range",
    "trace",
    "write_aoti",
    "write_onnx",
    "export_model",
    "read_export_json",
]

FORMATS = ("onnx", "aoti", "openvino", "torchscript")
MODEL_FILES = {
    "onnx": "model.onnx",
    "aoti": "model.pt2",
    "openvino": "model.xml",
    "torchscript": "model.ts",
}
# runtime of each format, and the precision names export.json records
RUNTIMES = {
    "onnx": "onnxruntime",
    "aoti": "aotinductor",
    "openvino": "openvino",
    "torchscript": "torchscript",
}
PRECISION_NAMES = {"fp32": "float32", "bf16": "bfloat16", "int8": "int8"}
ONNX_OPSET = 18  # the torch.export-based exporter's lowest
# The image sides an exported program takes (H and W of its input): from 64, and more than
# the largest stride (where the coarsest level would be one location wide, a size torch.export
# specialises on: 129 for P3-P7), to 8192.
SIDE_RANGE = (64, 8192)
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


class NotDynamicError(ValueError):
    """torch.export could not make a graph that serves every image size of ``SIDE_RANGE``."""


def side_range(module: nn.Module) -> Tuple[int, int]:
    """The image sides (min, max) an exported program of the :class:`DeployFCOS` ``module``
    takes (see ``SIDE_RANGE``)."""
    return max(SIDE_RANGE[0], max(module.model.strides) + 1), SIDE_RANGE[1]


def export_program(module: nn.Module, image: torch.Tensor) -> torch.export.ExportedProgram:
    """``torch.export`` of a :class:`DeployFCOS` with dynamic H and W (each in
    :func:`side_range`) and a data-dependent detection count; :class:`NotDynamicError` where
    the network's code narrows the sizes (some timm backbones: a program for H <= 128 < W
    only, e.g.)."""
    low, high = side_range(module)
    side = {"min": low, "max": high}
    dims = {1: torch.export.Dim("height", **side), 2: torch.export.Dim("width", **side)}
    with torch.no_grad(), warnings.catch_warnings():
        # torchvision's shape rule for nms uses a deprecated torch call
        warnings.filterwarnings("ignore", "`create_unbacked_symint` is deprecated")
        try:
            return torch.export.export(
                module,
                (image,),
                dynamic_shapes={INPUT_NAME: dims},
                strict=False,
                # guards true on the whole range that the solver cannot prove (divisibility
                # of padded sizes in channels_last strides) become runtime checks instead of
                # failing the export; a range the code narrows still fails it
                prefer_deferred_runtime_asserts_over_guards=True,
            )
        except torch._dynamo.exc.UserError as e:  # ConstraintViolationError is one
            first = str(e).strip().splitlines()
            raise NotDynamicError(
                "torch.export cannot make one graph for every image size of this model: "
                + (first[0] if first else type(e).__name__)
            ) from e


def write_onnx(module: nn.Module, image: torch.Tensor, path: str) -> str:
    """
    ONNX (opset 18) with dynamic H, W and detection count, NMS as ONNX's NonMaxSuppression, by
    the ``torch.export``-based exporter, its nodes named by module path
    (``/model/head/cls_logits/...``, as quantization's node rules expect). A model torch.export
    cannot make size-generic (see :func:`export_program`) goes through the TorchScript-based
    exporter instead, with a warning. Returns the exporter used: "torch.export" or "torchscript".
    """
    import onnx

    try:
        program = _without_shape_checks(export_program(module, image))
    except NotDynamicError as e:
        logger.warning(f"{e}; writing ONNX with the TorchScript-based exporter instead")
        _write_onnx_from_trace(module, image, path)
        onnx.checker.check_model(path)
        return "torchscript"
    with torch.no_grad(), warnings.catch_warnings(), quiet_stdout():  # it prints its steps
        warnings.simplefilter("ignore")
        onnx_program = torch.onnx.export(
            program,
            (image,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            opset_version=ONNX_OPSET,
            verbose=False,
        )
    proto = _folded(onnx_program.model_proto)
    name_nodes_by_module(proto)
    onnx.save(proto, path)
    onnx.checker.check_model(path)
    return "torch.export"


def _folded(proto):
    """``proto`` with every constant subexpression computed, however large: the exporter's own
    folding stops at 8192 elements, which left the folded-BN weights (weight x scale) as Mul
    nodes that ONNX Runtime's int8 quantization cannot quantize per channel as initializers."""
    from onnxscript import optimizer

    return optimizer.optimize(proto, input_size_limit=2**62, output_size_limit=2**62)


def _write_onnx_from_trace(module: nn.Module, image: torch.Tensor, path: str) -> None:
    """The TorchScript-based exporter (deprecated by torch): a trace, whose data-dependent sizes
    (nonzero, top-k, NMS) export as ONNX ops."""
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


_COMPARISONS = (operator.lt, operator.le, operator.gt, operator.ge, operator.eq, operator.ne)


def _without_shape_checks(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """``program`` without its run-time checks of symbolic sizes (unused comparisons and their
    asserts), which ONNX cannot express: a bound of a size computed from several others can
    exceed int64 (seen with timm backbones), which the ONNX exporter fails on."""
    graph = program.graph_module.graph
    for node in reversed(list(graph.nodes)):
        if node.op != "call_function" or node.users:
            continue
        if node.target is torch.ops.aten._assert_scalar.default or node.target in _COMPARISONS:
            graph.erase_node(node)
    program.graph_module.recompile()
    return program


def name_nodes_by_module(proto: Any) -> None:
    """Rename the nodes of an ONNX ``ModelProto`` written by the ``torch.export``-based exporter
    to ``/module/path/node``, the module that made each (from the exporter's name scopes)."""
    for node in proto.graph.node:
        scopes = next(
            (p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), None
        )
        if not scopes:
            continue
        names = [n for n in ast.literal_eval(scopes)[:-1] if n]
        prefix = "/" + names[-1].replace(".", "/") + "/" if names else "/"
        node.name = prefix + node.name


def write_aoti(module: nn.Module, image: torch.Tensor, path: str) -> None:
    """An AOTInductor package of the ``torch.export`` program (C++ compiled for this CPU's vector
    ISA, see :func:`cpu_vector_isa`)."""
    from torch._inductor import aoti_compile_and_package

    program = export_program(module, image)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        aoti_compile_and_package(program, package_path=path)


def cpu_vector_isa() -> str:
    """The vector ISA Inductor compiles for on this CPU ("avx512", "avx2", ...)."""
    from torch._inductor.cpu_vec_isa import pick_vec_isa

    return str(pick_vec_isa()) or "none"


def _class_names(settings: ExportSettings) -> Optional[list]:
    """thing_classes of the config's datasets (a COCO-format dataset fills them when loaded);
    None when no dataset has them or their files are not there."""
    for name in settings.test_datasets + settings.train_datasets:
        names = dataset_metadata(name).get("thing_classes")
        if names:
            return list(names)
    return None


def _export_json(
    settings: ExportSettings,
    fmt: str,
    sample: torch.Tensor,
    sides: Tuple[int, int],
    extra: Dict[str, Any],
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
    if fmt == "aoti":  # the predictor checks its input's sides against this range
        info["input"]["side_range"] = list(sides)
        info["vector_isa"] = cpu_vector_isa()
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
        fmt: "onnx", "aoti", "openvino" or "torchscript".
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
    sides = side_range(deploy)
    side = max(settings.min_size_test, sides[0])  # a size the program takes
    sample = sample_image(side, side * 4 // 3 + 3)  # an odd width, like real images
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, MODEL_FILES[fmt])
    if fmt == "torchscript":
        trace(deploy, sample).save(path)
    elif fmt == "aoti":
        write_aoti(deploy, sample, path)
    elif fmt == "openvino":
        extra = _write_openvino(
            settings, deploy, sample, output_dir, precision, calibration_dataset, calibration_images
        )
    elif quantize:
        from .quantize import quantize_int8

        float_path = os.path.join(output_dir, "model_float32.onnx")
        exporter = write_onnx(deploy, sample, float_path)
        extra = quantize_int8(settings, float_path, path, calibration_dataset, calibration_images)
        extra["onnx_exporter"] = exporter
        os.remove(float_path)
    else:
        extra = {"onnx_exporter": write_onnx(deploy, sample, path)}
    info = _export_json(settings, fmt, sample, sides, extra)
    with open(os.path.join(output_dir, EXPORT_JSON), "w") as f:
        json.dump(info, f, indent=2)
    return info


def _write_openvino(settings, deploy, sample, output_dir, precision, dataset, count) -> Dict:
    """model.xml / model.bin from the ONNX graph (removed afterwards); what export.json adds."""
    from .openvino import convert_onnx, quantize_openvino_int8

    onnx_path = os.path.join(output_dir, "model_float32.onnx")
    xml_path = os.path.join(output_dir, MODEL_FILES["openvino"])
    exporter = write_onnx(deploy, sample, onnx_path)
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
        "onnx_exporter": exporter,
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
