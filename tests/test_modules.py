"""Drop-in modules, convert(), torch.compile and torch.library.opcheck."""
import copy
import itertools

import pytest
import torch
import torch.nn.functional as F

import cuconv


def seed_cnn(nn=torch.nn):
    return torch.nn.Sequential(
        nn.Conv2d(3, 32, 3), torch.nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), torch.nn.ReLU(), nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(2304, 10))


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("padding", [1, (2, 1), "same", "valid"])
def test_conv2d_module_matches_torch(padding_mode, padding):
    kw = dict(kernel_size=(3, 4) if padding == "same" else 3, padding=padding, padding_mode=padding_mode,
              dilation=(1, 2) if padding == "same" else 1, groups=2, dtype=torch.float64)
    ref = torch.nn.Conv2d(4, 6, **kw)
    ours = cuconv.nn.Conv2d(4, 6, **kw)
    assert repr(ours) == repr(ref)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 4, 9, 8, dtype=torch.float64, requires_grad=True)
    xr = x.detach().clone().requires_grad_()
    out, expect = ours(x), ref(xr)
    torch.testing.assert_close(out, expect)
    out.sum().backward()
    expect.sum().backward()
    torch.testing.assert_close(x.grad, xr.grad)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad)
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad)


def test_conv2d_same_initialisation_as_torch():
    torch.manual_seed(3)
    ref = torch.nn.Conv2d(5, 7, 3, bias=True)
    torch.manual_seed(3)
    ours = cuconv.nn.Conv2d(5, 7, 3, bias=True)
    assert torch.equal(ref.weight, ours.weight) and torch.equal(ref.bias, ours.bias)


def test_conv2d_constructor_errors_as_torch():
    for kw, msg in [(dict(groups=0), "groups must be a positive integer"),
                    (dict(groups=4), "in_channels must be divisible by groups"),
                    (dict(padding_mode="xyz"), "padding_mode must be one of"),
                    (dict(padding="same", stride=2), "padding='same' is not supported for strided convolutions"),
                    (dict(padding="foo"), "Invalid padding string 'foo'")]:
        with pytest.raises(ValueError, match=msg):
            cuconv.nn.Conv2d(6, 6, 3, **kw)


def test_max_pool_module():
    ours, ref = cuconv.nn.MaxPool2d(3, 2, 1, return_indices=True, ceil_mode=True), \
        torch.nn.MaxPool2d(3, 2, 1, return_indices=True, ceil_mode=True)
    assert repr(ours) == repr(ref)
    x = torch.randn(2, 3, 9, 9)
    for a, b in zip(ours(x), ref(x)):
        assert torch.equal(a, b)


def test_state_dict_round_trip():
    ref = seed_cnn()
    ours = seed_cnn(cuconv.nn)
    ours.load_state_dict(ref.state_dict())
    back = seed_cnn()
    back.load_state_dict(ours.state_dict())
    for (k, a), (_, b) in zip(ref.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), k
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def test_convert_keeps_weights_outputs_and_gradients():
    ref = seed_cnn().double()
    model = copy.deepcopy(ref)
    params_before = [id(p) for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    assert cuconv.convert(model) is model
    assert [id(p) for p in model.parameters()] == params_before  # optimizer still holds the live tensors
    kinds = [type(m) for m in model]
    # each Conv2d, ReLU, MaxPool2d(2) is one fused conv+bias+ReLU+pool; the ReLU and pool become Identity
    assert kinds.count(cuconv.nn.Conv2d) == 2 and kinds.count(torch.nn.Identity) == 4
    assert model[0].fused_pool and model[3].fused_pool
    unfused = [type(m) for m in cuconv.convert(copy.deepcopy(ref), fuse_pool=False)]
    assert unfused.count(cuconv.nn.MaxPool2d) == 2
    assert isinstance(model[0], torch.nn.Conv2d)  # still a torch.nn.Conv2d for isinstance checks
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    out, expect = model(x), ref(x)
    torch.testing.assert_close(out, expect)
    out.sum().backward()
    expect.sum().backward()
    for a, b in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(a.grad, b.grad)
    opt.step()
    assert not torch.equal(model[0].weight, ref[0].weight)


def test_convert_nested_and_single_layer():
    block = torch.nn.Sequential(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3)), torch.nn.MaxPool2d(2))
    cuconv.convert(block)
    assert type(block[0][0]) is cuconv.nn.Conv2d and type(block[1]) is cuconv.nn.MaxPool2d
    single = cuconv.convert(torch.nn.Conv2d(1, 2, 3))
    assert type(single) is cuconv.nn.Conv2d


