"""
Folding detectron2's FrozenBatchNorm2d into the convolution in front of it.

A frozen BN is a fixed per-channel affine map, y = x * s + t with s = gamma / sqrt(var + eps)
and t = beta - mean * s, so conv(x, W) * s + t = conv(x, W * s) + t. The folded form saves one
full pass over the activations after every backbone conv (and, in training, one in backward).
"""

from typing import Tuple

import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d, FrozenBatchNorm2d
from torch import Tensor, nn

from .graph import compiling

__all__ = ["FrozenBNConv2d", "fold_frozen_batchnorm", "set_frozen_batchnorm_eps"]

_NORM_TENSORS = ("weight", "bias", "running_mean", "running_var")


class FrozenBNConv2d(Conv2d):
    """
    A detectron2 ``Conv2d`` whose ``norm`` is a ``FrozenBatchNorm2d``, computed as one conv with
    folded weights. It keeps the parameters, buffers and state-dict keys of the conv and its
    norm: checkpoints load unchanged and the fold always uses the current values.
    """

    def folded_weight_and_bias(self) -> Tuple[Tensor, Tensor]:
        """(C_out, C_in, kh, kw) weight and (C_out,) bias of the equivalent single conv."""
        norm = self.norm
        scale = norm.weight * (norm.running_var + norm.eps).rsqrt()  # as FrozenBatchNorm2d does
        shift = norm.bias - norm.running_mean * scale
        bias = self.bias  # a local, so that TorchScript can refine the Optional
        if bias is not None:
            shift = shift + bias * scale
        # Elementwise on the weight keeps its memory format (channels_last stays channels_last).
        return self.weight * scale.view(-1, 1, 1, 1), shift

    def _source_tensors(self) -> Tuple[Tensor, ...]:
        norm = (getattr(self.norm, n) for n in _NORM_TENSORS)
        return tuple(t for t in (self.weight, self.bias, *norm) if t is not None)

    @torch.jit.unused
    def _cached_fold(self) -> Tuple[Tensor, Tensor]:
        # A tensor's _version changes on every in-place update (optimizer step, load_state_dict,
        # copy_), its data_ptr when .to() or .data = ... gives it new memory; either means the
        # folded copy is stale. The cache holds the storages it was made from, so new memory
        # can never reuse their addresses and look unchanged.
        sources = self._source_tensors()
        key = tuple((t.data_ptr(), t._version, t.dtype) for t in sources)
        key += (torch.is_inference_mode_enabled(),)
        if getattr(self, "_fold_key", None) != key:
            with torch.no_grad():
                self._fold_cache = self.folded_weight_and_bias()
            self._fold_key, self._fold_sources = key, tuple(t.detach() for t in sources)
        return self._fold_cache

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_scripting() or torch.jit.is_tracing() or compiling():  # any input
            # A graph folds from the parameters it holds (exporters constant-fold it once); a
            # cached copy would be frozen into it as constants that no later weights reach.
            weight, bias = self.folded_weight_and_bias()
        elif torch.is_grad_enabled() and self.weight.requires_grad:
            weight, bias = self.folded_weight_and_bias()  # recomputed: gradients flow to W
        else:
            weight, bias = self._cached_fold()  # inference, or a frozen stage in training
        x = F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)
        if self.activation is not None:
            x = self.activation(x)
        return x


def fold_frozen_batchnorm(module: nn.Module) -> int:
    """
    Turns, in place, every detectron2 ``Conv2d`` inside ``module`` that is followed by its own
    ``FrozenBatchNorm2d`` into a :class:`FrozenBNConv2d`; returns how many were turned.
    Only the class changes (no new parameters), so references and hooks stay valid.
    """
    count = 0
    for m in module.modules():
        if type(m) is Conv2d and isinstance(m.norm, FrozenBatchNorm2d):
            m.__class__ = FrozenBNConv2d
            count += 1
    return count


def set_frozen_batchnorm_eps(module: nn.Module, eps: float) -> int:
    """
    Sets the epsilon of every ``FrozenBatchNorm2d`` inside ``module`` (in place; e.g. 0 for
    maskrcnn-benchmark's frozen BN, which has none); returns how many were set.
    """
    norms = [m for m in module.modules() if isinstance(m, FrozenBatchNorm2d)]
    for m in norms:
        m.eps = eps
    return len(norms)
