"""conv2d's passes on every shared case (tests/cases.py) and every runner (tests/conftest.py):
forward with bias, forward fused with bias and ReLU, grad input, grad weight and grad bias, against
torch in float64, in the case's layout, with outputs poisoned before the kernels run.
float32 is held to 1e-5 and float64 to 1e-10 of the reference's largest magnitude."""
import pytest
import torch
import torch.nn.functional as F

import cuconv  # noqa: F401  (loads the operators)
from cases import CONV, layout
from conftest import RUNNERS

ops = torch.ops.cuconv

def reference(x, w, b, stride, padding, dilation, groups, gy):
    x, w, b = (t.detach().cpu().double().requires_grad_() for t in (x, w, b))
    y = F.conv2d(F.pad(x, (padding[1], padding[3], padding[0], padding[2])), w, b, stride, 0, dilation, groups)
    y.backward(gy.cpu().double())
    return y.detach(), x.grad, w.grad, b.grad


def close(out, ref, dtype, what):
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    assert out.shape == ref.shape, what
    err = (out.cpu().double() - ref).abs().max().item() if out.numel() else 0.0
    scale = max(ref.abs().max().item() if ref.numel() else 0.0, 1e-30)
    assert err <= tol * scale, f"{what}: max error {err:.3e}, scale {scale:.3e}"


def check_passes(case, dtype, device):
    x, w, b = case.tensors(dtype, device)
    args = case.args()
    with cuconv.config.flags(cpu_conv_algo=case.algo):
        y = ops.conv2d(x, w, b, *args)
        y_relu = ops.conv2d_bias_relu(x, w, b, *args)
        gy = torch.randn(y.shape, dtype=dtype, device=device).contiguous(memory_format=layout(x))
        gx, gw, gb = ops.conv2d_backward(gy, x, w, *args, [True, True, True])
    ry, rgx, rgw, rgb = reference(x, w, b, *args, gy)
    close(y, ry, dtype, "forward")
    close(y_relu, ry.relu(), dtype, "forward + bias + ReLU")
    assert torch.equal(y_relu, y.clamp_min(0))  # the epilogue clamps the same sums
    close(gx, rgx, dtype, "grad input")
    close(gw, rgw, dtype, "grad weight")
    close(gb, rgb, dtype, "grad bias")
    fmt = layout(x)
    assert y.is_contiguous(memory_format=fmt) and gx.is_contiguous(memory_format=fmt)


@pytest.fixture(params=[r for r in RUNNERS if r.name != "sim"], ids=lambda r: r.name)
def native_runner(request):
    """The CPU fallback on each ISA path, and CUDA when present."""
    with request.param.active() as r:
        yield r


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", CONV, ids=lambda c: c.name)
def test_conv2d_passes_match_float64(native_runner, case, dtype):
    check_passes(case, dtype, native_runner.device)


# The simulator runs every CUDA thread on the CPU: the cases up to this many multiply-adds (most of
# them, the GPU kernels' edge cases included), in float64, keep it to a minute.
SIM_MACS = 400_000


@pytest.mark.parametrize("case", [c for c in CONV if c.macs <= SIM_MACS], ids=lambda c: c.name)
def test_conv2d_passes_match_float64_under_the_simulator(case):
    with cuconv.simulate():
        check_passes(case, torch.float64, "cpu")
