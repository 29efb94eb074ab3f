"""Winograd F(4x4, 3x3) convolutions against torch's direct convolution, and where they run."""

import pytest
import torch
import torch.nn.functional as F

import fcos_d2.layers.winograd as winograd
from fcos_d2.layers import winograd_conv2d, winograd_convolutions


def _inputs(n, c, h, w, k, dtype=torch.float32, channels_last=False, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=gen, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(k, c, 3, 3, generator=gen, dtype=dtype) / (3 * c**0.5)
    bias = torch.randn(k, generator=gen, dtype=dtype)
    return x.requires_grad_(), weight.requires_grad_(), bias.requires_grad_()


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape", [(2, 5, 13, 17, 7), (1, 3, 4, 4, 2), (1, 2, 1, 1, 3)])
def test_float32_output_and_gradients_match_direct_convolution_in_float64(shape, channels_last):
    """Odd sizes (partial tiles), a single tile, a 1 x 1 image; the reference is torch's direct
    convolution in float64, compared relative to each tensor's scale."""
    *size, k = shape
    x, weight, bias = _inputs(*size, k, channels_last=channels_last)
    grad = torch.randn(size[0], k, *size[2:], generator=torch.Generator().manual_seed(1))
    y = winograd_conv2d(x, weight, bias)
    got = torch.autograd.grad(y, (x, weight, bias), grad)
    ref_inputs = [t.detach().double().requires_grad_() for t in (x, weight, bias)]
    ref = F.conv2d(*ref_inputs, padding=1)
    expected = torch.autograd.grad(ref, ref_inputs, grad.double())
    for name, a, b in zip(
        ("output", "grad x", "grad weight", "grad bias"), (y, *got), (ref, *expected)
    ):
        error = (a.double() - b).abs().max() / b.abs().max()
        assert error < 2e-5, (name, error.item())


@pytest.mark.parametrize("weight_channels_last", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_output_memory_format_is_that_of_torchs_convolution(channels_last, weight_channels_last):
    x, weight, bias = _inputs(2, 4, 9, 6, 3, channels_last=channels_last)
    if weight_channels_last:
        weight = weight.detach().contiguous(memory_format=torch.channels_last)
    y, ref = winograd_conv2d(x, weight, bias), F.conv2d(x, weight, bias, padding=1)
    for fmt in (torch.channels_last, torch.contiguous_format):
        assert y.is_contiguous(memory_format=fmt) == ref.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("channels_last", [False, True])
def test_output_keeps_the_input_memory_format(channels_last):
    for size in ((2, 4, 9, 6), (1, 4, 4, 4)):  # partial tiles, and one tile (a view reshape)
        x, weight, bias = _inputs(*size, 3, channels_last=channels_last)
        for b in (bias, None):
            y = winograd_conv2d(x, weight, b)
            assert y.shape == (size[0], 3, *size[2:])
            assert y.is_contiguous(
                memory_format=torch.channels_last if channels_last else torch.contiguous_format
            )


def test_gradients_pass_gradcheck_in_float64():
    x, weight, bias = _inputs(1, 2, 6, 5, 3, dtype=torch.float64)
    assert torch.autograd.gradcheck(winograd_conv2d, (x, weight, bias))


def test_second_derivatives_are_refused_rather_than_wrong():
    x, weight, bias = _inputs(1, 2, 5, 6, 3, dtype=torch.float64)
    y = winograd_conv2d(x, weight, bias).square().sum()
    (grad_x,) = torch.autograd.grad(y, x, create_graph=True)
    with pytest.raises(RuntimeError, match="twice"):
        grad_x.sum().backward()


def test_tile_maps_first_made_under_inference_mode_still_serve_training():
    winograd._tile_maps.cache_clear()
    x, weight, bias = _inputs(1, 2, 5, 6, 3)
    with torch.inference_mode():
        winograd_conv2d(x.detach(), weight.detach(), bias.detach())
    winograd_conv2d(x, weight, bias).sum().backward()
    ref_weight = weight.detach().clone().requires_grad_()
    F.conv2d(x.detach(), ref_weight, bias.detach(), padding=1).sum().backward()
    torch.testing.assert_close(weight.grad, ref_weight.grad, rtol=1e-4, atol=1e-4)


def test_gradient_of_the_weight_alone_when_the_input_needs_none():
    x, weight, bias = _inputs(2, 3, 7, 9, 4)
    x = x.detach()
    winograd_conv2d(x, weight, bias).square().sum().backward()
    ref_weight = weight.detach().clone().requires_grad_()
    F.conv2d(x, ref_weight, bias.detach(), padding=1).square().sum().backward()
    assert x.grad is None
    torch.testing.assert_close(weight.grad, ref_weight.grad, rtol=1e-4, atol=1e-4)


@pytest.fixture
def calls(monkeypatch):
    """Counts the convolutions the mode hands to winograd_conv2d."""
    seen = []
    original = winograd.winograd_conv2d
    monkeypatch.setattr(winograd, "winograd_conv2d", lambda *a: seen.append(1) or original(*a))
    return seen


# 256 channels at 2 x 32 x 36 pixels: 2 x 8 x 9 = 144 tiles of 4 x 4, at least 128 and 256 / 4
ELIGIBLE = (2, 256, 32, 36, 256)


def test_mode_runs_an_eligible_trainable_conv_as_winograd(calls):
    x, weight, bias = _inputs(*ELIGIBLE)
    conv = torch.nn.Conv2d(256, 256, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
    with winograd_convolutions():
        y = conv(x)
        z = F.conv2d(x, weight, bias, padding="same")
    assert len(calls) == 2
    ref = F.conv2d(x.double(), weight.double(), bias.double(), padding=1)
    for out in (y, z):
        assert ((out.double() - ref).abs().max() / ref.abs().max()) < 2e-5


@pytest.mark.parametrize(
    "case",
    [
        "no gradient",
        "stride 2",
        "dilation 2",
        "two groups",
        "padding 0",
        "1x1 kernel",
        "128 channels",
        "80 outputs",
        "72 tiles",
        "768 channels on 144 tiles",
        "float64",
        "float64 bias",
        "under torch.compile",
    ],
)
def test_mode_leaves_other_convs_to_torch(calls, case, monkeypatch):
    n, c, h, w, k = ELIGIBLE
    kwargs = {"padding": 1}
    if case == "128 channels":
        c = 128
    if case == "80 outputs":
        k = 80
    if case == "72 tiles":
        n = 1
    if case == "768 channels on 144 tiles":  # fewer than 768 / 4
        c = k = 768
    dtype = torch.float64 if case == "float64" else torch.float32
    x, weight, bias = _inputs(n, c, h, w, k, dtype=dtype)
    kwargs.update(
        {
            "stride 2": {"stride": 2},
            "dilation 2": {"dilation": 2, "padding": 2},
            "padding 0": {"padding": 0},
        }.get(case, {})
    )
    if case == "two groups":
        weight = weight[:, : c // 2]
        kwargs["groups"] = 2
    if case == "1x1 kernel":
        weight, kwargs["padding"] = weight[:, :, :1, :1], 0
    if case == "float64 bias":
        bias = bias.double()
    if case == "under torch.compile":  # a graph records torch's convolution
        monkeypatch.setattr(winograd, "compiling", lambda: True)
    with winograd_convolutions(), torch.set_grad_enabled(case != "no gradient"):
        try:
            y = F.conv2d(x, weight, bias, **kwargs)
        except RuntimeError:  # torch's own answer to mixed dtypes
            y = None
    assert not calls
    if y is not None:
        assert torch.equal(y, F.conv2d(x, weight, bias, **kwargs))


def test_mode_leaves_empty_batches_and_other_devices_to_torch(calls):
    n, c, h, w, k = ELIGIBLE
    for x in (
        torch.zeros(0, c, h, w, requires_grad=True),
        torch.empty(n, c, h, w, device="meta", requires_grad=True),
    ):
        weight = torch.zeros(k, c, 3, 3, device=x.device, requires_grad=True)
        with winograd_convolutions():
            y = F.conv2d(x, weight, None, padding=1)
        assert y.shape == (x.shape[0], k, h, w) and y.device == x.device
    assert not calls


def test_mode_reads_arguments_passed_by_keyword(calls):
    x, weight, bias = _inputs(*ELIGIBLE)
    with winograd_convolutions():
        F.conv2d(input=x, weight=weight, bias=bias, padding=(1, 1))
        F.conv2d(x, weight, None, 1, 1)
    assert len(calls) == 2
