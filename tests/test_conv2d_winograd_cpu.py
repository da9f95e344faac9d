"""The CPU runner's Winograd F(2x2, 3x3) path (csrc/cpu/conv2d/winograd.cpp) for float32 3x3
stride-1 convs, all three passes: the shared Winograd cases (tests/cases.py) with the algorithm
forced on and off through cuconv.config's cpu_conv_algo, on every ISA path this machine runs,
against torch in float64; within torch's own float32 error; bitwise deterministic across thread
counts; the automatic choice running what the plan names; non-finite inputs."""

import pytest
import torch
import torch.nn.functional as F

import cuconv  # noqa: F401  (loads the operators)
from cases import CONV, layout
from tolerance import assert_within_torch_error

ops = torch.ops.cuconv


@pytest.fixture(params=["gemm", "winograd"])
def algo(request, monkeypatch):
    cuconv.config.set(cpu_conv_algo=request.param)
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


# The shared cases Winograd runs (tests/cases.py), with the algorithm forced both ways on every ISA
# path: the GEMM on the same shapes is the other half of the comparison.
WINOGRAD_CASES = [c for c in CONV if "winograd" in c.plan or c.algo == "winograd"]


@pytest.mark.parametrize("case", WINOGRAD_CASES, ids=lambda c: c.name)
def test_winograd_shapes_both_ways_match_float64(isa, algo, case):
    x, w, b = case.tensors()
    stride, pad, dil, groups = case.args()
    y = ops.conv2d(x, w, b, stride, pad, dil, groups)
    gy = torch.randn(y.shape).contiguous(memory_format=layout(x))
    gx, gw, gb = ops.conv2d_backward(gy, x, w, stride, pad, dil, groups, [True, True, True])
    ry, rgx, rgw, rgb = _reference(x, w, b, pad, gy)
    for out, ref, what in ((y, ry, "forward"), (gx, rgx, "grad input"), (gw, rgw, "grad weight"), (gb, rgb, "grad bias")):
        _close(out, ref, what)
    assert ("winograd" in ops._cpu_conv2d_plan(x, w, stride, pad, dil, groups)) == (algo == "winograd")


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
    cuconv.config.set(cpu_conv_algo="winograd")
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
    cuconv.config.set(cpu_conv_algo="winograd")
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
    """auto (the default) runs, pass by pass, the algorithm the plan names: the two round
    differently, so the bits tell which one ran."""
    C, K = channels
    x, w, gy = torch.randn(2, C, 10, 10), torch.randn(K, C, 3, 3), torch.randn(2, K, 10, 10)
    cuconv.config.set(cpu_conv_algo="gemm")
    gemm = _passes(x, w, gy)
    cuconv.config.set(cpu_conv_algo="winograd")
    wino = _passes(x, w, gy)
    cuconv.config.set(cpu_conv_algo="auto")
    auto = _passes(x, w, gy)
    plan = ops._cpu_conv2d_plan(x, w, [1, 1], [1, 1, 1, 1], [1, 1], 1)
    for a, g, wi, chosen, what in zip(auto, gemm, wino, plan, ["forward", "grad input", "grad weight"]):
        assert torch.equal(a, wi if chosen == "winograd" else g), what
    assert any(not torch.equal(a, b) for a, b in zip(wino, gemm))


def test_default_is_winograd_for_wide_layers_and_the_gemm_for_thin_ones():
    plan = lambda C, K: ops._cpu_conv2d_plan(torch.empty(2, C, 16, 16), torch.empty(K, C, 3, 3), [1, 1], [1, 1, 1, 1],
                                             [1, 1], 1)
    assert plan(64, 64) == ["winograd"] * 3 and plan(128, 256) == ["winograd"] * 3
    assert "winograd" not in plan(3, 32) and "winograd" not in plan(4, 4)


@pytest.mark.parametrize("conv", [dict(stride=2), dict(dilation=2), dict(groups=2), dict(kernel=5)])
def test_other_convs_keep_the_gemm(monkeypatch, conv):
    """Forcing Winograd leaves convs it does not cover (stride, dilation, groups, other kernels) exact."""
    cuconv.config.set(cpu_conv_algo="winograd")
    k, s, d, g = conv.get("kernel", 3), conv.get("stride", 1), conv.get("dilation", 1), conv.get("groups", 1)
    x, w = torch.randn(2, 16, 11, 11), torch.randn(16, 16 // g, k, k)
    y = ops.conv2d(x, w, None, [s, s], [1, 1, 1, 1], [d, d], g)
    _close(y, F.conv2d(x.double(), w.double(), None, s, 1, d, g), "forward")


def test_float64_never_uses_winograd(monkeypatch):
    cuconv.config.set(cpu_conv_algo="winograd")
    x, w = torch.randn(2, 16, 8, 8, dtype=torch.float64), torch.randn(16, 16, 3, 3, dtype=torch.float64)
    y = ops.conv2d(x, w, None, [1, 1], [1, 1, 1, 1], [1, 1], 1)
    _close(y, F.conv2d(x, w, None, 1, 1), "forward", tol=1e-12)


def test_bad_algo_setting_is_a_clear_error():
    with pytest.raises(ValueError, match="cpu_conv_algo .CUCONV_CPU_CONV_ALGO. must be one of auto, gemm, winograd"):
        cuconv.config.set(cpu_conv_algo="fast")


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
        cuconv.config.set(cpu_conv_algo=algo)
        y = ops.conv2d(x, w, None, [1, 1], [1, 1, 1, 1], [1, 1], 1)
        assert torch.equal(y.isfinite(), finite), algo
        _close(y[finite], ref[finite], f"{algo}: finite outputs")
        if algo == "gemm" or value != value:
            assert torch.equal(y.isnan(), ref.isnan()), algo
