"""
Which memory format the network runs in, per device and phase: channels_last where it was
measured faster, NCHW elsewhere. Convolutions run channels_last when their input is (PyTorch
converts the weight), so the choice is made on the input alone and the weights keep one layout.
"""

import functools

import torch

__all__ = ["channels_last_helps", "one_image_at_a_time"]


@functools.lru_cache(maxsize=None)
def _cpu_capability() -> str:
    return torch.backends.cpu.get_cpu_capability()  # honours ATEN_CPU_CAPABILITY


# R-50-FPN, 2 threads, seconds (min of 3) channels_last vs NCHW input, same NCHW weights; the
# benchmark's batches (inference 800 x 1216, training step batch 2 at short side 512). AVX-512
# (Xeon family 6 model 207): inference 1.12 vs 1.37, training 2.49 vs 2.91. AVX2 (same CPU under
# ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2): inference 1.96
# vs 2.20, but training 5.19 vs 4.54: oneDNN's AVX2 backward convolutions are slower
# channels_last (a 256 -> 256 3x3 conv, batch 2 at 64 x 96: 0.29 vs 0.21 s forward + backward).
@torch.jit.unused  # scripted models ask torch.jit.is_scripting() first
def channels_last_helps(device_type: str, training: bool) -> bool:
    """Whether a network asked to run channels_last should, on ``device_type`` in this phase:
    always on GPUs and for CPU inference; for CPU training only with AVX-512 kernels."""
    if device_type != "cpu" or not training:
        return True
    return _cpu_capability().startswith("AVX512")


# R-50-FPN inference at 800 x 1216, 2 threads, channels_last: a batch of 4 took 8.46 s against
# 4 x 1.95 s one by one (AVX2 kernels, as above), and 2.09 s per image against 1.98 s in an
# earlier AVX-512 run: on a CPU, larger activations cost more in cache misses than one call per
# image costs in overhead.
@torch.jit.unused
def one_image_at_a_time(device_type: str, training: bool) -> bool:
    """Whether a batch should go through the network one image at a time (CPU inference)."""
    return device_type == "cpu" and not training
