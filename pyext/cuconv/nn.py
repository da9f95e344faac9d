"""Drop-in modules: subclasses of torch.nn.Conv2d and torch.nn.MaxPool2d whose forward runs
cuconv's kernels. Constructor arguments, parameter names, initialisation, repr and state_dict are
torch.nn's own, so a torch.nn state_dict loads unchanged and isinstance checks keep working."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import ops

__all__ = ["Conv2d", "MaxPool2d"]


class Conv2d(torch.nn.Conv2d):
    """torch.nn.Conv2d computed by cuconv.conv2d. With `fused_relu` set (cuconv.convert sets it for a
    Conv2d followed by a ReLU) the module computes relu(conv2d(x)) in one pass; with `fused_pool` set
    as well (a Conv2d, ReLU, 2x2 stride-2 MaxPool2d), max_pool2d(relu(conv2d(x)), 2, 2) in one pass."""

    fused_relu = False
    fused_pool = False

    def _conv_forward(self, input, weight, bias):
        if self.fused_pool:
            conv = ops.conv2d_relu_max_pool2d
        else:
            conv = ops.conv2d_relu if self.fused_relu else ops.conv2d
        if self.padding_mode != "zeros":
            # reflect / replicate / circular: pad explicitly, then a valid convolution, as torch.
            return conv(F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode),
                        weight, bias, self.stride, 0, self.dilation, self.groups)
        return conv(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self):
        return super().extra_repr() + (", fused_relu=True" if self.fused_relu else "") + \
            (", fused_pool=True" if self.fused_pool else "")

    @classmethod
    def from_torch(cls, module: torch.nn.Conv2d) -> "Conv2d":
        """A cuconv Conv2d sharing `module`'s parameters and buffers (optimizers keep working)."""
        new = cls.__new__(cls)
        new.__dict__ = module.__dict__.copy()
        new._parameters = module._parameters.copy()
        new._buffers = module._buffers.copy()
        new._modules = module._modules.copy()
        return new


class MaxPool2d(torch.nn.MaxPool2d):
    """torch.nn.MaxPool2d computed by cuconv.max_pool2d."""

    def forward(self, input):
        return ops.max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                              ceil_mode=self.ceil_mode, return_indices=self.return_indices)

    @classmethod
    def from_torch(cls, module: torch.nn.MaxPool2d) -> "MaxPool2d":
        new = cls.__new__(cls)
        new.__dict__ = module.__dict__.copy()
        return new
