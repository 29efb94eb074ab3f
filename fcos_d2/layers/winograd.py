"""
3 x 3 convolutions as Winograd's minimal filtering F(4x4, 3x3) (Lavin & Gray, CVPR 2016), for
float32 training on CPUs.

A CPU's direct convolutions (oneDNN's, which PyTorch calls) already run near the FMA peak, and a
training step of FCOS spends over 90% of its time in them, most in the 256-channel 3 x 3 convs of
the FPN and the head. F(4x4, 3x3) computes a 3 x 3 convolution with 36 products per 4 x 4 output
tile instead of 144: 6 x 6 input tiles go through a fixed linear map, each of the 36 tile
positions becomes one matrix product over the channels, and a second fixed map gives the 4 x 4
outputs. Written in tensor operations, autograd turns its backward into the same kind of
products, so forward and both gradients do a quarter of the multiplications; the tile maps add
passes over memory, which pay off only for enough channels and tiles (``winograd_helps``).

Results differ from the direct convolution by float rounding only, a larger one (about 1e-5 of
the output's scale, from the tile maps' coefficients up to 8): what GPUs' convolution libraries
trade for speed too, and why it runs in training only.
"""

import contextlib
import functools
from typing import Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.overrides import TorchFunctionMode

from .graph import compiling

__all__ = ["tile_grid", "winograd_conv2d", "winograd_convolutions", "winograd_helps"]

# F(4, 3) at the points 0, 1, -1, 2, -2 and infinity: input map B^T (6 x 6), filter map G (6 x 3),
# output map A^T (4 x 6); a 2-D tile maps as M d M^T, i.e. (M kron M) on its row-major entries.
_BT = (
    (4, 0, -5, 0, 1, 0),
    (0, -4, -4, 1, 1, 0),
    (0, 4, -4, -1, 1, 0),
    (0, -2, -1, 2, 1, 0),
    (0, 2, -1, -2, 1, 0),
    (0, 4, 0, -5, 0, 1),
)
_G = (
    (1 / 4, 0, 0),
    (-1 / 6, -1 / 6, -1 / 6),
    (-1 / 6, 1 / 6, -1 / 6),
    (1 / 24, 1 / 12, 1 / 6),
    (1 / 24, -1 / 12, 1 / 6),
    (0, 0, 1),
)
_AT = ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1))

# scripts/winograd_shapes.py (docs/benchmarks.md, three runs each with AVX2 and AVX-512 kernels
# on one 2-core machine): forward + backward of the 3 x 3 convs of R-50-FPN's training step,
# Winograd / direct. Products over enough channels pay for the tile maps' memory passes, and the
# filter's tiles (36 x C x K) must stay small against the input's and output's (36 x tiles x
# (C + K)): 512 -> 512 channels on 192 tiles took 0.63-0.76x the direct time, on 48 tiles
# 1.06-1.63x. Some runs add a few ms to every Winograd call (its many operations, each a
# parallel region): 256 -> 256 on 192 tiles 0.64-0.80x, on 96 tiles 0.70-1.03x, on 48 tiles
# 0.84-1.33x.
MIN_CHANNELS = 256
MIN_TILES = 128
TILES_PER_CHANNEL = 1 / 4


def tile_grid(height: int, width: int) -> Tuple[int, int]:
    """Rows and columns of the 4 x 4 output tiles that cover an H x W output."""
    return -(-height // 4), -(-width // 4)


@functools.lru_cache(maxsize=None)
def _tile_maps(device: torch.device, dtype: torch.dtype) -> Tuple[Tensor, Tensor, Tensor]:
    """(36, 36) input, (36, 9) filter and (16, 36) output maps."""
    # normal tensors even when first asked for under inference_mode: they are kept for training
    with torch.inference_mode(False), torch.no_grad():
        bt, g, at = (torch.tensor(m, dtype=torch.float64) for m in (_BT, _G, _AT))
        return tuple(torch.kron(m, m).to(device, dtype) for m in (bt, g, at))


def _input_tiles(x: Tensor, th: int, tw: int) -> Tensor:
    """(36, N * th * tw, C): x's 6 x 6 tiles (zero-padded to whole tiles) under the input map."""
    n, c, h, w = x.shape
    padded = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 4 * tw + 1 - w, 1, 4 * th + 1 - h))
    d = padded.unfold(1, 6, 4).unfold(2, 6, 4)  # (N, th, tw, C, 6, 6), overlapping
    d = d.permute(4, 5, 0, 1, 2, 3).reshape(36, n * th * tw * c)
    return (_tile_maps(x.device, x.dtype)[0] @ d).view(36, n * th * tw, c)


def _filter_tiles(weight: Tensor) -> Tensor:
    """(36, C, K): the (K, C, 3, 3) weight under the filter map."""
    k, c = weight.shape[:2]
    flat = weight.reshape(k, c, 9).permute(2, 1, 0).reshape(9, c * k)
    return (_tile_maps(weight.device, weight.dtype)[1] @ flat).view(36, c, k)


