"""The CPU runner's AVX-512 path (csrc/cpu/gemm_avx512.cpp) against the AVX2 path and float64:
the 8x16 micro-kernel, the small-output GEMM of first-layer grad weights (C in registers over all
positions), the row-vectorised forward and grad weight of few-channel NCHW layers, and the ISA
switch itself, and the AVX-512 Winograd transforms (NHWC, 16 channels per step). The AVX-512 kernels sum every output element in the same order as the AVX2 ones (the
row-vectorised forward too), so the two paths must agree bit for bit, not just within a tolerance;
only the row-vectorised grad weight (conv2d_wgrad_rows_avx512.cpp) sums in another order, and is
held to the float64 bound.
On a CPU without AVX-512 these tests are skipped; the other ISA paths are covered by every test
that takes the `isa` fixture (tests/conftest.py)."""

import pytest
import torch
import torch.nn.functional as F

import cuconv  # noqa: F401  (loads the operators)
from conftest import CPU_ISA_PATHS

ops = torch.ops.cuconv

needs_avx512 = pytest.mark.skipif("avx512" not in CPU_ISA_PATHS, reason="this CPU has no AVX-512")


def _all_passes(x, w, b, stride, pad, dil, groups, gy):
    y = ops.conv2d(x, w, b, stride, pad, dil, groups)
    y_relu = ops.conv2d_bias_relu(x, w, b, stride, pad, dil, groups)
    gx, gw, gb = ops.conv2d_backward(gy, x, w, stride, pad, dil, groups, [True, True, True])
    return {"forward": y, "forward + ReLU": y_relu, "grad input": gx, "grad weight": gw, "grad bias": gb}


def _reference(x, w, b, stride, pad, dil, groups, gy):
    x = x.detach().double().requires_grad_()
    w = w.detach().double().requires_grad_()
    b = b.detach().double().requires_grad_()
    y = F.conv2d(F.pad(x, (pad[1], pad[3], pad[0], pad[2])), w, b, stride, 0, dil, groups)
    y.backward(gy.double())
    return {"forward": y.detach(), "forward + ReLU": y.detach().relu(), "grad input": x.grad, "grad weight": w.grad,
            "grad bias": b.grad}


# (N, C, H, W, K, R, S, stride, padding, dilation, groups): the small-output grad weight (rows
# C*R*S = 1..64 in panels of at most 14, columns 1..128 in blocks of one or two vectors, over >= 64
# positions), the 8-row tiles with partial rows and columns, Winograd, grouped and strided convs.
CASES = [
    (2, 3, 32, 32, 32, 3, 3, (1, 1), [0, 0, 0, 0], (1, 1), 1),    # seed CNN first layer: 27 x 32
    (3, 3, 17, 19, 64, 3, 3, (1, 1), [1, 1, 1, 1], (1, 1), 1),    # ResNet stem: 27 x 64
    (2, 1, 12, 13, 5, 1, 1, (1, 1), [0, 0, 0, 0], (1, 1), 1),     # 1 x 5
    (2, 2, 11, 9, 17, 3, 3, (1, 1), [1, 0, 1, 2], (1, 1), 1),     # 18 x 17: 14 + 4 rows, 16 + 1 columns
    (2, 3, 14, 15, 33, 3, 3, (2, 1), [1, 1, 0, 0], (2, 1), 1),    # 27 x 33: columns past one vector pair
    (2, 32, 9, 9, 15, 1, 1, (1, 1), [0, 0, 0, 0], (1, 1), 1),     # 32 x 15, read in place (NHWC)
    (2, 4, 10, 10, 12, 3, 3, (1, 1), [1, 1, 1, 1], (1, 1), 2),    # groups: 18 x 6 per group
    (2, 19, 12, 11, 33, 3, 3, (1, 1), [1, 1, 1, 1], (1, 1), 1),   # 8-row tiles, partial both ways
    (2, 32, 9, 10, 40, 3, 3, (1, 1), [1, 1, 1, 1], (1, 1), 1),    # Winograd (auto), blocks of 8 tiles
    (3, 20, 7, 9, 36, 3, 3, (1, 1), [1, 0, 2, 1], (1, 1), 1),     # Winograd: 16 + 4 and 16 + 16 + 4 channel lanes
    (2, 48, 6, 7, 72, 3, 3, (1, 1), [1, 1, 1, 1], (1, 1), 1),     # Winograd grad weight 48 x 72: small-output GEMM
    (2, 13, 11, 11, 21, 3, 3, (2, 2), [1, 1, 1, 1], (1, 1), 1),   # stride 2: im2col GEMMs, NHWC grad input by phases
    (3, 40, 12, 10, 100, 1, 1, (2, 2), [0, 0, 0, 0], (1, 1), 1),  # 1x1 shortcut: 40 x 100 small-output grad weight (NHWC)
    (17, 9, 8, 8, 20, 3, 3, (2, 2), [1, 1, 1, 1], (1, 1), 1),     # phases over several images: uneven C rows
    (0, 3, 8, 8, 16, 3, 3, (1, 1), [1, 1, 1, 1], (1, 1), 1),      # batch 0
]


