"""
Operations whose eager form branches on the data, with a branch-free form for graphs (torch.jit
traces and scripting, torch.export), so that one graph serves every input.
The model code calls these and never asks whether it is being traced. Each tests
``torch.jit.is_scripting() or torch.jit.is_tracing()``: TorchScript compiles the first to a
constant and drops the eager branches.
"""

from typing import Tuple

import torch
from torch import Tensor

__all__ = ["compiling", "exporting", "topk_at_most"]


@torch.jit.unused  # scripted code asks torch.jit.is_scripting() first and never calls this
def exporting() -> bool:
    """Whether ``torch.export`` is tracing this call (sizes are symbols there)."""
    return torch.compiler.is_exporting()


@torch.jit.unused
def compiling() -> bool:
    """Whether ``torch.compile`` or ``torch.export`` traces this call (Dynamo: Python-side state
    such as caches keyed on tensor versions cannot be read there)."""
    return torch.compiler.is_compiling()


def topk_at_most(values: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    """
    The best min(k, N) of (N,) ``values`` and their indices. Eager, N <= k keeps the given
    order (no sort); in a graph, where the count is not known, they always come by decreasing
    value (the same set; the order matters only for exact ties).
    """
    if torch.jit.is_scripting() or torch.jit.is_tracing():  # a graph for any input
        count = torch.clamp(torch._shape_as_tensor(values)[0], max=k)
        return values.topk(count)  # type: ignore[arg-type]
    if exporting():  # torch.export: N is a symbol, min(N, k) one too
        return values.topk(torch.sym_min(values.shape[0], k))
    if len(values) > k:
        return values.topk(k)
    return values, torch.arange(len(values), device=values.device)
