"""The per-precision conv rates and floors, on a tiny conv."""

import torch

from fcos_d2.benchmark.floors import conv_rates, floor_seconds, step_gflop


def test_conv_rates_per_precision_on_a_tiny_conv():
    rates = conv_rates(16, (64, 96), iters=2)
    assert {"float32", "int8"} <= set(rates)
    assert ("bfloat16" in rates) == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    for r in rates.values():
        assert r["gflops_per_s"] > 0 and r["by"]


def test_floor_is_twice_the_multiply_adds_over_the_rate():
    # 190 G multiply-adds at 380 GFLOP/s (2 flops each): 1 s
    assert floor_seconds(190.0, 380.0) == 1.0


def test_step_gflop_counts_forward_and_only_the_gradients_computed():
    # a 3 -> 4 3x3 conv (padding 1) on a 1x3x5x7 input: 4*3*9*35 = 3780 multiply-adds forward;
    # backward computes the weight's gradient (same count) but not the input's (no grad needed)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False)
    x = torch.randn(1, 3, 5, 7)
    assert step_gflop(lambda: conv(x).sum().backward()) * 1e9 == 2 * 2 * 3780
    # the input needs a gradient too: a third product of the same size
    x.requires_grad_(True)
    assert step_gflop(lambda: conv(x).sum().backward()) * 1e9 == 3 * 2 * 3780
    # frozen weights and no input gradient: the forward alone
    conv.weight.requires_grad_(False)
    x.requires_grad_(False)
    with torch.no_grad():
        assert step_gflop(lambda: conv(x)) * 1e9 == 2 * 3780
