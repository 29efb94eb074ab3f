"""
The deployable form of an FCOS model: one tensor in, three tensors out, no Python data structures
and no branch on data, so that one trace serves every image size and every detection count.

Shape shorthand: H, W the (already resized) image size, D detections.
"""

from typing import List, Tuple

import torch
from detectron2.config import CfgNode
from torch import Tensor, nn

__all__ = [
    "DeployFCOS",
    "check_exportable",
    "graph_problems",
    "raise_if_problems",
    "sample_image",
    "INPUT_NAME",
    "OUTPUT_NAMES",
]

INPUT_NAME = "image"
OUTPUT_NAMES = ("boxes", "scores", "classes")


class DeployFCOS(nn.Module):
    """
    An eval-mode FCOS model as ``image -> (boxes, scores, classes)``:

    - image: uint8 (3, H, W), channels in the model's ``INPUT.FORMAT``, any H and W;
    - boxes: float32 (D, 4) XYXY in the image's pixels, clipped to it, empty boxes dropped (as
      detectron2's ``detector_postprocess`` does); scores: float32 (D,); classes: int64 (D,);
      D <= ``TEST.DETECTIONS_PER_IMAGE``, by decreasing score.

    It runs the model's own :meth:`FCOS.image_detections` (normalisation, padding to the
    backbone's size divisibility, backbone, head, decoding, thresholds, per-level top-k,
    class-wise NMS, top-N, clipping): eager results and graph results come from the same code.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        if model.training:
            raise ValueError("DeployFCOS needs a model in eval mode (call model.eval())")
        self.model = model
        self.train(False)  # exporters restore this mode afterwards, on the wrapped model too

    def forward(self, image: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        return self.model.image_detections(image)


def graph_problems(
    inference_dtype: str, legacy_conventions: bool, dtype_key: str, legacy_key: str
) -> List[str]:
    """What of a model's inference settings the exported graph cannot express, each naming its
    key (``dtype_key``, ``legacy_key``: the YAML or the Python config's name)."""
    problems = []
    if inference_dtype != "float32":
        problems.append(
            f"{dtype_key}={inference_dtype!r}: graphs are exported in float32 (use --quantize "
            "int8 for a smaller, faster ONNX model)"
        )
    if legacy_conventions:
        problems.append(
            f"{legacy_key}=True: the original FCOS's conventions are not exported (its rescaling "
            "would be frozen at the traced image size)"
        )
    return problems


def raise_if_problems(problems: List[str]) -> None:
    if problems:
        raise ValueError("cannot export this config: " + "; ".join(problems))


def check_exportable(cfg: CfgNode) -> None:
    """One-line ``ValueError`` naming the config key when ``cfg`` asks for something the exported
    graph cannot express."""
    problems = []
    if cfg.MODEL.META_ARCHITECTURE != "FCOS":
        problems.append(f"MODEL.META_ARCHITECTURE={cfg.MODEL.META_ARCHITECTURE!r}: only 'FCOS'")
    fcos = cfg.MODEL.FCOS
    problems += graph_problems(
        fcos.INFERENCE_DTYPE,
        fcos.LEGACY_CONVENTIONS,
        "MODEL.FCOS.INFERENCE_DTYPE",
        "MODEL.FCOS.LEGACY_CONVENTIONS",
    )
    if cfg.TEST.AUG.ENABLED:
        problems.append("TEST.AUG.ENABLED=True: test-time augmentation is not exported")
    raise_if_problems(problems)


def sample_image(height: int, width: int, seed: int = 0) -> Tensor:
    """A deterministic uint8 (3, height, width) image to trace with."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, height, width), generator=gen, dtype=torch.uint8)
