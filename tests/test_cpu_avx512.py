"""The CPU runner's AVX-512 path (csrc/cpu/gemm/avx512.cpp and the row kernels) against the AVX2
path and float64, on the shared cases tagged for it (tests/cases.py): the 8x32 micro-kernel, the
small-output GEMM of first-layer grad weights (C in registers over all positions), the
row-vectorised forward and grad weight of few-channel NCHW layers, the AVX-512 Winograd transforms,
grouped_taps and the float32 grad input as a forward conv; and the ISA switch itself. Where both
paths run the same strategy, the AVX-512 kernels sum every output element in the same order as the
AVX2 ones (the row-vectorised forward and grouped_taps too), so the two must agree bit for bit, not
just within a tolerance; the strategies only AVX-512 has (the row-vectorised grad weight, the
float32 grad input as a forward conv) sum in another order, and are held to the float64 bound.
On a CPU without AVX-512 these tests are skipped; the other ISA paths are covered by every test
that takes the `isa` fixture (tests/conftest.py)."""

import pytest
import torch
import torch.nn.functional as F

import cuconv  # noqa: F401  (loads the operators)
from cases import CONV, layout
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


# The shared cases tagged for the AVX-512 path (small-output grad weights, row kernels, 8-row tiles,
# the AVX-512 Winograd transforms): AVX-512 against AVX2 on each.
AVX512_CASES = [c for c in CONV if c.isa == "avx512"]


@needs_avx512
@pytest.mark.parametrize("case", AVX512_CASES, ids=lambda c: c.name)
def test_avx512_matches_avx2_bitwise_and_float64(case):
    x, w, b = case.tensors()
    stride, pad, dil, groups = case.args()
    with cuconv.config.flags(cpu_conv_algo=case.algo):
        y = ops.conv2d(x, w, b, stride, pad, dil, groups)
        gy = torch.randn(y.shape).contiguous(memory_format=layout(x))
        out, plan = {}, {}
        for path in ("avx2", "avx512"):
            cuconv.config.set(cpu_isa=path)
            out[path] = _all_passes(x, w, b, stride, pad, dil, groups, gy)
            # nchw_as_nhwc runs the NHWC plan inside: compare that one
            nhwc = ops._cpu_conv2d_plan(x.contiguous(memory_format=torch.channels_last), w, stride, pad, dil, groups)
            plan[path] = [n if s == "nchw_as_nhwc" else s
                          for s, n in zip(ops._cpu_conv2d_plan(x, w, stride, pad, dil, groups), nhwc)]
    # The pass each output comes from, and whether both paths ran the same strategy for it.
    same = [s2 == s5 and s5 != "rows_avx512" for s2, s5 in zip(plan["avx2"], plan["avx512"])]
    from_pass = {"forward": 0, "forward + ReLU": 0, "grad input": 1, "grad weight": 2, "grad bias": 2}
    ref = _reference(x, w, b, stride, pad, dil, groups, gy)
    for what, r in ref.items():
        a2, a5 = out["avx2"][what], out["avx512"][what]
        if same[from_pass[what]] or what == "grad bias":
            assert torch.equal(a2, a5), f"{what}: AVX-512 and AVX2 differ (max {(a2 - a5).abs().max().item():.3e})"
        err = (a5.double() - r).abs().max().item() if r.numel() else 0.0
        scale = max(r.abs().max().item(), 1e-30) if r.numel() else 1.0
        assert err <= 1e-5 * scale, f"{what}: max error {err:.3e}, scale {scale:.3e}"


@needs_avx512
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("C,m,k,stride,dil", [(40, 1, 3, 1, 1), (48, 1, 5, 2, 1), (24, 1, 7, 1, 1), (20, 1, 3, 2, 2),
                                              (8, 2, 3, 1, 1)])
