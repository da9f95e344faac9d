"""Bad input raises before any kernel runs, with torch's exception type and a message naming the problem."""
import pytest
import torch
import torch.nn.functional as F

import cuconv

D = torch.float64
x4, w4, b4 = torch.randn(2, 4, 7, 7, dtype=D), torch.randn(6, 4, 3, 3, dtype=D), torch.randn(6, dtype=D)

CONV_ERRORS = [
    (dict(input=torch.randn(2, 4, 7, 7), weight=w4), RuntimeError, r"Input type \(float\) and weight type \(double\) should be the same"),
    (dict(bias=torch.randn(6)), RuntimeError, r"Input type \(double\) and bias type \(float\) should be the same"),
    (dict(stride=0), RuntimeError, "non-positive stride is not supported"),
    (dict(stride=(1, -1)), RuntimeError, "non-positive stride is not supported"),
    (dict(padding=-1), RuntimeError, "negative padding is not supported"),
    (dict(dilation=0), RuntimeError, "non-positive dilation is not supported"),
    (dict(dilation=(-1,)), RuntimeError, "dilation should be greater than zero"),
    (dict(groups=0), RuntimeError, "non-positive groups is not supported"),
    (dict(input=torch.randn(4, 7, 7, 2, 2, dtype=D)), RuntimeError, r"Expected 3D \(unbatched\) or 4D \(batched\) input to conv2d"),
    (dict(input=torch.randn(7, 7, dtype=D)), RuntimeError, r"Expected 3D \(unbatched\) or 4D \(batched\) input to conv2d"),
    (dict(weight=torch.randn(6, 4, 3, dtype=D)), RuntimeError, "Expected 3-dimensional input for 3-dimensional weight"),
    (dict(groups=7, weight=torch.randn(6, 1, 3, 3, dtype=D)), RuntimeError, "expected weight to be at least 7 at dimension 0"),
    (dict(groups=4, weight=torch.randn(6, 1, 3, 3, dtype=D)), RuntimeError, "expected weight to be divisible by 4 at dimension 0"),
    (dict(input=torch.randn(2, 5, 7, 7, dtype=D)), RuntimeError, "expected input\\[2, 5, 7, 7\\] to have 4 channels, but got 5 channels instead"),
    (dict(bias=torch.randn(5, dtype=D)), RuntimeError, "expected bias to be 1-dimensional with 6 elements, but got bias of size \\[5\\]"),
    (dict(bias=torch.randn(6, 1, dtype=D)), RuntimeError, "expected bias to be 1-dimensional with 6 elements"),
    (dict(input=torch.randn(2, 4, 2, 2, dtype=D)), RuntimeError, r"Calculated padded input size per channel: \(2 x 2\). Kernel size: \(3 x 3\)"),
    (dict(input=torch.randn(2, 4, 4, 4, dtype=D), dilation=2), RuntimeError, r"Kernel size: \(5 x 5\)"),
    (dict(input=torch.randn(2, 4, 0, 7, dtype=D), padding=1), RuntimeError, "Only zero batch or zero channel inputs are supported"),
    (dict(weight=torch.randn(6, 4, 0, 3, dtype=D)), RuntimeError, "kernel size should be greater than zero"),
    (dict(padding="same", stride=2), RuntimeError, "padding='same' is not supported for strided convolutions"),
    (dict(padding="foo"), RuntimeError, "Invalid padding string: 'foo'"),
    (dict(padding=(1, 2, 3, 4)), RuntimeError, "expected padding to be a single integer value or a list of 2 values"),
    (dict(stride=(1, 1, 1)), RuntimeError, "expected stride to be a single integer value or a list of 2 values"),
    (dict(stride=1.5), TypeError, "stride must be an int or a tuple of ints"),
    (dict(input=x4.long(), weight=w4.long(), bias=None), NotImplementedError, "dtype Long is not supported"),
    (dict(input=x4.int(), weight=w4.int(), bias=None), NotImplementedError,
     "dtype Int is not supported .float32, float64, float16 and bfloat16 are."),
]


