"""The tensor-core conv2d forward (csrc/kernels/conv2d_fprop_tensorcore.cuh) in the simulator, and
the simulator's emulation of mma.sync (csrc/kernels/mma_sync.cuh) against the PTX ISA fragment
layouts, which this file writes out independently ("Matrix Fragments for mma.m16n8k8 / m16n8k16")."""
import pytest
import torch
import torch.nn.functional as F

import cuconv

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


def test_tf32_round_is_nearest_ties_away():
    ulp = 2.0**-10  # tf32 ulp at 1.0
    cases = {
        1.0 + ulp / 2: 1.0 + ulp,  # tie: away from zero (round-to-even would give 1.0)
        -(1.0 + ulp / 2): -(1.0 + ulp),
        1.0 + ulp / 2 - 2.0**-23: 1.0,  # just below the tie
        1.0 + 3 * ulp / 2: 1.0 + 2 * ulp,
        float("inf"): float("inf"),
    }
    x = torch.tensor(list(cases), dtype=torch.float32)
    assert ops._tf32_round_sim(x).tolist() == list(cases.values())
    assert torch.isnan(ops._tf32_round_sim(torch.tensor([float("nan")]))).all()
    # random values: within half a tf32 ulp, 13 low bits clear
    r = torch.randn(10000) * 100
    y = ops._tf32_round_sim(r)
    assert ((y.view(torch.int32) & 0x1FFF) == 0).all()
    assert ((y - r).abs() <= r.abs() * 2.0**-11).all()


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
    x = torch.randn(N, C, H, W).to(dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    w = (torch.randn(K, C // groups, R, S) / (C // groups * R * S) ** 0.5).to(dtype)
    b = torch.randn(K).to(dtype) if with_bias else None
    return x, w, b, (stride, padding, dilation, groups)


def run_tc(x, w, b, geometry, tf32):
    stride, padding, dilation, groups = geometry
    with cuconv.simulate():
        return ops._conv2d_tensorcore(x, w, b, list(stride), padding, list(dilation), groups, tf32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES[:3])
@pytest.mark.parametrize("channels_last", [False, True])
def test_conv_16bit_error_within_twice_torch(shape, dtype, channels_last):
    x, w, b, geometry = make(shape, dtype, channels_last)
    out = run_tc(x, w, b, geometry, False)
    assert out.dtype == dtype
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    ref = reference(x, w, b, *geometry)
    ours = (out.double() - ref).abs().max().item()
    theirs = (torch_in_dtype(x, w, b, *geometry).double() - ref).abs().max().item()
    assert ours <= 2 * theirs + 1e-6 * ref.abs().max().item(), (ours, theirs)


@pytest.mark.parametrize("shape", SHAPES)
def test_conv_tf32(shape):
    x, w, b, geometry = make(shape, torch.float32, False)
    out = run_tc(x, w, b, geometry, True)
    ref = reference(x, w, b, *geometry)
    rel = ((out.double() - ref).norm() / ref.norm()).item()
    assert rel < 1e-3


def test_conv_tf32_really_rounds():
    """TF32 has 10 mantissa bits: the result differs from float32 math by far more than float
    rounding (a kernel that skipped the tensor-core path would not)."""
    x, w, b, geometry = make(SHAPES[3], torch.float32, True, with_bias=False)
    out = run_tc(x, w, b, geometry, True)
    ref = reference(x, w, b, *geometry)
    rel = ((out.double() - ref).norm() / ref.norm()).item()
    assert 1e-5 < rel < 1e-3


def test_conv_rejects_untyped_requests():
    x, w, b, geometry = make(SHAPES[0], torch.float32, False)
    with pytest.raises(RuntimeError, match="tf32"):
        run_tc(x, w, b, geometry, False)
    with pytest.raises(RuntimeError, match="simulate"):
        ops._conv2d_tensorcore(x.half(), w.half(), None, [1, 1], [1, 1], [1, 1], 1, False)