@pytest.mark.parametrize("channels_last", [False, True])
def test_torch_compile_fullgraph(channels_last):
    torch._dynamo.reset()
    model = seed_cnn(cuconv.nn)
    x = torch.randn(4, 3, 32, 32)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    out, expect = compiled(x), model(x)
    torch.testing.assert_close(out, expect)
    grads = torch.autograd.grad(out.sum(), list(model.parameters()))
    expect_grads = torch.autograd.grad(expect.sum(), list(model.parameters()))
    for a, b in zip(grads, expect_grads):
        torch.testing.assert_close(a, b)


def test_torch_compile_inductor():
    torch._dynamo.reset()
    model = seed_cnn(cuconv.nn)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(torch.compile(model, fullgraph=True)(x), model(x))


def _conv_samples():
    D = torch.float64
    r = lambda *s: torch.randn(*s, dtype=D, requires_grad=True)  # noqa: E731
    yield (r(2, 4, 7, 6), r(6, 2, 3, 3), r(6), [2, 1], [1, 0], [1, 2], 2)
    yield (r(2, 3, 5, 5), r(4, 3, 2, 2), None, [1, 1], [0, 1, 1, 0], [1, 1], 1)          # asymmetric padding
    yield (r(6, 6, 5), r(6, 1, 3, 3), r(6), [1, 1], [1, 1], [2, 2], 6)                   # unbatched depthwise
    cl = torch.randn(2, 4, 6, 5, dtype=D).contiguous(memory_format=torch.channels_last).requires_grad_()
    yield (cl, r(3, 4, 1, 3), r(3), [1, 2], [0, 1], [1, 1], 1)                           # channels_last
    yield (r(0, 4, 6, 5), r(3, 4, 3, 3), r(3), [1, 1], [1, 1], [1, 1], 1)                # batch 0


def _pool_samples():
    D = torch.float64
    for (k, s, p, d, ceil), fmt, batched in itertools.product(
            [([2, 2], [2, 2], [0, 0], [1, 1], False), ([3, 2], [2, 1], [1, 1], [1, 2], True)],
            [torch.contiguous_format, torch.channels_last], [True, False]):
        if fmt is torch.channels_last and not batched:
            continue
        x = torch.randn(2, 3, 7, 6, dtype=D).contiguous(memory_format=fmt)
        x = (x if batched else x[0]).requires_grad_()
        yield (x, k, s, p, d, ceil)


def test_opcheck_conv2d():
    for args in _conv_samples():
        torch.library.opcheck(torch.ops.cuconv.conv2d.default, args)


def test_opcheck_max_pool2d():
    for args in _pool_samples():
        torch.library.opcheck(torch.ops.cuconv.max_pool2d.default, args)


def test_opcheck_backward_ops():
    D = torch.float64
    x, w = torch.randn(2, 4, 7, 6, dtype=D, requires_grad=True), torch.randn(6, 2, 3, 3, dtype=D, requires_grad=True)
    gy = torch.randn(2, 6, 4, 6, dtype=D, requires_grad=True)
    for mask in ([True, True, True], [True, False, False], [False, True, False]):
        torch.library.opcheck(torch.ops.cuconv.conv2d_backward.default,
                              (gy, x, w, [2, 1], [1, 1], [1, 1], 2, mask))
    x = torch.randn(2, 3, 7, 6, dtype=D)
    out, idx = torch.ops.cuconv.max_pool2d(x, [3, 3], [2, 2], [1, 1], [1, 1], False)
    torch.library.opcheck(torch.ops.cuconv.max_pool2d_backward.default,
                          (torch.randn_like(out).requires_grad_(), x, idx, [3, 3], [2, 2], [1, 1], [1, 1], False))
