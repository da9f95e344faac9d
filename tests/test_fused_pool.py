"""The fused conv + bias + ReLU + 2x2 max-pool operator (cuconv::conv2d_bias_relu_max_pool2d), on the CPU
fallback and under the simulator (its fused implicit-GEMM kernel), against torch's composition in float64,
and its use by convert()."""
import copy
import re

import pytest
import torch
import torch.nn.functional as F

import cuconv
import cuconv.apps.models
from cuconv.ops import conv2d_relu_max_pool2d


@pytest.fixture
def runner(op_runner):
    """The best CPU path, the simulator, and CUDA when present (tests/conftest.py)."""
    return op_runner


def reference(x, w, b, **kw):
    return F.max_pool2d(F.relu(F.conv2d(x, w, b, **kw)), 2, 2, return_indices=True)


def check(x, w, b, **kw):
    """Values, indices (exactly), strides and gradients of x, w, b against the composition."""
    out, idx = conv2d_relu_max_pool2d(x, w, b, return_indices=True, **kw)
    ref, ref_idx = reference(x, w, b, **kw)
    torch.testing.assert_close(out, ref, equal_nan=True)
    assert torch.equal(idx, ref_idx)
    assert out.stride() == ref.stride() and idx.stride() == ref_idx.stride()
    leaves = [t for t in (x, w, b) if t is not None and t.requires_grad]
    if leaves and out.numel() > 0:
        g = torch.randn_like(ref)
        for a, r in zip(torch.autograd.grad(out, leaves, g), torch.autograd.grad(ref, leaves, g)):
            torch.testing.assert_close(a, r)
    return out, idx


