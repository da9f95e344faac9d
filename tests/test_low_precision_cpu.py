"""float16 and bfloat16 on the CPU fallback: every pass of the shared conv cases (tests/cases.py)
on each ISA path and, for bfloat16, each bfloat16 GEMM path (AVX512_BF16, AMX), each within twice
torch's own error in the same dtype (both against float64 of the same 16-bit inputs); max-pool
exact; outputs in the input's dtype and layout; the plan of a 16-bit call is the float32 plan its
float32 copies run, except that a bfloat16 call on AMX leaves Winograd for the tile products."""
import pytest
import torch
import torch.nn.functional as F

import cuconv  # noqa: F401  (loads the operators)
from cases import CONV, POOL, layout
from conftest import BF16_GEMM_PATHS, CPU_ISA_PATHS
from tolerance import assert_within_torch_error

ops = torch.ops.cuconv
DTYPES = [torch.float16, torch.bfloat16]
# torch's own 16-bit CPU convolutions (the comparison) are slow for float16: the smaller cases.
SMALL = [c for c in CONV if c.macs <= 60_000]
# Every (cpu_isa, dtype) this machine can run: both dtypes on each ISA path, bfloat16 also on the
# bfloat16 GEMM paths.
PATHS = ([(isa, d) for isa in CPU_ISA_PATHS for d in DTYPES] + [(isa, torch.bfloat16) for isa in BF16_GEMM_PATHS])
PATH_IDS = [f"{isa}-{'bf16' if d == torch.bfloat16 else 'f16'}" for isa, d in PATHS]


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


