"""The CPU runner's mechanisms beyond the shared cases (those run on every ISA path in
test_conv2d_cases.py and test_max_pool2d_cases.py): the bias+ReLU epilogue across GEMM K blocks and
with NaN inputs, the seed CNN's layers at a real batch, max-pool's NaN/tie/empty-window rules, and
determinism across runs and thread counts, on every ISA path this machine runs."""

import pytest
import torch
import torch.nn.functional as F

import cuconv  # noqa: F401  (loads the operators)
from conftest import CPU_ISA_PATHS

ops = torch.ops.cuconv


def _fmt(t, channels_last):
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t.contiguous()


def _close(out, ref, dtype, what):
    """float64 to 1e-10, float32 to 1e-5, both relative to the reference's largest magnitude."""
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    assert out.shape == ref.shape, what
    err = (out.double() - ref).abs().max().item()
    scale = max(ref.abs().max().item(), 1e-30)
    assert err <= tol * scale, f"{what}: max error {err:.3e}, scale {scale:.3e}"


def _conv_ref(x, w, b, stride, pad, dil, groups, gy):
    x = x.detach().double().requires_grad_()
    w = w.detach().double().requires_grad_()
    b = b.detach().double().requires_grad_()
    xp = F.pad(x, (pad[1], pad[3], pad[0], pad[2]))
    y = F.conv2d(xp, w, b, stride, 0, dil, groups)
    y.backward(gy.double())
    return y.detach(), x.grad, w.grad, b.grad


@pytest.mark.parametrize("channels_last", [False, True])
def test_conv2d_without_bias(isa, channels_last):
    x = _fmt(torch.randn(2, 5, 9, 8), channels_last)
    w = torch.randn(11, 5, 3, 3)
    y = ops.conv2d(x, w, None, [1, 1], [1, 1, 1, 1], [1, 1], 1)
    _close(y, F.conv2d(x.double(), w.double(), None, 1, 1), torch.float32, "forward")


def _conv_all(x, w, b, gy, stride, pad, dil, groups):
    y = ops.conv2d(x, w, b, stride, pad, dil, groups)
    return (y,) + tuple(ops.conv2d_backward(gy, x, w, stride, pad, dil, groups, [True, True, True]))


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("stride", [(1, 1), (2, 2)])
# 12 channels: 36 values per kernel row, so NCHW runs the forward and grad weight on an NHWC copy;
# one image: its GEMMs split over the threads instead.
@pytest.mark.parametrize("N,C", [(13, 10), (13, 12), (1, 12)])
def test_conv2d_deterministic_across_runs_and_threads(isa, channels_last, stride, N, C):
    H, W, K = 11, 11, 24
    x = _fmt(torch.randn(N, C, H, W), channels_last)
    w, b = torch.randn(K, C, 3, 3), torch.randn(K)
    P = (H + 2 - 3) // stride[0] + 1
    gy = _fmt(torch.randn(N, K, P, P), channels_last)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _conv_all(x, w, b, gy, stride, [1, 1, 1, 1], [1, 1], 1)
        torch.set_num_threads(2)
        two = _conv_all(x, w, b, gy, stride, [1, 1, 1, 1], [1, 1], 1)
        again = _conv_all(x, w, b, gy, stride, [1, 1, 1, 1], [1, 1], 1)
    finally:
        torch.set_num_threads(threads)
    for a, c, d in zip(one, two, again):
        assert torch.equal(a, c) and torch.equal(c, d)


def assert_same_bits_across_threads(x, w, b, gy, args):
    """Forward (bias + ReLU) and all three gradients give the same bits at 1, 2 and 3 threads and
    on a repeated run."""
    threads = torch.get_num_threads()
    try:
        runs = []
        for t in (1, 2, 3, 3):
            torch.set_num_threads(t)
            runs.append([ops.conv2d_bias_relu(x, w, b, *args)] + list(ops.conv2d_backward(gy, x, w, *args, [True, True, True])))
    finally:
        torch.set_num_threads(threads)
    for run in runs[1:]:
        for a, c in zip(runs[0], run):
            assert torch.equal(a, c)


# Depthwise (groups == channels): one image with one or few channel blocks (the work splits into
# bands of rows per thread), and a batch over several blocks (NHWC: whole blocks in place, the last
# partial one through a copy); multiplier 2 (lanes gather their input channel, grad input copies).
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("N,C,m,k,stride", [(1, 16, 1, 3, 1), (1, 17, 1, 7, 1), (13, 40, 1, 3, 2), (13, 40, 1, 5, 1),
                                            (5, 12, 2, 3, 2)])
