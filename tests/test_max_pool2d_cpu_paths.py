"""The CPU max_pool2d's mechanisms beyond the shared cases (tests/cases.py, run on every ISA path
by test_max_pool2d_cases.py): the 2x2 stride-2 kernels on NaN, tie and all -inf windows, other
geometries on the general loops, strided and empty inputs, user indices outside their window (the
whole-window backward falls back to the scatter), and determinism across thread counts. Results
must equal torch's exactly (max-pool moves values; -0.0 signs included)."""
import pytest
import torch
import torch.nn.functional as F

import cuconv  # noqa: F401  (loads the operators)
from cases import special_values

ops = torch.ops.cuconv


def _fmt(t, channels_last):
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t.contiguous()


def _grads(shape, dtype, channels_last):
    gy = torch.randn(shape, dtype=dtype)
    gy.view(-1)[::5] = -0.0  # torch's zero-fill-and-add gives +0.0 for these
    return _fmt(gy, channels_last)


def _check(x, k, s, pad, dil, ceil, channels_last):
    y, idx = ops.max_pool2d(x, k, s, pad, dil, ceil)
    ry, ridx = F.max_pool2d_with_indices(x.double(), k, s, pad, dil, ceil)
    assert torch.equal(idx, ridx)
    assert torch.equal(y.double().nan_to_num(7.5), ry.nan_to_num(7.5))
    gy = _grads(y.shape, x.dtype, channels_last)
    gx = ops.max_pool2d_backward(gy, x, idx, k, s, pad, dil, ceil)
    rgx = torch.ops.aten.max_pool2d_with_indices_backward(gy.double(), x.double(), k, s, pad, dil, ceil, ridx)
    assert gx.dtype == x.dtype and gx.shape == x.shape
    assert torch.equal(gx.double(), rgx)
    assert torch.equal(gx.signbit(), rgx.signbit())
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert gx.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("channels", [8, 16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_2x2_stride2_nan_tie_and_inf_windows(isa, channels_last, channels):
    """Rows of 8 windows (NCHW fast path), 8 or 16 channels (NHWC fast path; 16 take the AVX-512
    one on the avx512 path): a NaN window (the last NaN wins), a tie (the first maximum), an all
    -inf window (its first element) and a -0.0 grad."""
    win = torch.tensor([[[1.0, float("nan")], [float("nan"), 2.0]],
                        [[3.0, 3.0], [3.0, 1.0]],
                        [[float("-inf")] * 2] * 2,
                        [[0.0, -1.0], [5.0, 5.0]]])  # 4 windows
    x = win.repeat(2, 1, 1).permute(1, 0, 2).reshape(2, 16)  # 8 windows side by side
    x = x.reshape(1, 1, 2, 16).repeat(2, channels, 1, 1)
    y, idx = ops.max_pool2d(_fmt(x, channels_last), [2, 2], [2, 2], [0, 0], [1, 1], False)
    assert idx[0, 0, 0].tolist() == [16, 2, 4, 22, 24, 10, 12, 30]
    _check(_fmt(x, channels_last), [2, 2], [2, 2], [0, 0], [1, 1], False, channels_last)


@pytest.mark.parametrize("channels_last", [False, True])
def test_other_geometries_take_the_general_path(isa, channels_last):
    """Overlapping windows (sums: in float64, so that torch's sums in the same order match exactly),
    padding, dilation, stride > kernel: never the 2x2 path."""
    x = _fmt(special_values(torch.randn(2, 8, 17, 19, dtype=torch.float64)), channels_last)
    for k, s, pad, dil, ceil in [([3, 3], [2, 2], [1, 1], [1, 1], False), ([2, 2], [2, 2], [1, 1], [1, 1], True),
                                 ([2, 2], [2, 2], [0, 0], [2, 2], False), ([2, 2], [3, 3], [0, 0], [1, 1], True),
                                 ([2, 2], [1, 1], [0, 0], [1, 1], False)]:
        _check(x, k, s, pad, dil, ceil, channels_last)
        assert ops._cpu_max_pool2d_plan(x, k, s, pad, dil, ceil)[1] == "scatter"


@pytest.mark.parametrize("channels_last", [False, True])
def test_non_contiguous_and_empty_batch(isa, channels_last):
    base = torch.randn(2, 16, 34, 40)
    x = _fmt(base, channels_last)[:, :, 1:31, ::2]  # 30 x 20, strided: the router copies it
    assert not x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)
    y, idx = ops.max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], False)
    gy = torch.randn(y.shape[0], y.shape[1], y.shape[2], 2 * y.shape[3])[..., ::2]
    gx = ops.max_pool2d_backward(gy, x, idx, [2, 2], [2, 2], [0, 0], [1, 1], False)
    rgx = torch.ops.aten.max_pool2d_with_indices_backward(gy, x, [2, 2], [2, 2], [0, 0], [1, 1], False, idx)
    assert torch.equal(gx, rgx)
    empty = _fmt(torch.randn(0, 16, 30, 30), channels_last)
    y, idx = ops.max_pool2d(empty, [2, 2], [2, 2], [0, 0], [1, 1], False)
    gx = ops.max_pool2d_backward(y, empty, idx, [2, 2], [2, 2], [0, 0], [1, 1], False)
    assert gx.shape == empty.shape


