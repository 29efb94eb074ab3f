#!/usr/bin/env python3
"""
Forward + backward time of the 3 x 3 convolutions of R-50-FPN's training step (the benchmark's
batch: 2 images padded to 512 x 768), torch's direct convolution against fcos_d2's Winograd
F(4x4, 3x3), with the choice MODEL.FCOS.WINOGRAD makes for each (docs/benchmarks.md):

    python scripts/winograd_shapes.py [--threads 2] [--iters 3] [--channels-last]
"""

import argparse

import torch
import torch.nn.functional as F

from fcos_d2.benchmark.harness import timeit
from fcos_d2.layers.winograd import tile_grid, winograd_conv2d, winograd_helps

# (N, C, H, W, K): FPN and head at P3-P7, ResNet res3-res5, and the predictors
SHAPES = [
    (2, 256, 64, 96, 256),
    (2, 256, 32, 48, 256),
    (2, 256, 24, 40, 256),
    (2, 256, 24, 32, 256),
    (2, 256, 16, 24, 256),
    (2, 256, 8, 12, 256),
    (2, 256, 4, 6, 256),
    (2, 512, 32, 48, 512),
    (2, 512, 16, 24, 512),
    (2, 128, 64, 96, 128),
    (2, 256, 64, 96, 80),
    (2, 256, 32, 48, 80),
    (2, 256, 64, 96, 4),
]


def forward_backward(conv, x, weight, bias, grad, iters) -> float:
    """Min seconds of forward + backward over ``iters`` runs after one warm-up."""
    inputs = (x, weight, bias)
    return timeit(lambda: torch.autograd.grad(conv(*inputs), inputs, grad), iters, "cpu")["min_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=3, help="timed repeats; the minimum counts")
    parser.add_argument("--channels-last", action="store_true", help="inputs in channels_last")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    layout = torch.channels_last if args.channels_last else torch.contiguous_format
    capability = torch.backends.cpu.get_cpu_capability()
    print(f"torch {torch.__version__}, {capability} kernels, {args.threads} threads, {layout}")
    print("| N, C, H, W -> K | tiles | direct (s) | Winograd (s) | ratio | WINOGRAD uses it |")
    print("|---|---|---|---|---|---|")
    for n, c, h, w, k in SHAPES:
        x = torch.randn(n, c, h, w, generator=gen).contiguous(memory_format=layout)
        x.requires_grad_()
        weight = (torch.randn(k, c, 3, 3, generator=gen) * 0.02).requires_grad_()
        bias = torch.zeros(k, requires_grad=True)
        grad = torch.randn(n, k, h, w, generator=gen).contiguous(memory_format=layout)
        direct = forward_backward(
            lambda *a: F.conv2d(*a, padding=1), x, weight, bias, grad, args.iters
        )
        winograd = forward_backward(winograd_conv2d, x, weight, bias, grad, args.iters)
        th, tw = tile_grid(h, w)
        tiles = n * th * tw
        used = "yes" if winograd_helps(c, k, tiles) else "no"
        print(
            f"| {n}, {c}, {h}, {w} -> {k} | {tiles} | {direct:.4f} | {winograd:.4f} | "
            f"{winograd / direct:.2f} | {used} |"
        )


if __name__ == "__main__":
    main()