def test_depthwise_deterministic_across_runs_and_threads(isa, channels_last, N, C, m, k, stride):
    H = W = 23
    x = _fmt(torch.randn(N, C, H, W), channels_last)
    w, b = torch.randn(C * m, 1, k, k), torch.randn(C * m)
    pad = [k // 2] * 4
    P = (H + 2 * (k // 2) - k) // stride + 1
    gy = _fmt(torch.randn(N, C * m, P, P), channels_last)
    args = ([stride, stride], pad, [1, 1], C)
    assert ops._cpu_conv2d_plan(x, w, *args) == ["depthwise"] * 3
    assert_same_bits_across_threads(x, w, b, gy, args)


def test_depthwise_gradcheck(isa):
    # float64, multiplier 2, stride 2, dilation, asymmetric padding: the three depthwise passes.
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 1, 3, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    args = ([2, 1], [1, 0, 2, 1], [1, 2], 3)
    assert ops._cpu_conv2d_plan(x, w, *args) == ["depthwise"] * 3
    assert torch.autograd.gradcheck(lambda *t: ops.conv2d(*t, *args), (x, w, b))
    xl = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    assert torch.autograd.gradcheck(lambda *t: ops.conv2d(*t, *args), (xl, w, b))


# An NCHW im2col forward whose columns pass 256 KiB runs in chunks of output rows (a 7x7 3-channel
# stem: 147 values per column; here 17 rows of 25, then 6): every chunk's outputs, each summed as in
# one GEMM, bias and ReLU included; bfloat16 through its float32 stage.
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=["f32", "f64", "bf16"])
def test_nchw_im2col_forward_in_row_chunks(isa, dtype):
    x = torch.randn(2, 3, 45, 50).to(dtype)
    w, b = torch.randn(8, 3, 7, 7).to(dtype), torch.randn(8).to(dtype)
    args = ([2, 2], [3, 3, 3, 3], [1, 1], 1)
    assert ops._cpu_conv2d_plan(x, w, *args)[0] == "nchw_im2col"
    ref = F.conv2d(x.double(), w.double(), b.double(), 2, 3).relu()
    y = ops.conv2d_bias_relu(x, w, b, *args)
    err = (y.double() - ref).abs().max().item()
    if dtype == torch.bfloat16:  # at most twice native's own bfloat16 error
        bound = 2 * (F.conv2d(x, w, b, 2, 3).relu().double() - ref).abs().max().item()
    else:
        bound = (1e-5 if dtype == torch.float32 else 1e-12) * ref.abs().max().item()
    assert err <= bound, f"max error {err:.3e}, bound {bound:.3e}"
    # the same bits whatever the thread count (the chunks do not depend on it)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        y1 = ops.conv2d_bias_relu(x, w, b, *args)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(y, y1)


# Grouped and dilated convs (the `grouped` strategy): several images per block of planes, batch
# chunks of the grad weight, stride 2 (grad input elsewhere), dilation.
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("N,C,G,stride,dil", [(1, 32, 8, 1, 1), (13, 48, 6, 2, 1), (9, 32, 2, 1, 1), (5, 16, 4, 1, 2)])
def test_grouped_deterministic_across_runs_and_threads(isa, channels_last, N, C, G, stride, dil):
    H = W = 15
    x = _fmt(torch.randn(N, C, H, W), channels_last)
    w, b = torch.randn(C, C // G, 3, 3), torch.randn(C)
    P = (H + 2 * dil - 2 * dil - 1) // stride + 1
    gy = _fmt(torch.randn(N, C, P, P), channels_last)
    args = ([stride, stride], [dil] * 4, [dil, dil], G)
    plan = ops._cpu_conv2d_plan(x, w, *args)
    # NHWC groups of 16 output channels on AVX-512 (or of 8 or 4 in and out, packed 2 or 4 to a
    # vector), of 8 or 16 on AVX2, take grouped_taps (tested below); packed groups' grad weight only
    # where it reads a kernel row's three taps at once (stride along the rows 1x or 2x the
    # dilation); so does the AVX2 NHWC grad weight of groups of 4 (two groups per vector).
    # NCHW packed groups onto at most 64 positions go through the transposes to the same kernels.
    packed = isa == "avx512" and C // G in (4, 8)
    taps = channels_last and (C // G == 16 or packed if isa == "avx512" else isa == "avx2" and C // G in (8, 16))
    as_nhwc = not channels_last and packed and P * P <= 64
    assert plan[0] == ("grouped_taps" if taps else "nchw_as_nhwc" if as_nhwc else "grouped")
    wgrad_taps = (taps and (not packed or stride in (dil, 2 * dil))) or (channels_last and isa == "avx2" and C // G == 4)
    wgrad_as_nhwc = as_nhwc and stride in (dil, 2 * dil)
    assert plan[2] == ("grouped_taps" if wgrad_taps else "nchw_as_nhwc" if wgrad_as_nhwc else "grouped")
    assert_same_bits_across_threads(x, w, b, gy, args)


# grouped_taps (AVX-512: groups of 16k output channels; AVX2: 8k): 16, 32 and 48 channels per group
# (AVX-512: one vector, two, two and one; AVX2: tiles of 16 channels as two halves of 6 pixels),
# partial tiles of 12 pixels, stride 2 (AVX2: the grad input by phases too), dilation; NCHW onto 4x4
# maps (AVX2: 8x8 too, 24 channels, a 16-channel tile and an 8); groups of 8 onto 2x2 maps (AVX-512:
# half vectors).
@pytest.mark.parametrize("path", ["avx2", "avx512"])
@pytest.mark.parametrize("N,C,K,H,G,stride,dil,channels_last,paths", [
    (3, 64, 64, 5, 4, 1, 1, True, "avx2 avx512"), (2, 32, 64, 7, 2, 2, 1, True, "avx2 avx512"),
    (1, 64, 96, 6, 2, 1, 2, True, "avx2 avx512"), (5, 128, 128, 4, 8, 1, 1, False, "avx2 avx512"),
    (7, 40, 40, 2, 5, 1, 1, True, "avx2 avx512"), (2, 48, 72, 8, 3, 1, 1, False, "avx2")])
def test_grouped_taps_deterministic_across_runs_and_threads(path, N, C, K, H, G, stride, dil, channels_last, paths):
    if path not in paths.split():
        pytest.skip(f"the {path} path runs this shape on another strategy")
    if path not in CPU_ISA_PATHS:
        pytest.skip(f"this CPU cannot run the {path} path")
    with cuconv.config.flags(cpu_isa=path):
        x = _fmt(torch.randn(N, C, H, H), channels_last)
        w, b = torch.randn(K, C // G, 3, 3), torch.randn(K)
        P = (H - 1) // stride + 1
        gy = _fmt(torch.randn(N, K, P, P), channels_last)
        args = ([stride, stride], [dil] * 4, [dil, dil], G)
        plan = ops._cpu_conv2d_plan(x, w, *args)
        assert plan[0] == plan[2] == ("grouped_taps" if channels_last else "nchw_as_nhwc")
        if stride == 1 or path == "avx2":  # AVX2 runs a strided grad input one phase at a time
            assert plan[1] == ("grouped_taps" if channels_last else "nchw_as_nhwc")
        assert_same_bits_across_threads(x, w, b, gy, args)
        # against float64 torch, every pass
        x64, w64, b64 = (t.double().requires_grad_() for t in (x, w, b))
        y64 = torch.nn.functional.conv2d(x64, w64, b64, stride, dil, dil, G)
        g64 = torch.autograd.grad(y64, (x64, w64, b64), gy.double())
        y = ops.conv2d(x, w, b, *args)
        grads = ops.conv2d_backward(gy, x, w, *args, [True, True, True])
        for got, want in zip((y, *grads), (y64, *g64)):
            torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4 * (1 + want.abs().max().item()))


def test_grouped_gradcheck(isa):
    # float64, 4 groups of 2 -> 3 channels, dilation, asymmetric padding: the three grouped passes,
    # then stride 2 (the grad input through col2im), both layouts, a non-contiguous input.
    x = torch.randn(2, 8, 7, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(12, 2, 3, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(12, dtype=torch.float64, requires_grad=True)
    for args in (([1, 1], [1, 0, 2, 1], [2, 2], 4), ([2, 1], [1, 1, 1, 1], [1, 1], 4)):
        assert ops._cpu_conv2d_plan(x, w, *args)[0] == "grouped"
        assert torch.autograd.gradcheck(lambda *t: ops.conv2d(*t, *args), (x, w, b))
        xl = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
        assert torch.autograd.gradcheck(lambda *t: ops.conv2d(*t, *args), (xl, w, b))
        xt = torch.randn(2, 8, 6, 7, dtype=torch.float64).transpose(2, 3).requires_grad_()
        assert torch.autograd.gradcheck(lambda *t: ops.conv2d(*t, *args), (xt, w, b))


@pytest.mark.parametrize("channels_last", [False, True])
def test_conv2d_seed_cnn_layers_float32(isa, channels_last):
    """The seed CIFAR CNN's layers at a real batch size, float32 against float64 torch."""
    for (C, H, K) in [(3, 32, 32), (32, 15, 64)]:
        x = _fmt(torch.randn(8, C, H, H), channels_last)
        w, b = torch.randn(K, C, 3, 3) * 0.1, torch.randn(K)
        y = ops.conv2d(x, w, b, [1, 1], [0, 0, 0, 0], [1, 1], 1)
        gy = _fmt(torch.randn(y.shape), channels_last)
        gx, gw, gb = ops.conv2d_backward(gy, x, w, [1, 1], [0, 0, 0, 0], [1, 1], 1, [True, True, True])
        ry, rgx, rgw, rgb = _conv_ref(x, w, b, (1, 1), [0, 0, 0, 0], (1, 1), 1, gy)
        for out, ref, what in [(y, ry, "forward"), (gx, rgx, "grad input"), (gw, rgw, "grad weight"),
                               (gb, rgb, "grad bias")]:
            _close(out, ref, torch.float32, what)



@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels_last", [False, True])
def test_conv2d_bias_relu_in_gemm_store(isa, channels_last, dtype):
    """The ReLU lives in the micro-kernel's store of the last K block: with C*R*S = 360 the sums span
    two K blocks (256 + 104), so clamping an intermediate block would show; partial tiles both ways;
    NaN inputs must come out NaN (as torch.relu), not 0."""
    x = torch.randn(3, 40, 9, 7, dtype=dtype)
    x[1, 5, 4, 3] = float("nan")
    x = _fmt(x, channels_last)
    w, b = torch.randn(19, 40, 3, 3, dtype=dtype), torch.randn(19, dtype=dtype)
    y = ops.conv2d_bias_relu(x, w, b, [1, 1], [1, 1], [1, 1], 1)
    ref = torch.relu(F.conv2d(x.double(), w.double(), b.double(), 1, 1))
    nan = torch.isnan(ref)
    assert nan.any() and not nan.all()
    assert torch.equal(torch.isnan(y), nan)
    _close(y.double().masked_fill(nan, 0), ref.masked_fill(nan, 0), dtype, "fused forward")
    assert (y.masked_fill(nan, 0) >= 0).all() and (y == 0).any() and (y > 0).any()
    assert y.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)

@pytest.mark.parametrize("channels_last", [False, True])
def test_max_pool2d_nan_and_tie_rules(isa, channels_last):
    x = torch.tensor([[1.0, 3.0, 3.0, float("nan")],
                      [float("nan"), 2.0, 3.0, float("nan")],
                      [float("-inf"), float("-inf"), 0.0, 0.0],
                      [float("-inf"), float("-inf"), 0.0, 0.0]]).reshape(1, 1, 4, 4).repeat(1, 3, 1, 1)
    y, idx = ops.max_pool2d(_fmt(x, channels_last), [2, 2], [2, 2], [0, 0], [1, 1], False)
    assert idx[0, 0].tolist() == [[4, 7], [8, 10]]  # NaN wins (the last NaN); -inf window; ties: first
    assert torch.isnan(y[0, 0, 0]).all() and y[0, 0, 1].tolist() == [float("-inf"), 0.0]


@pytest.mark.parametrize("channels_last", [False, True])
def test_max_pool2d_empty_window(isa, channels_last):
    """kernel 2, dilation 2, padding 1 on a 1-wide input: every window misses the input."""
    x = _fmt(torch.randn(2, 3, 1, 1), channels_last)
    y, idx = ops.max_pool2d(x, [2, 2], [1, 1], [1, 1], [2, 2], False)
    assert y.shape == (2, 3, 1, 1)
    assert (y == float("-inf")).all() and (idx == -1).all()
    gx = ops.max_pool2d_backward(torch.ones_like(y), x, idx, [2, 2], [1, 1], [1, 1], [2, 2], False)
    assert (gx == 0).all()


@pytest.mark.parametrize("channels_last", [False, True])
def test_max_pool2d_deterministic_across_threads(isa, channels_last):
    x = _fmt(torch.randn(5, 7, 17, 15), channels_last)
    threads = torch.get_num_threads()
    outs = []
    try:
        for t in (1, 2, 2):
            torch.set_num_threads(t)
            y, idx = ops.max_pool2d(x, [3, 3], [1, 1], [1, 1], [1, 1], False)  # overlapping windows
            gy = torch.ones_like(y)
            outs.append((y, idx, ops.max_pool2d_backward(gy, x, idx, [3, 3], [1, 1], [1, 1], [1, 1], False)))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(outs[0], outs[1]):
        assert torch.equal(a, b)
    for a, b in zip(outs[1], outs[2]):
        assert torch.equal(a, b)
