"""The ops' autograd in C++ (csrc/ops/*_autograd.cpp) and the functional API's direct calls
(cuconv._C.direct): where the kernels are registered, the nodes they record, double backward
against torch's, the fused op's two backward paths, compiled autograd, and the fall-back to
torch.ops for arguments the direct calls do not take."""
import pytest
import torch
import torch.nn.functional as F

import cuconv

D = torch.float64
OPS = ("conv2d", "conv2d_bias_relu", "conv2d_bias_relu_max_pool2d", "conv2d_backward", "max_pool2d",
       "max_pool2d_backward")


def rand(*shape, grad=True):
    return torch.randn(*shape, dtype=D, requires_grad=grad)


def registration(op, key):
    lines = [line for line in torch._C._dispatch_dump(f"cuconv::{op}").splitlines() if line.startswith(key)]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("op", OPS)
def test_autograd_key_is_served_by_cpp(op):
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"cuconv::{op}", "Autograd")
    assert "_autograd.cpp" in registration(op, "Autograd")
    # the fake kernels stay Python's (torch.library.register_fake)
    assert "torch/library.py" in registration(op, "Meta")


def test_special_backward_op_has_no_autograd_kernel():
    # Only the fused op's backward calls it, below autograd and with grad mode off.
    assert not torch._C._dispatch_has_kernel_for_dispatch_key("cuconv::conv2d_bias_relu_max_pool2d_backward",
                                                              "Autograd")


def node(t):
    return t.grad_fn.name()


def test_nodes_are_cpp():
    x, w, b = rand(2, 3, 6, 6), rand(4, 3, 3, 3), rand(4)
    assert "CppNode<cuconv::" in node(cuconv.conv2d(x, w, b)) and "Conv2dFunction" in node(cuconv.conv2d(x, w, b))
    assert "Conv2dFunction" in node(cuconv.conv2d_relu(x, w, b))
    assert "Conv2dReluPoolFunction" in node(cuconv.conv2d_relu_max_pool2d(x, w, b))
    assert "MaxPool2dFunction" in node(cuconv.max_pool2d(x, 2))
    gx, = torch.autograd.grad(cuconv.conv2d(x, w, b).sum(), x, create_graph=True)
    assert "Conv2dBackwardFunction" in node(gx)
    gx, = torch.autograd.grad(cuconv.max_pool2d(x, 2).sum(), x, create_graph=True)
    assert "MaxPool2dBackwardFunction" in node(gx)


def test_no_node_without_grad():
    x, w = rand(1, 2, 5, 5, grad=False), rand(3, 2, 3, 3, grad=False)
    assert cuconv.conv2d(x, w).grad_fn is None
    out, idx = cuconv.max_pool2d(x.requires_grad_(), 2, return_indices=True)
    assert out.requires_grad and not idx.requires_grad and idx.grad_fn is None
    out, idx = cuconv.conv2d_relu_max_pool2d(x, w, return_indices=True)
    assert out.requires_grad and not idx.requires_grad
    with torch.no_grad():
        assert cuconv.conv2d(x, w).grad_fn is None and cuconv.max_pool2d(x, 2).grad_fn is None


def second_order(fn, inputs, seed=1):
    """The gradients of all inputs and the gradients of a weighted sum of those gradients (double
    backward), for fn(*inputs).sum() weighted by a fixed random tensor."""
    out = fn(*inputs)
    g = torch.randn(out.shape, dtype=D, generator=torch.Generator().manual_seed(seed))
    firsts = torch.autograd.grad(out, inputs, g, create_graph=True)
    weights = [torch.randn(f.shape, dtype=D, generator=torch.Generator().manual_seed(seed + 1 + i))
               for i, f in enumerate(firsts)]
    total = sum((f * v).sum() for f, v in zip(firsts, weights))
    seconds = torch.autograd.grad(total, inputs, allow_unused=True)
    return firsts, seconds


def assert_same_grads(got, expect):
    for a, b in zip(got, expect):
        assert (a is None) == (b is None) or (a is None and not b.any()) or (b is None and not a.any())
        if a is not None and b is not None:
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kind", ["conv", "conv_relu", "conv_relu_pool", "pool"])
@pytest.mark.parametrize("batched", [True, False])
def test_double_backward_matches_torch(kind, batched):
    x = rand(2, 3, 7, 6)
    w, b = rand(4, 3, 3, 2), rand(4)
    if not batched:
        x = x[0].detach().requires_grad_()
    kw = dict(stride=(1, 2), padding=1, dilation=1)
    mine, ref = {
        "conv": (lambda x, w, b: cuconv.conv2d(x, w, b, **kw), lambda x, w, b: F.conv2d(x, w, b, **kw)),
        "conv_relu": (lambda x, w, b: cuconv.conv2d_relu(x, w, b, **kw), lambda x, w, b: F.relu(F.conv2d(x, w, b, **kw))),
        "conv_relu_pool": (lambda x, w, b: cuconv.conv2d_relu_max_pool2d(x, w, b, padding=1),
                           lambda x, w, b: F.max_pool2d(F.relu(F.conv2d(x, w, b, padding=1)), 2)),
        "pool": (lambda x, w, b: cuconv.max_pool2d(x, (3, 2), (2, 1), 1) * w.sum() + b.sum(),
                 lambda x, w, b: F.max_pool2d(x, (3, 2), (2, 1), 1) * w.sum() + b.sum()),
    }[kind]
    got_first, got_second = second_order(mine, (x, w, b))
    ref_first, ref_second = second_order(ref, (x, w, b))
    assert_same_grads(got_first, ref_first)
    assert_same_grads(got_second, ref_second)


