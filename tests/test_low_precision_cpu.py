"""float16 and bfloat16 on the CPU fallback: every pass of the shared conv cases (tests/cases.py)
on each ISA path, each within twice torch's own error in the same dtype (both against float64 of
the same 16-bit inputs); max-pool exact; outputs in the input's dtype and layout; the plan of a
16-bit call is the float32 plan its float32 copies run."""
import pytest
import torch
import torch.nn.functional as F

import cuconv  # noqa: F401  (loads the operators)
from cases import CONV, POOL, layout
from tolerance import assert_within_torch_error

ops = torch.ops.cuconv
DTYPES = [torch.float16, torch.bfloat16]
# torch's own 16-bit CPU convolutions (the comparison) are slow for float16: the smaller cases.
SMALL = [c for c in CONV if c.macs <= 60_000]


def passes(fn_conv, fn_backward, x, w, b, args, gy):
    y = fn_conv(x, w, b, *args)
    gx, gw, gb = fn_backward(gy, x, w, args)
    return y, gx, gw, gb


def torch_passes(x, w, b, args, gy):
    stride, pad, dil, groups = args
    xt, wt, bt = (t.detach().clone().requires_grad_() for t in (x, w, b))
    y = F.conv2d(F.pad(xt, (pad[1], pad[3], pad[0], pad[2])), wt, bt, stride, 0, dil, groups)
    y.backward(gy)
    return y.detach(), xt.grad, wt.grad, bt.grad


@pytest.mark.parametrize("dtype", DTYPES, ids=["f16", "bf16"])
@pytest.mark.parametrize("case", SMALL, ids=lambda c: c.name)
def test_conv2d_16bit_within_twice_torch(isa, case, dtype):
    x, w, b = case.tensors(dtype)
    w = (w.float() / (w.shape[1] * w.shape[2] * w.shape[3]) ** 0.5).to(dtype)
    args = case.args()
    y = ops.conv2d(x, w, b, *args)
    gy = torch.randn(y.shape).to(dtype).contiguous(memory_format=layout(x))
    ours = (y, *ops.conv2d_backward(gy, x, w, *args, [True, True, True]))
    theirs = torch_passes(x, w, b, args, gy)
    exact = torch_passes(x.double(), w.double(), b.double(), args, gy.double())
    for what, o, t, r in zip(("forward", "grad input", "grad weight", "grad bias"), ours, theirs, exact):
        assert o.dtype == dtype, what
        assert_within_torch_error(o, t.to(dtype), r)
    assert y.is_contiguous(memory_format=layout(x)) and ours[1].is_contiguous(memory_format=layout(x))
    assert torch.equal(ops.conv2d_bias_relu(x, w, b, *args), y.clamp_min(0))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f16", "bf16"])
@pytest.mark.parametrize("case", POOL, ids=lambda c: c.name)
def test_max_pool2d_16bit_exact(isa, case, dtype):
    x = case.input(dtype)
    args = case.args()
    y, idx = ops.max_pool2d(x, *args)
    ry, ridx = F.max_pool2d_with_indices(x.double(), *args)
    assert y.dtype == dtype and torch.equal(y.double(), ry) and torch.equal(idx, ridx)
    gy = torch.randn(y.shape).to(dtype).contiguous(memory_format=layout(x))
    gx = ops.max_pool2d_backward(gy, x, idx, *args)
    rgx = torch.ops.aten.max_pool2d_with_indices_backward(gy.double(), x.double(), *args, ridx)
    # each element's gradients summed in float32 (exact for the few 16-bit values that overlapping
    # windows add) and rounded once: torch's result
    assert gx.dtype == dtype and torch.equal(gx, rgx.to(dtype))


def test_16bit_reports_the_float32_plan():
    case = next(c for c in CONV if c.plan[0] == "nhwc_rows")
    x, w, _ = case.tensors()
    assert ops._cpu_conv2d_plan(x.half(), w.half(), *case.args()) == ops._cpu_conv2d_plan(x, w, *case.args())


@pytest.mark.parametrize("dtype", DTYPES, ids=["f16", "bf16"])
def test_autocast_runs_convolutions_in_its_dtype(op_runner, dtype):
    """Native conv2d's autocast policy: the convolutions (plain, fused with ReLU, fused with ReLU
    and pool) run in the autocast dtype, float64 is left alone, max-pool keeps its input's dtype,
    and float32 parameters get float32 gradients through the casts."""
    device = op_runner.device
    x = torch.randn(2, 3, 12, 12, device=device, requires_grad=True)
    conv = cuconv.nn.Conv2d(3, 8, 3, padding=1).to(device)
    with torch.autocast(device, dtype=dtype):
        y = conv(x)
        fused = cuconv.conv2d_relu_max_pool2d(x, conv.weight, conv.bias)
        relu = cuconv.conv2d_relu(x, conv.weight, conv.bias)
        pooled = cuconv.max_pool2d(x, 2)
        native = torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=1)
        double = cuconv.conv2d(x.double(), conv.weight.double())
    assert (y.dtype, fused.dtype, relu.dtype, pooled.dtype, double.dtype) == (dtype, dtype, dtype, torch.float32,
                                                                              torch.float64)
    assert native.dtype == dtype
    exact = torch.nn.functional.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1)
    assert_within_torch_error(y, native, exact)
    (y.float().sum() + fused.float().sum()).backward()
    assert x.grad.dtype == conv.weight.grad.dtype == conv.bias.grad.dtype == torch.float32


@pytest.mark.parametrize("dtype", DTYPES, ids=["f16", "bf16"])
def test_16bit_values_round_trip_and_round_to_nearest_even(isa, dtype):
    """A 1x1 max-pool returns its 16-bit input bit for bit (NaNs, infinities, -0, subnormals
    included: the float32 copy and the rounding back are exact for them); a conv's float32 sums are
    rounded to nearest even, as torch's conversion does for finite values."""
    x = torch.randn(1, 1, 1, 4099) * 1000
    x.view(-1)[::97] = float("nan")
    x.view(-1)[1::89] = float("inf")
    x.view(-1)[2::83] = -0.0
    x.view(-1)[3::79] = 1e-40
    x16 = x.to(dtype)
    y = ops.max_pool2d(x16, [1, 1], [1, 1], [0, 0], [1, 1], False)[0]
    assert torch.equal(y.view(torch.int16), x16.view(torch.int16))
    # Two 16-bit channels of different magnitudes: their float32 sum (exact) mostly falls between
    # 16-bit values, and the conv rounds it once.
    a = torch.randn(1, 2, 1, 4099).to(dtype)
    a[:, 1] *= 1e-3
    y = ops.conv2d(a, torch.ones(1, 2, 1, 1, dtype=dtype), None, [1, 1], [0, 0], [1, 1], 1)
    exact = a[:, :1].float() + a[:, 1:].float()
    assert not torch.equal(exact, exact.to(dtype).float())  # the rounding is exercised
    assert torch.equal(y, exact.to(dtype))
