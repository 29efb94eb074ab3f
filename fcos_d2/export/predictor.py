"""
``ExportedPredictor``: detectron2's ``DefaultPredictor`` calling convention over a directory
written by ``fcos-d2 export`` (ONNX in ONNX Runtime, an AOTInductor package, an OpenVINO IR in
OpenVINO in its precision, or TorchScript).
"""

import os
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import transforms as T
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances

from ..config import read_class_thresholds
from ..modeling.postprocess import apply_class_thresholds
from ..predictor import check_image
from .writers import read_export_json

__all__ = ["ExportedPredictor", "aoti_runner", "onnx_runner"]

Outputs = Tuple[np.ndarray, np.ndarray, np.ndarray]


def onnx_runner(path: str, num_threads: Optional[int]) -> Callable[[np.ndarray], Outputs]:
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ImportError(f"running {path} needs onnxruntime: pip install 'fcos_d2[export]'") from e
    options = ort.SessionOptions()
    if num_threads:
        options.intra_op_num_threads = num_threads
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return lambda image: tuple(session.run(None, {"image": image}))


def _torchscript_runner(path: str, num_threads: Optional[int]) -> Callable[[np.ndarray], Outputs]:
    import torchvision  # noqa: F401  (registers torchvision::nms, which the graph calls)

    module = torch.jit.load(path, map_location="cpu").eval()

    def run(image: np.ndarray) -> Outputs:
        with torch.no_grad():
            return tuple(t.numpy() for t in module(torch.from_numpy(image)))

    return run


def aoti_runner(
    path: str,
    num_threads: Optional[int],
    vector_isa: Optional[str],
    sides: Optional[Tuple[int, int]] = None,
) -> Callable[[np.ndarray], Outputs]:
    import torchvision  # noqa: F401  (registers torchvision::nms, which the package calls)
    from torch._inductor import aoti_load_package

    from .writers import cpu_vector_isa

    here = cpu_vector_isa()
    if vector_isa and vector_isa != here:  # its C++ would stop on an illegal instruction
        raise RuntimeError(
            f"{path} was compiled for {vector_isa} and this CPU runs {here}: export it again on "
            "this machine (or use --format onnx, which runs anywhere)"
        )
    if num_threads:
        torch.set_num_threads(num_threads)
    package = aoti_load_package(path)

    def run(image: np.ndarray) -> Outputs:
        if sides and not all(sides[0] <= s <= sides[1] for s in image.shape[1:]):
            raise ValueError(
                f"{path} takes image sides from {sides[0]} to {sides[1]} pixels (after "
                f"resizing); this image is {image.shape[1]} x {image.shape[2]}"
            )
        with torch.no_grad():
            return tuple(t.numpy() for t in package(torch.from_numpy(image)))

    return run


class ExportedPredictor:
    """
    ``predictor(image)`` -> ``{"instances": Instances}`` like ``DefaultPredictor``: ``image`` is a
    BGR uint8 numpy array (H, W, 3) (float arrays with 0..255 values are rounded to uint8); it is
    resized by the rule recorded in ``export.json``, run through the exported graph, and the
    boxes come back in ``image``'s coordinates (scaled, clipped, empty boxes dropped, as
    detectron2's ``detector_postprocess`` does).

    ``class_thresholds``: a per-class thresholds file (``MODEL.FCOS.CLASS_THRESHOLDS_FILE``'s
    format) whose thresholds filter the graph's detections, on top of those the graph was
    exported with (``info["class_thresholds"]``).

    Attributes: ``info`` (the ``export.json`` content), ``class_names`` (or None).
    """

    def __init__(
        self,
        directory: str,
        num_threads: Optional[int] = None,
        class_thresholds: Optional[str] = None,
    ):
        self.info = read_export_json(directory)
        self._thresholds = None
        if class_thresholds:
            num_classes = self.info.get("num_classes")
            if num_classes is None:  # an export.json of an earlier release
                num_classes = CfgNode.load_cfg(self.info["config"]).MODEL.FCOS.NUM_CLASSES
            values = read_class_thresholds(class_thresholds, num_classes)
            self._thresholds = torch.tensor(values, dtype=torch.float32)
        path = os.path.join(directory, self.info["file"])
        fmt = self.info["format"]
        if fmt == "openvino":
            from .openvino import openvino_runner

            self._run = openvino_runner(path, self.info["openvino_precision"], num_threads)
        elif fmt == "aoti":
            sides = self.info["input"].get("side_range")
            self._run = aoti_runner(path, num_threads, self.info.get("vector_isa"), sides)
        else:
            make_runner = onnx_runner if fmt == "onnx" else _torchscript_runner
            self._run = make_runner(path, num_threads)
        resize = self.info["resize"]
        min_size = resize["min_size_test"]
        self.aug = T.ResizeShortestEdge([min_size, min_size], resize["max_size_test"])
        self.input_format = self.info["input"]["format"]
        self.class_names = self.info.get("class_names")

    def run_resized(self, image: np.ndarray) -> Instances:
        """The graph on an already resized uint8 (3, h, w) image in the model's channel order:
        ``Instances`` of (h, w) with pred_boxes, scores, pred_classes."""
        boxes, scores, classes = self._run(np.ascontiguousarray(image))
        instances = Instances(
            tuple(image.shape[1:]),
            pred_boxes=Boxes(torch.from_numpy(boxes)),
            scores=torch.from_numpy(scores),
            pred_classes=torch.from_numpy(classes),
        )
        if self._thresholds is not None:
            instances = apply_class_thresholds(instances, self._thresholds)
        return instances

    def __call__(self, original_image: np.ndarray) -> Dict[str, Any]:
        image = check_image(original_image, "BGR")
        if image.dtype != np.uint8:
            image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
        if self.input_format == "RGB":
            image = image[:, :, ::-1]
        height, width = image.shape[:2]
        resized = self.aug.get_transform(image).apply_image(image)
        instances = self.run_resized(resized.transpose(2, 0, 1))
        return {"instances": detector_postprocess(instances, height, width)}
