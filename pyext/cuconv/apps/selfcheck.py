"""`python -m cuconv selfcheck`: run every op against torch on each available runner and print a verdict."""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from .. import _C, ops
from ..simulate import simulate

CONV_CASES = [
    ((2, 3, 9, 8), (4, 3, 3, 3), dict(stride=1, padding=1)),
    ((2, 4, 11, 7), (6, 2, 3, 2), dict(stride=(2, 1), padding=(1, 0), dilation=(2, 1), groups=2)),
    ((1, 4, 6, 6), (4, 1, 3, 3), dict(padding=1, groups=4)),
]
POOL_CASES = [((2, 3, 9, 8), dict(kernel_size=2)), ((2, 3, 9, 8), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True))]


def _runners():
    yield "cpu", "cpu", contextlib.nullcontext
    yield "simulator", "cpu", simulate
    if _C.with_cuda and torch.cuda.is_available():
        yield "cuda", "cuda", contextlib.nullcontext


def _check_runner(device, context) -> list[str]:
    failures = []
    d = torch.float64
    for channels_last in (False, True):
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        for xs, ws, kw in CONV_CASES:
            x = torch.randn(*xs, dtype=d, device=device).contiguous(memory_format=fmt).requires_grad_()
            w = torch.randn(*ws, dtype=d, device=device, requires_grad=True)
            b = torch.randn(ws[0], dtype=d, device=device, requires_grad=True)
            with context():
                out = ops.conv2d(x, w, b, **kw)
                grads = torch.autograd.grad(out, (x, w, b), torch.ones_like(out))
            ref = F.conv2d(x, w, b, **kw)
            ref_grads = torch.autograd.grad(ref, (x, w, b), torch.ones_like(ref))
            for name, a, r in zip(("output", "grad_input", "grad_weight", "grad_bias"), (out, *grads), (ref, *ref_grads)):
                if not torch.allclose(a, r, rtol=1e-7, atol=1e-9):
                    failures.append(f"conv2d {xs} {kw} {name}{' channels_last' if channels_last else ''}")
        for xs, kw in POOL_CASES:
            x = torch.randn(*xs, dtype=d, device=device).contiguous(memory_format=fmt).requires_grad_()
            with context():
                out, idx = ops.max_pool2d(x, return_indices=True, **kw)
                (g,) = torch.autograd.grad(out, x, torch.ones_like(out))
            ref, ridx = F.max_pool2d(x, return_indices=True, **kw)
            (rg,) = torch.autograd.grad(ref, x, torch.ones_like(ref))
            if not (torch.equal(out, ref) and torch.equal(idx, ridx) and torch.equal(g, rg)):
                failures.append(f"max_pool2d {xs} {kw}{' channels_last' if channels_last else ''}")
    return failures


def run(args) -> int:
    torch.manual_seed(0)
    ok = True
    for name, device, context in _runners():
        try:
            failures = _check_runner(device, context)
        except NotImplementedError as e:  # a runner this build does not have
            print(f"{name:10s} skipped: {str(e).splitlines()[0]}")
            continue
        ok &= not failures
        print(f"{name:10s} {'ok' if not failures else 'FAILED'}: conv2d and max_pool2d, forward and backward, "
              f"float64, NCHW and channels_last")
        for f in failures:
            print("    mismatch:", f)
    print("cuconv selfcheck:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


def register(subparsers):
    p = subparsers.add_parser("selfcheck", help="run every op against torch on each runner and print a verdict")
    p.set_defaults(func=run)
