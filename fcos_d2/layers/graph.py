"""
Operations whose eager form branches on the data, with a branch-free form for torch.jit graphs
(traces for ONNX / TorchScript export, and scripting), so that one graph serves every input.
The model code calls these and never asks whether it is being traced. Each tests
``torch.jit.is_scripting() or torch.jit.is_tracing()``: TorchScript compiles the first to a
constant and drops the eager branches.
"""

from typing import Tuple

import torch
from torch import Tensor

__all__ = ["topk_at_most"]


def topk_at_most(values: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    """
    The best min(k, N) of (N,) ``values`` and their indices. Eager, N <= k keeps the given
    order (no sort); in a graph, where the count is not known, they always come by decreasing
    value (the same set; the order matters only for exact ties).
    """
    if torch.jit.is_scripting() or torch.jit.is_tracing():  # a graph for any input
        count = torch.clamp(torch._shape_as_tensor(values)[0], max=k)
        return values.topk(count)  # type: ignore[arg-type]
    if len(values) > k:
        return values.topk(k)
    return values, torch.arange(len(values), device=values.device)
