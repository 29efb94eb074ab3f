"""
detectron2 ResNet stages with each convolution and the ReLU or residual add after it as one oneDNN
call, in CPU float32 inference.

Unfused, a bottleneck block writes every conv output and then passes over it again for the ReLU
or the add; its last conv also gets a fresh output, and at res2's size (256 channels at a quarter
of the image, 62 MB at 800x1216) a fresh buffer is memory the allocator maps anew, page by page,
on each call. Fused, each conv applies its ReLU as it writes, and in channels_last the last conv
adds its result into the shortcut's memory: the projection's output, or, after a stage's first
block, the previous block's output (which nothing else holds there). The operations are the same
(oneDNN's convolution, a float32 add, max(0, x)); results equal up to float rounding, as oneDNN
may choose another kernel with the ReLU or add attached.

Only where it applies: plain CPU float32 tensors, oneDNN enabled, no gradients, no autocast, no
torch.jit, torch.compile or torch.export tracing, no active torch function or dispatch mode and no
module hooks (those would not see the fused ops), detectron2 ``BottleneckBlock`` stages of
folded-BN convs (:class:`FrozenBNConv2d`). Anywhere else a stage runs its blocks as usual.
"""

from typing import Iterable, List, Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.modeling.backbone.resnet import BasicStem, BottleneckBlock
from torch import Tensor, nn
from torch.nn.modules import module as _module
from torch.overrides import _get_current_function_mode_stack
from torch.utils._python_dispatch import _get_current_dispatch_mode

from .frozen_bn import FrozenBNConv2d
from .graph import compiling

__all__ = ["FusedBasicStem", "FusedResNetStage", "fuse_resnet_blocks"]


def _pointwise_available() -> bool:
    try:
        torch.ops.mkldnn._convolution_pointwise_.binary  # noqa: B018 (raises where missing)
    except (AttributeError, RuntimeError):
        return False
    return torch.backends.mkldnn.is_available()


_AVAILABLE = _pointwise_available()


def _fusable(x: Tensor, modules: Iterable[nn.Module]) -> bool:
    """Whether ``modules`` may run fused on ``x`` now (see the module docstring)."""
    if not _AVAILABLE or not torch.backends.mkldnn.enabled or torch.jit.is_tracing():
        return False
    if type(x) is not Tensor or compiling():  # FX proxies, fake and other tensor subclasses
        return False
    if x.device.type != "cpu" or x.dtype != torch.float32 or x.layout != torch.strided:
        return False
    if x.dim() != 4 or x.numel() == 0 or torch.is_grad_enabled():
        return False
    if torch.is_autocast_enabled("cpu") or _get_current_function_mode_stack():
        return False
    if _get_current_dispatch_mode() is not None or _global_module_hooks():
        return False
    return not any(m._forward_hooks or m._forward_pre_hooks for m in modules)


def _global_module_hooks() -> bool:
    """Whether hooks for every module are registered (``register_module_forward_hook``)."""
    return bool(_module._global_forward_hooks or _module._global_forward_pre_hooks)


def _conv_args(
    conv: FrozenBNConv2d,
) -> Tuple[Tensor, Optional[Tensor], List[int], List[int], List[int], int]:
    """Folded weight, bias, padding, stride, dilation and groups as the mkldnn ops take them."""
    weight, bias = conv._cached_fold()
    return weight, bias, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups


def _conv(conv: FrozenBNConv2d, x: Tensor, relu: bool) -> Tensor:
    """``relu(conv(x))`` or ``conv(x)`` in one call."""
    return torch.ops.mkldnn._convolution_pointwise(
        x, *_conv_args(conv), "relu" if relu else "none", [], ""
    )


def _conv_add_relu(conv: FrozenBNConv2d, x: Tensor, other: Tensor, into_other: bool) -> Tensor:
    """``relu(conv(x) + other)`` in one call; with ``into_other`` written into ``other``'s memory
    where oneDNN fuses the add in place (``x`` and ``other`` channels_last)."""
    cl = torch.channels_last
    if into_other and x.is_contiguous(memory_format=cl) and other.is_contiguous(memory_format=cl):
        return torch.ops.mkldnn._convolution_pointwise_.binary(
            other, x, *_conv_args(conv), "add", 1.0, "relu", [], ""
        )
    return torch.ops.mkldnn._convolution_pointwise.binary(
        x, other, *_conv_args(conv), "add", 1.0, "relu", [], ""
    )


def _bottleneck(block: BottleneckBlock, x: Tensor, owns_input: bool) -> Tensor:
    """``block(x)`` fused; with ``owns_input`` it may write its result into ``x``'s memory."""
    out = _conv(block.conv1, x, relu=True)
    out = _conv(block.conv2, out, relu=True)
    if block.shortcut is not None:
        shortcut = _conv(block.shortcut, x, relu=False)
        return _conv_add_relu(block.conv3, out, shortcut, into_other=True)
    return _conv_add_relu(block.conv3, out, x, into_other=owns_input)


def _fusable_block(block: nn.Module) -> bool:
    convs = [block.conv1, block.conv2, block.conv3] if type(block) is BottleneckBlock else []
    if convs and block.shortcut is not None:
        convs.append(block.shortcut)
    return bool(convs) and all(_fusable_conv(c) for c in convs)


def _fusable_conv(conv: nn.Module) -> bool:
    """A folded conv without its own activation and with numeric padding."""
    return (
        type(conv) is FrozenBNConv2d and conv.activation is None and isinstance(conv.padding, tuple)
    )


class FusedResNetStage(nn.Sequential):
    """A ResNet stage (``nn.Sequential`` of ``BottleneckBlock``) that runs fused where it can."""

    def forward(self, x: Tensor) -> Tensor:
        if not torch.jit.is_scripting() and self._fusable(x):
            return self._fused(x)
        for block in self:
            x = block(x)
        return x

    @torch.jit.unused
    def _fusable(self, x: Tensor) -> bool:
        return _fusable(x, self.modules())

    @torch.jit.unused
    def _fused(self, x: Tensor) -> Tensor:
        for i, block in enumerate(self):
            x = _bottleneck(block, x, owns_input=i > 0)  # the stage's input is its caller's
        return x


class FusedBasicStem(BasicStem):
    """detectron2's ``BasicStem`` (conv, ReLU, 3x3 max pool) with its conv and ReLU as one call
    where :class:`FusedResNetStage` fuses."""

    def forward(self, x: Tensor) -> Tensor:
        if not torch.jit.is_scripting() and self._fusable(x):
            x = self._conv_relu(x)
        else:
            x = F.relu_(self.conv1(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)

    @torch.jit.unused
    def _fusable(self, x: Tensor) -> bool:
        return _fusable(x, self.modules())

    @torch.jit.unused
    def _conv_relu(self, x: Tensor) -> Tensor:
        return _conv(self.conv1, x, relu=True)


def fuse_resnet_blocks(module: nn.Module) -> int:
    """
    Turns, in place, every stage of detectron2 ``BottleneckBlock``\\ s whose convs are all
    :class:`FrozenBNConv2d` (run :func:`fold_frozen_batchnorm` first) into a
    :class:`FusedResNetStage`, and such a ``BasicStem`` into a :class:`FusedBasicStem`; returns
    how many were turned. Only classes change: parameters, keys and references stay.
    """
    count = 0
    for m in module.modules():
        if type(m) is nn.Sequential and len(m) and all(_fusable_block(b) for b in m):
            m.__class__ = FusedResNetStage
            count += 1
        elif type(m) is BasicStem and _fusable_conv(m.conv1):
            m.__class__ = FusedBasicStem
            count += 1
    return count
