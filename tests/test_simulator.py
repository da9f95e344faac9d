"""The CUDA kernels' mechanisms under the simulator (`with cuconv.simulate():`) beyond the shared
cases (which run under the simulator in test_conv2d_cases.py and test_max_pool2d_cases.py): batch 0
and no bias, the grad weight's determinism, float16/bfloat16 against torch's own rounding error,
max-pool in 16-bit, and a whole CNN."""
import pytest
import torch
import torch.nn.functional as F

import cuconv
import cuconv.nn

def run_conv(x, w, b, stride, padding, dilation, groups, gy, simulate):
    x = x.detach().clone().requires_grad_()
    w = w.detach().clone().requires_grad_()
    b = b.detach().clone().requires_grad_()
    if simulate:
        with cuconv.simulate():
            y = cuconv.conv2d(x, w, b, stride, padding, dilation, groups)
            y.backward(gy)
    else:
        y = F.conv2d(x, w, b, stride, padding, dilation, groups)
        if gy is not None:
            y.backward(gy)
    return y.detach(), x.grad, w.grad, b.grad


def test_conv2d_batch_zero_and_no_bias():
    x = torch.randn(0, 3, 6, 6, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    with cuconv.simulate():
        y = cuconv.conv2d(x, w, None, 1, 1)
    assert y.shape == (0, 4, 6, 6)
    x = torch.randn(1, 3, 6, 5, dtype=torch.float64)
    with cuconv.simulate():
        y = cuconv.conv2d(x, w, None, 1, 1)
    torch.testing.assert_close(y, F.conv2d(x, w, None, 1, 1), rtol=1e-12, atol=1e-12)


def test_conv2d_grad_weight_is_deterministic():
    x = torch.randn(2, 3, 30, 30)
    w = torch.randn(5, 3, 3, 3)
    gy = torch.randn(2, 5, 30, 30)
    results = []
    for _ in range(2):
        with cuconv.simulate():
            _, gw, _ = torch.ops.cuconv.conv2d_backward(gy, x, w, [1, 1], [1, 1], [1, 1], 1, [False, True, False])
        results.append(gw)
    assert torch.equal(results[0], results[1])


def torch_error(fn, dtype, *args):
    """Max error of torch's own computation in `dtype` against float32 (None if torch lacks it)."""
    ref = fn(*[a.float() for a in args])
    try:
        low = fn(*[a.to(dtype) for a in args]).float()
    except (RuntimeError, NotImplementedError):
        low = ref.to(dtype).float()  # torch cannot: compare with the rounding of the exact result
    return ref, (low - ref).abs().max().item()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("groups", [1, 4])
def test_conv2d_half_precision_error_within_twice_torch(dtype, groups):
    x = torch.randn(2, 4, 10, 9)
    w = torch.randn(8, 4 // groups, 3, 3) * 0.3
    b = torch.randn(8)
    gy = torch.randn(2, 8, 10, 9)
    conv = lambda x_, w_, b_: F.conv2d(x_, w_, b_, 1, 1, 1, groups)
    ref, torch_err = torch_error(conv, dtype, x, w, b)
    with cuconv.simulate():
        y = cuconv.conv2d(x.to(dtype), w.to(dtype), b.to(dtype), 1, 1, 1, groups)
        gx, gw, gb = torch.ops.cuconv.conv2d_backward(gy.to(dtype), x.to(dtype), w.to(dtype), [1, 1], [1, 1], [1, 1],
                                                      groups, [True, True, True])
    assert y.dtype == dtype
    assert (y.float() - ref).abs().max().item() <= 2 * torch_err + 1e-6
    # gradients: against float32 autograd, within twice torch's own error in dtype
    x32, w32, b32 = (t.clone().requires_grad_() for t in (x, w, b))
    conv(x32, w32, b32).backward(gy)
    xl, wl, bl = (t.to(dtype).requires_grad_() for t in (x, w, b))
    try:
        conv(xl, wl, bl).backward(gy.to(dtype))
        torch_grads = (xl.grad, wl.grad, bl.grad)
    except (RuntimeError, NotImplementedError):
        torch_grads = tuple(t.grad.to(dtype) for t in (x32, w32, b32))
    for got, r, t in zip((gx, gw, gb), (x32.grad, w32.grad, b32.grad), torch_grads):
        torch_grad_err = (t.float() - r).abs().max().item()
        assert (got.float() - r).abs().max().item() <= 2 * torch_grad_err + 1e-6


def test_max_pool2d_empty_window_and_batch_zero():
    # dilation 3 with padding 1: the window of output 0 covers only padding in one row
    x = torch.randn(1, 2, 1, 7, dtype=torch.float64)
    p = dict(kernel_size=(1, 3), stride=(1, 2), padding=(0, 1), dilation=(1, 3))
    with cuconv.simulate():
        y, idx = cuconv.max_pool2d(x, return_indices=True, **p)
        empty = cuconv.max_pool2d(torch.randn(0, 2, 4, 4), 2)
    yr, idxr = F.max_pool2d(x, return_indices=True, **p)
    torch.testing.assert_close(y, yr, rtol=0, atol=0)
    assert torch.equal(idx, idxr)
    assert empty.shape == (0, 2, 2, 2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_max_pool2d_half_precision_exact(dtype):
    x = torch.randn(2, 3, 7, 6).to(dtype)
    with cuconv.simulate():
        y, idx = cuconv.max_pool2d(x, 3, 2, 1, return_indices=True)
    yr, idxr = F.max_pool2d(x.float(), 3, 2, 1, return_indices=True)
    assert torch.equal(y.float(), yr) and torch.equal(idx, idxr)


def test_seed_cnn_forward_backward_matches_torch():
    torch.manual_seed(0)
    # 32x32 -> conv 30x30 -> pool 15x15 -> conv 13x13 -> pool 6x6: 64 * 6 * 6 = 2304 features
    layers = [cuconv.nn.Conv2d(3, 32, 3), torch.nn.ReLU(), cuconv.nn.MaxPool2d(2),
              cuconv.nn.Conv2d(32, 64, 3), torch.nn.ReLU(), cuconv.nn.MaxPool2d(2),
              torch.nn.Flatten(), torch.nn.Linear(2304, 10)]
    ours = torch.nn.Sequential(*layers).double()
    ref = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Conv2d(32, 64, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Flatten(), torch.nn.Linear(2304, 10)).double()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    target = torch.tensor([3, 7])
    with cuconv.simulate():
        loss = F.cross_entropy(ours(x), target)
        loss.backward()
    loss_ref = F.cross_entropy(ref(x), target)
    loss_ref.backward()
    torch.testing.assert_close(loss, loss_ref, rtol=1e-10, atol=1e-10)
    for (name, p), pr in zip(ours.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, pr.grad, rtol=1e-9, atol=1e-10, msg=lambda m: f"{name}: {m}")
