"""cuconv.conv2d against torch.nn.functional.conv2d in float64: values, gradients, layouts, every option."""
import itertools

import pytest
import torch
import torch.nn.functional as F

import cuconv
from tolerance import assert_within_torch_error

D = torch.float64


def rand(*shape, dtype=D, **kw):
    return torch.randn(*shape, dtype=dtype, **kw)


def check(x, w, b, **kw):
    """Forward and all three gradients against torch, with the same upstream gradient."""
    xs = [t.detach().clone().requires_grad_(t.requires_grad) if t is not None else None for t in (x, w, b)]
    xr = [t.detach().clone().requires_grad_(t.requires_grad) if t is not None else None for t in (x, w, b)]
    out = cuconv.conv2d(*xs, **kw)
    ref = F.conv2d(*xr, **kw)
    torch.testing.assert_close(out, ref)
    assert out.is_contiguous(memory_format=torch.channels_last) == ref.is_contiguous(memory_format=torch.channels_last) \
        or ref.is_contiguous()
    if any(t is not None and t.requires_grad for t in xs):
        g = torch.randn_like(ref)
        out.backward(g)
        ref.backward(g)
        for a, r in zip(xs, xr):
            if a is not None and a.requires_grad:
                torch.testing.assert_close(a.grad, r.grad)
    return out, ref


CASES = [
    # (N, C, H, W), (K, C/g, R, S), kwargs
    ((2, 3, 7, 9), (4, 3, 3, 3), dict()),
    ((2, 3, 7, 9), (4, 3, 3, 2), dict(stride=2, padding=1)),
    ((1, 4, 11, 6), (6, 2, 3, 3), dict(stride=(3, 2), padding=(2, 1), dilation=(2, 1), groups=2)),
    ((3, 6, 8, 8), (6, 1, 3, 3), dict(padding=1, groups=6)),            # depthwise
    ((2, 4, 6, 6), (8, 1, 3, 3), dict(groups=4)),                        # depth multiplier 2
    ((2, 4, 5, 7), (5, 4, 1, 1), dict(stride=2)),                        # 1x1 strided
    ((1, 4, 5, 5), (1, 4, 2, 3), dict(stride=2, padding=1, dilation=(2, 3))),
    ((1, 2, 4, 3), (4, 2, 3, 4), dict(stride=2, padding=1)),             # kernel wider than the input
    ((2, 4, 9, 10), (3, 4, 2, 4), dict(padding="same", dilation=(1, 3))),  # asymmetric 'same'
    ((2, 4, 9, 10), (3, 4, 3, 3), dict(padding="same", dilation=2)),
    ((2, 4, 9, 10), (3, 4, 3, 3), dict(padding="valid")),
    ((1, 16, 5, 5), (33, 16, 3, 3), dict(padding=2)),                    # K not a tile multiple, pad > kernel/2
    ((1, 3, 1, 1), (2, 3, 1, 1), dict()),                                # 1x1 map
]


@pytest.mark.parametrize("xs,ws,kw", CASES)
@pytest.mark.parametrize("bias", [True, False])
def test_values_and_grads(xs, ws, kw, bias):
    x, w = rand(*xs, requires_grad=True), rand(*ws, requires_grad=True)
    b = rand(ws[0], requires_grad=True) if bias else None
    with pytest.warns(UserWarning) if kw.get("padding") == "same" and any(
            d * (k - 1) % 2 for k, d in zip(ws[2:], (kw.get("dilation", 1),) * 2 if isinstance(kw.get("dilation", 1), int)
                                            else kw["dilation"])) else _nullcontext():
        check(x, w, b, **kw)


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


@pytest.mark.parametrize("xs,ws,kw", [CASES[1], CASES[2], CASES[3], CASES[8]])
def test_gradcheck(xs, ws, kw):
    x, w, b = rand(*xs, requires_grad=True), rand(*ws, requires_grad=True), rand(ws[0], requires_grad=True)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.autograd.gradcheck(lambda *t: cuconv.conv2d(*t, **kw), (x, w, b))
        assert torch.autograd.gradgradcheck(lambda *t: cuconv.conv2d(*t, **kw), (x, w, b))


@pytest.mark.parametrize("which", ["input", "weight", "both"])
def test_channels_last(which):
    x, w, b = rand(2, 6, 9, 7), rand(4, 3, 3, 2), rand(4)
    if which in ("input", "both"):
        x = x.contiguous(memory_format=torch.channels_last)
    if which in ("weight", "both"):
        w = w.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    w.requires_grad_()
    out, ref = check(x, w, b, stride=(1, 2), padding=1, groups=2)
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    assert ref.is_contiguous(memory_format=torch.channels_last)


