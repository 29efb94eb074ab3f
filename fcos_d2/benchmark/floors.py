"""
Per-precision floors: how fast this CPU runs the network's most common layer (one 256 -> 256 3x3
convolution on a P3-sized map) in float32, bfloat16 and int8, and so how long a forward would
take if every multiply-add ran at that rate (the network's FLOPs / the rate). A mode's time over
its own floor says how much of it is overhead rather than arithmetic.
"""

from typing import Callable, Dict, Tuple

import torch

from .harness import timeit

__all__ = [
    "BF16_LEFT_OUT",
    "FLOOR",
    "conv_rates",
    "float_conv_rate",
    "floor_seconds",
    "model_gmacs",
    "native_bfloat16",
    "step_gflop",
]

BF16_LEFT_OUT = (
    "bfloat16 rows left out: this CPU (under its ISA cap) has no bfloat16 units, so PyTorch and "
    "oneDNN would emulate it in float32 arithmetic, 7-15x slower than float32 (not a mode to "
    "deploy or train with here)"
)

# The mode name of a floor row (end-to-end and training).
FLOOR = "conv-bound floor (float32)"


def native_bfloat16() -> bool:
    """Whether bfloat16 math runs on bfloat16 units here (AVX512_BF16 or AMX, under
    ``ONEDNN_MAX_CPU_ISA``); elsewhere it is emulated."""
    from ..utils import cpu_info

    return bool(cpu_info()["native_bfloat16"])


def _conv_input(channels: int, size: Tuple[int, int], device: str = "cpu") -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    h, w = -(-size[0] // 8), -(-size[1] // 8)
    return torch.randn(1, channels, h, w, generator=gen).to(device)


def _rate(fn: Callable[[], object], macs: int, iters: int, device: str = "cpu") -> float:
    with torch.no_grad():
        t = timeit(fn, iters, device)
    return 2 * macs / t["min_s"] / 1e9


def float_conv_rate(
    channels: int,
    size: Tuple[int, int],
    dtype: torch.dtype = torch.float32,
    memory_format: torch.memory_format = torch.channels_last,
    device: str = "cpu",
    iters: int = 5,
) -> float:
    """GFLOP/s of one ``channels`` -> ``channels`` 3x3 conv on a (size / 8)-sized map in
    ``dtype`` and ``memory_format`` on ``device``."""
    x = _conv_input(channels, size, device).to(dtype).contiguous(memory_format=memory_format)
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1)
    conv = conv.to(device=device, dtype=dtype, memory_format=memory_format)
    macs = channels * channels * 9 * x.shape[2] * x.shape[3]
    return _rate(lambda: conv(x), macs, iters, device)


def _torch_int8(x: torch.Tensor) -> Callable[[], object]:
    """PyTorch's x86 quantized conv (oneDNN / fbgemm, VNNI where the CPU has it)."""
    from torch.ao.nn.quantized import Conv2d as QConv2d

    torch.backends.quantized.engine = "x86"
    c = x.shape[1]
    conv = QConv2d(c, c, 3, padding=1)
    q = torch.quantize_per_tensor(x, 0.05, 128, torch.quint8)
    return lambda: conv(q)


def conv_rates(channels: int, size: Tuple[int, int], iters: int = 5) -> Dict[str, Dict]:
    """
    GFLOP/s (2 x multiply-adds / s) of a ``channels`` -> ``channels`` 3x3 conv on a
    (size / 8)-sized map, per precision, with what ran it: float32 and bfloat16 in PyTorch
    (oneDNN, channels_last; bfloat16 only where the CPU has bfloat16 units), int8
    in PyTorch's x86 quantized conv (uint8 activations, int8 weights; VNNI where the CPU has it).
    """
    rates = {
        "float32": {
            "gflops_per_s": float_conv_rate(channels, size, torch.float32, iters=iters),
            "by": "PyTorch (oneDNN)",
        },
    }
    if native_bfloat16():
        rates["bfloat16"] = {
            "gflops_per_s": float_conv_rate(channels, size, torch.bfloat16, iters=iters),
            "by": "PyTorch (oneDNN)",
        }
    x = _conv_input(channels, size).contiguous(memory_format=torch.channels_last)
    macs = channels * channels * 9 * x.shape[2] * x.shape[3]
    rates["int8"] = {
        "gflops_per_s": _rate(_torch_int8(x), macs, iters),
        "by": "PyTorch x86 quantized conv",
    }
    return rates


def floor_seconds(gmacs: float, rate_gflops: float) -> float:
    """Seconds of ``gmacs`` G multiply-adds at ``rate_gflops`` GFLOP/s."""
    return 2 * gmacs / rate_gflops


class _Network(torch.nn.Module):
    """Backbone + head of an FCOS model on a normalised image tensor (for FLOP counting)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        features = self.model.backbone(x)
        outputs = self.model.head([features[f] for f in self.model.head_in_features])
        return tuple(t for level in outputs for t in level)


def model_gmacs(model: torch.nn.Module, size: Tuple[int, int], device: str) -> float:
    """Multiply-adds (G) of backbone + head on one (padded) image, counted by fvcore."""
    from fvcore.nn import FlopCountAnalysis  # counts one multiply-add as one "flop"

    d = model.backbone.size_divisibility or 1
    shape = [-(-size[0] // d) * d, -(-size[1] // d) * d]
    counter = FlopCountAnalysis(_Network(model), (torch.zeros(1, 3, *shape, device=device),))
    counter.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return counter.total() / 1e9


def step_gflop(step: Callable[[], object]) -> float:
    """
    G floating-point operations (2 per multiply-add) of the matrix products and convolutions
    that one call of ``step`` runs, backward included (only the gradients it computes: none for
    frozen weights), counted by ``torch.utils.flop_counter``.
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return counter.get_total_flops() / 1e9