def _runs_row_kernels(case, channels_last, Q):
    """Whether the AVX-512 path runs the row-vectorised kernels (rows_avx512_eligible)."""
    N, C, H, W, K, R, S, stride, pad, dil, groups = case
    return (not channels_last and groups == 1 and stride == (1, 1) and dil == (1, 1) and C * R * S <= 32
            and Q >= 16)


@needs_avx512
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
def test_avx512_matches_avx2_bitwise_and_float64(case, channels_last, monkeypatch):
    N, C, H, W, K, R, S, stride, pad, dil, groups = case
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(N, C, H, W).contiguous(memory_format=fmt)
    w = torch.randn(K, C // groups, R, S)
    b = torch.randn(K)
    P = (H + pad[0] + pad[2] - dil[0] * (R - 1) - 1) // stride[0] + 1
    Q = (W + pad[1] + pad[3] - dil[1] * (S - 1) - 1) // stride[1] + 1
    gy = torch.randn(N, K, P, Q).contiguous(memory_format=fmt)
    out = {}
    for path in ("avx2", "avx512"):
        monkeypatch.setenv("CUCONV_CPU_ISA", path)
        out[path] = _all_passes(x, w, b, stride, pad, dil, groups, gy)
    ref = _reference(x, w, b, stride, pad, dil, groups, gy)
    for what, r in ref.items():
        a2, a5 = out["avx2"][what], out["avx512"][what]
        if not (what == "grad weight" and _runs_row_kernels(case, channels_last, Q)):
            assert torch.equal(a2, a5), f"{what}: AVX-512 and AVX2 differ (max {(a2 - a5).abs().max().item():.3e})"
        err = (a5.double() - r).abs().max().item() if r.numel() else 0.0
        scale = max(r.abs().max().item(), 1e-30) if r.numel() else 1.0
        assert err <= 1e-5 * scale, f"{what}: max error {err:.3e}, scale {scale:.3e}"


def test_row_kernels_run_on_the_first_layers():
    # The cases above must include the row-vectorised kernel's shapes (seed CNN and ResNet stems).
    assert _runs_row_kernels(CASES[0], False, 30) and _runs_row_kernels(CASES[1], False, 19)
    assert not _runs_row_kernels(CASES[0], True, 30)


@needs_avx512
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_first_layer_grad_weight_is_deterministic_across_thread_counts(fmt, monkeypatch):
    # The first-layer grad weight (small-output GEMM over fixed batch chunks in NHWC, the row
    # kernel over whole output-channel blocks in NCHW): the bits must not depend on the thread count.
    monkeypatch.setenv("CUCONV_CPU_ISA", "avx512")
    x = torch.randn(16, 3, 32, 32).contiguous(memory_format=fmt)
    w = torch.randn(32, 3, 3, 3)
    gy = torch.randn(16, 32, 30, 30).contiguous(memory_format=fmt)
    threads = torch.get_num_threads()
    results = []
    try:
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            results.append(ops.conv2d_backward(gy, x, w, [1, 1], [0, 0, 0, 0], [1, 1], 1, [False, True, False])[1])
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(results[0], r) for r in results[1:])


