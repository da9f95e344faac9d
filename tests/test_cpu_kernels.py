"""The CPU runner's fast kernels (csrc/cpu): every ISA path this machine can run, both layouts,
odd sizes and partial tiles, stride/padding (asymmetric too)/dilation/groups, float32 and float64,
against torch in float64; and determinism across runs and thread counts."""

import pytest
import torch
import torch.nn.functional as F

import cuconv  # noqa: F401  (loads the operators)

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


# (N, C, H, W, K, R, S, stride, padding [top, left, bottom, right], dilation, groups)
CONV_CASES = [
    (2, 3, 11, 13, 7, 3, 3, (1, 1), [0, 0, 0, 0], (1, 1), 1),     # odd sizes, partial tiles
    (1, 5, 9, 10, 17, 3, 2, (2, 1), [1, 0, 2, 1], (1, 2), 1),     # asymmetric padding, stride, dilation
    (3, 8, 7, 7, 20, 1, 1, (1, 1), [0, 0, 0, 0], (1, 1), 1),      # 1x1 read directly
    (2, 8, 9, 9, 12, 1, 1, (2, 2), [0, 0, 0, 0], (1, 1), 1),      # 1x1 stride 2 (shortcut)
    (2, 6, 10, 9, 9, 3, 3, (2, 2), [1, 1, 1, 1], (1, 1), 3),      # groups, stride 2
    (2, 6, 8, 8, 12, 3, 3, (1, 1), [2, 2, 2, 2], (2, 2), 6),      # depthwise multiplier 2, dilation
    (1, 4, 6, 6, 4, 5, 5, (3, 2), [2, 1, 0, 3], (1, 1), 4),       # depthwise, kernel > stride
    (2, 3, 5, 5, 4, 3, 3, (1, 1), [4, 4, 4, 4], (1, 1), 1),       # padding larger than the kernel
    (4, 19, 12, 11, 33, 3, 3, (1, 1), [1, 1, 1, 1], (1, 1), 1),   # more than one tile both ways
    # Strided, one group, no dilation: NHWC grad input by phases (backward_input_nhwc_phases)
    (2, 19, 13, 11, 21, 3, 3, (2, 2), [1, 0, 2, 1], (1, 1), 1),   # phases of 2x2/2x1/1x2/1x1 taps, odd sizes
    (2, 6, 13, 10, 5, 5, 4, (3, 2), [2, 1, 0, 3], (1, 1), 1),     # 2 or 1 taps per phase row, 2 per column
    (2, 4, 10, 8, 6, 2, 2, (3, 3), [1, 1, 1, 1], (1, 1), 1),      # kernel < stride: untapped phases
    (20, 8, 8, 8, 12, 3, 3, (2, 2), [1, 1, 1, 1], (1, 1), 1),     # 4x4 maps, 16 images per GEMM: uneven C rows
    (2, 3, 1, 5, 5, 1, 3, (2, 2), [0, 1, 0, 1], (1, 1), 1),       # a one-row input: phases with no pixels
    # NCHW forward on a transposed NHWC copy (nchw_forward_via_nhwc): at least 64 outputs, S*C >= 32
    (3, 13, 17, 19, 21, 3, 3, (2, 2), [1, 0, 2, 1], (1, 1), 1),   # padded: rows below the image read as zeros
    (2, 11, 18, 20, 9, 3, 3, (2, 2), [0, 0, 0, 0], (1, 1), 1),    # windows stop short of the last row/column
    (2, 16, 15, 10, 18, 3, 2, (2, 1), [0, 1, 1, 0], (1, 1), 1),   # stride (2, 1), 2-wide kernel
    (1, 7, 12, 13, 10, 5, 5, (1, 1), [2, 2, 2, 2], (1, 1), 1),    # 5x5 stride 1, one image (split GEMMs)
]


def _conv_ref(x, w, b, stride, pad, dil, groups, gy):
    x = x.detach().double().requires_grad_()
    w = w.detach().double().requires_grad_()
    b = b.detach().double().requires_grad_()
    xp = F.pad(x, (pad[1], pad[3], pad[0], pad[2]))
    y = F.conv2d(xp, w, b, stride, 0, dil, groups)
    y.backward(gy.double())
    return y.detach(), x.grad, w.grad, b.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("case", CONV_CASES, ids=[str(i) for i in range(len(CONV_CASES))])
def test_conv2d_matches_torch_float64(isa, case, channels_last, dtype):
    _check_all_passes(case, channels_last, dtype)