def test_non_contiguous():
    x = rand(2, 8, 10, 12)[:, ::2, 1:, ::2].requires_grad_()          # strided views
    w = rand(6, 8, 3, 3).transpose(2, 3)[:, ::2].requires_grad_()     # transposed, strided weight
    b = rand(12)[::2].requires_grad_()
    assert not x.is_contiguous() and not w.is_contiguous()
    check(x, w, b, padding=1)
    # expanded (stride-0) weight
    we = rand(1, 4, 3, 3).expand(5, 4, 3, 3).requires_grad_()
    check(rand(2, 4, 6, 6, requires_grad=True), we, None)


def test_non_contiguous_grad_output():
    x, w = rand(2, 3, 8, 8, requires_grad=True), rand(4, 3, 3, 3, requires_grad=True)
    g = rand(2, 4, 6, 12)[..., ::2]
    cuconv.conv2d(x, w).backward(g)
    xr, wr = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    F.conv2d(xr, wr).backward(g)
    torch.testing.assert_close(x.grad, xr.grad)
    torch.testing.assert_close(w.grad, wr.grad)


def test_unbatched():
    x, w, b = rand(3, 7, 6, requires_grad=True), rand(5, 3, 3, 3, requires_grad=True), rand(5, requires_grad=True)
    out, ref = check(x, w, b, padding=1)
    assert out.shape == (5, 7, 6)


@pytest.mark.parametrize("channels_last", [False, True])
def test_batch_zero(channels_last):
    x = rand(0, 4, 7, 7)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    w, b = rand(6, 4, 3, 3, requires_grad=True), rand(6, requires_grad=True)
    out = cuconv.conv2d(x, w, b)
    assert out.shape == (0, 6, 5, 5)
    out.sum().backward()
    assert x.grad.shape == x.shape
    assert torch.equal(w.grad, torch.zeros_like(w)) and torch.equal(b.grad, torch.zeros_like(b))


def test_zero_input_channels():
    # The sum over zero channels is empty: only the bias remains; the weight gets a zero gradient.
    x, w, b = rand(2, 0, 5, 5), rand(3, 0, 3, 3, requires_grad=True), rand(3, requires_grad=True)
    out = cuconv.conv2d(x, w, b)
    torch.testing.assert_close(out, b.view(1, 3, 1, 1).expand(2, 3, 3, 3))
    out.sum().backward()
    assert w.grad.shape == w.shape and torch.equal(b.grad, torch.full_like(b, 18.0))


def test_float32_within_rounding():
    x, w, b = rand(4, 16, 15, 15), rand(32, 16, 3, 3), rand(32)
    ref = F.conv2d(x, w, b, padding=1)
    out = cuconv.conv2d(x.float(), w.float(), b.float(), padding=1)
    torch_err = (F.conv2d(x.float(), w.float(), b.float(), padding=1).double() - ref).abs().max()
    our_err = (out.double() - ref).abs().max()
    assert our_err <= 2 * torch_err + 1e-6, (our_err, torch_err)


def test_nan_stays_local():
    x = rand(1, 1, 10, 15)
    x[0, 0, 4, 7] = float("nan")
    out = cuconv.conv2d(x, rand(1, 1, 3, 3), padding=1)
    assert torch.equal(torch.isnan(out), torch.isnan(F.conv2d(x, torch.ones(1, 1, 3, 3, dtype=D), padding=1)))
    assert int(torch.isnan(out).sum()) == 9


def test_deterministic():
    x, w, b = rand(4, 8, 12, 12, requires_grad=True), rand(16, 8, 3, 3, requires_grad=True), rand(16, requires_grad=True)
    runs = []
    for _ in range(2):
        out = cuconv.conv2d(x.float(), w.float(), b.float(), padding=1)
        grads = torch.autograd.grad(out, (x, w, b), torch.ones_like(out))
        runs.append((out, *grads))
    for a, r in zip(*runs):
        assert torch.equal(a, r)


def test_torch_opinfo_samples():
    from torch.testing._internal.common_methods_invocations import op_db

    op = next(o for o in op_db if o.name == "nn.functional.conv2d")
    n = 0
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for dtype in (torch.float32, torch.float64):
            for s in op.sample_inputs("cpu", dtype, requires_grad=False):
                for sample in (s, s.noncontiguous()):
                    ref = op(sample.input, *sample.args, **sample.kwargs)
                    out = cuconv.conv2d(sample.input, *sample.args, **sample.kwargs)
                    ref64 = op(*[t.double() if torch.is_tensor(t) else t for t in (sample.input, *sample.args)],
                               **sample.kwargs)
                    assert out.stride() == ref.stride()
                    assert_within_torch_error(out, ref, ref64)
                    n += 1
    assert n == 120


def test_torch_opinfo_error_inputs():
    from torch.testing._internal.common_methods_invocations import op_db

    op = next(o for o in op_db if o.name == "nn.functional.conv2d")
    for e in op.error_inputs("cpu"):
        si = e.sample_input
        if si.input.dtype not in (torch.float32, torch.float64) and "should be the same" not in e.error_regex:
            continue
        with pytest.raises(e.error_type, match=e.error_regex):
            cuconv.conv2d(si.input, *si.args, **si.kwargs)
