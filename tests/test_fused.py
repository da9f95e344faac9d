"""The fused conv+bias+ReLU operator, on the CPU fallback and under the simulator, and its use by convert()."""
import copy

import pytest
import torch
import torch.nn.functional as F

import cuconv


@pytest.fixture
def runner(op_runner):
    """The best CPU path, the simulator, and CUDA when present (tests/conftest.py)."""
    return op_runner


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("kw", [dict(padding=1), dict(stride=2, groups=2, dilation=(1, 2)), dict(groups=6, padding=1)])
def test_values_and_gradients(runner, fmt, kw):
    x = torch.randn(2, 6, 9, 7, dtype=torch.float64).contiguous(memory_format=fmt).requires_grad_()
    w = torch.randn(6, 6 // kw.get("groups", 1), 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    out = cuconv.conv2d_relu(x, w, b, **kw)
    ref = F.relu(F.conv2d(x, w, b, **kw))
    torch.testing.assert_close(out, ref)
    assert out.stride() == ref.stride()
    assert (out == 0).any() and (out > 0).any()  # the ReLU has work to do
    g = torch.randn_like(ref)
    for a, r in zip(torch.autograd.grad(out, (x, w, b), g), torch.autograd.grad(ref, (x, w, b), g)):
        torch.testing.assert_close(a, r)


def test_gradcheck_and_nan(runner):
    x = torch.randn(1, 2, 6, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *t: cuconv.conv2d_relu(*t, padding=1), (x, w, b))
    xn = x.detach().clone()
    xn[0, 0, 2, 2] = float("nan")
    assert torch.equal(torch.isnan(cuconv.conv2d_relu(xn, w, b)), torch.isnan(F.relu(F.conv2d(xn, w, b))))


def test_convert_fuses_conv_relu_pairs():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(inplace=True), torch.nn.MaxPool2d(2),
                                torch.nn.Conv2d(8, 4, 3), torch.nn.Tanh())
    ref = copy.deepcopy(model).double()
    keys = list(model.state_dict())
    cuconv.convert(model.double())
    assert model[0].fused_relu and type(model[1]) is torch.nn.Identity
    assert not model[3].fused_relu and type(model[4]) is torch.nn.Tanh
    assert list(model.state_dict()) == keys
    assert "fused_relu=True" in repr(model[0])
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    torch.testing.assert_close(model(x), ref(x))
    unfused = cuconv.convert(copy.deepcopy(ref), fuse_relu=False)
    assert type(unfused[1]) is torch.nn.ReLU and not unfused[0].fused_relu


def test_compile_and_opcheck():
    torch._dynamo.reset()
    conv = cuconv.nn.Conv2d(3, 4, 3, padding=1)
    conv.fused_relu = True
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(torch.compile(conv, fullgraph=True, backend="aot_eager")(x), conv(x))
    args = (torch.randn(2, 3, 6, 5, dtype=torch.float64, requires_grad=True),
            torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True),
            torch.randn(4, dtype=torch.float64, requires_grad=True), [1, 1], [1, 1], [1, 1], 1)
    torch.library.opcheck(torch.ops.cuconv.conv2d_bias_relu.default, args)


def test_gradcheck_and_gradgradcheck(runner):
    # ReLU's backward is threshold_backward on the saved output: first and second derivatives
    # (away from the kink: inputs keep |pre-activation| well above gradcheck's eps).
    torch.manual_seed(5)
    x = torch.randn(1, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    pre = F.conv2d(x, w, b, padding=1)
    assert pre.abs().min() > 1e-4
    fn = lambda x, w, b: cuconv.conv2d_relu(x, w, b, padding=1)
    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))
