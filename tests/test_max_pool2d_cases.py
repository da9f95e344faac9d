"""max_pool2d forward and backward on every shared case (tests/cases.py) and every runner: values,
indices and gradients equal torch's exactly (max-pool only moves values; where windows overlap, an
element's gradients are summed in the dtype, so there within its rounding), with plain inputs and
with ties, -inf and NaN (NaN wins and the last NaN is reported; a tie keeps the first maximum),
float32 and float64, in the case's layout."""
import pytest
import torch
import torch.nn.functional as F

import cuconv  # noqa: F401  (loads the operators)
from cases import POOL, layout, special_values

ops = torch.ops.cuconv


@pytest.mark.parametrize("special", [False, True], ids=["plain", "special"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", POOL, ids=lambda c: c.name)
def test_max_pool2d_matches_torch(runner, case, dtype, special):
    x = case.input(dtype)
    if special:
        x = special_values(x.contiguous()).contiguous(memory_format=layout(x))
    args = case.args()
    y, idx = ops.max_pool2d(x.to(runner.device), *args)
    ry, ridx = F.max_pool2d_with_indices(x.double(), *args)
    assert torch.equal(idx.cpu(), ridx)
    assert torch.equal(y.cpu().double().nan_to_num(7.5), ry.nan_to_num(7.5))
    gy = torch.randn(y.shape, dtype=dtype)
    gy.view(-1)[::5] = -0.0  # torch's zero-fill-and-add gives +0.0 for these
    gy = gy.contiguous(memory_format=layout(x))
    gx = ops.max_pool2d_backward(gy.to(runner.device), x.to(runner.device), idx, *args).cpu()
    rgx = torch.ops.aten.max_pool2d_with_indices_backward(gy.double(), x.double(), *args, ridx)
    if any(s < k for s, k in zip(case.stride, case.kernel)):
        # An input element in several windows sums their gradients in the kernel's dtype; the
        # reference sums in float64.
        err = (gx.double() - rgx).abs().max().item()
        assert err <= (1e-5 if dtype == torch.float32 else 1e-12) * rgx.abs().max().item()
    else:
        assert torch.equal(gx.double(), rgx) and torch.equal(gx.signbit(), rgx.signbit())
    fmt = layout(x)
    assert y.is_contiguous(memory_format=fmt) and gx.is_contiguous(memory_format=fmt)
