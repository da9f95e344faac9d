"""The CPU runner's Winograd F(2x2, 3x3) path (csrc/cpu/conv2d_winograd_cpu.cpp) for float32 3x3
stride-1 convs, all three passes: forced on and off through CUCONV_CPU_CONV_ALGO, on every ISA path
this machine runs, against torch in float64 (odd sizes, partial tiles, every padding, channel counts
off the 8-lane and 256-row blocks, batch 0, both layouts), within torch's own float32 error, bitwise
deterministic across thread counts, and chosen automatically where the rule says."""

import pytest
import torch
import torch.nn.functional as F

import cuconv  # noqa: F401  (loads the operators)
from tolerance import assert_within_torch_error

ops = torch.ops.cuconv


@pytest.fixture(params=["gemm", "winograd"])
def algo(request, monkeypatch):
    monkeypatch.setenv("CUCONV_CPU_CONV_ALGO", request.param)
    return request.param


def _fmt(t, channels_last):
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t.contiguous()


def _close(out, ref, what, tol=1e-5):
    assert out.shape == ref.shape, what
    err = (out.double() - ref).abs().max().item() if out.numel() else 0.0
    scale = max(ref.abs().max().item() if ref.numel() else 0.0, 1e-30)
    assert err <= tol * scale, f"{what}: max error {err:.3e}, scale {scale:.3e}"


def _reference(x, w, b, pad, gy, relu=False):
    x = x.detach().double().requires_grad_()
    w = w.detach().double().requires_grad_()
    b = b.detach().double().requires_grad_()
    y = F.conv2d(F.pad(x, (pad[1], pad[3], pad[0], pad[2])), w, b)
    if relu:
        y = y.relu()
    y.backward(gy.double())
    return y.detach(), x.grad, w.grad, b.grad


# (N, C, H, W, K, padding [top, left, bottom, right])
CASES = [
    (2, 16, 8, 8, 16, [1, 1, 1, 1]),     # whole tiles
    (3, 17, 13, 11, 19, [0, 0, 0, 0]),   # odd output sizes (partial tiles), channels off the 8 lanes
    (2, 20, 5, 6, 24, [2, 2, 2, 2]),     # padding 2: grad input reads with padding 0
    (2, 9, 5, 6, 7, [3, 3, 3, 3]),       # padding 3: grad input's padding is negative
    (1, 12, 9, 10, 10, [1, 0, 2, 1]),    # asymmetric padding
    (4, 8, 3, 3, 5, [0, 0, 0, 0]),       # a 1x1 output: one tile, three quarters of it past the edge
    (1, 3, 2, 2, 1, [1, 1, 1, 1]),       # one output channel, map smaller than a tile
    (2, 300, 4, 5, 33, [1, 1, 1, 1]),    # reduction over two of the GEMM's 256-row K blocks
    (2, 40, 6, 6, 270, [1, 1, 1, 1]),    # output channels over 256 (grad input reduces over them)
    (37, 8, 4, 4, 8, [1, 1, 1, 1]),      # many images: tile blocks and grad-weight chunks cross images
]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
def test_all_passes_match_float64(isa, algo, case, channels_last):
    N, C, H, W, K, pad = case
    x = _fmt(torch.randn(N, C, H, W), channels_last)
    w, b = torch.randn(K, C, 3, 3), torch.randn(K)
    y = ops.conv2d(x, w, b, [1, 1], pad, [1, 1], 1)
    gy = _fmt(torch.randn(y.shape), channels_last)
    gx, gw, gb = ops.conv2d_backward(gy, x, w, [1, 1], pad, [1, 1], 1, [True, True, True])
    ry, rgx, rgw, rgb = _reference(x, w, b, pad, gy)
    _close(y, ry, "forward")
    _close(gx, rgx, "grad input")
    _close(gw, rgw, "grad weight")
    _close(gb, rgb, "grad bias")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert y.is_contiguous(memory_format=fmt) and gx.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("channels_last", [False, True])
