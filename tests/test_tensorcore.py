"""The tensor-core conv2d kernels (forward, grad input, grad weight: csrc/kernels/*_tensorcore.cuh on
the main loop of implicit_gemm_tensorcore.cuh) under the simulator and on the GPU when present
(the gpu_runner fixture: every configuration, dtype and 16-byte copy path), their configuration table and
chooser, and the simulator's emulation of mma.sync and ldmatrix (csrc/kernels/mma_sync.cuh,
ldmatrix.cuh) against the PTX ISA layouts, which this file writes out independently ("Matrix
Fragments for mma.m16n8k8 / m16n8k16", "ldmatrix")."""
import math

import pytest
import torch
import torch.nn.functional as F

import cuconv
from cuconv import _C
from cuconv.apps import sim_counts
from cuconv.apps.gpu_model import Layer
from tolerance import assert_within_torch_error

ops = torch.ops.cuconv

# ----------------------------------------------------------------- fragments, per the PTX ISA tables


def frag_a(A, kind, wrong=False):
    """Per-lane A registers [32, 4] (int32 bit patterns). wrong=True swaps two registers, the kind
    of slip a kernel could make."""
    regs = torch.zeros(32, 4, dtype=torch.int64)
    for lane in range(32):
        g, t = lane >> 2, lane & 3
        if kind == "tf32":  # a0 (g, t), a1 (g+8, t), a2 (g, t+4), a3 (g+8, t+4)
            vals = [A[g, t], A[g + 8, t], A[g, t + 4], A[g + 8, t + 4]]
            regs[lane] = torch.stack(vals).view(torch.int32).to(torch.int64)
        else:  # a0,a1 (g, 2t..2t+1); a2,a3 (g+8, 2t..); a4,a5 (g, 2t+8..); a6,a7 (g+8, 2t+8..)
            for r, (row, col) in enumerate([(g, 2 * t), (g + 8, 2 * t), (g, 2 * t + 8), (g + 8, 2 * t + 8)]):
                regs[lane, r] = pack16(A[row, col], A[row, col + 1])
    if wrong:
        regs[:, [1, 2]] = regs[:, [2, 1]]
    return regs.to(torch.int32)


def frag_b(B, kind):
    regs = torch.zeros(32, 2, dtype=torch.int64)
    for lane in range(32):
        g, t = lane >> 2, lane & 3
        if kind == "tf32":  # b0 (k = t), b1 (k = t+4), n = g
            regs[lane] = torch.stack([B[t, g], B[t + 4, g]]).view(torch.int32).to(torch.int64)
        else:  # b0,b1 (k = 2t..2t+1); b2,b3 (k = 2t+8..)
            regs[lane, 0] = pack16(B[2 * t, g], B[2 * t + 1, g])
            regs[lane, 1] = pack16(B[2 * t + 8, g], B[2 * t + 9, g])
    return regs.to(torch.int32)


def c_positions():
    """(row, col) of c0..c3 for each lane: (g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1)."""
    return [[((lane >> 2) + 8 * (i >> 1), 2 * (lane & 3) + (i & 1)) for i in range(4)] for lane in range(32)]


def to_frag_c(C):
    return torch.tensor([[C[r, c].item() for r, c in lane] for lane in c_positions()], dtype=torch.float32)


def from_frag_d(d):
    D = torch.empty(16, 8, dtype=torch.float32)
    for lane, pos in enumerate(c_positions()):
        for i, (r, c) in enumerate(pos):
            D[r, c] = d[lane, i]
    return D


def pack16(lo, hi):
    bits = torch.stack([lo, hi]).view(torch.int16).to(torch.int64) & 0xFFFF
    return int(bits[0]) | (int(bits[1]) << 16)


def tf32_truncate(x):
    """The tensor core reads only the top 19 bits of a tf32 operand."""
    return (x.view(torch.int32) & ~0x1FFF).view(torch.float32)


