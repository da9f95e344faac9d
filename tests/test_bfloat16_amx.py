"""bfloat16 on AMX tiles. The grad weight (wgrad strategy amx_direct): every grad weight element
written, within twice torch's own bfloat16 error against float64, on shapes that exercise its
chunks of images (a partial last chunk), groups of C blocks, partial 32-channel blocks, strides,
dilations and asymmetric padding in both layouts; the same bits at every thread count; and an input
with an infinity or a NaN left to the GEMM plan, whose products are exactly the convolution's (a
first layer's, image by image, keeps it: the same non-finite elements as torch's).
The NCHW forward, and the unfolded forward of few channels in both layouts: by image and by block,
the same bits. The grad input, strided (dgrad strategy amx_phases) or of a first layer (a forward
into 3 channels): within twice torch's error, every element written, phases no tap reaches zero."""
import pytest
import torch
import torch.nn.functional as F

import cuconv  # noqa: F401  (loads the operators)
from conftest import BF16_GEMM_PATHS
from tolerance import assert_within_torch_error

pytestmark = pytest.mark.skipif("amx" not in BF16_GEMM_PATHS, reason="this CPU (or its OS) gives no AMX tiles")
ops = torch.ops.cuconv

# (input, weight, stride, padding (top, left, bottom, right), dilation)
SHAPES = {
    # 23 images of 14x14 phase images: chunks of several images, the last one partial
    "chunks": ((23, 64, 12, 12), (64, 64, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    # 3 x 3 C blocks x 9 taps = 81 blocks: two groups; 17 positions per row: an odd output width
    "groups": ((3, 96, 17, 17), (96, 96, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    # 37 and 65 channels: partial blocks on both sides; stride 2: four phase images
    "partial_s2": ((3, 37, 15, 17), (65, 37, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),
    # a 1x1 stride-2 shortcut: one phase image of four
    "shortcut": ((4, 48, 14, 14), (40, 48, 1, 1), (2, 2), (0, 0, 0, 0), (1, 1)),
    # dilation 2 and stride 2 x 3 with asymmetric padding: taps in several phases at odd offsets
    "dilated": ((2, 20, 19, 23), (17, 20, 3, 3), (2, 3), (2, 1, 0, 3), (2, 2)),
    "kernel_5x3": ((2, 40, 11, 13), (36, 40, 5, 3), (1, 1), (2, 0, 1, 1), (1, 1)),
    # 3 channels: unfolded (27 window values, one C block), its chunks split in fixed ranges
    "first_layer": ((40, 3, 20, 20), (32, 3, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    "first_layer_s2": ((5, 5, 17, 15), (20, 5, 2, 3), (2, 1), (0, 1, 1, 0), (1, 1)),
    # stride 1: image by image. 5 x 4 outputs: fewer than one step of 32 positions per image, many
    # output rows per step; 33 channels: a lone last one
    "first_layer_small": ((5, 3, 5, 4), (33, 3, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
}


def grad_weights(xs, ws, stride, pad, dil, channels_last, dtype=torch.bfloat16, poison=False):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    g = torch.Generator().manual_seed(0)
    x = torch.randn(xs, generator=g).to(dtype).contiguous(memory_format=fmt)
    w = torch.randn(ws, generator=g).to(dtype)
    args = (list(stride), list(pad), list(dil), 1)
    with cuconv.config.flags(cpu_isa="amx"):
        y = ops.conv2d(x, w, None, *args)
        gy = torch.randn(y.shape, generator=g).to(dtype).contiguous(memory_format=fmt)
        with cuconv.config.flags(poison=poison):
            gw = ops.conv2d_backward(gy, x, w, *args, [False, True, False])[1]
    return x, w, gy, args, gw


def torch_grad_weight(x, w, gy, args):
    stride, pad, dil, _ = args
    xt, wt = x.detach().clone(), w.detach().clone().requires_grad_()
    F.conv2d(F.pad(xt, (pad[1], pad[3], pad[0], pad[2])), wt, None, stride, 0, dil).backward(gy)
    return wt.grad


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("name", SHAPES)
def test_amx_grad_weight_within_twice_torch(name, channels_last):
    xs, ws, stride, pad, dil = SHAPES[name]
    x, w, gy, args, gw = grad_weights(xs, ws, stride, pad, dil, channels_last, poison=True)
    with cuconv.config.flags(cpu_isa="amx"):
        assert ops._cpu_conv2d_plan(x, w, *args)[2] == "amx_direct"
    assert gw.dtype == torch.bfloat16 and not gw.isnan().any()  # every element written over the poison
    exact = torch_grad_weight(x.double(), w.double(), gy.double(), args)
    assert_within_torch_error(gw, torch_grad_weight(x, w, gy, args), exact)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_amx_grad_weight_same_bits_at_every_thread_count(channels_last):
    threads = torch.get_num_threads()
    runs = []
    try:
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            names = ("chunks", "groups", "first_layer")
            runs.append([grad_weights(*SHAPES[name], channels_last)[-1] for name in names])
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for run in runs[1:] for a, b in zip(runs[0], run))


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("value", [float("inf"), float("nan")])
@pytest.mark.parametrize("C", [32, 3], ids=["to_the_gemms", "first_layer"])
def test_amx_grad_weight_with_a_non_finite_input(C, value, channels_last):
    """An infinity or a NaN in the last input column: tap s = 0 never reads it (pad 1), so its grad
    weight stays finite in the convolution, where the tiles' zero positions past the row would
    meet it: 32 channels go to the GEMM plan; a first layer (unfolded, stride 1) runs image by image,
    where no zero meets an input value. The same non-finite elements as torch's."""
    xs, ws, stride, pad, dil = (2, C, 10, 10), (32, C, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1)
    x, w, gy, args, _ = grad_weights(xs, ws, stride, pad, dil, channels_last)
    x = x.clone()
    x[1, C - 1, 4, 9] = value
    with cuconv.config.flags(cpu_isa="amx"):
        gw = ops.conv2d_backward(gy, x, w, *args, [False, True, False])[1]
    expected = torch_grad_weight(x.float(), w.float(), gy.float(), args)
    assert torch.equal(gw.float().isnan(), expected.isnan()) and torch.equal(gw.float().isinf(), expected.isinf())
    assert not gw[:, C - 1, :, 0].float().isnan().any()  # the column tap s = 0 does not read
    finite = expected.isfinite()
    exact = torch_grad_weight(x.double(), w.double(), gy.double(), args)
    assert_within_torch_error(gw[finite], torch_grad_weight(x, w, gy, args)[finite], exact[finite])


# The forward by image and by block: (input, weight, stride, padding (top, left, bottom, right)).
FORWARD = {
    # odd sizes: 37 -> 45 channels, 13 x 11 input, stride 2 on a 5x3 kernel
    "direct": ((3, 37, 13, 11), (45, 37, 5, 3), (2, 1), (2, 1, 1, 0)),
    # 3 output channels: most of the C block's columns computed and not stored
    "three_outputs": ((3, 24, 11, 9), (3, 24, 3, 3), (1, 1), (1, 1, 1, 1)),
    # NCHW by image reads the input as pairs of channels: an odd count (17, 21), column strides 2, 3
    "direct_s2": ((3, 21, 15, 17), (33, 21, 3, 3), (2, 2), (1, 1, 1, 1)),
    "direct_s3": ((3, 17, 13, 16), (18, 17, 3, 2), (3, 3), (1, 0, 2, 1)),
    # Few channels, unfolded. 27 window values, 45 output channels (a partial C block and tile);
    # 13 rows of 15 outputs: a pixel group per row, an odd number of groups
    "unfolded_3x3": ((3, 3, 13, 15), (45, 3, 3, 3), (1, 1), (1, 0, 1, 2)),
    # a 5x5 kernel at stride 2 x 1: 75 window values, three slices (several vectors per pixel)
    "unfolded_5x5_s2x1": ((3, 3, 23, 17), (20, 3, 5, 5), (2, 1), (2, 2, 1, 0)),
    # the 7x7 stride-2 stem: 147 window values; 16 outputs per row: whole groups
    "unfolded_7x7_s2": ((3, 3, 31, 31), (32, 3, 7, 7), (2, 2), (3, 3, 3, 3)),
    # one channel, stride 3: the columns gathered one by one
    "unfolded_1ch_s3": ((3, 1, 20, 29), (16, 1, 2, 3), (3, 3), (0, 1, 1, 0)),
}


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("name", FORWARD)
def test_amx_forward_by_image_and_by_block_agree(name, channels_last, relu):
    """With an image per thread an AMX forward runs whole images per worker: NCHW through a buffer
    transposed into the channel planes, NHWC each image padded by its worker; few channels unfolded
    one image at a time, into NCHW from transposed products (a channel's run of outputs per tile
    row). With fewer images it runs C blocks of the batch padded first. Every output written, the
    same bits both ways, within twice torch's error."""
    xs, ws, stride, pad = FORWARD[name]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    g = torch.Generator().manual_seed(1)
    x = torch.randn(xs, generator=g).bfloat16().contiguous(memory_format=fmt)
    w, b = (torch.randn(ws, generator=g) / 10).bfloat16(), torch.randn(ws[0], generator=g).bfloat16()
    w = w.contiguous(memory_format=fmt)  # packed from OIHW, or from a channels_last weight as it lies
    args = (list(stride), list(pad), [1, 1], 1)
    threads = torch.get_num_threads()
    fn = ops.conv2d_bias_relu if relu else ops.conv2d
    try:
        torch.set_num_threads(2)
        with cuconv.config.flags(cpu_isa="amx", poison=True):
            assert ops._cpu_conv2d_plan(x, w, *args)[0] == "amx_direct"
            batch = fn(x, w, b, *args)          # 3 images, 2 threads: by image
            single = fn(x[1:2], w, b, *args)    # 1 image, 2 threads: by block
    finally:
        torch.set_num_threads(threads)
    assert not batch.isnan().any() and torch.equal(batch[1:2], single)
    padded = (pad[1], pad[3], pad[0], pad[2])
    exact = F.conv2d(F.pad(x.double(), padded), w.double(), b.double(), stride)
    theirs = F.conv2d(F.pad(x, padded), w, b, stride)
    if relu:
        exact, theirs = exact.clamp_min(0), theirs.clamp_min(0)
    assert_within_torch_error(batch, theirs, exact)


# (input, weight, stride, padding (top, left, bottom, right))
GRAD_INPUT = {
    "3x3_s2": ((3, 37, 15, 17), (65, 37, 3, 3), (2, 2), (1, 1, 1, 1)),
    "1x1_s2": ((2, 48, 14, 14), (40, 48, 1, 1), (2, 2), (0, 0, 0, 0)),
    "4x5_s2x3": ((2, 32, 12, 15), (33, 32, 4, 5), (2, 3), (1, 2, 0, 1)),
    # 2x2 stride 2 on 7 rows: the last row is no tap's; 3x3 stride 4: phases no tap reaches
    "2x2_s2_uncovered": ((2, 24, 7, 9), (16, 24, 2, 2), (2, 2), (0, 0, 0, 0)),
    "3x3_s4": ((2, 24, 10, 10), (16, 24, 3, 3), (4, 4), (2, 2, 2, 2)),
    # stride 1: a forward conv of grad_output with the weight flipped, packed from OIHW: partial
    # slices and channel blocks (33 -> 47); a 7x7 kernel, packed from a flipped copy
    "5x3_partial": ((3, 33, 9, 13), (47, 33, 5, 3), (1, 1), (2, 1, 0, 2)),
    "7x7": ((2, 24, 12, 12), (17, 24, 7, 7), (1, 1), (3, 3, 3, 3)),
    # ... into 3 channels: fewer output channels than a tile
    "first_layer_3x3": ((5, 3, 13, 11), (32, 3, 3, 3), (1, 1), (1, 1, 1, 1)),
    "first_layer_5x5": ((3, 3, 12, 12), (20, 3, 5, 5), (1, 1), (2, 2, 2, 2)),
}


@pytest.mark.parametrize("w_channels_last", [False, True], ids=["w_oihw", "w_ohwi"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("name", GRAD_INPUT)
def test_amx_grad_input_within_twice_torch(name, channels_last, w_channels_last):
    xs, ws, stride, pad = GRAD_INPUT[name]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    g = torch.Generator().manual_seed(2)
    x = torch.randn(xs, generator=g).bfloat16().contiguous(memory_format=fmt)
    w = (torch.randn(ws, generator=g) / (ws[1] * ws[2] * ws[3]) ** 0.5).bfloat16()
    w = w.contiguous(memory_format=torch.channels_last if w_channels_last else torch.contiguous_format)
    args = (list(stride), list(pad), [1, 1], 1)
    with cuconv.config.flags(cpu_isa="amx", poison=True):
        assert ops._cpu_conv2d_plan(x, w, *args)[1] == ("as_forward" if stride == (1, 1) else "amx_phases")
        y = ops.conv2d(x, w, None, *args)
        gy = torch.randn(y.shape, generator=g).bfloat16().contiguous(memory_format=fmt)
        gx = ops.conv2d_backward(gy, x, w, *args, [True, False, False])[0]
    # a channels_last weight (unless it is contiguous too: 1x1) makes the conv channels_last, as torch's
    out_fmt = torch.channels_last if channels_last or not w.is_contiguous() else torch.contiguous_format
    assert gx.is_contiguous(memory_format=out_fmt) and not gx.isnan().any()

    def torch_grad_input(x, w, gy):
        xt = x.detach().clone().requires_grad_()
        F.conv2d(F.pad(xt, (pad[1], pad[3], pad[0], pad[2])), w, None, stride).backward(gy)
        return xt.grad

    exact = torch_grad_input(x.double(), w.double(), gy.double())
    assert_within_torch_error(gx, torch_grad_input(x, w, gy), exact)
    if name == "2x2_s2_uncovered":
        assert (gx[:, :, 6] == 0).all()


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("C,stride", [(3, 1), (32, 1), (32, 2)], ids=["unfolded", "direct", "phases"])
def test_amx_batch_zero(C, stride, channels_last):
    """An empty batch on every AMX plan: empty outputs, a zero grad weight."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(0, C, 9, 9).bfloat16().contiguous(memory_format=fmt)
    w = torch.randn(24, C, 3, 3).bfloat16()
    args = ([stride] * 2, [1, 1, 1, 1], [1, 1], 1)
    with cuconv.config.flags(cpu_isa="amx", poison=True):
        fprop, dgrad, wgrad = ops._cpu_conv2d_plan(x, w, *args)
        y = ops.conv2d(x, w, None, *args)
        gx, gw, _ = ops.conv2d_backward(torch.zeros_like(y), x, w, *args, [True, True, False])
    assert fprop == "amx_direct" and wgrad == "amx_direct" and dgrad == ("amx_phases" if stride == 2 else "as_forward")
    assert y.shape == (0, 24, 9 // stride + (stride == 2), 9 // stride + (stride == 2)) and gx.shape == x.shape
    assert torch.equal(gw, torch.zeros_like(w))