@pytest.mark.parametrize("path,dtype", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("case", SMALL, ids=lambda c: c.name)
def test_conv2d_16bit_within_twice_torch(path, case, dtype):
    with cuconv.config.flags(cpu_isa=path):
        _check_16bit_conv(case, dtype)


def _check_16bit_conv(case, dtype):
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


@pytest.mark.parametrize("dtype", DTYPES, ids=["f16", "bf16"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_16bit_grad_bias_is_the_float32_sum_rounded_once(isa, dtype, channels_last):
    """The 16-bit grad bias reads grad_output in place (AVX-512) or through a float32 copy: either
    way the float32 pass's sums, in its order, rounded once. 70 channels: a partial block of 64 and
    a partial vector; 7 x 9 positions: a partial vector per plane."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(5, 6, 9, 11).to(dtype).contiguous(memory_format=fmt)
    w = torch.randn(70, 6, 3, 3).to(dtype)
    gy = (torch.randn(5, 70, 7, 9) * 100).to(dtype).contiguous(memory_format=fmt)
    args = ([1, 1], [0, 0, 0, 0], [1, 1], 1)
    gb = ops.conv2d_backward(gy, x, w, *args, [False, False, True])[2]
    gb32 = ops.conv2d_backward(gy.float(), x.float(), w.float(), *args, [False, False, True])[2]
    assert gb.dtype == dtype and torch.equal(gb, gb32.to(dtype))


# 1x1 convs without padding: (input shape, output channels, stride)
POINTWISE = [
    ((2, 64, 9, 7), 40, (2, 2)),  # a strided shortcut, odd sizes
    ((3, 5, 6, 11), 7, (1, 1)),  # few channels: runs shorter than a vector
    ((1, 300, 5, 5), 33, (3, 3)),  # C over a GEMM K block of 256
    ((2, 16, 13, 9), 130, (2, 1)),  # unequal strides; NHWC rows span chunks of 128 pixels
    # NCHW images over 1 MiB in float32: strided (its values gathered along the stride), and read
    # whole (widened a plane's positions at a time, not the image at once). torch 2.14's own
    # channels_last backward of a 1x1 stride-2 conv with 4 or 8 channels at 300 x 260 crashes, so
    # not those.
    ((1, 16, 200, 90), 8, (2, 2)),
    ((1, 16, 131, 127), 12, (1, 1)),
    # NCHW planes of 16 and 32 outputs, images joined in one GEMM: each tile of 16 columns rounded
    # straight into one image's planes (other plane sizes, above, split their tiles' rows)
    ((3, 24, 8, 7), 20, (2, 2)),
    ((5, 20, 4, 8), 36, (1, 1)),
]


@pytest.mark.parametrize("path,dtype", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("xs,k,stride", POINTWISE, ids=["s2", "few", "c300", "s21", "big", "big-dense", "s2-pq16", "pq32"])
def test_pointwise_16bit_forward_and_grad_input(path, dtype, channels_last, xs, k, stride):
    """16-bit 1x1 forwards and grad inputs without padding run the float32 GEMM on chunks converted
    in cache (pointwise_16bit) on every path but AMX's bfloat16 tiles, and a strided grad weight runs
    unstrided on the input pixels read: within twice torch's error, with bias and the fused ReLU,
    zeros off the stride grid, in the input's layout, and the bits of the float32 kernels' sums
    rounded once."""
    x = torch.randn(xs).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = (torch.randn(k, xs[1], 1, 1) / xs[1] ** 0.5).to(dtype)
    b = torch.randn(k).to(dtype)
    args = (list(stride), [0, 0, 0, 0], [1, 1], 1)
    amx_bf16 = path == "amx" and dtype == torch.bfloat16
    with cuconv.config.flags(cpu_isa=path):
        fprop, dgrad, _ = ops._cpu_conv2d_plan(x, w, *args)
        assert fprop == ("amx_direct" if amx_bf16 else "pointwise_16bit")
        assert dgrad == "pointwise_16bit" or (amx_bf16 and stride != (1, 1) and dgrad == "amx_phases")
        y = ops.conv2d(x, w, b, *args)
        assert y.dtype == dtype and y.is_contiguous(memory_format=layout(x))
        assert torch.equal(ops.conv2d_bias_relu(x, w, b, *args), y.clamp_min(0))
        gy = torch.randn(y.shape).to(dtype).contiguous(memory_format=layout(x))
        gx, gw, _ = ops.conv2d_backward(gy, x, w, *args, [True, True, False])
        assert gx.dtype == dtype and gx.is_contiguous(memory_format=layout(x))
        y32 = ops.conv2d(x.float(), w.float(), b.float(), *args)
        gx32 = ops.conv2d_backward(gy.float(), x.float(), w.float(), *args, [True, False, False])[0]
        # a strided grad weight is the unstrided one's on the pixels read (a quarter of the copies at stride 2)
        read = x.float()[:, :, ::stride[0], ::stride[1]][:, :, :y.shape[2], :y.shape[3]].contiguous(
            memory_format=layout(x))
        gw32 = ops.conv2d_backward(gy.float(), read, w.float(), [1, 1], *args[1:], [False, True, False])[1]
    theirs = torch_passes(x.float(), w.float(), b.float(), args, gy.float())
    exact = torch_passes(x.double(), w.double(), b.double(), args, gy.double())
    assert_within_torch_error(y, theirs[0].to(dtype), exact[0])
    assert_within_torch_error(gx, theirs[1].to(dtype), exact[1])
    assert_within_torch_error(gw, theirs[2].to(dtype), exact[2])
    # the float32 kernels' sums rounded once (a bfloat16 call on a bfloat16 GEMM path takes its dot products)
    if not (path in BF16_GEMM_PATHS and dtype == torch.bfloat16):
        assert torch.equal(y, y32.to(dtype)) and torch.equal(gx, gx32.to(dtype))
        if not amx_bf16:
            assert torch.equal(gw, gw32.to(dtype))


# Cases reaching each GEMM strategy that converts its 16-bit stream a block at a time (takes_blocks16):
# (input shape, output channels, kernel, stride, padding, dilation, groups, channels_last) -> the
# (forward, grad input, grad weight) plan on the AVX2 and portable paths.
BLOCKS16 = [
    ((3, 3, 17, 15), 20, 3, 1, 1, 1, 1, False, ("nchw_im2col", "nchw_col2im", "im2col")),  # first layer
    ((3, 3, 17, 15), 20, 3, 1, 1, 1, 1, True, ("nhwc_interleaved", "nhwc_col2im", "interleaved")),
    ((2, 40, 19, 17), 24, 3, 2, 1, 1, 1, False, ("nchw_via_nhwc", "nchw_col2im", "window_runs")),
    ((2, 40, 19, 17), 24, 3, 2, 1, 1, 1, True, ("nhwc_rows", "nhwc_phases", "window_runs")),
    ((2, 24, 15, 13), 36, 3, 1, 2, 2, 1, True, ("nhwc_im2col", "nhwc_col2im", "im2col")),  # dilated
    # GEMM K of 270: the sums of the first K block in float32, the second's rounded into the output
    ((2, 30, 13, 11), 20, 3, 1, 1, 2, 1, True, ("nhwc_im2col", "nhwc_col2im", "im2col")),
    ((2, 30, 13, 11), 26, 3, 1, 1, 2, 1, False, ("nchw_im2col", "nchw_col2im", "im2col")),
    # 2 groups of 22 -> 18 channels (groups of 8k channels take grouped_taps on AVX2)
    ((2, 44, 10, 9), 36, 3, 1, 1, 1, 2, True, ("nhwc_interleaved", "nhwc_col2im", "interleaved")),
    ((2, 72, 9, 9), 36, 1, 2, 0, 1, 2, True, ("nhwc_rows", "nhwc_col2im", "pixel_cols")),
    ((2, 64, 9, 9), 32, 1, 1, 0, 1, 2, False, ("nchw_direct", "nchw_col2im", "im2col")),
    ((2, 72, 9, 9), 40, 1, 2, 0, 1, 1, True, ("pointwise_16bit", "pointwise_16bit", "direct")),  # strided 1x1
    ((0, 3, 9, 9), 8, 3, 1, 1, 1, 1, False, ("nchw_im2col", "nchw_col2im", "im2col")),  # batch 0
    ((3, 24, 3, 3), 20, 3, 1, 1, 1, 1, True, ("nhwc_taps", "nhwc_taps", "window_runs")),  # small map
]


@pytest.mark.parametrize("path", [p for p in CPU_ISA_PATHS if p != "avx512"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f16", "bf16"])
@pytest.mark.parametrize("xs,k,kernel,stride,pad,dil,groups,channels_last,plan", BLOCKS16,
                         ids=["first", "first-nhwc", "s2", "s2-nhwc", "dil-nhwc", "k270-nhwc", "k270", "g2-nhwc", "1x1-s2-g2-nhwc", "1x1-g2",
                              "1x1-s2-nhwc", "n0", "taps-nhwc"])
def test_16bit_gemm_strategies_convert_blocks(path, dtype, xs, k, kernel, stride, pad, dil, groups, channels_last,
                                              plan):
    """The GEMM strategies round the forward's sums into the 16-bit output, and widen grad_output for
    the grad input and grad weight, a block at a time: each pass gives the bits of the float32 pass on
    the widened tensors, rounded once (every element written: outputs are poisoned first), in the
    input's layout."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(xs).to(dtype).contiguous(memory_format=fmt)
    w = (torch.randn(k, xs[1] // groups, kernel, kernel) / (xs[1] * kernel) ** 0.5).to(dtype)
    b = torch.randn(k).to(dtype)
    args = ([stride] * 2, [pad] * 4, [dil] * 2, groups)
    with cuconv.config.flags(cpu_isa=path):
        assert tuple(ops._cpu_conv2d_plan(x, w, *args)) == plan
        y = ops.conv2d_bias_relu(x, w, b, *args)
        gy = torch.randn(y.shape).to(dtype).contiguous(memory_format=fmt)
        gx, gw, _ = ops.conv2d_backward(gy, x, w, *args, [True, True, False])
        y32 = ops.conv2d_bias_relu(x.float(), w.float(), b.float(), *args)
        gx32, gw32, _ = ops.conv2d_backward(gy.float(), x.float(), w.float(), *args, [True, True, False])
    for o, r in ((y, y32), (gx, gx32), (gw, gw32)):
        assert o.dtype == dtype and torch.equal(o, r.to(dtype))
    assert y.is_contiguous(memory_format=fmt) and gx.is_contiguous(memory_format=fmt)


# 3x3 stride-1 convs on Winograd: (input shape, output channels, padding); channel counts off the
# 8-lane groups, odd maps (partial output tiles; NCHW rows stored as channel pairs where Q is even).
WINOGRAD16 = [((3, 64, 17, 15), 72, 1), ((2, 67, 9, 6), 60, 1), ((1, 64, 6, 5), 32, 0), ((2, 32, 9, 16), 48, 1),
              ((0, 64, 8, 8), 64, 1)]


@pytest.mark.parametrize("path", CPU_ISA_PATHS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f16", "bf16"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("xs,k,pad", WINOGRAD16, ids=["odd", "c67", "valid", "c32", "n0"])
def test_16bit_winograd_converts_in_its_transforms(path, dtype, channels_last, xs, k, pad):
    """On every ISA path Winograd's transforms widen 16-bit activations as they load them (or, on
    AVX-512, as an NCHW forward input is copied channels-last) and round the output as they store
    it: every pass gives the bits of the float32 pass on the widened tensors, rounded once (outputs
    poisoned first), bias and ReLU included, in the input's layout; channel counts that leave
    partial 16-lane groups included."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(xs).to(dtype).contiguous(memory_format=fmt)
    w = (torch.randn(k, xs[1], 3, 3) / (3 * xs[1] ** 0.5)).to(dtype)
    b = torch.randn(k).to(dtype)
    args = ([1, 1], [pad] * 4, [1, 1], 1)
    with cuconv.config.flags(cpu_isa=path):
        assert ops._cpu_conv2d_plan(x, w, *args) == ["winograd"] * 3
        for fn in (ops.conv2d, ops.conv2d_bias_relu):
            y, y32 = fn(x, w, b, *args), fn(x.float(), w.float(), b.float(), *args)
            assert y.dtype == dtype and torch.equal(y, y32.to(dtype))
        gy = torch.randn(y.shape).to(dtype).contiguous(memory_format=fmt)
        gx, gw, _ = ops.conv2d_backward(gy, x, w, *args, [True, True, False])
        gx32, gw32, _ = ops.conv2d_backward(gy.float(), x.float(), w.float(), *args, [True, True, False])
    assert torch.equal(gx, gx32.to(dtype)) and torch.equal(gw, gw32.to(dtype))
    if xs[0]:
        assert y.is_contiguous(memory_format=fmt) and gx.is_contiguous(memory_format=fmt)


def test_pointwise_16bit_leaves_other_shapes():
    """Padding (a border of zeros), 3x3 and groups keep the float32 copies' plan; batch 0 and
    cpu_conv_algo forced to gemm as well."""
    x, w = torch.randn(2, 16, 8, 8).half(), torch.randn(8, 16, 1, 1).half()
    assert ops._cpu_conv2d_plan(x, w, [1, 1], [0, 0, 0, 0], [1, 1], 1)[0] == "pointwise_16bit"
    assert ops._cpu_conv2d_plan(x, w, [1, 1], [1, 1, 1, 1], [1, 1], 1)[0] != "pointwise_16bit"
    assert ops._cpu_conv2d_plan(x, w, [1, 1], [0, 0, 1, 0], [1, 1], 1)[0] != "pointwise_16bit"  # bottom row padded
    assert ops._cpu_conv2d_plan(x, w[:, :8], [1, 1], [0, 0, 0, 0], [1, 1], 2)[0] != "pointwise_16bit"
    assert ops._cpu_conv2d_plan(x, torch.randn(8, 16, 3, 3).half(), [1, 1], [1, 1, 1, 1], [1, 1], 1)[0] != \
        "pointwise_16bit"
    assert ops._cpu_conv2d_plan(x[:0], w, [1, 1], [0, 0, 0, 0], [1, 1], 1)[0] != "pointwise_16bit"
    assert ops.conv2d(x[:0], w, None, [1, 1], [0, 0, 0, 0], [1, 1], 1).shape == (0, 8, 8, 8)
    with cuconv.config.flags(cpu_conv_algo="gemm"):
        assert ops._cpu_conv2d_plan(x, w, [1, 1], [0, 0, 0, 0], [1, 1], 1)[0] != "pointwise_16bit"


def test_16bit_reports_the_float32_plan():
    case = next(c for c in CONV if c.plan[0] == "nhwc_rows")
    x, w, _ = case.tensors()
    assert ops._cpu_conv2d_plan(x.half(), w.half(), *case.args()) == ops._cpu_conv2d_plan(x, w, *case.args())


@pytest.mark.skipif("amx" not in BF16_GEMM_PATHS, reason="this CPU (or its OS) gives no AMX tiles")
def test_bfloat16_on_amx_plans():
    """On AMX a bfloat16 conv leaves Winograd for the tile products; undilated with 16 channels or
    more it runs amx_direct, at stride 1 its grad input as a forward conv (as_forward, itself
    amx_direct), strided one forward per stride phase (amx_phases); with 16 channels or more,
    dilated or not, its grad weight runs amx_direct; float32 and float16 keep their plans."""
    x, w = torch.randn(2, 32, 10, 10), torch.randn(48, 32, 3, 3)
    args = ([1, 1], [1, 1, 1, 1], [1, 1], 1)
    with cuconv.config.flags(cpu_isa="amx"):
        assert ops._cpu_conv2d_plan(x, w, *args) == ["winograd"] * 3
        assert ops._cpu_conv2d_plan(x.half(), w.half(), *args) == ["winograd"] * 3
        fprop, dgrad, wgrad = ops._cpu_conv2d_plan(x.bfloat16(), w.bfloat16(), *args)
        assert (fprop, dgrad, wgrad) == ("amx_direct", "as_forward", "amx_direct")
        strided = ([2, 2], [1, 1, 1, 1], [1, 1], 1)
        fprop, dgrad, wgrad = ops._cpu_conv2d_plan(x.bfloat16(), w.bfloat16(), *strided)
        assert (fprop, dgrad, wgrad) == ("amx_direct", "amx_phases", "amx_direct")
        dilated = ([1, 1], [2, 2, 2, 2], [2, 2], 1)
        fprop, _, wgrad = ops._cpu_conv2d_plan(x.bfloat16(), w.bfloat16(), *dilated)
        assert fprop != "amx_direct" and wgrad == "amx_direct"
        # Under 16 input channels the forward runs unfolded (a 1x1 conv over 3 x 3 x 8 window values),
        # the grad weight a GEMM plan; a window of more than 256 values leaves amx_direct.
        few = x[:, :8].bfloat16(), w[:, :8].bfloat16()
        fprop, dgrad, wgrad = ops._cpu_conv2d_plan(*few, *args)
        assert (fprop, dgrad) == ("amx_direct", "as_forward") and wgrad not in ("amx_direct", "winograd")
        wide = torch.randn(48, 8, 7, 5).bfloat16()  # 280 window values
        assert ops._cpu_conv2d_plan(x[:, :8].bfloat16(), wide, [1, 1], [3, 3, 2, 2], [1, 1], 1)[0] != "amx_direct"
        grouped = ops._cpu_conv2d_plan(x.bfloat16(), w[:, :16].bfloat16(), *args[:3], 2)
        assert "amx_direct" not in grouped
        pointwise = w[:, :, :1, :1].bfloat16()
        assert ops._cpu_conv2d_plan(x.bfloat16(), pointwise, [1, 1], [0, 0, 0, 0], [1, 1], 1)[1] != "as_forward"
        with cuconv.config.flags(cpu_conv_algo="winograd"):  # forcing Winograd still works
            assert ops._cpu_conv2d_plan(x.bfloat16(), w.bfloat16(), *args) == ["winograd"] * 3
    with cuconv.config.flags(cpu_isa="avx512"):
        assert ops._cpu_conv2d_plan(x.bfloat16(), w.bfloat16(), *args) == ["winograd"] * 3


@pytest.mark.parametrize("path", BF16_GEMM_PATHS)
@pytest.mark.parametrize("channels_last", [False, True])
def test_bfloat16_gemm_paths_run_their_instructions(path, channels_last):
    """cpu_isa selects the bfloat16 GEMM: its instructions (vdpbf16ps, tdpbf16ps) treat subnormal
    inputs as zero, where the float32 FMAs of the avx512 path keep them. Every other value agrees
    with the avx512 path within one rounding of the output."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(3, 40, 9, 9).bfloat16().contiguous(memory_format=fmt)
    w = (torch.randn(36, 40, 1, 1) / 7).bfloat16()
    x[0, :, 0, 0] = 1e-39  # subnormal in bfloat16 too
    w[:] = w.abs() + 0.5   # every product of a subnormal with the weight stays tiny and positive
    args = ([1, 1], [0, 0, 0, 0], [1, 1], 1)
    with cuconv.config.flags(cpu_isa="avx512"):
        fma = ops.conv2d(x, w, None, *args)
    with cuconv.config.flags(cpu_isa=path):
        dots = ops.conv2d(x, w, None, *args)
    assert (fma[0, :, 0, 0] > 0).all() and (dots[0, :, 0, 0] == 0).all()
    fma[0, :, 0, 0] = dots[0, :, 0, 0] = 0
    exact = torch.nn.functional.conv2d(x.double(), w.double())
    assert_within_torch_error(dots, fma, exact)


@pytest.mark.parametrize("path", BF16_GEMM_PATHS)
@pytest.mark.parametrize("channels_last", [False, True])
# 24 channels, stride 2: amx_direct and the GEMMs; 3 channels: a first layer, whose grad weight
# the float32 plan gives to a different GEMM kernel at 1 thread than at 2.
@pytest.mark.parametrize("C,stride", [(24, 2), (3, 1)])
def test_bfloat16_gemm_paths_deterministic_across_threads(path, channels_last, C, stride):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(5, C, 13, 13).bfloat16().contiguous(memory_format=fmt)
    w, b = torch.randn(40, C, 3, 3).bfloat16(), torch.randn(40).bfloat16()
    P = (13 + 2 - 3) // stride + 1
    gy = torch.randn(5, 40, P, P).bfloat16().contiguous(memory_format=fmt)
    args = ([stride] * 2, [1, 1, 1, 1], [1, 1], 1)
    threads = torch.get_num_threads()
    runs = []
    try:
        with cuconv.config.flags(cpu_isa=path):
            for t in (1, 2, 3, 3):
                torch.set_num_threads(t)
                runs.append([ops.conv2d_bias_relu(x, w, b, *args), *ops.conv2d_backward(gy, x, w, *args, [True] * 3)])
    finally:
        torch.set_num_threads(threads)
    for run in runs[1:]:
        assert all(torch.equal(a, c) for a, c in zip(runs[0], run))


# GEMMs past one cache block of the bfloat16 kernels: K of 300 and an odd 333 (two K blocks, the
# second partial), 270 output channels (past a 256-column block and a 128-row block), strided.
LARGE_BF16 = [((2, 300, 9, 9), (270, 300, 1, 1), 1, 0), ((3, 37, 15, 17), (65, 37, 3, 3), 1, 1),
              ((3, 37, 15, 17), (65, 37, 3, 3), 2, 1), ((2, 40, 11, 13), (36, 40, 5, 3), 1, (2, 0, 1, 1)),
              ((2, 48, 13, 12), (40, 48, 1, 1), 2, 0), ((2, 32, 12, 15), (33, 32, 4, 5), (2, 3), (1, 2, 0, 1))]


@pytest.mark.parametrize("path", ["avx512"] + BF16_GEMM_PATHS if "avx512" in CPU_ISA_PATHS else CPU_ISA_PATHS[-1:])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("xs,ws,stride,pad", LARGE_BF16,
                         ids=["1x1_k300", "3x3_k333", "3x3_k333_s2", "5x3_asym_pad", "1x1_s2", "4x5_s2x3"])
def test_bfloat16_large_gemms_within_twice_torch(path, channels_last, xs, ws, stride, pad):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(xs).bfloat16().contiguous(memory_format=fmt)
    w = (torch.randn(ws) / (ws[1] * ws[2] * ws[3]) ** 0.5).bfloat16()
    b = torch.randn(ws[0]).bfloat16()
    args = (list(stride) if isinstance(stride, tuple) else [stride] * 2,
            list(pad) if isinstance(pad, tuple) else [pad] * 4, [1, 1], 1)
    with cuconv.config.flags(cpu_isa=path):
        y = ops.conv2d(x, w, b, *args)
        gy = torch.randn(y.shape).bfloat16().contiguous(memory_format=fmt)
        ours = (y, *ops.conv2d_backward(gy, x, w, *args, [True, True, True]))
        assert torch.equal(ops.conv2d_bias_relu(x, w, b, *args), y.clamp_min(0))
    theirs = torch_passes(x, w, b, args, gy)
    exact = torch_passes(x.double(), w.double(), b.double(), args, gy.double())
    for o, t, r in zip(ours, theirs, exact):
        assert_within_torch_error(o, t.to(torch.bfloat16), r)
    assert y.is_contiguous(memory_format=fmt) and ours[1].is_contiguous(memory_format=fmt)


# The 2x2 pools on 16-bit values: bfloat16 on AVX-512 (bf16_2x2.cpp, its word instructions), float16
# on AVX-512 and both 16-bit types on AVX2 (the float32 kernels on widened values).
POOL16 = ([("avx512", torch.bfloat16), ("avx512", torch.float16)] if "avx512" in CPU_ISA_PATHS else []) + \
         ([("avx2", torch.float16), ("avx2", torch.bfloat16)] if "avx2" in CPU_ISA_PATHS else [])


def pool16_plan(path, dtype, shape, channels_last):
    """The plan a 2x2 stride-2 pool of `shape` takes on `path`, as plan.cpp's rules give it."""
    if path == "avx512" and dtype == torch.bfloat16:  # NCHW rows of fewer than 8 outputs scatter
        windows = channels_last or shape[3] // 2 >= 8
        nhwc = "pixels_2x2_avx512" if shape[1] % 16 == 0 else "pixels_2x2_bf16"
        return [nhwc if channels_last else "planes_2x2_bf16", "windows_2x2_bf16" if windows else "scatter"]
    whole = shape[1] % 8 == 0  # NHWC: whole ymm registers of channels (zmm on AVX-512)
    nhwc = "pixels_2x2_avx512" if path == "avx512" and shape[1] % 16 == 0 else \
        "pixels_2x2_avx2" if whole else "pixels_avx512" if path == "avx512" and shape[1] >= 16 else "pixels_avx2"
    forward = nhwc if channels_last else "planes_2x2_avx2"
    windows = whole if channels_last else shape[3] // 2 >= 8  # NCHW: rows of 8 outputs or more
    return [forward, "windows_2x2_avx2" if windows else "scatter"]


@pytest.mark.parametrize("path,dtype", POOL16, ids=[f"{p}-{str(d)[6:]}" for p, d in POOL16])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("shape", [(2, 24, 17, 37), (3, 40, 8, 8), (1, 5, 4, 66), (1, 16, 6, 10)],
                         ids=["odd", "full", "few", "end"])
def test_16bit_2x2_pool_on_its_values(path, dtype, shape, channels_last):
    """16-bit 2x2 stride-2 pooling runs on the 16-bit values (no float32 copies; where the plan
    allows): values, indices and grad input equal torch's, with ties, NaNs, -inf, -0 gradients,
    partial groups of outputs or channels, rows shorter than 8 outputs (the tensor's last row read
    within it), and the uncovered last row and column; a user's index outside its window falls back
    to the scatter, as torch scatters it."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    g = torch.Generator().manual_seed(3)
    x = torch.randint(-3, 4, shape, generator=g).to(dtype)  # many ties
    x[0, 1, 2, 3] = x[0, 1, 3, 2] = float("nan")  # two NaNs in one window: the later wins
    x[-1, -1, 0, 0] = float("nan")
    x[-1, 0, -2:, -2:] = float("-inf")
    x = x.contiguous(memory_format=fmt)
    args = ([2, 2], [2, 2], [0, 0], [1, 1], False)
    with cuconv.config.flags(cpu_isa=path):
        plan = ops._cpu_max_pool2d_plan(x, *args)
        y, idx = ops.max_pool2d(x, *args)
        gy = torch.randn(y.shape, generator=g).to(dtype)
        gy[0, 0, 0, :] = -0.0
        gy = gy.contiguous(memory_format=fmt)
        gx = ops.max_pool2d_backward(gy, x, idx, *args)
        moved = idx.clone()
        moved[0, 0, 1, 1] = 0  # into another window of the same plane
        gx_moved = ops.max_pool2d_backward(gy, x, moved, *args)
    assert plan == pool16_plan(path, dtype, shape, channels_last)
    ry, ridx = torch.ops.aten.max_pool2d_with_indices(x.double(), *args)
    torch.testing.assert_close(y.double(), ry, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(idx, ridx) and y[0, 1, 1, 1].isnan() and idx[0, 1, 1, 1] == 3 * shape[3] + 2
    rgx = torch.ops.aten.max_pool2d_with_indices_backward(gy.double(), x.double(), *args, ridx).to(dtype)
    assert torch.equal(gx.view(torch.int16), rgx.view(torch.int16))  # -0 + 0 is +0 on both sides
    assert gx.is_contiguous(memory_format=fmt) and y.is_contiguous(memory_format=fmt)
    rgx_moved = torch.ops.aten.max_pool2d_with_indices_backward(gy.double(), x.double(), *args, moved).to(dtype)
    assert torch.equal(gx_moved, rgx_moved)