def _scatter_reference(gy, idx, shape):
    """grad_input[n, c, i] += gy[n, c, o] for the indices inside the plane, in output order."""
    N, C, H, W = shape
    ref = torch.zeros(N * C, H * W, dtype=torch.float64)
    ii = idx.reshape(N * C, -1)
    gg = gy.double().reshape(N * C, -1)
    inside = (ii >= 0) & (ii < H * W)
    for nc in range(N * C):
        ref[nc].index_add_(0, ii[nc][inside[nc]], gg[nc][inside[nc]])
    return ref.reshape(N, C, H, W)


@pytest.mark.parametrize("channels_last", [False, True])
def test_indices_outside_their_window(isa, channels_last):
    """A user's indices that point outside their window (inside the plane: scattered there as
    torch does; outside it or -1: skipped) make the fast paths fall back to the general scatter.
    16 x 18 planes, 8 channels: both fast paths are tried first."""
    x = _fmt(torch.randn(2, 8, 16, 18), channels_last)
    expected = "scatter" if isa == "portable" else "windows_2x2_avx2"
    assert ops._cpu_max_pool2d_plan(x, [2, 2], [2, 2], [0, 0], [1, 1], False)[1] == expected
    y, idx = ops.max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], False)
    gy = _fmt(torch.randn(y.shape), channels_last)
    for edit in ["same plane", "minus one", "past the plane", "huge"]:
        bad = idx.clone()
        if edit == "same plane":
            bad[1, 3, 4, 5] = 0
            bad[0, 7, 7, 8] = 3  # several outputs into one element: summed
        elif edit == "minus one":
            bad[0, 5, 0, 0] = -1
        elif edit == "past the plane":
            bad[1, 1, 1, 1] = 16 * 18
        else:
            bad[1, 6, 2, 3] = 2**32 + bad[1, 6, 2, 3]  # same low 32 bits as the right index
        gx = ops.max_pool2d_backward(gy, x, bad, [2, 2], [2, 2], [0, 0], [1, 1], False)
        assert torch.equal(gx.double(), _scatter_reference(gy.contiguous(), bad.contiguous(), x.shape)), edit
        if edit == "same plane":
            rgx = torch.ops.aten.max_pool2d_with_indices_backward(gy, x, [2, 2], [2, 2], [0, 0], [1, 1], False, bad)
            assert torch.equal(gx, rgx)


@pytest.mark.parametrize("channels_last", [False, True])
def test_2x2_stride2_deterministic_across_threads(isa, channels_last):
    x = _fmt(torch.randn(5, 16, 31, 33), channels_last)
    y, idx = ops.max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], False)
    gy = _fmt(torch.randn(y.shape), channels_last)
    threads = torch.get_num_threads()
    outs = []
    try:
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            outs.append(ops.max_pool2d_backward(gy, x, idx, [2, 2], [2, 2], [0, 0], [1, 1], False))
    finally:
        torch.set_num_threads(threads)
    for a in outs[1:]:
        assert torch.equal(a, outs[0])


def test_nchw_planes_pooled_as_pixels(isa):
    """NCHW windows other than 2x2 stride 2 pool 8 planes at a time as the channels of a pixel walk:
    21 planes (blocks of 8, 8 and 5), ties, NaNs and -inf, windows that miss the input entirely
    (-inf, index -1), output counts that are not a multiple of 8; values and indices equal torch's
    (the backward, unchanged, is the scatter the other tests check)."""
    x = special_values(torch.randn(3, 7, 5, 3))
    cases = [([3, 3], [1, 1], [1, 1], [1, 1], True),  # 5 x 3 outputs: 15, the last group of 7
             ([3, 2], [2, 1], [1, 0], [1, 1], True),
             ([1, 1], [3, 2], [0, 0], [1, 1], False)]
    for k, s, pad, dil, ceil in cases:
        expected = "planes" if isa == "portable" else "planes_as_pixels_avx2"
        assert ops._cpu_max_pool2d_plan(x, k, s, pad, dil, ceil)[0] == expected
        y, idx = ops.max_pool2d(x, k, s, pad, dil, ceil)
        ry, ridx = F.max_pool2d_with_indices(x, k, s, pad, dil, ceil)
        assert torch.equal(idx, ridx)
        assert torch.equal(y.nan_to_num(7.5), ry.nan_to_num(7.5)) and torch.equal(y.signbit(), ry.signbit())
    # taps at columns -1 and 3 of 3: every window misses the input, and gives -inf and -1 (the
    # general loops' rule; torch reports a position outside the window there)
    assert ops._cpu_max_pool2d_plan(x, [3, 2], [2, 1], [1, 1], [1, 4], False)[0] == expected
    y, idx = ops.max_pool2d(x, [3, 2], [2, 1], [1, 1], [1, 4], False)
    assert idx.numel() > 0 and (idx == -1).all() and (y == float("-inf")).all()


def test_nchw_planes_too_large_to_stage_keep_the_row_kernel(isa):
    """A plane of more than 2^18 elements (an 8 MiB stage of 8 planes) takes the row kernel, with
    the same rules."""
    x = special_values(torch.randn(1, 2, 520, 515))
    expected = "planes" if isa == "portable" else "planes_avx2"
    assert ops._cpu_max_pool2d_plan(x, [3, 3], [2, 2], [1, 1], [1, 1], True)[0] == expected
    y, idx = ops.max_pool2d(x, [3, 3], [2, 2], [1, 1], [1, 1], True)
    ry, ridx = F.max_pool2d_with_indices(x, [3, 3], [2, 2], [1, 1], [1, 1], True)
    assert torch.equal(idx, ridx) and torch.equal(y.nan_to_num(7.5), ry.nan_to_num(7.5))