@pytest.mark.parametrize("overrides,exc,msg", CONV_ERRORS)
def test_conv2d_errors(overrides, exc, msg):
    args = dict(input=x4, weight=w4, bias=b4)
    args.update(overrides)
    with pytest.raises(exc, match=msg):
        cuconv.conv2d(**args)


def test_conv2d_backward_rejects_wrong_grad_output():
    with pytest.raises(RuntimeError, match=r"expected grad_output of size \[2, 6, 5, 5\]"):
        torch.ops.cuconv.conv2d_backward(torch.randn(2, 6, 4, 5, dtype=D), x4, w4, [1, 1], [0, 0], [1, 1], 1,
                                         [True, True, True])


POOL_ERRORS = [
    (dict(kernel_size=0), RuntimeError, "stride should not be zero"),
    (dict(kernel_size=0, stride=1), RuntimeError, "kernel size should be greater than zero, but got kH: 0 kW: 0"),
    (dict(kernel_size=-1, stride=1), RuntimeError, "kernel size should be greater than zero"),
    (dict(stride=0), RuntimeError, "stride should not be zero"),
    (dict(stride=-1), RuntimeError, "stride should be greater than zero, but got dH: -1 dW: -1"),
    (dict(dilation=0), RuntimeError, "dilation should be greater than zero, but got dilationH: 0 dilationW: 0"),
    (dict(padding=-1), RuntimeError, "pad must be non-negative, but got pad: -1"),
    (dict(padding=2), RuntimeError, "pad should be at most half of effective kernel size, but got pad=2, kernel_size=2 and dilation=1"),
    (dict(kernel_size=3, padding=2, dilation=2), RuntimeError, "pad should be smaller than or equal to half of kernel size"),
    (dict(input=torch.randn(4, 4, dtype=D)), RuntimeError, r"non-empty 3D or 4D \(batch mode\) tensor expected for input"),
    (dict(input=torch.randn(1, 2, 4, 4, 4, dtype=D)), RuntimeError, r"non-empty 3D or 4D \(batch mode\) tensor expected for input"),
    (dict(input=torch.randn(1, 0, 6, 6, dtype=D)), RuntimeError, r"Expected 3D or 4D \(batch mode\) tensor with optional 0 dim batch size for input, but got:\[1, 0, 6, 6\]"),
    (dict(input=torch.randn(1, 0, 10, dtype=D)), RuntimeError, r"but got:\[1, 0, 10\]"),
    (dict(input=torch.randn(1, 1, 4, dtype=D)), RuntimeError, r"Given input size: \(1x1x4\). Calculated output size: \(1x0x2\). Output size is too small"),
    (dict(kernel_size=(2, 2, 2)), TypeError, "kernel_size"),
    (dict(padding="same"), TypeError, "padding must be an int or a tuple of ints"),
    (dict(kernel_size=2.0), TypeError, "kernel_size must be an int"),
    (dict(input=torch.randn(1, 2, 4, 4).bool()), NotImplementedError, "dtype Bool is not supported"),
]


@pytest.mark.parametrize("overrides,exc,msg", POOL_ERRORS)
def test_max_pool2d_errors(overrides, exc, msg):
    args = dict(input=torch.randn(2, 3, 6, 6, dtype=D), kernel_size=2)
    args.update(overrides)
    with pytest.raises(exc, match=msg):
        cuconv.max_pool2d(**args)


def test_max_pool2d_channels_last_message():
    x = torch.randn(2, 3, 6, 6, dtype=D).contiguous(memory_format=torch.channels_last)[:, :, :0]
    with pytest.raises(RuntimeError, match="Expected"):
        cuconv.max_pool2d(x, 2)


def test_max_pool2d_backward_rejects_bad_indices():
    x = torch.randn(1, 2, 4, 4, dtype=D)
    out, idx = torch.ops.cuconv.max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], False)
    with pytest.raises(RuntimeError, match="indices must be int64"):
        torch.ops.cuconv.max_pool2d_backward(out, x, idx.int(), [2, 2], [2, 2], [0, 0], [1, 1], False)