DTYPE = {"tf32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def random_mma(kind):
    k = 8 if kind == "tf32" else 16
    A = torch.randn(16, k).to(DTYPE[kind])
    B = torch.randn(k, 8).to(DTYPE[kind])
    C = torch.randn(16, 8)
    if kind == "tf32":
        expected = tf32_truncate(A).double() @ tf32_truncate(B).double() + C.double()
    else:
        expected = A.double() @ B.double() + C.double()
    return A, B, C, expected


@pytest.mark.parametrize("kind", ["tf32", "f16", "bf16"])
def test_emulated_mma_matches_matmul(kind):
    for _ in range(3):
        A, B, C, expected = random_mma(kind)
        d = ops._mma_sync_sim(frag_a(A, kind), frag_b(B, kind), to_frag_c(C), kind)
        torch.testing.assert_close(from_frag_d(d).double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["tf32", "f16"])
def test_wrong_fragment_mapping_fails(kind):
    A, B, C, expected = random_mma(kind)
    d = ops._mma_sync_sim(frag_a(A, kind, wrong=True), frag_b(B, kind), to_frag_c(C), kind)
    assert (from_frag_d(d).double() - expected).abs().max() > 0.1


def test_tf32_operands_are_truncated_by_the_mma():
    """Low mantissa bits of a tf32 operand are ignored, as on the GPU (the kernel rounds first)."""
    A = torch.zeros(16, 8)
    B = torch.zeros(8, 8)
    A[0, 0] = 1.0 + 2.0**-20  # below tf32 precision
    B[0, 0] = 1.0
    d = ops._mma_sync_sim(frag_a(A, "tf32"), frag_b(B, "tf32"), torch.zeros(32, 4), "tf32")
    assert from_frag_d(d)[0, 0].item() == 1.0


def test_tf32_round_is_nearest_even():
    ulp = 2.0**-10  # tf32 ulp at 1.0
    big = (2 - 2.0**-10) * 2.0**127  # the largest tf32
    cases = {
        1.0 + ulp / 2: 1.0,  # tie onto an even mantissa: down (ties away would give 1.0 + ulp)
        1.0 + 3 * ulp / 2: 1.0 + 2 * ulp,  # tie onto an even mantissa: up
        -(1.0 + 3 * ulp / 2): -(1.0 + 2 * ulp),
        1.0 + ulp / 2 + 2.0**-23: 1.0 + ulp,  # just above the tie
        1.0 + ulp / 2 - 2.0**-23: 1.0,  # just below
        big + 2.0**116: float("inf"),  # the tie past the largest tf32 (odd) rounds up, to infinity
        big + 2.0**115: big,
        float("inf"): float("inf"),
        float("-inf"): float("-inf"),
        2.0**-149: 0.0,  # the smallest subnormal: below half a tf32 subnormal ulp
    }
    x = torch.tensor(list(cases), dtype=torch.float32)
    assert ops._tf32_round_sim(x).tolist() == list(cases.values())
    # NaNs stay NaNs, also those whose payload is all in the 13 bits tf32 drops, or that would carry
    nans = torch.tensor([0x7FC00000, 0x7F800001, 0xFFFFFFFF - 2**32, 0x7FFFF000], dtype=torch.int32).view(torch.float32)
    assert torch.isnan(ops._tf32_round_sim(nans)).all()
    # random values and exact ties, against Python's round (half to even) on 11 significant bits
    r = torch.randn(4000) * 100
    ties = (ops._tf32_round_sim(r).view(torch.int32) | 0x1000).view(torch.float32)
    x = torch.cat([r, ties])
    y = ops._tf32_round_sim(x)
    assert ((y.view(torch.int32) & 0x1FFF) == 0).all()
    for v, got in zip(x.tolist(), y.tolist()):
        m, e = math.frexp(v)
        assert got == math.ldexp(round(m * 2**11), e - 11)


# ----------------------------------------------------------------- the convolution

# (N, C, H, W, K, R, S, stride, padding, dilation, groups)
SHAPES = [
    (2, 3, 9, 7, 5, 3, 3, (1, 1), [1, 1], (1, 1), 1),  # odd channels, partial M and N tiles, K dim 27
    (1, 8, 11, 10, 40, 3, 2, (2, 1), [1, 0, 2, 1], (2, 1), 1),  # two N tiles, asymmetric padding, dilation
    (2, 6, 6, 6, 4, 1, 1, (1, 1), [0, 0], (1, 1), 2),  # groups, 1x1
    (1, 20, 5, 5, 33, 3, 3, (1, 1), [1, 1], (1, 1), 1),  # K dim 180: several 16-deep slices
]


def reference(x, w, b, stride, padding, dilation, groups):
    pt, pl, pb, pr = padding if len(padding) == 4 else padding * 2
    xp = F.pad(x.double(), (pl, pr, pt, pb))
    return F.conv2d(xp, w.double(), None if b is None else b.double(), stride, 0, dilation, groups)


def torch_in_dtype(x, w, b, stride, padding, dilation, groups):
    pt, pl, pb, pr = padding if len(padding) == 4 else padding * 2
    return F.conv2d(F.pad(x, (pl, pr, pt, pb)), w, b, stride, 0, dilation, groups)


def make(shape, dtype, channels_last, with_bias=True):
    N, C, H, W, K, R, S, stride, padding, dilation, groups = shape
    # On the CPU even when a CUDA runner made CUDA the default device: the references are CPU float64.
    x = torch.randn(N, C, H, W, device="cpu").to(dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    w = (torch.randn(K, C // groups, R, S, device="cpu") / (C // groups * R * S) ** 0.5).to(dtype)
    b = torch.randn(K, device="cpu").to(dtype) if with_bias else None
    return x, w, b, (stride, padding, dilation, groups)


def on_runner(runner, fn, *tensors):
    """fn(*tensors) on the GPU runner named (the simulator on CPU tensors, or CUDA), result on the CPU."""
    if runner == "cuda":
        return fn(*(t.cuda() if t is not None else None for t in tensors)).cpu()
    with cuconv.simulate():
        return fn(*tensors)


def run_tc(x, w, b, geometry, tf32, config=-1, runner="sim"):
    stride, padding, dilation, groups = geometry
    return on_runner(runner, lambda x, w, b: ops._conv2d_tensorcore(x, w, b, list(stride), padding, list(dilation),
                                                                     groups, tf32, config), x, w, b)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES[:3])
@pytest.mark.parametrize("channels_last", [False, True])
def test_conv_16bit_error_within_twice_torch(gpu_runner, shape, dtype, channels_last):
    x, w, b, geometry = make(shape, dtype, channels_last)
    out = run_tc(x, w, b, geometry, False, runner=gpu_runner.name)
    assert out.dtype == dtype
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    ref = reference(x, w, b, *geometry)
    ours = (out.double() - ref).abs().max().item()
    theirs = (torch_in_dtype(x, w, b, *geometry).double() - ref).abs().max().item()
    assert ours <= 2 * theirs + 1e-6 * ref.abs().max().item(), (ours, theirs)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_conv_channels_last_reads_any_weight_layout_alike(gpu_runner, dtype):
    """channels_last input takes its weight as K x R x S x C (16-byte cp.async along the reduction):
    a channels_last weight as given, a contiguous, strided or misaligned one laid out by the runner.
    The kernel and its sums are the same, so the bits are."""
    shape = (2, 16, 7, 6, 24, 3, 2, (1, 2), [1, 0, 2, 1], (1, 2), 2)  # 8 channels per group, dilation
    x, w, b, geometry = make(shape, dtype, channels_last=True)
    tf32 = dtype == torch.float32
    base = run_tc(x, w, b, geometry, tf32, runner=gpu_runner.name)
    storage = torch.randn(w.numel() + 1).to(dtype)
    offset = storage[1:].view(w.shape[0], w.shape[2], w.shape[3], w.shape[1]).permute(0, 3, 1, 2)
    offset.copy_(w)  # a channels_last view one element into its storage: not 16-byte aligned
    strided = torch.randn(w.shape[0], w.shape[1], w.shape[2], 2 * w.shape[3]).to(dtype)[..., ::2]
    strided.copy_(w)
    for weight in (w.to(memory_format=torch.channels_last), offset, strided):
        assert torch.equal(run_tc(x, weight, b, geometry, tf32, runner=gpu_runner.name), base)
    ref = reference(x, w, b, *geometry)
    tol = 2e-2 if dtype == torch.float16 else 2e-3  # float16 storage, or TF32 operands
    assert ((base.double() - ref).abs().max() <= tol * ref.abs().max()).item()


@pytest.mark.parametrize("shape", SHAPES)
def test_conv_tf32(gpu_runner, shape):
    x, w, b, geometry = make(shape, torch.float32, False)
    out = run_tc(x, w, b, geometry, True, runner=gpu_runner.name)
    ref = reference(x, w, b, *geometry)
    rel = ((out.double() - ref).norm() / ref.norm()).item()
    assert rel < 1e-3


def test_conv_tf32_really_rounds(gpu_runner):
    """TF32 has 10 mantissa bits: the result differs from float32 math by far more than float
    rounding (a kernel that skipped the tensor-core path would not)."""
    x, w, b, geometry = make(SHAPES[3], torch.float32, True, with_bias=False)
    out = run_tc(x, w, b, geometry, True, runner=gpu_runner.name)
    ref = reference(x, w, b, *geometry)
    rel = ((out.double() - ref).norm() / ref.norm()).item()
    assert 1e-5 < rel < 1e-3


def test_conv_rejects_untyped_requests():
    x, w, b, geometry = make(SHAPES[0], torch.float32, False)
    with pytest.raises(RuntimeError, match="tf32"):
        run_tc(x, w, b, geometry, False)
    with pytest.raises(RuntimeError, match="simulate"):
        ops._conv2d_tensorcore(x.half(), w.half(), None, [1, 1], [1, 1], [1, 1], 1, False)


# ----------------------------------------------------------------- ldmatrix


def ldmatrix_reference(words, offsets, num):
    """PTX ISA: lanes 8i..8i+7 address the rows of matrix i; lane l receives, in register i, the
    32-bit word (l % 4) of row l // 4 of matrix i."""
    out = torch.empty(32, num, dtype=torch.int32)
    for lane in range(32):
        for i in range(num):
            row_byte = int(offsets[8 * i + lane // 4])
            out[lane, i] = words[row_byte // 4 + lane % 4]
    return out


@pytest.mark.parametrize("num", [1, 2, 4])
def test_ldmatrix_layout(num):
    words = torch.randint(-2**31, 2**31 - 1, (512,), dtype=torch.int32)
    offsets = torch.randperm(128)[:32].to(torch.int64) * 16  # 16-byte aligned rows anywhere in the buffer
    got = ops._ldmatrix_sim(words, offsets, num)
    assert torch.equal(got, ldmatrix_reference(words, offsets, num))
    # A kernel that addresses the wrong rows (here lanes' addresses rotated) gets other data.
    wrong = ops._ldmatrix_sim(words, offsets.roll(1), num)
    assert not torch.equal(wrong, ldmatrix_reference(words, offsets, num))


def ldmatrix_trans_reference(words, offsets):
    """PTX ISA, .trans: lane l receives, in register i, the 16-bit elements l // 4 of rows
    2 * (l % 4) and 2 * (l % 4) + 1 of matrix i, low half first."""
    halves = words.view(torch.int16)
    out = torch.empty(32, 4, dtype=torch.int32)
    for lane in range(32):
        for i in range(4):
            lo, hi = (int(halves[int(offsets[8 * i + 2 * (lane % 4) + h]) // 2 + lane // 4]) & 0xFFFF for h in (0, 1))
            out[lane, i] = torch.tensor(lo | (hi << 16), dtype=torch.int64).to(torch.int32)
    return out


def test_ldmatrix_trans_layout():
    words = torch.randint(-2**31, 2**31 - 1, (512,), dtype=torch.int32)
    offsets = torch.randperm(128)[:32].to(torch.int64) * 16
    got = ops._ldmatrix_sim(words, offsets, 4, True)
    assert torch.equal(got, ldmatrix_trans_reference(words, offsets))
    assert not torch.equal(got, ops._ldmatrix_sim(words, offsets, 4))  # not the plain layout
    with pytest.raises(RuntimeError, match="num 4"):
        ops._ldmatrix_sim(words, offsets, 2, True)


def test_ldmatrix_rejects_misaligned_and_foreign_rows():
    words = torch.zeros(256, dtype=torch.int32)
    offsets = torch.arange(32, dtype=torch.int64) * 16
    offsets[3] += 4  # not 16-byte aligned
    with pytest.raises(RuntimeError, match="misaligned ldmatrix row"):
        ops._ldmatrix_sim(words, offsets, 4)
    offsets = torch.arange(32, dtype=torch.int64) * 16
    offsets[5] = 256 * 4  # one past the shared buffer
    with pytest.raises(RuntimeError, match="not in the block's shared memory"):
        ops._ldmatrix_sim(words, offsets, 4)
    offsets[5] = 256 * 4
    ops._ldmatrix_sim(words, torch.where(torch.arange(32) >= 8, offsets, torch.arange(32) * 16), 1)  # x1 ignores lanes 8+


# ----------------------------------------------------------------- grad input / grad weight, configs

CONFIGS = {"large": 0, "medium": 1, "narrow": 2, "small_channel": 3, "wide": 4, "tall": 5}

# (N, C, H, W, K, R, S, stride, padding, dilation, groups)
BACKWARD_SHAPES = [
    (2, 3, 9, 7, 5, 3, 3, (1, 1), [1, 1], (1, 1), 1),  # first-layer channels, partial tiles
    (1, 8, 11, 10, 40, 3, 2, (2, 1), [1, 0, 2, 1], (2, 1), 1),  # stride 2 (dgrad's divisibility), dilation, asymmetric padding
    (2, 16, 6, 6, 16, 1, 1, (1, 1), [0, 0], (1, 1), 2),  # groups of 8 channels (16-byte cp.async in channels_last)
    (2, 16, 8, 8, 16, 3, 3, (1, 1), [1, 1], (1, 1), 1),  # 16 channels, P*Q = 64: 16-byte cp.async in both layouts
    # grad input's stride phases: stride 3 with dilation 2 (every phase reached, taps 2 apart in the filter)
    (2, 16, 7, 9, 16, 3, 3, (3, 2), [1, 2], (2, 1), 1),
    # stride 2 with dilation 2: odd rows and columns are reached by no tap (zeros without MMAs)
    (2, 8, 9, 9, 16, 3, 3, (2, 2), [2, 2], (2, 2), 1),
    # 1x1 at stride 3 on 2 rows: phases without positions, and phases without taps
    (1, 16, 2, 5, 8, 1, 1, (3, 2), [0, 0], (1, 1), 1),
]


def pad4(padding):
    return padding if len(padding) == 4 else padding * 2


def grads(x, w, gy, geometry, dtype):
    """torch's grad input and grad weight, computed in `dtype`."""
    stride, padding, dilation, groups = geometry
    pt, pl, pb, pr = pad4(padding)
    xr = x.detach().to(dtype).requires_grad_()
    wr = w.detach().to(dtype).requires_grad_()
    y = F.conv2d(F.pad(xr, (pl, pr, pt, pb)), wr, None, stride, 0, dilation, groups)
    return torch.autograd.grad(y, (xr, wr), gy.to(dtype))


def make_backward(shape, dtype, channels_last):
    x, w, _, geometry = make(shape, dtype, channels_last, with_bias=False)
    stride, padding, dilation, groups = geometry
    pt, pl, pb, pr = pad4(padding)
    out = F.conv2d(F.pad(x.double(), (pl, pr, pt, pb)), w.double(), None, stride, 0, dilation, groups)
    gy = torch.randn(out.shape, device="cpu").to(dtype)
    if channels_last:
        gy = gy.to(memory_format=torch.channels_last)
    return x, w, gy, geometry


def run_backward(which, gy, x, w, geometry, tf32=False, config=-1, runner="sim"):
    stride, padding, dilation, groups = geometry
    op = ops._conv2d_backward_input_tensorcore if which == "input" else ops._conv2d_backward_weight_tensorcore
    return on_runner(runner, lambda gy, x, w: op(gy, x, w, list(stride), padding, list(dilation), groups, tf32, config),
                     gy, x, w)


@pytest.mark.parametrize("which", ["input", "weight"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", BACKWARD_SHAPES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_backward_16bit_error_within_twice_torch(gpu_runner, which, shape, dtype, channels_last):
    x, w, gy, geometry = make_backward(shape, dtype, channels_last)
    out = run_backward(which, gy, x, w, geometry, runner=gpu_runner.name)
    idx = 0 if which == "input" else 1
    ref = grads(x, w, gy, geometry, torch.float64)[idx]
    theirs = grads(x, w, gy, geometry, dtype)[idx]
    if which == "input":
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        assert out.is_contiguous(memory_format=fmt)
    assert_within_torch_error(out, theirs, ref)


@pytest.mark.parametrize("which", ["input", "weight"])
@pytest.mark.parametrize("shape", BACKWARD_SHAPES)
def test_backward_tf32(gpu_runner, which, shape):
    channels_last = shape[1] == 16  # the 16-channel shapes in channels_last: 16-byte float copies
    x, w, gy, geometry = make_backward(shape, torch.float32, channels_last)
    out = run_backward(which, gy, x, w, geometry, tf32=True, runner=gpu_runner.name)
    ref = grads(x, w, gy, geometry, torch.float64)[0 if which == "input" else 1]
    rel = ((out.double() - ref).norm() / ref.norm()).item()
    assert 1e-6 < rel < 1e-3  # TF32 rounding, not float32 math


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("dtype,channels_last", [(torch.float16, True), (torch.float32, False)])
def test_every_config_runs_every_op(gpu_runner, config, dtype, channels_last):
    """Each table entry, forced, on a shape with a multi-slice reduction (wgrad: split-K) and partial tiles."""
    shape = (2, 16, 8, 8, 40, 3, 3, (1, 1), [1, 1], (1, 1), 1)
    x, w, gy, geometry = make_backward(shape, dtype, channels_last)
    tf32, c, r = dtype == torch.float32, CONFIGS[config], gpu_runner.name
    outs = [run_tc(x, w, None, geometry, tf32, c, runner=r), run_backward("input", gy, x, w, geometry, tf32, c, runner=r),
            run_backward("weight", gy, x, w, geometry, tf32, c, runner=r)]
    refs = [reference(x, w, None, *geometry), *grads(x, w, gy, geometry, torch.float64)]
    for out, ref in zip(outs, refs):
        rel = ((out.double() - ref).norm() / ref.norm()).item()
        assert rel < (1e-3 if tf32 else 2e-3), (config, rel)


# channels_last 16-bit shapes that take the wide tile's tap walk (16-byte copies of both operands)
WIDE_SHAPES = [
    # 8 channels: one slice spans four taps; K = 136: a second, partial column tile; 198 rows: partial row tiles
    (2, 8, 9, 11, 136, 3, 3, (1, 1), [1, 1], (1, 1), 1),
    # 48 channels: a tap boundary inside a slice; stride 2 (grad input's phases), dilation, asymmetric padding
    (1, 48, 10, 9, 24, 3, 2, (2, 1), [1, 0, 2, 1], (2, 1), 1),
    # groups of 16 channels, 1x1
    (2, 32, 7, 7, 64, 1, 1, (1, 1), [0, 0], (1, 1), 2),
]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", WIDE_SHAPES)
def test_wide_tile_matches_large_bit_for_bit(gpu_runner, shape, dtype):
    """The wide tile (64x64 warp tiles, one reduction position per thread stepped by adds) and the
    tall one (the large tile's outputs in 64x32 warp tiles) sum each output as the large tile does:
    the same bits, forward and grad input, within twice torch's error. Float (TF32) runs the tall
    tile; a wide one asked for runs as the large."""
    x, w, gy, geometry = make_backward(shape, dtype, True)
    r, tf32 = gpu_runner.name, dtype == torch.float32
    for run in (lambda c: run_tc(x, w, None, geometry, tf32, c, runner=r),
                lambda c: run_backward("input", gy, x, w, geometry, tf32, c, runner=r)):
        large = run(CONFIGS["large"])
        assert torch.equal(run(CONFIGS["wide"]), large)
        assert torch.equal(run(CONFIGS["tall"]), large)
    if tf32:
        ref = reference(x, w, None, *geometry)
        out = run_tc(x, w, None, geometry, True, CONFIGS["tall"], runner=r)
        assert 1e-6 < ((out.double() - ref).norm() / ref.norm()).item() < 1e-3  # rounded to TF32, not exact
        return
    assert_within_torch_error(run_tc(x, w, None, geometry, False, CONFIGS["wide"], runner=r),
                              torch_in_dtype(x, w, None, *geometry), reference(x, w, None, *geometry))
    assert_within_torch_error(run_backward("input", gy, x, w, geometry, False, CONFIGS["wide"], runner=r),
                              grads(x, w, gy, geometry, dtype)[0], grads(x, w, gy, geometry, torch.float64)[0])


@pytest.fixture
def sim_device():
    def set_props(**props):
        _C._set_sim_device(props)
    yield set_props
    _C._set_sim_device({})


def plan(x_shape, w_shape, op, dtype=torch.float16, stride=(1, 1), padding=(1, 1), groups=1, channels_last=False):
    x, w = torch.empty(x_shape, dtype=dtype), torch.empty(w_shape, dtype=dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    with cuconv.simulate():  # the simulated device's choice (16-bit CPU tensors are the simulator's)
        kernel, *config_stages_splits = ops._gpu_conv2d_plan(x, w, list(stride), list(padding), [1, 1], groups, op, True)
        return config_stages_splits


def test_chooser_picks_each_entry_for_its_shapes(sim_device):
    sim_device(sm_count=108)  # an A100
    # ResNet first layer (C_in = 3, 7x7 or 3x3: reductions 147 / 27): 27 fits one slice
    assert plan((32, 3, 224, 224), (64, 3, 3, 3), "fprop")[0] == CONFIGS["small_channel"]
    assert plan((32, 3, 224, 224), (64, 3, 3, 3), "fprop")[1] == 1  # no pipeline for one slice
    # a big layer: plenty of 128x64 tiles
    assert plan((32, 64, 56, 56), (64, 64, 3, 3), "fprop")[:2] == [CONFIGS["large"], 3]
    assert plan((32, 64, 56, 56), (64, 64, 3, 3), "dgrad")[0] == CONFIGS["large"]
    # a late layer at batch 1: too few large tiles to fill 108 SMs
    assert plan((1, 256, 14, 14), (256, 256, 3, 3), "fprop")[0] == CONFIGS["medium"]
    # few output channels: 32-wide tiles (fprop's columns are K; dgrad's are C)
    assert plan((8, 64, 28, 28), (16, 64, 3, 3), "fprop")[0] == CONFIGS["narrow"]
    assert plan((8, 16, 28, 28), (64, 16, 3, 3), "dgrad")[0] == CONFIGS["narrow"]
    # grad weight: few output tiles, so the reduction is split
    config, stages, splits = plan((32, 64, 56, 56), (64, 64, 3, 3), "wgrad")
    assert splits > 1 and stages == 3
    # tiles that would be mostly padding give way to narrower ones: grad weight's rows are the 64
    # output channels (half of a 128-row tile), a 7x7 stem's columns are 3 x 49 = 147 (192 on 64-wide tiles)
    assert config == CONFIGS["medium"]
    assert plan((32, 3, 224, 224), (64, 3, 7, 7), "wgrad", stride=(2, 2), padding=(3, 3))[0] == CONFIGS["narrow"]
    assert plan((32, 128, 56, 56), (128, 128, 3, 3), "wgrad")[0] == CONFIGS["large"]  # 128 rows: no padding
    # 128-channel layers in channels_last, 16-bit: both operands by 16-byte copies, 128-column tiles
    # without padding: the wide tile, forward and grad input; not for NCHW or 64 columns. Float (TF32)
    # takes the tall tile there (64x64 warp tiles would spill)
    big = ((32, 128, 56, 56), (128, 128, 3, 3))
    assert plan(*big, "fprop", channels_last=True)[:2] == [CONFIGS["wide"], 3]
    assert plan(*big, "dgrad", torch.bfloat16, channels_last=True)[0] == CONFIGS["wide"]
    assert plan(*big, "fprop", torch.float32, channels_last=True)[0] == CONFIGS["tall"]
    assert plan(*big, "dgrad", torch.float32, channels_last=True)[0] == CONFIGS["tall"]
    assert plan(*big, "fprop")[0] == CONFIGS["large"]
    assert plan(*big, "fprop", torch.float32)[0] == CONFIGS["large"]  # NCHW: no 16-byte operands
    # 64 output channels, the same 16-byte operands: the large tile's outputs in 4 warps of 64x32
    assert plan((32, 64, 56, 56), (64, 64, 3, 3), "fprop", channels_last=True)[0] == CONFIGS["tall"]
    assert plan((32, 64, 56, 56), (64, 64, 3, 3), "fprop", torch.float32, channels_last=True)[0] == CONFIGS["tall"]
    # grad weight in channels_last: both operands by 16-byte copies along their rows (cp16_mn), so the
    # wide tile too; not with channels that are not whole 16-byte runs
    assert plan(*big, "wgrad", channels_last=True)[0] == CONFIGS["wide"]
    assert plan((32, 252, 28, 28), (252, 252, 3, 3), "wgrad", channels_last=True)[0] == CONFIGS["large"]


def test_chooser_fits_stages_to_shared_memory(sim_device):
    shape = ((32, 64, 56, 56), (64, 64, 3, 3))
    sim_device(sm_count=108, smem_per_block_optin=48 * 1024)  # no opt-in beyond 48 KiB
    # large tile: one stage is 192 rows x 80 B (half) = 15 KiB, or 192 x 144 B (float) = 27 KiB
    assert plan(*shape, "fprop", torch.float16)[:2] == [CONFIGS["large"], 3]
    assert plan(*shape, "fprop", torch.float32)[:2] == [CONFIGS["large"], 1]
    sim_device(smem_per_block_optin=20 * 1024)  # even one large float stage does not fit: a smaller tile
    assert plan(*shape, "fprop", torch.float32)[:2] == [CONFIGS["medium"], 1]
    assert plan(*shape, "fprop", torch.float16)[:2] == [CONFIGS["large"], 1]


def test_reduced_stages_and_opt_in_run_correctly(sim_device):
    """With the default device (163 KiB opt-in) a 3-stage float large tile takes 81 KiB of dynamic
    shared memory, legal only through the opt-in the launcher sets; with 48 KiB it runs 1 stage."""
    shape = (1, 16, 12, 12, 64, 3, 3, (1, 1), [1, 1], (1, 1), 1)
    x, w, b, geometry = make(shape, torch.float32, True, with_bias=False)
    expected = reference(x, w, None, *geometry)
    for optin in (None, 48 * 1024):
        if optin:
            sim_device(smem_per_block_optin=optin)
        out = run_tc(x, w, None, geometry, True, config=CONFIGS["large"])
        assert ((out.double() - expected).norm() / expected.norm()).item() < 1e-3


def test_router_takes_tensor_cores_for_16bit_backward(sim_device):
    """The simulator runners use the tensor-core kernels for 16-bit inputs on sm_80+: the router's
    gradients are those of the test ops. The emulated MMA sums in the SIMT kernels' order, so the bits
    cannot tell the paths apart; a device whose shared-memory opt-in is too small for any tensor-core
    tile can: the routed backward fails there on sm_80 and runs (SIMT) on sm_75."""
    shape = (2, 16, 8, 8, 16, 3, 3, (1, 1), [1, 1], (1, 1), 1)
    x, w, gy, geometry = make_backward(shape, torch.float16, True)
    with cuconv.simulate():
        gx, gw, _ = ops.conv2d_backward(gy, x, w, [1, 1], [1, 1], [1, 1], 1, [True, True, False])
    assert torch.equal(gx, run_backward("input", gy, x, w, geometry))
    assert torch.equal(gw, run_backward("weight", gy, x, w, geometry))
    sim_device(smem_per_block_optin=4096)
    for mask in ([True, False, False], [False, True, False]):
        with cuconv.simulate(), pytest.raises(RuntimeError, match="tensor-core kernel needs"):
            ops.conv2d_backward(gy, x, w, [1, 1], [1, 1], [1, 1], 1, mask)
    sim_device(cc_major=7, cc_minor=5)
    with cuconv.simulate():
        gx75, gw75, _ = ops.conv2d_backward(gy, x, w, [1, 1], [1, 1], [1, 1], 1, [True, True, False])
    ref_x, ref_w = grads(x, w, gy, geometry, torch.float64)
    assert_within_torch_error(gx75, grads(x, w, gy, geometry, torch.float16)[0], ref_x)
    assert_within_torch_error(gw75, grads(x, w, gy, geometry, torch.float16)[1], ref_w)


def test_router_empty_batch_16bit():
    x = torch.randn(0, 8, 5, 5).half()
    w = torch.randn(4, 8, 3, 3).half()
    gy = torch.randn(0, 4, 5, 5).half()
    with cuconv.simulate():
        gx, gw, gb = ops.conv2d_backward(gy, x, w, [1, 1], [1, 1], [1, 1], 1, [True, True, True])
    assert gx.shape == x.shape and torch.equal(gw, torch.zeros_like(w)) and torch.equal(gb, torch.zeros(4).half())


# channels_last 16-bit grad weights that take the 16-byte row copies (cp16_mn): the reduction's
# positions walked by adds across rows and images, kTcBK = 32 positions a slice
ROWS16_WGRAD_SHAPES = [
    (3, 16, 9, 7, 72, 3, 3, (1, 1), [1, 1], (1, 1), 1),  # P*Q = 63: a slice wraps rows and images
    (2, 64, 5, 6, 128, 3, 3, (2, 2), [1, 1], (1, 1), 1),  # P*Q = 9 < 32: several images a slice; stride 2
    (1, 48, 10, 9, 24, 3, 2, (2, 1), [1, 0, 2, 1], (2, 1), 1),  # dilation, asymmetric padding
    (2, 32, 7, 7, 64, 1, 1, (1, 1), [0, 0], (1, 1), 2),  # groups of 16 channels
    (2, 8, 12, 12, 8, 3, 3, (1, 1), [1, 1], (1, 1), 1),  # 288 positions: split-K chunks
]


def misaligned(t):
    """t's values at a storage offset of one element: 16-byte copies are refused, element-wise loads run."""
    base = torch.empty(t.numel() + 1, dtype=t.dtype)[1:]
    out = base.as_strided(t.shape, t.stride())
    out.copy_(t)
    return out


@pytest.mark.parametrize("config", ["large", "medium", "wide", "tall"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", ROWS16_WGRAD_SHAPES)
def test_wgrad_row_copies_match_elementwise_bit_for_bit(gpu_runner, shape, dtype, config):
    """Grad weight by 16-byte row copies into k-major swizzled tiles (ldmatrix.trans for 16-bit, word
    loads for TF32) sums every output as the element-wise loads do: the same bits, within twice
    torch's error (TF32: its rounding's error, not float32's)."""
    x, w, gy, geometry = make_backward(shape, dtype, True)
    c, r, tf32 = CONFIGS[config], gpu_runner.name, dtype == torch.float32
    rows = run_backward("weight", gy, x, w, geometry, tf32, c, runner=r)
    xm, gym = misaligned(x), misaligned(gy)
    assert xm.stride() == x.stride() and xm.data_ptr() % 16 != 0
    assert torch.equal(rows, run_backward("weight", gym, xm, w, geometry, tf32, c, runner=r))
    ref = grads(x, w, gy, geometry, torch.float64)[1]
    if tf32:
        assert 1e-6 < ((rows.double() - ref).norm() / ref.norm()).item() < 1e-3
    else:
        assert_within_torch_error(rows, grads(x, w, gy, geometry, dtype)[1], ref)


@pytest.mark.parametrize("dtype", ["f16", "tf32"])
def test_wgrad_row_copies_are_free_of_bank_conflicts(dtype):
    """The swizzled k-major tiles: no shared-memory bank conflict in the copies or (16-bit) the
    ldmatrix fragment loads."""
    layer = Layer("t", 2, 64, 8, 8, 128, 3, 3, 1, 1)
    configs = ("large", "wide", "tall") if dtype == "f16" else ("large", "medium", "tall")  # TF32: not the wide tile
    for config in configs:
        row = sim_counts.counted(layer, "wgrad", dtype, "nhwc", CONFIGS[config])
        assert "Conv2dWgradTcMnProblem" in row["signature"]  # the row-copy kernel ran
        assert row["counters"]["cp_async_smem_accesses"] > 0
        assert (row["counters"]["ldmatrix_accesses"] > 0) == (dtype == "f16")  # TF32: word loads
        assert row["cp_async_smem_conflicts_per_access"] == 0 and row["ldmatrix_conflicts_per_access"] == 0
        assert row["counters"]["smem_store_accesses"] == 0  # nothing register-staged
        assert row["matches_model"]


def test_wgrad_split_k_is_deterministic():
    shape = (2, 8, 12, 12, 8, 3, 3, (1, 1), [1, 1], (1, 1), 1)  # 288 output positions: 2 chunks
    x, w, gy, geometry = make_backward(shape, torch.bfloat16, False)
    assert plan(tuple(x.shape), tuple(w.shape), "wgrad", torch.bfloat16)[2] == 2
    first = run_backward("weight", gy, x, w, geometry)
    assert torch.equal(first, run_backward("weight", gy, x, w, geometry))
    assert_within_torch_error(first, grads(x, w, gy, geometry, torch.bfloat16)[1],
                              grads(x, w, gy, geometry, torch.float64)[1])
