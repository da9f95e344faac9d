"""The cuconv operators: fake (meta) kernels registered on torch.ops.cuconv, and the functional API
with the signatures and semantics of torch.nn.functional. The autograd kernels are C++
(csrc/ops/*_autograd.cpp), and in eager mode the functional API calls the ops directly
(cuconv._C.direct), so a call with autograd runs no Python beyond the wrapper's own."""
from __future__ import annotations

import math
import warnings
from typing import Optional, Sequence, Union

import torch

from . import _C  # noqa: F401  (loading it registers the operators)

_ops = torch.ops.cuconv
IntPair = Union[int, Sequence[int]]


# ----------------------------------------------------------------------------- shapes and layouts

def _conv_out(size, kernel, pad_total, stride, dilation):
    return (size + pad_total - dilation * (kernel - 1) - 1) // stride + 1


def _pool_out(size, kernel, pad, stride, dilation, ceil_mode):
    # ATen's pooling_output_shape: with ceil_mode the last window must start inside the input
    # or the left padding.
    span = size + 2 * pad - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = span // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _pads4(padding):
    return list(padding) * 2 if len(padding) == 2 else list(padding)


def _is_channels_last(t: torch.Tensor) -> bool:
    return t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def _suggest_format(t: torch.Tensor):
    # torch.Tensor.suggest_memory_format is not exposed; this mirrors it for 4-D tensors.
    return torch.channels_last if _is_channels_last(t) else torch.contiguous_format


def _empty(shape, like, fmt, dtype=None):
    # Allocated in its layout: an empty NCHW tensor made channels_last afterwards is a full copy
    # (the fused op's backward builds one of these per call).
    return torch.empty(shape, dtype=like.dtype if dtype is None else dtype, device=like.device, memory_format=fmt)


# ------------------------------------------------------------------------------------ fake kernels

@torch.library.register_fake("cuconv::conv2d")
@torch.library.register_fake("cuconv::conv2d_bias_relu")
def _conv2d_fake(input, weight, bias, stride, padding, dilation, groups):
    top, left, bottom, right = _pads4(padding)
    batched = input.dim() == 4
    n = input.shape[0] if batched else 1
    h, w = input.shape[-2:]
    p = _conv_out(h, weight.shape[2], top + bottom, stride[0], dilation[0])
    q = _conv_out(w, weight.shape[3], left + right, stride[1], dilation[1])
    cl = batched and (_is_channels_last(input) or _is_channels_last(weight))
    out = _empty((n, weight.shape[0], p, q), input, torch.channels_last if cl else torch.contiguous_format)
    return out if batched else out.squeeze(0)