class _TileProducts(torch.autograd.Function):
    """
    (36, tiles, C) input tiles and a (K, C, 3, 3) weight -> (36, tiles, K): one product over the
    channels per tile position. Backward computes the weight's tiles again rather than keeping
    them (4x the weight's size, for every conv; the input tiles are kept: costly to redo).
    """

    @staticmethod
    def forward(ctx, v: Tensor, weight: Tensor) -> Tensor:
        ctx.save_for_backward(v, weight)
        return torch.bmm(v, _filter_tiles(weight))

    @staticmethod
    @once_differentiable  # backward uses the filter's tiles as constants
    def backward(ctx, grad: Tensor) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        v, weight = ctx.saved_tensors
        grad_v = grad_weight = None
        with torch.enable_grad():  # the filter map's backward by autograd
            w = weight.detach().requires_grad_(ctx.needs_input_grad[1])
            u = _filter_tiles(w)
            if ctx.needs_input_grad[0]:
                grad_v = torch.bmm(grad, u.detach().transpose(1, 2))
            if ctx.needs_input_grad[1]:
                (grad_weight,) = torch.autograd.grad(u, w, torch.bmm(v.transpose(1, 2), grad))
        return grad_v, grad_weight


def winograd_conv2d(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """
    ``F.conv2d(x, weight, bias, padding=1)`` (stride 1, no dilation, one group) computed as
    F(4x4, 3x3).

    Args:
        x: (N, C, H, W), NCHW or channels_last (float32 where it is used for speed).
        weight: (K, C, 3, 3).
        bias: (K,) or None.

    Returns:
        (N, K, H, W), channels_last where ``x`` or ``weight`` is (as torch's CPU convolution).
    """
    n, c, h, w = x.shape
    k = weight.shape[0]
    th, tw = tile_grid(h, w)
    m = _TileProducts.apply(_input_tiles(x, th, tw), weight)  # (36, tiles, K)
    y = (_tile_maps(x.device, x.dtype)[2] @ m.view(36, -1)).view(4, 4, n, th, tw, k)
    channels_last = _channels_last(x) or _channels_last(weight)
    if channels_last:
        y = y.permute(2, 3, 0, 4, 1, 5).reshape(n, 4 * th, 4 * tw, k)[:, :h, :w]
        y = y.permute(0, 3, 1, 2)
    else:
        y = y.permute(2, 5, 3, 0, 4, 1).reshape(n, k, 4 * th, 4 * tw)[:, :, :h, :w]
    if bias is not None:
        y = y + bias.view(-1, 1, 1)  # a new dense tensor in y's dimension order
    # (a reshape that needed no copy, of one-tile images, can leave another order)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return y.contiguous(memory_format=fmt)


def _channels_last(t: Tensor) -> bool:
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def _pair(value) -> Tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _conv2d_arguments(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """``torch.conv2d``'s arguments, however they were passed."""
    return input, weight, bias, stride, padding, dilation, groups


def _eligible(x, weight, bias, stride, padding, dilation, groups) -> bool:
    """Whether ``torch.conv2d(x, weight, bias, stride, padding, dilation, groups)`` is a
    trainable float32 CPU 3 x 3 convolution that ``winograd_helps``, run eagerly."""
    if torch.jit.is_tracing() or compiling():
        return False  # a graph records torch's convolution
    if not (isinstance(x, Tensor) and isinstance(weight, Tensor)) or x.dim() != 4:
        return False
    if not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)):
        return False  # a forward alone gains nothing measurable (the tile maps' memory passes)
    tensors = (x, weight) if bias is None else (x, weight, bias)
    if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in tensors):
        return False
    same = padding == "same" or _pair(padding) == (1, 1)
    shape = (groups, _pair(stride), _pair(dilation), tuple(weight.shape[2:]), same)
    if shape != (1, (1, 1), (1, 1), (3, 3), True):
        return False
    n, c, h, w = x.shape
    th, tw = tile_grid(h, w)
    return winograd_helps(c, weight.shape[0], n * th * tw)


def winograd_helps(in_channels: int, out_channels: int, tiles: int) -> bool:
    """Whether F(4x4, 3x3) was measured faster than the direct convolution (forward and
    backward, CPU, float32) for this many channels and 4 x 4 output tiles: at least 256
    channels in and out, at least 128 tiles and a quarter as many as the larger channel count."""
    channels = (in_channels, out_channels)
    enough_tiles = tiles >= max(MIN_TILES, max(channels) * TILES_PER_CHANNEL)
    return min(channels) >= MIN_CHANNELS and enough_tiles


class _WinogradMode(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.conv2d:
            arguments = _conv2d_arguments(*args, **kwargs)
            if _eligible(*arguments):
                return winograd_conv2d(*arguments[:3])
        return func(*args, **kwargs)


@contextlib.contextmanager
def winograd_convolutions() -> Iterator[None]:
    """
    Within it, every ``torch.conv2d`` (``nn.Conv2d``, detectron2's ``Conv2d``, ``F.conv2d``)
    that is a trainable float32 CPU 3 x 3 convolution with stride 1, padding 1 and enough
    channels and tiles runs as :func:`winograd_conv2d`; every other call runs as it is.
    """
    with _WinogradMode():
        yield
