"""Property-based tests (hypothesis): random valid configurations match torch in float64; random
arguments, valid or not, are accepted or rejected exactly when torch accepts or rejects them, and
rejection is always a Python exception, never a crash or a hang.
Profiles: HYPOTHESIS_PROFILE=ci (default, CI-sized) or =dev (a longer local run); seeds are fixed."""
import os
import warnings

import pytest
import torch
import torch.nn.functional as F

import cuconv

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("dev", max_examples=2000, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

D = torch.float64
ACCEPTED_ERRORS = (RuntimeError, ValueError, TypeError, NotImplementedError)


@st.composite
def conv_configs(draw, valid=True):
    lo = 1 if valid else -1
    groups = draw(st.integers(1, 3) if valid else st.integers(-1, 4))
    g = max(groups, 1)
    cin = g * draw(st.integers(1 if valid else 0, 3))
    cout = g * draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = (draw(st.integers(lo, 3)), draw(st.integers(lo, 3)))
    dilation = (draw(st.integers(lo, 3)), draw(st.integers(lo, 3)))
    padding = draw(st.one_of(st.tuples(st.integers(-1 if not valid else 0, 3), st.integers(0, 3)),
                             st.sampled_from(["same", "valid"])))
    if padding == "same" and valid:
        stride = (1, 1)
    h = draw(st.integers(1, 9))
    w = draw(st.integers(1, 9))
    if valid:  # make the (dilated) kernel fit the padded input
        ph = 0 if isinstance(padding, str) else 2 * padding[0]
        pw = 0 if isinstance(padding, str) else 2 * padding[1]
        h = max(h, max(dilation[0], 1) * (kh - 1) + 1 - ph, 1)
        w = max(w, max(dilation[1], 1) * (kw - 1) + 1 - pw, 1)
    n = draw(st.integers(0, 2))
    wrong_channels = 0 if valid else draw(st.sampled_from([0, 0, 1]))
    return dict(x=(n, cin + wrong_channels, h, w), w=(cout, cin // g, kh, kw), bias=draw(st.booleans()),
                stride=stride, padding=padding, dilation=dilation, groups=groups,
                channels_last=draw(st.booleans()), unbatched=draw(st.booleans()) and n == 1,
                dtype=draw(st.sampled_from([torch.float32, torch.float64])))


def make_conv_args(c):
    x = torch.randn(*c["x"], dtype=c["dtype"])
    if c["channels_last"]:
        x = x.contiguous(memory_format=torch.channels_last)
    if c["unbatched"]:
        x = x[0]
    w = torch.randn(*c["w"], dtype=c["dtype"])
    b = torch.randn(c["w"][0], dtype=c["dtype"]) if c["bias"] else None
    return x, w, b, dict(stride=c["stride"], padding=c["padding"], dilation=c["dilation"], groups=c["groups"])


@pytest.fixture
def runner(op_runner):
    """The best CPU path, the simulator, and CUDA when present (tests/conftest.py); the runner
    holds for all of a test's generated examples, which is what function_scoped_fixture is
    suppressed for."""
    return op_runner


@given(c=conv_configs())
def test_conv2d_valid_configs_match_torch(runner, c):
    x, w, b, kw = make_conv_args(c)
    x64, w64, b64 = x.double().requires_grad_(), w.double().requires_grad_(), None if b is None else b.double().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = F.conv2d(x64, w64, b64, **kw)
        out = cuconv.conv2d(x, w, b, **kw)
    tol = dict(rtol=1e-5, atol=1e-5) if c["dtype"] == torch.float32 else {}
    torch.testing.assert_close(out.double(), ref, **tol)
    if c["dtype"] == torch.float64 and ref.numel():
        xs, ws, bs = x64.detach().clone().requires_grad_(), w64.detach().clone().requires_grad_(), \
            None if b64 is None else b64.detach().clone().requires_grad_()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            g = torch.randn_like(ref)
            ours = torch.autograd.grad(cuconv.conv2d(xs, ws, bs, **kw), [t for t in (xs, ws, bs) if t is not None], g)
            theirs = torch.autograd.grad(ref, [t for t in (x64, w64, b64) if t is not None], g)
        for a, r in zip(ours, theirs):
            torch.testing.assert_close(a, r)


@given(c=conv_configs(valid=False))
def test_conv2d_any_arguments_accepted_or_rejected_as_torch(runner, c):
    x, w, b, kw = make_conv_args(c)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ref = F.conv2d(x, w, b, **kw)
        except ACCEPTED_ERRORS:
            ref = None
        if ref is None:
            with pytest.raises(ACCEPTED_ERRORS):
                cuconv.conv2d(x, w, b, **kw)
            return
        out = cuconv.conv2d(x, w, b, **kw)
    if c["x"][1] == 0:  # torch's zero-channel quirk returns C_in channels; ours the bias (see test_conv2d)
        return
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@st.composite
def pool_configs(draw, valid=True):
    lo = 1 if valid else -1
    k = (draw(st.integers(lo if valid else 0, 4)), draw(st.integers(lo if valid else 0, 4)))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(lo, 3), st.integers(lo, 3))))
    dilation = (draw(st.integers(lo, 3)), draw(st.integers(lo, 3)))
    pmax = (max(k[0], 0) // 2, max(k[1], 0) // 2) if valid else (3, 3)
    padding = (draw(st.integers(-1 if not valid else 0, pmax[0])), draw(st.integers(0, pmax[1])))
    h, w = draw(st.integers(1, 10)), draw(st.integers(1, 10))
    if valid:
        h = max(h, dilation[0] * (k[0] - 1) + 1)
        w = max(w, dilation[1] * (k[1] - 1) + 1)
    n = draw(st.integers(0, 2))
    return dict(x=(n, draw(st.integers(1, 3)), h, w), kernel_size=k, stride=stride, padding=padding,
                dilation=dilation, ceil_mode=draw(st.booleans()), channels_last=draw(st.booleans()),
                unbatched=draw(st.booleans()) and n == 1, dtype=draw(st.sampled_from([torch.float32, torch.float64])),
                ties=draw(st.booleans()))


def make_pool_args(c):
    x = torch.randn(*c["x"], dtype=c["dtype"])
    if c["ties"]:
        x = x.round()  # many equal values: ties must go to the first maximum
    if c["channels_last"]:
        x = x.contiguous(memory_format=torch.channels_last)
    if c["unbatched"]:
        x = x[0]
    return x, dict(kernel_size=c["kernel_size"], stride=c["stride"], padding=c["padding"], dilation=c["dilation"],
                   ceil_mode=c["ceil_mode"], return_indices=True)


def has_empty_window(out):
    return bool(torch.isneginf(out).any())


@given(c=pool_configs())
def test_max_pool2d_valid_configs_match_torch(runner, c):
    x, kw = make_pool_args(c)
    ref, ridx = F.max_pool2d(x, **kw)
    out, idx = cuconv.max_pool2d(x, **kw)
    assert torch.equal(out, ref)
    if has_empty_window(ref):  # torch's index for an empty window points outside the plane (gh-114216)
        idx, ridx = idx[~torch.isneginf(ref)], ridx[~torch.isneginf(ref)]
    assert torch.equal(idx, ridx)
    if ref.numel() and not has_empty_window(ref):
        xa, xb = x.double().requires_grad_(), x.double().requires_grad_()
        g = torch.randn(ref.shape, dtype=D)
        (ga,) = torch.autograd.grad(cuconv.max_pool2d(xa, **kw)[0], xa, g)
        (gb,) = torch.autograd.grad(F.max_pool2d(xb, **kw)[0], xb, g)
        assert torch.equal(ga, gb)


@given(c=pool_configs(valid=False))
def test_max_pool2d_any_arguments_accepted_or_rejected_as_torch(runner, c):
    x, kw = make_pool_args(c)
    try:
        ref, _ = F.max_pool2d(x, **kw)
    except ACCEPTED_ERRORS:
        with pytest.raises(ACCEPTED_ERRORS):
            cuconv.max_pool2d(x, **kw)
        return
    out, _ = cuconv.max_pool2d(x, **kw)
    assert torch.equal(out, ref)
