"""cuconv.max_pool2d against torch.nn.functional.max_pool2d: values and indices exactly, gradients,
the NaN / tie / padding / ceil_mode rules, layouts."""
import itertools

import pytest
import torch
import torch.nn.functional as F

import cuconv

D = torch.float64


def both(x, **kw):
    out, idx = cuconv.max_pool2d(x, return_indices=True, **kw)
    ref, ridx = F.max_pool2d(x, return_indices=True, **kw)
    return out, idx, ref, ridx


OPTIONS = list(itertools.product([2, 3, (3, 2)], [None, 1, 2, (2, 1)], [0, 1], [1, (1, 2), 2], [False, True]))


@pytest.mark.parametrize("channels_last", [False, True])
def test_every_option_exact(channels_last):
    x = torch.randn(2, 3, 9, 8, dtype=D)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    checked = 0
    for k, s, p, d, ceil in OPTIONS:
        try:
            ref, ridx = F.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
        except RuntimeError:
            with pytest.raises(RuntimeError):
                cuconv.max_pool2d(x, k, s, p, d, ceil)
            continue
        out, idx = cuconv.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
        assert torch.equal(out, ref), (k, s, p, d, ceil)
        assert torch.equal(idx, ridx), (k, s, p, d, ceil)
        assert out.stride() == ref.stride() and idx.stride() == ridx.stride()
        checked += 1
    assert checked > 100


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("kw", [dict(kernel_size=2), dict(kernel_size=3, stride=1, padding=1),   # overlapping
                                dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), dilation=(2, 1), ceil_mode=True)])
def test_gradients(channels_last, kw):
    x = torch.randn(2, 3, 7, 9, dtype=D)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    xr = x.detach().clone().requires_grad_()
    out, ref = cuconv.max_pool2d(x, **kw), F.max_pool2d(xr, **kw)
    g = torch.randn_like(ref)
    out.backward(g)
    ref.backward(g)
    assert torch.equal(x.grad, xr.grad)
    assert x.grad.stride() == xr.grad.stride()
    assert torch.autograd.gradcheck(lambda t: cuconv.max_pool2d(t, **kw), (x,))
    assert torch.autograd.gradgradcheck(lambda t: cuconv.max_pool2d(t, **kw), (x,))


def test_nan_wins_and_last_nan_index():
    x = torch.arange(9, dtype=D).view(1, 1, 3, 3)
    x[0, 0, 0, 1] = x[0, 0, 1, 0] = float("nan")
    x.requires_grad_()
    out, idx, ref, ridx = both(x, kernel_size=3)
    assert torch.isnan(out).all() and idx.item() == 3 == ridx.item()
    out.backward(torch.ones_like(out))
    assert x.grad.view(-1).tolist() == [0, 0, 0, 1, 0, 0, 0, 0, 0]


def test_ties_go_to_first():
    x = torch.full((1, 1, 2, 2), 2.0, dtype=D, requires_grad=True)
    out, idx, _, ridx = both(x, kernel_size=2)
    assert idx.item() == 0 == ridx.item()
    out.backward(torch.ones_like(out))
    assert x.grad.view(-1).tolist() == [1, 0, 0, 0]


def test_padding_is_minus_infinity():
    x = -torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=D)
    out, idx, ref, ridx = both(x, kernel_size=3, stride=1, padding=1)
    assert torch.equal(out, torch.full_like(out, -1.0)) and torch.equal(idx, ridx)


@pytest.mark.parametrize("h,k,s,p,d,ceil,expected", [
    (5, 2, 2, 0, 1, True, 3), (5, 2, 2, 1, 1, True, 3), (6, 1, 2, 0, 1, True, 3), (1, 2, 2, 1, 1, True, 1),
    (2, 2, 2, 1, 1, True, 2), (3, 2, 2, 1, 1, True, 2), (4, 3, 2, 1, 1, True, 3), (7, 3, 3, 1, 1, True, 3),
    (4, 3, 3, 0, 1, True, 2), (4, 3, 3, 0, 1, False, 1), (5, 3, 2, 0, 2, True, 1)])
def test_ceil_mode_shapes(h, k, s, p, d, ceil, expected):
    x = torch.randn(1, 1, h, h, dtype=D)
    out, idx, ref, ridx = both(x, kernel_size=k, stride=s, padding=p, dilation=d, ceil_mode=ceil)
    assert out.shape[-1] == expected == ref.shape[-1]
    assert torch.equal(out, ref) and torch.equal(idx, ridx)


