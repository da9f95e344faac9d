"""The CPU runner's nhwc_taps strategy (csrc/cpu/conv2d/taps.cpp): one GEMM per kernel tap over the
outputs whose window has that tap inside the input, for small channels-last maps, forward and grad
input. Values and gradients are checked on the shared cases (tests/cases.py, `taps_*`); here:
which shapes take it, bits across thread counts, NaN and signed zeros through the ReLU, and a
batch of none."""
import pytest
import torch
import torch.nn.functional as F

import cuconv  # noqa: F401  (loads the operators)

ops = torch.ops.cuconv
CL = torch.channels_last


def _plan(C, K, H, W, kernel=3, stride=1, pad=1, dilation=1, channels_last=True):
    x = torch.empty(2, C, H, W)
    x = x.contiguous(memory_format=CL) if channels_last else x
    return ops._cpu_conv2d_plan(x, torch.empty(K, C, kernel, kernel), [stride] * 2, [pad] * 4, [dilation] * 2, 1)


def test_small_padded_maps_take_the_taps_and_others_keep_their_plans(isa):
    # A 3x3 map: the taps need 49 products, Winograd's 2x2 tiles 64, the kernel-row GEMMs 81.
    assert _plan(192, 384, 3, 3) == ["nhwc_taps", "nhwc_taps", "winograd"]
    # AlexNet's 5x5 at 7x7: 841 of 1225 products inside the input.
    assert _plan(64, 192, 7, 7, kernel=5, pad=2)[:2] == ["nhwc_taps", "nhwc_taps"]
    # Stride 2 onto a 2x2 map (ResNet's last stage at 64x64): 25 of 36 products inside.
    assert _plan(256, 512, 4, 4, stride=2)[:2] == ["nhwc_taps", "nhwc_taps"]
    # 4x4 and 2x2 maps: Winograd's whole tiles need no more products than the taps.
    assert _plan(64, 64, 4, 4) == ["winograd"] * 3 and _plan(64, 64, 2, 2) == ["winograd"] * 3
    # Large maps (padding a small share) keep the kernel-row GEMMs; few channels, NCHW too.
    assert _plan(64, 64, 14, 14, kernel=5, pad=2)[0] == "nhwc_rows"
    assert "nhwc_taps" not in _plan(8, 64, 3, 3)
    # NCHW convs of those shapes run it through the transposes (nchw_as_nhwc plans the NHWC conv).
    assert _plan(192, 384, 3, 3, channels_last=False) == ["nchw_as_nhwc", "nchw_as_nhwc", "winograd"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bits_do_not_depend_on_the_thread_count(isa, dtype):
    x = torch.randn(7, 40, 3, 3, dtype=dtype).contiguous(memory_format=CL)
    w, b = torch.randn(36, 40, 3, 3, dtype=dtype), torch.randn(36, dtype=dtype)
    gy = torch.randn(7, 36, 3, 3, dtype=dtype).contiguous(memory_format=CL)
    args = ([1, 1], [1, 1, 1, 1], [1, 1], 1)
    assert ops._cpu_conv2d_plan(x, w, *args)[:2] == ["nhwc_taps", "nhwc_taps"]

    def run():
        return ops.conv2d(x, w, b, *args), ops.conv2d_backward(gy, x, w, *args, [True, False, False])[0]

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run()
        torch.set_num_threads(2)
        two = run()
    finally:
        torch.set_num_threads(threads)
    for a, c in zip(one, two):
        assert torch.equal(a, c)


def test_relu_after_the_last_tap_keeps_nan_and_signed_zeros(isa):
    """The ReLU runs once the last tap is summed (no tap of this dilated conv covers every output)."""
    x = torch.randn(2, 16, 6, 7).contiguous(memory_format=CL)
    w, b = torch.randn(18, 16, 3, 3), torch.randn(18)
    x[1, 3, 2, 2] = float("nan")
    args = ([1, 1], [2, 1, 1, 2], [2, 2], 1)
    assert ops._cpu_conv2d_plan(x, w, *args)[0] == "nhwc_taps"
    y = ops.conv2d(x, w, b, *args)
    y_relu = ops.conv2d_bias_relu(x, w, b, *args)
    ref = F.conv2d(F.pad(x.double(), (1, 2, 2, 1)), w.double(), b.double(), 1, 0, 2)
    assert torch.equal(y.isnan(), ref.isnan()) and y.isnan().any()
    assert torch.equal(y_relu.isnan(), y.isnan())
    finite = ~y.isnan()
    assert torch.equal(y_relu[finite], y[finite].clamp_min(0))
    # bias -0 on an all-zero input: every output is -0 + 0 products = +0 where a tap adds, -0 where none does
    w0, b0 = torch.zeros(16, 16, 3, 3), torch.full((16,), -0.0)
    y0 = ops.conv2d_bias_relu(torch.zeros(2, 16, 3, 3).contiguous(memory_format=CL), w0, b0,
                              [1, 1], [1, 1, 1, 1], [1, 1], 1)
    assert torch.equal(y0, torch.zeros_like(y0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batch_of_none(isa, dtype):
    x = torch.randn(0, 24, 3, 3, dtype=dtype).contiguous(memory_format=CL)
    w = torch.randn(20, 24, 3, 3, dtype=dtype)
    y = ops.conv2d(x, w, None, [1, 1], [1, 1, 1, 1], [1, 1], 1)
    assert y.shape == (0, 20, 3, 3)
    gx, gw, _ = ops.conv2d_backward(torch.zeros_like(y), x, w, [1, 1], [1, 1, 1, 1], [1, 1], 1, [True, True, False])
    assert gx.shape == x.shape and torch.equal(gw, torch.zeros_like(w))


def test_non_contiguous_input(isa):
    base = torch.randn(4, 48, 3, 3).contiguous(memory_format=CL)
    x = base[:, 4:44]  # a channel slice: strided, neither layout's contiguous form
    w = torch.randn(32, 40, 3, 3)
    y = ops.conv2d(x, w, None, [1, 1], [1, 1, 1, 1], [1, 1], 1)
    ref = F.conv2d(x.double(), w.double(), None, 1, 1)
    assert (y.double() - ref).abs().max() <= 1e-5 * ref.abs().max()