def test_bias_relu_epilogue(isa, algo, channels_last):
    x = _fmt(torch.randn(3, 24, 9, 7), channels_last)
    w, b = torch.randn(32, 24, 3, 3) * 0.2, torch.randn(32)
    y = ops.conv2d_bias_relu(x, w, b, [1, 1], [1, 1, 1, 1], [1, 1], 1)
    ry = _reference(x, w, b, [1, 1, 1, 1], torch.ones(3, 32, 9, 7), relu=True)[0]
    _close(y, ry, "conv + bias + relu")
    assert (y == 0).any() and (y > 0).any()


@pytest.mark.parametrize("channels_last", [False, True])
def test_batch_zero(algo, channels_last):
    x = _fmt(torch.randn(0, 16, 8, 8), channels_last)
    w = torch.randn(16, 16, 3, 3)
    y = ops.conv2d(x, w, None, [1, 1], [1, 1, 1, 1], [1, 1], 1)
    assert y.shape == (0, 16, 8, 8)
    gx, gw, _ = ops.conv2d_backward(torch.zeros_like(y), x, w, [1, 1], [1, 1, 1, 1], [1, 1], 1, [True, True, False])
    assert gx.shape == x.shape and torch.equal(gw, torch.zeros_like(w))


@pytest.mark.parametrize("channels_last", [False, True])
def test_within_twice_torch_float32_error(monkeypatch, channels_last):
    """A ResNet-sized layer: each pass's error against float64 at most 2x torch's own float32 error."""
    monkeypatch.setenv("CUCONV_CPU_CONV_ALGO", "winograd")
    x = _fmt(torch.randn(4, 128, 16, 16), channels_last)
    w = torch.randn(128, 128, 3, 3) * 0.03
    pad = [1, 1, 1, 1]
    y = ops.conv2d(x, w, None, [1, 1], pad, [1, 1], 1)
    gy = _fmt(torch.randn(y.shape), channels_last)
    gx, gw, _ = ops.conv2d_backward(gy, x, w, [1, 1], pad, [1, 1], 1, [True, True, False])
    xt, wt = x.clone().requires_grad_(), w.clone().requires_grad_()
    yt = F.conv2d(xt, wt, None, 1, 1)
    yt.backward(gy)
    ry, rgx, rgw, _ = _reference(x, w, torch.zeros(128), pad, gy)
    assert_within_torch_error(y, yt.detach(), ry)
    assert_within_torch_error(gx, xt.grad, rgx)
    assert_within_torch_error(gw, wt.grad, rgw)


@pytest.mark.parametrize("channels_last", [False, True])
def test_deterministic_across_threads(isa, monkeypatch, channels_last):
    monkeypatch.setenv("CUCONV_CPU_CONV_ALGO", "winograd")
    x = _fmt(torch.randn(11, 24, 13, 9), channels_last)
    w, b = torch.randn(40, 24, 3, 3), torch.randn(40)
    gy = _fmt(torch.randn(11, 40, 13, 9), channels_last)

    def run():
        y = ops.conv2d(x, w, b, [1, 1], [1, 1, 1, 1], [1, 1], 1)
        return (y,) + tuple(ops.conv2d_backward(gy, x, w, [1, 1], [1, 1, 1, 1], [1, 1], 1, [True, True, True]))

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run()
        torch.set_num_threads(2)
        two, again = run(), run()
    finally:
        torch.set_num_threads(threads)
    for a, c, d in zip(one, two, again):
        assert torch.equal(a, c) and torch.equal(c, d)


def _passes(x, w, gy):
    y = ops.conv2d(x, w, None, [1, 1], [1, 1, 1, 1], [1, 1], 1)
    gx, gw, _ = ops.conv2d_backward(gy, x, w, [1, 1], [1, 1, 1, 1], [1, 1], 1, [True, True, False])
    return y, gx, gw