def rand(*shape, fmt=torch.contiguous_format, grad=True):
    return torch.randn(*shape, dtype=torch.float64).contiguous(memory_format=fmt).requires_grad_(grad)


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("kw, size", [
    (dict(), (8, 8)),                                     # even conv output 6x6
    (dict(padding=1), (9, 7)),                            # odd conv output 9x7: last row and column dropped
    (dict(stride=2, padding=(2, 1), dilation=(1, 2)), (11, 12)),
    (dict(groups=2, padding=1), (6, 10)),
    (dict(groups=6, padding=1), (7, 7)),                  # depthwise
    (dict(padding=(2, 0)), (7, 6)),                       # different padding per side
])
@pytest.mark.parametrize("bias", [True, False])
def test_values_indices_gradients(runner, fmt, kw, size, bias):
    x = rand(2, 6, *size, fmt=fmt)
    w = rand(6, 6 // kw.get("groups", 1), 3, 3)
    b = rand(6) if bias else None
    out, _ = check(x, w, b, **kw)
    assert (out == 0).any() and (out > 0).any()  # the ReLU has work to do


def test_many_tiles_and_channel_tiles(runner):
    # More pooled pixels than one 16-pixel tile (with a partial last one) and more than 64 output channels.
    x = rand(3, 5, 13, 11)
    w = rand(70, 5, 2, 2)
    check(x, w, rand(70))


@pytest.mark.parametrize("batch", [1, 9])
def test_batches_in_chunks(batch):
    # The CPU runner pools a few images at a time (cache-sized chunks of conv output, split across threads).
    x = rand(batch, 8, 40, 39, grad=False)
    for fmt in (torch.contiguous_format, torch.channels_last):
        check(x.contiguous(memory_format=fmt), rand(16, 8, 3, 3, grad=False), rand(16, grad=False), padding=1)


def test_float32(runner):
    x = torch.randn(2, 4, 10, 9)
    w = torch.randn(8, 4, 3, 3)
    b = torch.randn(8)
    out, idx = conv2d_relu_max_pool2d(x, w, b, padding=1, return_indices=True)
    ref, ref_idx = reference(x, w, b, padding=1)
    torch.testing.assert_close(out, ref)
    # float32 sums may round differently from torch's; an index may differ only at a near tie
    differ = idx != ref_idx
    assert differ.float().mean() < 0.01


def test_unbatched(runner):
    x = rand(3, 8, 9)
    check(x, rand(4, 3, 3, 3), rand(4), padding=1)


def test_gradcheck_and_gradgradcheck(runner):
    x = rand(1, 2, 6, 5)
    w = rand(3, 2, 2, 2)
    b = rand(3)
    fn = lambda *t: conv2d_relu_max_pool2d(*t, padding=1)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


def test_nan_and_ties(runner):
    # A 1x1 identity conv: the pooled windows are windows of the input itself.
    w = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    x = torch.tensor([[[[-1.0, -2.0, 3.0, 3.0, 0.5, float("nan")],
                        [-3.0, -4.0, 1.0, 3.0, float("nan"), 2.0],
                        [2.0, 2.0, 0.0, -1.0, 7.0, 7.0],
                        [2.0, 2.0, -5.0, 0.0, 7.0, 1.0]]]], dtype=torch.float64)
    for fmt in (torch.contiguous_format, torch.channels_last):
        out, idx = check(x.contiguous(memory_format=fmt), w, None)
        # all-negative window -> 0 at the first element; ties -> the first maximum; NaN -> the last NaN
        assert idx[0, 0].tolist() == [[0, 2, 10], [12, 14, 16]]
        assert torch.isnan(out[0, 0, 0, 2])
    nan_bias = torch.tensor([float("nan")], dtype=torch.float64)
    check(x.nan_to_num(), w, nan_bias)  # every element NaN: the last one's index


def test_all_windows_negative_gradient_is_zero(runner):
    x = rand(1, 2, 4, 4)
    w = rand(3, 2, 1, 1)
    b = torch.full((3,), -100.0, dtype=torch.float64, requires_grad=True)
    out, _ = check(x, w, b)
    assert (out == 0).all()
    gx, gw, gb = torch.autograd.grad(conv2d_relu_max_pool2d(x, w, b).sum(), (x, w, b))
    assert not gx.any() and not gw.any() and not gb.any()


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_empty(runner, fmt):
    w = rand(4, 3, 3, 3)
    out, idx = check(rand(0, 3, 8, 8, fmt=fmt), w, rand(4))  # batch 0
    assert out.shape == idx.shape == (0, 4, 3, 3)
    check(rand(2, 3, 4, 8, fmt=fmt), w, rand(4))             # conv output 2x6 -> pooled 1x3
    # No input channels: cuconv's conv2d gives the bias planes (torch's gives no output channels).
    x0, w0, b0 = rand(2, 0, 6, 6, fmt=fmt), rand(4, 0, 3, 3), torch.tensor([1.0, -1.0, float("nan"), 0.5], dtype=torch.float64)
    out, idx = conv2d_relu_max_pool2d(x0, w0, b0, return_indices=True)
    ref, ref_idx = F.max_pool2d(F.relu(cuconv.conv2d(x0, w0, b0)), 2, 2, return_indices=True)
    torch.testing.assert_close(out, ref, equal_nan=True)
    assert torch.equal(idx, ref_idx) and out.shape == (2, 4, 2, 2)
    # Where the composition's max_pool2d refuses the conv output, the fused op says the same.
    for x, w in [(rand(2, 3, 3, 8, fmt=fmt), w),                # conv output 1x6 -> pooled 0x3
                 (rand(2, 3, 6, 6, fmt=fmt), rand(0, 3, 3, 3))]:  # no output channels
        with pytest.raises(RuntimeError) as expected:
            reference(x, w, None)
        with pytest.raises(RuntimeError, match=re.escape(str(expected.value).split(",")[0].split(":")[0])):
            conv2d_relu_max_pool2d(x, w, None)


def test_non_contiguous_inputs(runner):
    x = rand(2, 8, 10, 9, grad=False)[:, ::2].requires_grad_()
    w = rand(6, 8, 3, 3, grad=False).transpose(2, 3)[:, ::2].requires_grad_()
    b = rand(12, grad=False)[::2].requires_grad_()
    assert not x.is_contiguous() and not w.is_contiguous() and not b.is_contiguous()
    check(x, w, b, padding=1)
    check(x, w.contiguous(memory_format=torch.channels_last), b, padding=1)


def test_argument_errors_as_conv2d():
    x, w = torch.randn(1, 4, 6, 6), torch.randn(5, 4, 3, 3)
    for args, exc in [((x, w.double(), None), RuntimeError), ((x, torch.randn(5, 3, 3, 3), None), RuntimeError),
                      ((x[0, 0], w, None), RuntimeError), ((x, w, torch.randn(4)), RuntimeError)]:
        with pytest.raises(exc):
            F.conv2d(*args)
        with pytest.raises(exc):
            conv2d_relu_max_pool2d(*args)
    with pytest.raises(RuntimeError):
        conv2d_relu_max_pool2d(x, w, None, stride=0)


# ------------------------------------------------------------- the first-order backward operator

class _OpLog(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_backward_op_and_double_backward_path_agree(runner, fmt):
    # A plain backward takes the one-op path (cuconv::conv2d_bias_relu_max_pool2d_backward); one that
    # builds a graph (create_graph) takes the differentiable composition. Both are checked against torch.
    x, w, b = rand(3, 4, 11, 9, fmt=fmt), rand(5, 4, 3, 3), rand(5)
    out = conv2d_relu_max_pool2d(x, w, b, padding=1)
    ref = reference(x, w, b, padding=1)[0]
    g = torch.randn_like(ref)
    with _OpLog() as log:
        plain = torch.autograd.grad(out, (x, w, b), g, retain_graph=True)
    assert "cuconv.conv2d_bias_relu_max_pool2d_backward" in log.names
    assert "cuconv.max_pool2d_backward" not in log.names
    with _OpLog() as log:
        graph = torch.autograd.grad(out, (x, w, b), g, create_graph=True)
    assert "cuconv.conv2d_bias_relu_max_pool2d_backward" not in log.names
    assert "cuconv.max_pool2d_backward" in log.names
    expected = torch.autograd.grad(ref, (x, w, b), g)
    for a, c, e in zip(plain, graph, expected):
        torch.testing.assert_close(a, e)
        torch.testing.assert_close(c, e)
    assert plain[0].stride() == graph[0].stride() == expected[0].stride()


def test_backward_buffer_reused_across_sizes_and_dtypes(runner):
    # The CPU keeps the conv output's gradient in a per-thread buffer between calls: a large layer,
    # then a smaller one, a float32 one and a channels_last one must each see only their own values.
    cases = [((4, 3, 14, 14), (6, 3, 3, 3), torch.float64, torch.contiguous_format),
             ((2, 2, 8, 7), (3, 2, 3, 3), torch.float64, torch.contiguous_format),
             ((3, 3, 10, 10), (4, 3, 3, 3), torch.float32, torch.contiguous_format),
             ((2, 5, 9, 12), (7, 5, 3, 3), torch.float64, torch.channels_last),
             ((4, 3, 14, 14), (6, 3, 3, 3), torch.float64, torch.contiguous_format)]
    for xs, ws, dtype, fmt in cases:
        x = torch.randn(xs, dtype=dtype).contiguous(memory_format=fmt).requires_grad_()
        w = torch.randn(ws, dtype=dtype, requires_grad=True)
        b = torch.randn(ws[0], dtype=dtype, requires_grad=True)
        out, ref = conv2d_relu_max_pool2d(x, w, b), reference(x, w, b)[0]
        g = torch.randn_like(ref)
        for a, e in zip(torch.autograd.grad(out, (x, w, b), g), torch.autograd.grad(ref, (x, w, b), g)):
            torch.testing.assert_close(a, e)


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_backward_op_empty_batch_and_no_windows(runner, fmt):
    # Batch 0: every gradient has its shape, and the weight and bias gradients are zeros.
    op = torch.ops.cuconv.conv2d_bias_relu_max_pool2d_backward.default
    w = rand(4, 3, 3, 3, grad=False)
    x = rand(0, 3, 8, 8, fmt=fmt, grad=False)
    out, idx = conv2d_relu_max_pool2d(x, w, None, return_indices=True)
    gi, gw, gb = op(torch.zeros_like(out), out, idx, x, w, [1, 1], [0, 0], [1, 1], 1, [True, True, True])
    assert gi.shape == x.shape
    assert gw.shape == w.shape and not gw.any() and gb.shape == (4,) and not gb.any()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_backward_op_relu_mask_on_special_values(dtype, fmt):
    """The backward op zeroes the pooled gradient where the pooled value is <= 0 (ReLU's backward,
    torch's threshold_backward(g, values, 0)): at 0, -0, negatives and -inf; a NaN, a subnormal and
    +inf pass it. Its grad bias sums exactly that gradient, in conv2d_backward's order."""
    op = torch.ops.cuconv.conv2d_bias_relu_max_pool2d_backward.default
    x = torch.randn(3, 4, 14, 10).to(dtype).contiguous(memory_format=fmt)
    w = torch.randn(40, 4, 3, 3).to(dtype)
    values, idx = conv2d_relu_max_pool2d(x, w, None, return_indices=True)
    values = values.clone()
    special = torch.tensor([0.0, -0.0, -1.0, float("-inf"), float("nan"), 1e-40, float("inf"), 2.0]).to(dtype)
    values.as_strided((values.numel(),), (1,))[: 8 * 9] = special.repeat(9)  # in memory order
    g = torch.randn(values.shape).to(dtype).contiguous(memory_format=fmt)
    gb = op(g, values, idx, x, w, [1, 1], [0, 0], [1, 1], 1, [False, False, True])[2]
    masked = torch.ops.aten.threshold_backward(g, values, 0)
    # the same sum over a conv whose output has the pooled shape (6 x 4)
    x_pooled = torch.zeros(3, 4, 8, 6, dtype=dtype).contiguous(memory_format=fmt)
    expected = torch.ops.cuconv.conv2d_backward(masked, x_pooled, w, [1, 1], [0, 0], [1, 1], 1, [False, False, True])[2]
    assert torch.equal(gb, expected)


def test_backward_op_opcheck_and_errors():
    op = torch.ops.cuconv.conv2d_bias_relu_max_pool2d_backward.default
    for fmt in (torch.contiguous_format, torch.channels_last):
        x, w = rand(2, 3, 7, 6, fmt=fmt, grad=False), rand(4, 3, 3, 3, grad=False)
        out, idx = conv2d_relu_max_pool2d(x, w, None, padding=1, return_indices=True)
        args = (torch.randn_like(out), out, idx, x, w, [1, 1], [1, 1], [1, 1], 1, [True, True, False])
        torch.library.opcheck(op, args)
        gi, gw, gb = op(*args)
        assert gi.shape == x.shape and gw.shape == w.shape and gb.numel() == 0
    x, w = rand(3, 7, 6, grad=False), rand(4, 3, 2, 2, grad=False)  # unbatched
    out, idx = conv2d_relu_max_pool2d(x, w, None, return_indices=True)
    torch.library.opcheck(op, (torch.randn_like(out), out, idx, x, w, [1, 1], [0, 0], [1, 1], 1, [True, True, True]))
    # Bad arguments: a clear error before any kernel runs.
    x, w = rand(2, 3, 8, 8, grad=False), rand(4, 3, 3, 3, grad=False)
    out, idx = conv2d_relu_max_pool2d(x, w, None, return_indices=True)
    g, conf, mask = torch.randn_like(out), ([1, 1], [0, 0], [1, 1], 1), [True, True, True]
    for args, message in [((g, out, idx.int(), x, w), "indices must be int64"),
                          ((g.float(), out, idx, x, w), "must have the input's dtype"),
                          ((g[:, :, :2], out, idx, x, w), "expected grad_output of size"),
                          ((g, out, idx[:1], x, w), "expected grad_output of size"),
                          ((g, out, idx, x, rand(4, 2, 3, 3, grad=False)), "expected input")]:
        with pytest.raises(RuntimeError, match=message):
            op(*args, *conf, mask)


def test_simulated_float16_fused_kernel():
    # sm_75: no tensor cores, so 16-bit inputs take the fused kernel too.
    x, w, b = torch.randn(2, 4, 9, 10), torch.randn(6, 4, 3, 3), torch.randn(6)
    ref, _ = reference(x, w, b, padding=1)
    try:
        with cuconv.simulate():
            cuconv._C._set_sim_device({"cc_major": 7, "cc_minor": 5})
            out = conv2d_relu_max_pool2d(x.half(), w.half(), b.half(), padding=1)
    finally:
        cuconv._C._set_sim_device({})
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2e-2)


def test_simulated_float16_tensor_cores():
    # sm_80 (the simulator's default): 16-bit inputs take the tensor-core conv, then the pooling kernel, so the
    # result is exactly cuconv's own unfused pair.
    x, w, b = torch.randn(2, 4, 9, 10).half(), torch.randn(6, 4, 3, 3).half(), torch.randn(6).half()
    with cuconv.simulate():
        out, idx = conv2d_relu_max_pool2d(x, w, b, padding=1, return_indices=True)
        ref, ref_idx = cuconv.max_pool2d(cuconv.conv2d_relu(x, w, b, padding=1), 2, return_indices=True)
    assert torch.equal(out, ref) and torch.equal(idx, ref_idx)


@pytest.mark.skipif(not (cuconv._C.with_cuda and torch.cuda.is_available()), reason="needs a CUDA build and a GPU")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_cuda(dtype, fmt):
    x = torch.randn(3, 8, 17, 14, device="cuda", dtype=dtype).contiguous(memory_format=fmt)
    w, b = torch.randn(70, 8, 3, 3, device="cuda", dtype=dtype), torch.randn(70, device="cuda", dtype=dtype)
    out, idx = conv2d_relu_max_pool2d(x, w, b, padding=1, return_indices=True)
    ref, ref_idx = reference(x.double(), w.double(), b.double(), padding=1)
    torch.testing.assert_close(out.double(), ref, **({} if dtype == torch.float64 else dict(atol=5e-2, rtol=1e-2)))
    assert out.stride() == ref.stride()
    if dtype == torch.float64:
        assert torch.equal(idx, ref_idx)


def test_opcheck():
    for fmt in (torch.contiguous_format, torch.channels_last):
        args = (rand(2, 3, 7, 6, fmt=fmt), rand(4, 3, 3, 3), rand(4), [1, 1], [1, 1], [1, 1], 1)
        torch.library.opcheck(torch.ops.cuconv.conv2d_bias_relu_max_pool2d.default, args)
    args = (rand(3, 7, 6), rand(4, 3, 2, 2), None, [1, 1], [0, 0], [1, 1], 1)
    torch.library.opcheck(torch.ops.cuconv.conv2d_bias_relu_max_pool2d.default, args)


def test_compile_fullgraph():
    torch._dynamo.reset()
    w, b = torch.randn(4, 3, 3, 3, requires_grad=True), torch.randn(4, requires_grad=True)

    def fn(x):
        return conv2d_relu_max_pool2d(x, w, b, padding=1).sum()

    x = torch.randn(2, 3, 9, 8, requires_grad=True)
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), fn(x))
    torch.testing.assert_close(torch.autograd.grad(compiled(x), (x, w)), torch.autograd.grad(fn(x), (x, w)))