def test_depthwise_avx512_matches_avx2_bitwise(dtype, fmt, C, m, k, stride, dil):
    # The depthwise kernels are one vector source compiled per path; every sum is one lane's chain
    # in the same order on both (the register blocks and the row kernels change no order), so the
    # bits agree in float32 and float64 alike.
    x = torch.randn(3, C, 17, 15, dtype=dtype).contiguous(memory_format=fmt)
    w, b = torch.randn(C * m, 1, k, k, dtype=dtype), torch.randn(C * m, dtype=dtype)
    args = ([stride, stride], [k // 2 * dil] * 4, [dil, dil], C)
    assert ops._cpu_conv2d_plan(x, w, *args) == ["depthwise"] * 3
    y = ops.conv2d(x, w, b, *args)
    gy = torch.randn(y.shape, dtype=dtype).contiguous(memory_format=fmt)
    out = {}
    for path in ("avx2", "avx512"):
        cuconv.config.set(cpu_isa=path)
        out[path] = _all_passes(x, w, b, *args, gy)
    for what, a2 in out["avx2"].items():
        assert torch.equal(a2, out["avx512"][what]), what


@needs_avx512
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_first_layer_grad_weight_is_deterministic_across_thread_counts(fmt, monkeypatch):
    # The first-layer grad weight (small-output GEMM over fixed batch chunks in NHWC, the row
    # kernel over whole output-channel blocks in NCHW): the bits must not depend on the thread count.
    cuconv.config.set(cpu_isa="avx512")
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


@needs_avx512
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("xs,k,pad", [((3, 3, 32, 32), 32, 1), ((2, 3, 23, 37), 20, 1), ((2, 2, 19, 21), 13, 0),
                                      ((0, 3, 16, 16), 8, 1)], ids=["seed", "odd", "valid", "n0"])
def test_16bit_row_kernels_round_the_float32_sums(dtype, xs, k, pad):
    """A 16-bit first layer on the row kernels: the input widened per image, the forward's sums
    rounded as they are stored (partial 16-lane chunks, output-channel blocks short of 12), the
    grad weight summed in float32 from widened grad_output: the bits of the float32 pass on the
    widened tensors, rounded once (outputs poisoned first)."""
    x = torch.randn(xs).to(dtype)
    w = (torch.randn(k, xs[1], 3, 3) / 5).to(dtype)
    b = torch.randn(k).to(dtype)
    args = ([1, 1], [pad] * 4, [1, 1], 1)
    with cuconv.config.flags(cpu_isa="avx512"):
        assert ops._cpu_conv2d_plan(x, w, *args)[::2] == ["rows_avx512"] * 2
        for fn in (ops.conv2d, ops.conv2d_bias_relu):
            y, y32 = fn(x, w, b, *args), fn(x.float(), w.float(), b.float(), *args)
            assert y.dtype == dtype and torch.equal(y, y32.to(dtype))
        gy = torch.randn(y.shape).to(dtype)
        gw = ops.conv2d_backward(gy, x, w, *args, [False, True, False])[1]
        gw32 = ops.conv2d_backward(gy.float(), x.float(), w.float(), *args, [False, True, False])[1]
    assert gw.dtype == dtype and torch.equal(gw, gw32.to(dtype))


def test_bad_isa_setting_is_a_clear_error():
    with pytest.raises(ValueError, match="cpu_isa .CUCONV_CPU_ISA. must be one of auto, amx, avx512_bf16, avx512, avx2, portable"):
        cuconv.config.set(cpu_isa="sse9")


def test_forced_path_falls_back_when_the_cpu_lacks_it(monkeypatch):
    # Forcing any valid path always runs (the best one the CPU has when it lacks the forced one).
    x, w = torch.randn(2, 3, 9, 9), torch.randn(4, 3, 3, 3)
    ref = F.conv2d(x.double(), w.double())
    for path in ("amx", "avx512_bf16", "avx512", "avx2", "portable"):
        cuconv.config.set(cpu_isa=path)
        y = ops.conv2d(x, w, None, [1, 1], [0, 0, 0, 0], [1, 1], 1)
        assert (y.double() - ref).abs().max().item() <= 1e-5 * ref.abs().max().item()
        y16 = ops.conv2d(x.bfloat16(), w.bfloat16(), None, [1, 1], [0, 0, 0, 0], [1, 1], 1)
        assert (y16.double() - ref).abs().max().item() <= 2e-2 * ref.abs().max().item()
