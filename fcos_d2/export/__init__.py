"""
Deployment: the whole FCOS detector (normalisation, padding, backbone, head, decoding,
thresholds, top-k, class-wise NMS, clipping) as one graph (ONNX, an AOTInductor package, an
OpenVINO IR or TorchScript), int8 modes, and a predictor and COCO evaluation over an exported
directory.

    fcos-d2 export --config-file CFG --format {onnx,aoti,openvino,torchscript} --output DIR

Nothing here is imported by ``import fcos_d2``; the ONNX parts need ``pip install fcos_d2[export]``.
"""

from .graph import DeployFCOS, check_exportable
from .writers import FORMATS, export_model, read_export_json

__all__ = ["DeployFCOS", "check_exportable", "FORMATS", "export_model", "read_export_json"]