# ---------------------------------------------------------------------------------------- convert()

def seed_cnn():
    return cuconv.apps.models.cifar_cnn()


def test_convert_fuses_conv_relu_pool():
    model = seed_cnn().double()
    ref = copy.deepcopy(model)
    keys = list(model.state_dict())
    cuconv.convert(model)
    for i in (0, 3):
        assert model[i].fused_pool and type(model[i + 1]) is torch.nn.Identity
        assert type(model[i + 2]) is torch.nn.Identity
    assert "fused_pool=True" in repr(model[0])
    assert list(model.state_dict()) == keys
    for a, b in zip(model.state_dict().values(), ref.state_dict().values()):
        assert torch.equal(a, b)
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64, requires_grad=True)
    xr = x.detach().clone().requires_grad_()
    out, expect = model(x), ref(xr)
    torch.testing.assert_close(out, expect)
    out.sum().backward()
    expect.sum().backward()
    torch.testing.assert_close(x.grad, xr.grad)
    torch.testing.assert_close(model[0].weight.grad, ref[0].weight.grad)
    # the converted model loads the torch model's state_dict, and the other way around
    ref.load_state_dict(model.state_dict())


def test_convert_opt_out_and_other_patterns():
    unfused = cuconv.convert(seed_cnn(), fuse_pool=False)
    assert unfused[0].fused_relu and not unfused[0].fused_pool
    assert type(unfused[2]) is cuconv.nn.MaxPool2d
    plain = cuconv.convert(seed_cnn(), fuse_relu=False)
    assert not plain[0].fused_relu and not plain[0].fused_pool and type(plain[1]) is torch.nn.ReLU
    nn = torch.nn
    for pool in (nn.MaxPool2d(3), nn.MaxPool2d(2, 1), nn.MaxPool2d(2, padding=1), nn.MaxPool2d(2, dilation=2),
                 nn.MaxPool2d(2, ceil_mode=True), nn.MaxPool2d(2, return_indices=True), nn.AvgPool2d(2)):
        model = cuconv.convert(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), pool))
        assert model[0].fused_relu and not model[0].fused_pool, pool
        assert type(model[2]) is not nn.Identity
    # MaxPool2d(2, 2), (2, 2) and stride None all are 2x2, stride 2
    for pool in (nn.MaxPool2d(2, 2), nn.MaxPool2d((2, 2), (2, 2)), nn.MaxPool2d(2, None)):
        model = cuconv.convert(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), pool))
        assert model[0].fused_pool, pool
    # Conv -> pool without the ReLU between is left alone
    model = cuconv.convert(nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(2)))
    assert not model[0].fused_pool and type(model[1]) is cuconv.nn.MaxPool2d


def test_converted_seed_cnn_compiles():
    torch._dynamo.reset()
    model = cuconv.convert(seed_cnn())
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(torch.compile(model, fullgraph=True, backend="aot_eager")(x), model(x))