@torch.library.register_fake("cuconv::conv2d_bias_relu_max_pool2d")
def _conv2d_bias_relu_max_pool2d_fake(input, weight, bias, stride, padding, dilation, groups):
    top, left, bottom, right = _pads4(padding)
    h, w = input.shape[-2:]
    p = _conv_out(h, weight.shape[2], top + bottom, stride[0], dilation[0])
    q = _conv_out(w, weight.shape[3], left + right, stride[1], dilation[1])
    shape = (*input.shape[:-3], weight.shape[0], p // 2, q // 2)  # 2x2 windows, floor mode
    # the conv output's layout, which the pooling keeps
    cl = input.dim() == 4 and (_is_channels_last(input) or _is_channels_last(weight))
    fmt = torch.channels_last if cl else torch.contiguous_format
    return _empty(shape, input, fmt), _empty(shape, input, fmt, dtype=torch.int64)


@torch.library.register_fake("cuconv::conv2d_backward")
def _conv2d_backward_fake(grad_output, input, weight, stride, padding, dilation, groups, output_mask):
    cl = input.dim() == 4 and (_is_channels_last(input) or _is_channels_last(weight))
    gi = _empty(input.shape, input, torch.channels_last if cl else torch.contiguous_format) if output_mask[0] \
        else input.new_empty((0,))
    gw = _empty(weight.shape, weight, _suggest_format(weight)) if output_mask[1] else weight.new_empty((0,))
    gb = weight.new_empty((weight.shape[0],)) if output_mask[2] else weight.new_empty((0,))
    return gi, gw, gb


@torch.library.register_fake("cuconv::conv2d_bias_relu_max_pool2d_backward")
def _conv2d_bias_relu_max_pool2d_backward_fake(grad_output, output, indices, input, weight, stride, padding,
                                               dilation, groups, output_mask):
    return _conv2d_backward_fake(None, input, weight, stride, padding, dilation, groups, output_mask)


@torch.library.register_fake("cuconv::max_pool2d")
def _max_pool2d_fake(input, kernel_size, stride, padding, dilation, ceil_mode):
    h, w = input.shape[-2:]
    p = _pool_out(h, kernel_size[0], padding[0], stride[0], dilation[0], ceil_mode)
    q = _pool_out(w, kernel_size[1], padding[1], stride[1], dilation[1], ceil_mode)
    shape = (*input.shape[:-2], p, q)
    fmt = _suggest_format(input)
    return _empty(shape, input, fmt), _empty(shape, input, fmt, dtype=torch.int64)


@torch.library.register_fake("cuconv::max_pool2d_backward")
def _max_pool2d_backward_fake(grad_output, input, indices, kernel_size, stride, padding, dilation, ceil_mode):
    return _empty(input.shape, input, _suggest_format(input))


# -------------------------------------------------------------------------------- functional API

def _call(op, *args):
    """torch.ops.cuconv.<op>.default(*args), `op` being one of the pairs below. In eager mode the
    direct call (cuconv._C.direct) skips torch.ops' generic argument conversion, which costs more
    than a tiny tensor's op; it returns NotImplemented for what it does not take (tensor subclasses,
    __torch_function__ modes), which torch.ops then handles. torch.compile traces torch.ops."""
    direct, overload = op
    if not torch.compiler.is_compiling():
        out = direct(*args)
        if out is not NotImplemented:
            return out
    return overload(*args)


# (direct call, overload) of each op the functional API calls
_CONV2D = (_C.direct.conv2d, _ops.conv2d.default)
_CONV2D_BIAS_RELU = (_C.direct.conv2d_bias_relu, _ops.conv2d_bias_relu.default)
_CONV2D_BIAS_RELU_MAX_POOL2D = (_C.direct.conv2d_bias_relu_max_pool2d, _ops.conv2d_bias_relu_max_pool2d.default)
_MAX_POOL2D = (_C.direct.max_pool2d, _ops.max_pool2d.default)


def _pair(value, name: str, op: str) -> list:
    # What nearly every call passes, checked first: an int, or a pair of ints (as torch.nn's modules
    # hold them). `type(...) is int` leaves bools and SymInts to the general checks below.
    kind = type(value)
    if kind is int:
        return [value, value]
    if kind is tuple and len(value) == 2 and type(value[0]) is int and type(value[1]) is int:
        return list(value)
    if isinstance(value, bool) or not isinstance(value, (int, torch.SymInt, tuple, list, torch.Size)):
        raise TypeError(f"{op}: {name} must be an int or a tuple of ints, but got {type(value).__name__}")
    if isinstance(value, (int, torch.SymInt)):
        return [value, value]
    values = list(value)
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not all(isinstance(v, (int, torch.SymInt)) and not isinstance(v, bool) for v in values):
        raise (RuntimeError if op == "conv2d" else TypeError)(
            f"{op}: expected {name} to be a single integer value or a list of 2 values to match the "
            f"convolution dimensions, but got {name}={values}")
    return values


def same_padding(kernel_size: Sequence[int], dilation: Sequence[int]) -> list:
    """(top, left, bottom, right) padding that keeps the spatial size at stride 1; the odd extra
    row/column goes to the bottom/right, as torch does."""
    totals = [d * (k - 1) for k, d in zip(kernel_size, dilation)]
    return [totals[0] // 2, totals[1] // 2, totals[0] - totals[0] // 2, totals[1] - totals[1] // 2]


def conv2d(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, stride: IntPair = 1,
           padding: Union[str, IntPair] = 0, dilation: IntPair = 1, groups: int = 1) -> torch.Tensor:
    """Same as torch.nn.functional.conv2d, computed by cuconv's kernels."""
    return _call(_CONV2D, input, weight, bias, *_conv_args(weight, stride, padding, dilation, groups))


def conv2d_relu(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, stride: IntPair = 1,
                padding: Union[str, IntPair] = 0, dilation: IntPair = 1, groups: int = 1) -> torch.Tensor:
    """relu(conv2d(...)) in one pass: the kernels apply bias and ReLU in their epilogue."""
    return _call(_CONV2D_BIAS_RELU, input, weight, bias, *_conv_args(weight, stride, padding, dilation, groups))


def conv2d_relu_max_pool2d(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                           stride: IntPair = 1, padding: Union[str, IntPair] = 0, dilation: IntPair = 1,
                           groups: int = 1, return_indices: bool = False):
    """F.max_pool2d(F.relu(F.conv2d(...)), 2, 2) in one pass: the kernels pool 2x2 windows of the
    conv output in their epilogue. Indices (with return_indices) are torch's: flat in each conv output
    plane; an odd last row/column of the conv output is dropped, as in floor mode."""
    output, indices = _call(_CONV2D_BIAS_RELU_MAX_POOL2D, input, weight, bias,
                            *_conv_args(weight, stride, padding, dilation, groups))
    return (output, indices) if return_indices else output


def _conv_args(weight, stride, padding, dilation, groups):
    """F.conv2d's arguments in the operators' form: pairs, and padding as 2 or 4 numbers."""
    stride = _pair(stride, "stride", "conv2d")
    dilation = _pair(dilation, "dilation", "conv2d")
    if isinstance(padding, str):
        if padding == "valid":
            padding = [0, 0]
        elif padding == "same":
            if any(s != 1 for s in stride):
                raise RuntimeError("padding='same' is not supported for strided convolutions")
            if weight.dim() != 4:
                padding = [0, 0]  # the operator reports the weight's shape
            else:
                padding = same_padding(weight.shape[2:], dilation)
                if padding[0] != padding[2] or padding[1] != padding[3]:
                    warnings.warn("Using padding='same' with even kernel lengths and odd dilation may require a "
                                  "zero-padded copy of the input be created", UserWarning, stacklevel=3)
        else:
            raise RuntimeError(f"Invalid padding string: '{padding}'")
    else:
        padding = _pair(padding, "padding", "conv2d")
    if type(groups) is not int and (not isinstance(groups, (int, torch.SymInt)) or isinstance(groups, bool)):
        raise TypeError(f"conv2d: groups must be an int, but got {type(groups).__name__}")
    return stride, padding, dilation, groups


def max_pool2d(input: torch.Tensor, kernel_size: IntPair, stride: Optional[IntPair] = None, padding: IntPair = 0,
               dilation: IntPair = 1, ceil_mode: bool = False, return_indices: bool = False):
    """Same as torch.nn.functional.max_pool2d, computed by cuconv's kernels. Indices are int64 and
    flat within each (n, c) plane, as torch's, so F.max_unpool2d accepts them."""
    if isinstance(padding, str):
        raise TypeError("max_pool2d: padding must be an int or a tuple of ints, not a string")
    kernel_size = _pair(kernel_size, "kernel_size", "max_pool2d")
    stride = kernel_size if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0) \
        else _pair(stride, "stride", "max_pool2d")
    padding = _pair(padding, "padding", "max_pool2d")
    dilation = _pair(dilation, "dilation", "max_pool2d")
    output, indices = _call(_MAX_POOL2D, input, kernel_size, stride, padding, dilation, bool(ceil_mode))
    return (output, indices) if return_indices else output