def test_gradgradcheck_through_cpp_nodes():
    x, w, b = rand(1, 2, 5, 4), rand(3, 2, 2, 2), rand(3)
    for fn in (lambda *t: cuconv.conv2d(*t, padding=1), lambda *t: cuconv.conv2d_relu_max_pool2d(*t, padding=1)):
        assert torch.autograd.gradgradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(lambda t: cuconv.max_pool2d(t, 2, ceil_mode=True), (x,))


@pytest.mark.parametrize("needs", [(True, False, False), (False, True, False), (False, False, True)])
def test_only_the_needed_gradients(needs):
    x, w, b = (rand(2, 3, 6, 6, grad=needs[0]), rand(4, 3, 3, 3, grad=needs[1]), rand(4, grad=needs[2]))
    inputs = [t for t in (x, w, b) if t.requires_grad]
    got = torch.autograd.grad(cuconv.conv2d_relu(x, w, b, padding=1).sum(), inputs)
    expect = torch.autograd.grad(F.relu(F.conv2d(x, w, b, padding=1)).sum(), inputs)
    assert_same_grads(got, expect)


def ops_run(fn):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return {e.name for e in prof.events() if e.name.startswith("cuconv::")}


def test_fused_backward_paths():
    x, w, b = rand(2, 3, 8, 8), rand(4, 3, 3, 3), rand(4)
    # Without a graph of the backward: the one backward op.
    ran = ops_run(lambda: cuconv.conv2d_relu_max_pool2d(x, w, b, padding=1).sum().backward())
    assert "cuconv::conv2d_bias_relu_max_pool2d_backward" in ran and "cuconv::conv2d_backward" not in ran
    # With one (create_graph): the differentiable steps.
    ran = ops_run(lambda: torch.autograd.grad(cuconv.conv2d_relu_max_pool2d(x, w, b, padding=1).sum(), x,
                                              create_graph=True))
    assert {"cuconv::max_pool2d_backward", "cuconv::conv2d_backward"} <= ran
    assert "cuconv::conv2d_bias_relu_max_pool2d_backward" not in ran


def test_compiled_autograd():
    from torch._dynamo import compiled_autograd
    torch._dynamo.reset()
    x, w, b, w2 = rand(2, 3, 8, 8), rand(4, 3, 3, 3), rand(4), rand(5, 4, 3, 3)

    def loss():
        y = cuconv.conv2d_relu_max_pool2d(x, w, b, padding=1)
        return cuconv.max_pool2d(cuconv.conv2d_relu(y, w2, None, padding=1), 2).sum()

    expect = torch.autograd.grad(loss(), (x, w, b, w2))
    with compiled_autograd._enable(torch.compile(backend="eager")):
        got = torch.autograd.grad(loss(), (x, w, b, w2))
    assert_same_grads(got, expect)


class Tagged(torch.Tensor):
    """A tensor subclass whose __torch_function__ counts the calls it sees."""
    calls = 0

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        cls.calls += 1
        return super().__torch_function__(func, types, args, kwargs or {})


def test_direct_calls_take_plain_arguments_only():
    direct = cuconv._C.direct
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    conv_args = ([1, 1], [0, 0], [1, 1], 1)
    torch.testing.assert_close(direct.conv2d(x, w, None, *conv_args), F.conv2d(x, w))
    out, idx = direct.max_pool2d(x, [2, 2], (2, 2), [0, 0], [1, 1], False)
    torch.testing.assert_close(out, F.max_pool2d(x, 2))
    not_plain = [
        (direct.conv2d, (x.as_subclass(Tagged), w, None, *conv_args)),
        (direct.conv2d, (x, w, None, [1, True], [0, 0], [1, 1], 1)),   # a bool
        (direct.conv2d, (x, w, None, [1, 1], [0, 0, 0, 0, 0], [1, 1], 1)),
        (direct.conv2d, (x, w, None, [1, 1], [0, 0], [1, 1], 1.0)),
        (direct.conv2d, (x, w, 0, *conv_args)),
        (direct.conv2d, (x, w, None, *conv_args, 1)),                  # one argument too many
        (direct.conv2d, (x, w)),                                       # too few
        (direct.max_pool2d, (x, [2, 2], [2, 2], [0, 0], [1, 1], 0)),
        (direct.max_pool2d, (x, [2, 2], [2, 2], [0, 0], [1, 2**70], False)),
    ]
    for fn, args in not_plain:
        assert fn(*args) is NotImplemented


def test_fall_back_to_torch_ops():
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    # A __torch_function__ subclass sees the op call (through torch.ops), as it would have before.
    Tagged.calls = 0
    y = cuconv.conv2d(x.as_subclass(Tagged), w)
    assert Tagged.calls > 0 and isinstance(y, Tagged)
    torch.testing.assert_close(y.as_subclass(torch.Tensor), F.conv2d(x, w))

    # A __torch_function__ mode sees it too.
    class Seen(torch.overrides.TorchFunctionMode):
        funcs = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.funcs.append(func)
            return func(*args, **(kwargs or {}))

    with Seen():
        cuconv.max_pool2d(x, 2)
    assert torch.ops.cuconv.max_pool2d.default in Seen.funcs


def test_direct_call_errors_are_torch_ops_errors():
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3, dtype=D)
    conv_args = ([1, 1], [0, 0], [1, 1], 1)
    errors = []
    for fn in (cuconv._C.direct.conv2d, torch.ops.cuconv.conv2d.default):
        with pytest.raises(RuntimeError) as info:
            fn(x, w, None, *conv_args)
        errors.append(str(info.value))
    assert errors[0] == errors[1]
    for fn in (cuconv._C.direct.max_pool2d, torch.ops.cuconv.max_pool2d.default):
        with pytest.raises(ValueError, match="expected kernel_size to have 2 values"):
            fn(x, [2, 2, 2], [2, 2], [0, 0], [1, 1], False)
