"""The per-precision conv rates and floors, on a tiny conv."""

import torch

from fcos_d2.benchmark.floors import conv_rates, floor_seconds


def test_conv_rates_per_precision_on_a_tiny_conv():
    rates = conv_rates(16, (64, 96), iters=2)
    assert {"float32", "int8"} <= set(rates)
    assert ("bfloat16" in rates) == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    for r in rates.values():
        assert r["gflops_per_s"] > 0 and r["by"]


def test_floor_is_twice_the_multiply_adds_over_the_rate():
    # 190 G multiply-adds at 380 GFLOP/s (2 flops each): 1 s
    assert floor_seconds(190.0, 380.0) == 1.0