@pytest.mark.parametrize("channels", [(16, 16), (16, 32), (64, 32), (8, 64), (64, 8)])
def test_automatic_choice(monkeypatch, channels):
    """auto (the default) gives Winograd's bits where both channel counts are 16 or more and one
    is 32 or more, and the GEMM's elsewhere: the two paths round differently, so the bits tell
    which one ran (grad input is the correlation with the channel counts swapped)."""
    C, K = channels
    x, w, gy = torch.randn(2, C, 10, 10), torch.randn(K, C, 3, 3), torch.randn(2, K, 10, 10)
    monkeypatch.setenv("CUCONV_CPU_CONV_ALGO", "gemm")
    gemm = _passes(x, w, gy)
    monkeypatch.setenv("CUCONV_CPU_CONV_ALGO", "winograd")
    wino = _passes(x, w, gy)
    monkeypatch.delenv("CUCONV_CPU_CONV_ALGO")
    auto = _passes(x, w, gy)
    expect = wino if min(C, K) >= 16 and max(C, K) >= 32 else gemm
    for a, e, g, what in zip(auto, expect, gemm, ["forward", "grad input", "grad weight"]):
        assert torch.equal(a, e), what
    assert any(not torch.equal(a, b) for a, b in zip(wino, gemm))


@pytest.mark.parametrize("conv", [dict(stride=2), dict(dilation=2), dict(groups=2), dict(kernel=5)])
def test_other_convs_keep_the_gemm(monkeypatch, conv):
    """Forcing Winograd leaves convs it does not cover (stride, dilation, groups, other kernels) exact."""
    monkeypatch.setenv("CUCONV_CPU_CONV_ALGO", "winograd")
    k, s, d, g = conv.get("kernel", 3), conv.get("stride", 1), conv.get("dilation", 1), conv.get("groups", 1)
    x, w = torch.randn(2, 16, 11, 11), torch.randn(16, 16 // g, k, k)
    y = ops.conv2d(x, w, None, [s, s], [1, 1, 1, 1], [d, d], g)
    _close(y, F.conv2d(x.double(), w.double(), None, s, 1, d, g), "forward")


def test_float64_never_uses_winograd(monkeypatch):
    monkeypatch.setenv("CUCONV_CPU_CONV_ALGO", "winograd")
    x, w = torch.randn(2, 16, 8, 8, dtype=torch.float64), torch.randn(16, 16, 3, 3, dtype=torch.float64)
    y = ops.conv2d(x, w, None, [1, 1], [1, 1, 1, 1], [1, 1], 1)
    _close(y, F.conv2d(x, w, None, 1, 1), "forward", tol=1e-12)


def test_bad_algo_setting_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("CUCONV_CPU_CONV_ALGO", "fast")
    with pytest.raises(RuntimeError, match="CUCONV_CPU_CONV_ALGO must be auto, gemm or winograd"):
        ops.conv2d(torch.randn(1, 16, 6, 6), torch.randn(16, 16, 3, 3), None, [1, 1], [1, 1, 1, 1], [1, 1], 1)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_input(monkeypatch, value):
    """Both paths put non-finite values exactly where the direct sum does (a 4x4 patch value that lies
    outside an output's 3x3 window has a structural zero in the transforms, so a NaN does not leak
    into the other outputs of its tile), and the finite outputs stay right. gemm also keeps the direct
    sum's +-inf; Winograd may turn them into NaN (inf - inf inside the transforms)."""
    x, w = torch.randn(1, 16, 10, 10), torch.randn(16, 16, 3, 3)
    x[0, 5, 4, 7] = value
    ref = F.conv2d(x.double(), w.double(), None, 1, 1)
    finite = ref.isfinite()
    assert (~finite).any()
    for algo in ("gemm", "winograd"):
        monkeypatch.setenv("CUCONV_CPU_CONV_ALGO", algo)
        y = ops.conv2d(x, w, None, [1, 1], [1, 1, 1, 1], [1, 1], 1)
        assert torch.equal(y.isfinite(), finite), algo
        _close(y[finite], ref[finite], f"{algo}: finite outputs")
        if algo == "gemm" or value != value:
            assert torch.equal(y.isnan(), ref.isnan()), algo