def _check_all_passes(case, channels_last, dtype):
    """Forward and the three grads of one CONV_CASES-style case against float64; returns the inputs
    and the reference forward."""
    N, C, H, W, K, R, S, stride, pad, dil, groups = case
    x = _fmt(torch.randn(N, C, H, W, dtype=dtype), channels_last)
    w = torch.randn(K, C // groups, R, S, dtype=dtype)
    b = torch.randn(K, dtype=dtype)
    y = ops.conv2d(x, w, b, stride, pad, dil, groups)
    gy = _fmt(torch.randn(y.shape, dtype=dtype), channels_last)
    gx, gw, gb = ops.conv2d_backward(gy, x, w, stride, pad, dil, groups, [True, True, True])
    ry, rgx, rgw, rgb = _conv_ref(x, w, b, stride, pad, dil, groups, gy)
    _close(y, ry, dtype, "forward")
    _close(gx, rgx, dtype, "grad input")
    _close(gw, rgw, dtype, "grad weight")
    _close(gb, rgb, dtype, "grad bias")
    assert y.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return x, w, b, ry


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

# GEMM blocking edges, reached through convolutions (N, C, H, W, K, kernel): the CPU GEMM walks K
# in blocks of 256 (unrolled by 4 in the micro-kernel), rows in blocks of 96 (6-row tiles) and
# columns in blocks of 256 (16-column tiles), packing B only for GEMMs of more than 6 rows.
GEMM_EDGE_CASES = [
    (1, 301, 17, 19, 101, 1),  # 1x1: K = 301 (256 + 45, 45 = 4*11 + 1); 101 rows (96 + 5); 323 columns
                               # (256 + 67, last tile 3 wide); batch 1, so NCHW splits columns over threads
    (3, 5, 7, 9, 4, 1),        # 4 output channels: NCHW GEMMs of 4 rows (B unpacked), K = 5
    (1, 33, 5, 5, 6, 1),       # exactly one 6-row tile (B unpacked), K = 33
    (2, 7, 13, 11, 23, 3),     # 3x3: K = 63 (4*15 + 3), 23 = 3*6 + 5 rows, 143-column maps
    (2, 40, 6, 6, 17, 3),      # K = 360 (256 + 104); NHWC joins both images: 72 rows, 17 columns (16 + 1)
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("case", GEMM_EDGE_CASES, ids=[str(i) for i in range(len(GEMM_EDGE_CASES))])
def test_gemm_blocking_edges_against_float64(isa, case, channels_last, dtype):
    """Every GEMM init mode: zero (grad input), bias per row (NCHW forward) or per column (NHWC
    forward), accumulate (grad weight over several images), each with partial tiles and K blocks;
    the ReLU store; all against torch in float64."""
    N, C, H, W, K, k = case
    pad = k // 2
    x = _fmt(torch.randn(N, C, H, W, dtype=dtype), channels_last)
    w = torch.randn(K, C, k, k, dtype=dtype)
    b = torch.randn(K, dtype=dtype)
    y = ops.conv2d(x, w, b, [1, 1], [pad] * 4, [1, 1], 1)
    gy = _fmt(torch.randn(y.shape, dtype=dtype), channels_last)
    gx, gw, gb = ops.conv2d_backward(gy, x, w, [1, 1], [pad] * 4, [1, 1], 1, [True, True, True])
    ry, rgx, rgw, rgb = _conv_ref(x, w, b, (1, 1), [pad] * 4, (1, 1), 1, gy)
    _close(y, ry, dtype, "forward")
    _close(gx, rgx, dtype, "grad input")
    _close(gw, rgw, dtype, "grad weight")
    _close(gb, rgb, dtype, "grad bias")
    yr = ops.conv2d_bias_relu(x, w, b, [1, 1], [pad, pad], [1, 1], 1)
    assert (yr == 0).any() and (yr > 0).any()
    _close(yr, torch.relu(ry), dtype, "forward + ReLU")


# NHWC forward without im2col (csrc/cpu/conv2d_cpu.cpp): rows read in place from 32 values per kernel
# row, the row-interleaved buffer below that.
# (N, C, H, W, K, R, S, stride, padding [top, left, bottom, right], dilation, groups)
NO_IM2COL_CASES = [
    (3, 16, 11, 11, 20, 3, 3, (2, 2), [1, 1, 1, 1], (1, 1), 1),  # stride 2, padded copy
    (2, 40, 9, 8, 33, 1, 1, (2, 2), [0, 0, 0, 0], (1, 1), 1),    # 1x1 stride 2 (shortcut): rows read straight
    (2, 12, 10, 9, 7, 3, 3, (1, 1), [0, 2, 3, 1], (2, 1), 1),    # asymmetric padding past bottom/right, dilation_h
    (2, 64, 5, 6, 10, 1, 1, (1, 2), [0, 0, 0, 0], (1, 1), 2),    # grouped 1x1: 32 channels per group
    (1, 11, 7, 9, 5, 5, 3, (1, 1), [2, 1, 2, 1], (1, 1), 1),     # 5x3 kernel
    (1, 100, 6, 7, 9, 3, 3, (1, 1), [1, 1, 1, 1], (1, 1), 1),    # 300 values per kernel row: two K blocks
    (13, 16, 3, 3, 18, 3, 3, (1, 1), [0, 0, 0, 0], (1, 1), 1),   # 1x1 outputs: many images per GEMM
    (2, 3, 13, 12, 8, 3, 3, (2, 3), [1, 2, 0, 1], (2, 1), 1),    # interleaved: 3 channels, strides, dilation_h
    (2, 6, 9, 9, 4, 3, 3, (1, 1), [1, 1, 1, 1], (1, 1), 2),      # interleaved per group (3 channels each)
    (3, 3, 32, 32, 32, 3, 3, (1, 1), [0, 0, 0, 0], (1, 1), 1),   # interleaved: the seed CNN's first layer
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", NO_IM2COL_CASES, ids=[str(i) for i in range(len(NO_IM2COL_CASES))])
def test_conv2d_nhwc_without_im2col(isa, monkeypatch, case, dtype):
    """GEMM A rows as pointers, into the input (one GEMM per kernel row) or into the row-interleaved
    buffer (also grad weight's A columns): values, bias, and the ReLU applied only to the final sums,
    against float64."""
    monkeypatch.setenv("CUCONV_CPU_CONV_ALGO", "gemm")  # 3x3 stride-1 cases would go to Winograd
    x, w, b, ry = _check_all_passes(case, True, dtype)
    _, _, _, _, _, _, _, stride, pad, dil, groups = case
    yr = ops.conv2d_bias_relu(x, w, b, stride, pad, dil, groups)
    assert (yr == 0).any() and (yr > 0).any()
    _close(yr, torch.relu(ry), dtype, "forward + ReLU")


# (N, C, H, W, kernel, stride, padding, dilation, ceil_mode)
POOL_CASES = [
    (2, 3, 30, 30, (2, 2), (2, 2), (0, 0), (1, 1), False),   # the seed CNN's pool, even
    (2, 5, 13, 13, (2, 2), (2, 2), (0, 0), (1, 1), True),    # odd size, ceil mode
    (1, 4, 11, 17, (3, 3), (2, 2), (1, 1), (1, 1), False),   # overlapping, padded
    (2, 3, 9, 10, (3, 2), (1, 3), (1, 0), (2, 1), True),     # stride 3, dilation
    (1, 19, 8, 7, (2, 3), (1, 1), (0, 1), (1, 2), False),    # stride 1, many channels
    (2, 16, 30, 30, (2, 2), (2, 2), (0, 0), (1, 1), False),  # 2x2/2 fast paths: NCHW rows of 15, NHWC C % 8 == 0
    (1, 24, 13, 13, (2, 2), (2, 2), (0, 0), (1, 1), False),  # fast paths, odd input, rows of 6 (scalar NCHW)
    (1, 8, 12, 34, (2, 2), (2, 2), (0, 0), (1, 1), True),    # ceil mode on even sizes: windows still inside
    (1, 8, 9, 11, (2, 2), (2, 2), (0, 0), (1, 1), True),     # ceil mode, odd: the general path
]


def _pool_inputs(shape, dtype, channels_last, special):
    x = torch.randn(shape, dtype=dtype)
    if special:  # ties (rounded values), -inf and NaNs
        x = (x * 2).round()
        flat = x.view(-1)
        flat[torch.randperm(flat.numel())[: flat.numel() // 10]] = float("-inf")
        flat[torch.randperm(flat.numel())[: flat.numel() // 20]] = float("nan")
    return _fmt(x, channels_last)


@pytest.mark.parametrize("special", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("case", POOL_CASES, ids=[str(i) for i in range(len(POOL_CASES))])
def test_max_pool2d_matches_torch(isa, case, channels_last, dtype, special):
    N, C, H, W, k, s, pad, dil, ceil = case
    x = _pool_inputs((N, C, H, W), dtype, channels_last, special)
    y, idx = ops.max_pool2d(x, k, s, pad, dil, ceil)
    ry, ridx = F.max_pool2d_with_indices(x.double(), k, s, pad, dil, ceil)
    assert torch.equal(idx, ridx)
    assert torch.equal(y.double().nan_to_num(7.5), ry.nan_to_num(7.5))
    gy = _fmt(torch.randn(y.shape, dtype=dtype), channels_last)
    gx = ops.max_pool2d_backward(gy, x, idx, k, s, pad, dil, ceil)
    rgx = torch.ops.aten.max_pool2d_with_indices_backward(gy.double(), x.double(), k, s, pad, dil, ceil, ridx)
    _close(gx, rgx, dtype, "grad input")
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
