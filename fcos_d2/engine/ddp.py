"""``create_ddp_model`` that also works for a model on the CPU (gloo)."""

from typing import Any

from detectron2.engine import create_ddp_model as d2_create_ddp_model
from torch import nn

__all__ = ["create_ddp_model"]


def create_ddp_model(model: nn.Module, **kwargs: Any) -> nn.Module:
    """
    detectron2's ``create_ddp_model``, except that a model whose parameters are on the CPU gets
    ``device_ids=None`` (DistributedDataParallel's requirement for CPU modules) instead of the
    local GPU index.
    """
    on_cpu = all(p.device.type == "cpu" for p in model.parameters())
    if on_cpu and "device_ids" not in kwargs:
        kwargs["device_ids"] = None
    return d2_create_ddp_model(model, **kwargs)
