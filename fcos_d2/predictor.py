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

import contextlib
import copy
import logging
import warnings
from typing import Any, Dict, Iterator, List, Union

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.engine import DefaultPredictor
from omegaconf import DictConfig

from .checkpoint import load_for_inference
from .config import INPUT_FORMATS
from .lazy_config import build_lazy_model, lazy_test_augmentations, lazy_test_dataset, lazy_weights

__all__ = ["check_image", "Predictor"]

logger = logging.getLogger(__name__)

_FLOATS = (np.float16, np.float32, np.float64)
# What detectron2's and fvcore's checkpointers log when DefaultPredictor gives them no weights.
_EMPTY_LOAD_MESSAGES = (
    ("detectron2.checkpoint.detection_checkpoint", "[DetectionCheckpointer] Loading from"),
    ("fvcore.common.checkpoint", "No checkpoint found"),
)


@contextlib.contextmanager
def _without_empty_load_messages() -> Iterator[None]:
    """Drop those records inside the block: the weights are loaded (and logged) just after."""
    filters = []
    for name, prefix in _EMPTY_LOAD_MESSAGES:
        drop = logging.Filter()
        drop.filter = lambda record, prefix=prefix: not str(record.msg).startswith(prefix)
        logging.getLogger(name).addFilter(drop)
        filters.append((name, drop))
    try:
        yield
    finally:
        for name, drop in filters:
            logging.getLogger(name).removeFilter(drop)


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


class _AugmentationList:
    """``DefaultPredictor``'s ``aug`` for a list of test augmentations (a LazyConfig mapper's)."""

    def __init__(self, augmentations: List[T.Augmentation]):
        self.augmentations = T.AugmentationList(augmentations)

    def get_transform(self, image: np.ndarray) -> T.Transform:
        return self.augmentations(T.AugInput(image))


class Predictor(DefaultPredictor):
    """
    ``DefaultPredictor`` that checks each input with :func:`check_image` and loads
    ``cfg.MODEL.WEIGHTS`` with :func:`fcos_d2.checkpoint.load_for_inference`, which refuses a
    checkpoint that leaves any model tensor unloaded (naming the keys) or cannot be read (naming
    the file).

    ``predictor(image)`` -> ``{"instances": Instances}`` with boxes in the coordinates of
    ``image`` (H, W, 3).

    ``cfg`` may be a LazyConfig (Python) config: then ``model``, ``train.init_checkpoint``,
    ``train.device`` and ``dataloader.test`` (its augmentations and dataset) take the places of
    the YAML keys.
    """

    def __init__(self, cfg: Union[CfgNode, DictConfig]):
        if isinstance(cfg, DictConfig):  # a LazyConfig (Python) config
            self._init_lazy(cfg)
            return
        # DefaultPredictor's own set-up (model, metadata, resizing, input format), given no
        # weights so that it does not load them leniently; they are loaded strictly after.
        unloaded = cfg.clone()
        unloaded.defrost()
        unloaded.MODEL.WEIGHTS = ""
        if "TIMM" in unloaded.MODEL and cfg.MODEL.WEIGHTS:  # replaced by them: not downloaded
            unloaded.MODEL.TIMM.PRETRAINED = False
        with _without_empty_load_messages():
            super().__init__(unloaded)
        self.cfg = cfg.clone()
        load_for_inference(self.model, cfg.MODEL.WEIGHTS)

    def _init_lazy(self, cfg: DictConfig) -> None:
        # DefaultPredictor's attributes, from the LazyConfig equivalents of its keys
        self.cfg = copy.deepcopy(cfg)
        self.model = build_lazy_model(cfg).eval()
        name = lazy_test_dataset(cfg)
        self.metadata = MetadataCatalog.get(name) if name else None
        self.aug = _AugmentationList(lazy_test_augmentations(cfg))
        self.input_format = self.model.input_format
        load_for_inference(self.model, lazy_weights(cfg))

    def __call__(self, original_image: np.ndarray) -> Dict[str, Any]:
        """original_image: (H, W, 3) BGR (the DefaultPredictor convention)."""
        image = check_image(original_image, "BGR")
        if not isinstance(self.cfg, DictConfig):
            return super().__call__(image)
        # DefaultPredictor's steps, with the device of train.device (it reads MODEL.DEVICE)
        with torch.no_grad():
            if self.input_format == "RGB":
                image = image[:, :, ::-1]
            height, width = image.shape[:2]
            resized = self.aug.get_transform(image).apply_image(image)
            tensor = torch.as_tensor(resized.astype("float32").transpose(2, 0, 1))
            inputs = {"image": tensor.to(self.cfg.train.device), "height": height, "width": width}
            return self.model([inputs])[0]