def test_indices_feed_max_unpool2d():
    for fmt in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(2, 3, 8, 8, dtype=D).contiguous(memory_format=fmt)
        out, idx = cuconv.max_pool2d(x, 2, return_indices=True)
        torch.testing.assert_close(F.max_unpool2d(out, idx, 2), F.max_unpool2d(*F.max_pool2d(x, 2, return_indices=True), 2))


def test_empty_window_is_defined():
    # 1x1 input, kernel 2, padding 1, dilation 2: every tap of the window misses the input.
    x = torch.ones(1, 1, 1, 1, dtype=D, requires_grad=True)
    out, idx = cuconv.max_pool2d(x, 2, 1, 1, 2, return_indices=True)
    assert out.shape == F.max_pool2d(x, 2, 1, 1, 2).shape
    assert torch.isneginf(out).all() and (idx == -1).all()
    out.backward(torch.ones_like(out))
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_all_minus_infinity():
    x = torch.full((1, 1, 3, 3), float("-inf"), dtype=D, requires_grad=True)
    out, idx, ref, ridx = both(x, kernel_size=2, stride=1)
    assert torch.equal(out, ref) and torch.equal(idx, ridx)
    out.sum().backward()


def test_unbatched_and_batch_zero():
    x = torch.randn(3, 7, 6, dtype=D)
    out, idx, ref, ridx = both(x, kernel_size=3, stride=2, padding=1)
    assert out.shape == (3, 4, 3) and torch.equal(out, ref) and torch.equal(idx, ridx)
    assert torch.equal(idx, cuconv.max_pool2d(x[None], 3, 2, 1, return_indices=True)[1][0])
    for fmt in (torch.contiguous_format, torch.channels_last):
        z = torch.randn(0, 3, 6, 6, dtype=D).contiguous(memory_format=fmt).requires_grad_()
        out = cuconv.max_pool2d(z, 2)
        assert out.shape == (0, 3, 3, 3)
        out.sum().backward()
        assert z.grad.shape == z.shape


def test_non_contiguous():
    x = torch.randn(2, 6, 10, 12, dtype=D)[:, ::2, 1:, ::3]
    out, idx, ref, ridx = both(x, kernel_size=2, stride=1)
    assert torch.equal(out, ref) and torch.equal(idx, ridx)


def test_float32_exact():
    x = torch.randn(4, 5, 13, 11)
    out, idx, ref, ridx = both(x, kernel_size=3, stride=2, padding=1, ceil_mode=True)
    assert torch.equal(out, ref) and torch.equal(idx, ridx)


def test_indices_not_differentiable():
    x = torch.randn(1, 2, 4, 4, dtype=D, requires_grad=True)
    _, idx = cuconv.max_pool2d(x, 2, return_indices=True)
    assert not idx.requires_grad and idx.dtype == torch.int64


def test_deterministic_overlapping():
    x = torch.randn(3, 4, 16, 16, requires_grad=True)
    grads = [torch.autograd.grad(cuconv.max_pool2d(x, 3, 1, 1).sum(), x)[0] for _ in range(2)]
    assert torch.equal(*grads)


def test_torch_opinfo_samples():
    from torch.testing._internal.common_methods_invocations import op_db

    op = next(o for o in op_db if o.name == "nn.functional.max_pool2d")
    n = 0
    for dtype in (torch.float32, torch.float64):
        for s in op.sample_inputs("cpu", dtype, requires_grad=False):
            ref = op(s.input, *s.args, **s.kwargs)
            out = cuconv.max_pool2d(s.input, *s.args, **s.kwargs)
            for a, r in zip(out if isinstance(out, tuple) else (out,), ref if isinstance(ref, tuple) else (ref,)):
                assert torch.equal(a, r) and a.stride() == r.stride()
            n += 1
    assert n == 2880


def test_torch_opinfo_error_inputs():
    from torch.testing._internal.common_methods_invocations import op_db

    op = next(o for o in op_db if o.name == "nn.functional.max_pool2d")
    for e in op.error_inputs("cpu"):
        si = e.sample_input
        with pytest.raises(e.error_type, match=e.error_regex):
            cuconv.max_pool2d(si.input, *si.args, **si.kwargs)