def test_bad_isa_setting_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("CUCONV_CPU_ISA", "sse9")
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    with pytest.raises(RuntimeError, match="CUCONV_CPU_ISA must be avx512, avx2 or portable"):
        ops.conv2d(x, w, None, [1, 1], [0, 0, 0, 0], [1, 1], 1)


def test_forced_path_falls_back_when_the_cpu_lacks_it(monkeypatch):
    # Forcing any valid path always runs (the best one the CPU has when it lacks the forced one).
    x, w = torch.randn(2, 3, 9, 9), torch.randn(4, 3, 3, 3)
    ref = F.conv2d(x.double(), w.double())
    for path in ("avx512", "avx2", "portable"):
        monkeypatch.setenv("CUCONV_CPU_ISA", path)
        y = ops.conv2d(x, w, None, [1, 1], [0, 0, 0, 0], [1, 1], 1)
        assert (y.double() - ref).abs().max().item() <= 1e-5 * ref.abs().max().item()


# The row-vectorised NCHW kernels at their edges: output channels past a block (grad weight: 4,
# forward: 12; K = 1, 4, 5, 9, 13, 17, 33), taps past a grad-weight block of 6 (C*R*S = 1, 7, 32),
# rows of exactly one vector, one lane past it, the widest masked step and past one 32-wide chunk
# (Q = 16, 17, 31, 32, 33), padding on one side only, and a batch of 1.
ROWS_CASES = [
    (1, 1, 16, 16, 1, 1, 1, [0, 0, 0, 0]),      # Q = 16, one tap, one channel
    (2, 1, 9, 17, 5, 1, 7, [0, 0, 0, 0]),       # 7 taps in one row (6 + 1), Q = 11 -> not eligible
    (2, 1, 9, 23, 5, 1, 7, [0, 0, 0, 0]),       # Q = 17
    (3, 2, 12, 33, 33, 4, 4, [0, 0, 0, 0]),     # 32 taps, K = 33, Q = 30
    (2, 3, 10, 31, 17, 3, 3, [1, 0, 0, 2]),     # padding bottom/left only, Q = 31
    (2, 3, 10, 32, 9, 3, 3, [0, 1, 2, 1]),      # Q = 32
    (2, 3, 11, 33, 4, 3, 3, [1, 1, 1, 1]),      # Q = 33: two whole vectors and one lane
    (1, 3, 9, 47, 13, 3, 3, [1, 0, 1, 0]),      # Q = 45: a 32-wide chunk and a 13-wide one; K = 12 + 1
]


@needs_avx512
@pytest.mark.parametrize("case", ROWS_CASES, ids=[str(i) for i in range(len(ROWS_CASES))])
def test_rows_kernels_edges_against_float64(case, monkeypatch):
    N, C, H, W, K, R, S, pad = case
    x = torch.randn(N, C, H, W + 3)[..., 1:W + 1]  # a row pitch that is not the width
    w = torch.randn(K, C, R, S)
    b = torch.randn(K)
    P, Q = H + pad[0] + pad[2] - R + 1, W + pad[1] + pad[3] - S + 1
    gy = torch.randn(N, K, P, Q)
    ref = _reference(x, w, b, (1, 1), pad, (1, 1), 1, gy)
    out = {}
    for path in ("avx2", "avx512"):
        monkeypatch.setenv("CUCONV_CPU_ISA", path)
        out[path] = (ops.conv2d(x, w, b, [1, 1], pad, [1, 1], 1), ops.conv2d_bias_relu(x, w, b, [1, 1], pad, [1, 1], 1),
                     ops.conv2d_backward(gy, x, w, [1, 1], pad, [1, 1], 1, [False, True, False])[1])
    y, y_relu, gw = out["avx512"]
    assert torch.equal(y, out["avx2"][0]) and torch.equal(y_relu, out["avx2"][1])  # same sums, same order
    assert torch.equal(y_relu, y.clamp_min(0))
    for got, r in ((y, ref["forward"]), (gw, ref["grad weight"])):
        assert (got.double() - r).abs().max().item() <= 1e-5 * r.abs().max().item()
    again = ops.conv2d_backward(gy, x, w, [1, 1], pad, [1, 1], 1, [False, True, False])[1]
    assert torch.equal(gw, again)
