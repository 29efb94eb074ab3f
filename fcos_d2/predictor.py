"""
A single-image predictor with detectron2's ``DefaultPredictor`` calling convention, which checks
its input and refuses weights that do not fully fit the model.

Input policy (``check_image``): a numpy array (H, W, 3), H, W >= 1, in the channel order
``input_format`` names (BGR by default, like ``cv2.imread``). ``uint8`` is the expected pixel type;
``float16/32/64`` arrays are accepted as values on the same 0..255 scale (a float image whose
values all lie in 0..1 gets a warning: it is almost certainly scaled to 1 and will look black to
the model). Every other input is refused with a one-line ``ValueError`` that names the problem
and the fix.
"""

import copy
import logging
import warnings
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.engine import DefaultPredictor

from .checkpoint import load_for_inference
from .config import (
    INPUT_FORMATS,
    AnyConfig,
    build_inference_model,
    inference_settings,
    test_augmentations,
)

__all__ = ["check_image", "Predictor"]

logger = logging.getLogger(__name__)

_FLOATS = (np.float16, np.float32, np.float64)


def check_image(image: Any, input_format: str = "BGR") -> np.ndarray:
    """
    Validate one predictor input image and return it (as a numpy array, unchanged for uint8).

    Args:
        image: numpy array (H, W, 3) in ``input_format`` channel order, uint8 (or float 0..255).
        input_format: "BGR" or "RGB", only used in messages and checked for validity.
    Raises:
        ValueError: not a numpy array (a torch tensor, a PIL image ...), wrong dimensions,
            channels, layout or pixel type, an empty or non-finite image.
    """
    if input_format not in INPUT_FORMATS:
        raise ValueError(f"input_format must be 'BGR' or 'RGB', got {input_format!r}")
    want = f"a numpy uint8 array (H, W, 3) in {input_format} order"
    if isinstance(image, torch.Tensor):
        raise ValueError(
            f"got a torch.Tensor of shape {tuple(image.shape)}; the predictor takes {want}, "
            "e.g. tensor.permute(1, 2, 0).cpu().numpy() for a (3, H, W) tensor"
        )
    if not isinstance(image, np.ndarray):
        raise ValueError(f"got {type(image).__module__}.{type(image).__name__}; expected {want}")
    shape = tuple(image.shape)
    if image.ndim == 2:
        raise ValueError(
            f"got a 2-D (grayscale) array of shape {shape}; expected {want}, "
            "e.g. np.repeat(image[:, :, None], 3, axis=2)"
        )
    if image.ndim != 3:
        raise ValueError(f"got an array with {image.ndim} dimensions {shape}; expected {want}")
    if shape[0] in (1, 3, 4) and shape[2] not in (1, 3, 4):
        raise ValueError(
            f"got a channel-first array of shape {shape}; expected {want} (channels last), "
            "e.g. image.transpose(1, 2, 0)"
        )
    if shape[2] != 3:
        hint = " (an alpha channel? use image[:, :, :3])" if shape[2] == 4 else ""
        raise ValueError(f"got {shape[2]} channels in shape {shape}{hint}; expected {want}")
    if image.size == 0:
        raise ValueError(f"got an empty image of shape {shape}; expected {want} with H, W >= 1")
    if image.dtype == np.uint8:
        return image
    if image.dtype.type not in _FLOATS:
        raise ValueError(
            f"got pixels of type {image.dtype}; expected {want} "
            "(convert with image.astype(np.uint8) if the values are 0..255)"
        )
    if not np.isfinite(image).all():
        raise ValueError(f"got a float image of shape {shape} with NaN or infinite values")
    if image.min() >= 0.0 and image.max() <= 1.0:
        msg = (
            f"float image of shape {shape} has all values in 0..1; the model expects 0..255 "
            "pixel values (multiply by 255 and convert to uint8)"
        )
        warnings.warn(msg, stacklevel=2)
        logger.warning(msg)
    return image


class Predictor(DefaultPredictor):
    """
    ``DefaultPredictor`` for YAML and Python (LazyConfig) configs alike, that checks each input
    with :func:`check_image` and loads the config's weights (``MODEL.WEIGHTS`` /
    ``train.init_checkpoint``) with :func:`fcos_d2.checkpoint.load_for_inference`, which
    refuses a checkpoint that leaves any model tensor unloaded (naming the keys) or cannot be
    read (naming the file).

    ``predictor(image)`` -> ``{"instances": Instances}`` with boxes in the coordinates of
    ``image`` (H, W, 3). It has DefaultPredictor's attributes (``cfg``, ``model``, ``metadata``,
    ``aug``, ``input_format``) and :attr:`settings` (:class:`~fcos_d2.config.InferenceSettings`).
    """

    def __init__(self, cfg: AnyConfig):
        # DefaultPredictor's attributes, read through the config package (not its __init__,
        # which would load the weights leniently)
        self.cfg = copy.deepcopy(cfg)
        self.settings = inference_settings(cfg)
        self.model = build_inference_model(cfg)
        name = self.settings.test_dataset
        self.metadata = MetadataCatalog.get(name) if name else None
        augmentations = test_augmentations(cfg)  # DefaultPredictor's: one ResizeShortestEdge
        self.aug = (
            augmentations[0] if len(augmentations) == 1 else T.AugmentationList(augmentations)
        )
        self.input_format = self.settings.input_format
        assert self.input_format in INPUT_FORMATS, self.input_format
        load_for_inference(self.model, self.settings.weights)

    def _input(self, original_image: np.ndarray) -> Dict[str, Any]:
        """The model's input dict of a (H, W, 3) BGR image (DefaultPredictor's steps)."""
        image = check_image(original_image, "BGR")
        if self.input_format == "RGB":
            image = image[:, :, ::-1]
        height, width = image.shape[:2]
        resized = T.AugInput(image)
        self.aug(resized)  # resizes it in place
        tensor = torch.as_tensor(resized.image.astype("float32").transpose(2, 0, 1))
        return {"image": tensor.to(self.settings.device), "height": height, "width": width}

    def __call__(self, original_image: np.ndarray) -> Dict[str, Any]:
        """original_image: (H, W, 3) BGR (the DefaultPredictor convention)."""
        with torch.no_grad():
            return self.model([self._input(original_image)])[0]

    def _padded_size(self, inputs: Dict[str, Any]) -> Tuple[int, int]:
        """The size ``inputs["image"]`` is padded to in a batch of its own (detectron2's
        ``ImageList.from_tensors`` rule with the backbone's constraints)."""
        backbone = getattr(self.model, "backbone", None)
        height, width = inputs["image"].shape[-2:]
        square = getattr(backbone, "padding_constraints", {}).get("square_size", 0)
        if square:
            return square, square
        d = max(1, int(getattr(backbone, "size_divisibility", 0) or 1))
        return -(-height // d) * d, -(-width // d) * d

    def predict_batch(self, images: Sequence[np.ndarray]) -> List[Dict[str, Any]]:
        """
        ``[self(image) for image in images]``, with one forward pass per group of images padded
        to the same size: each image is padded exactly as alone, so the detections are the
        same as one by one (GroupNorm's statistics would see another padding otherwise).
        """
        inputs = [self._input(image) for image in images]
        groups: Dict[Tuple[int, int], List[int]] = {}
        for i, x in enumerate(inputs):
            groups.setdefault(self._padded_size(x), []).append(i)
        out: List[Any] = [None] * len(inputs)
        with torch.no_grad():
            for members in groups.values():
                for i, result in zip(members, self.model([inputs[i] for i in members])):
                    out[i] = result
        return out
