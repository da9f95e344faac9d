"""cuconv.convert: swap torch.nn layers for cuconv's in an existing model."""
from __future__ import annotations

import torch

from . import nn as cnn

_SWAPS = ((torch.nn.Conv2d, cnn.Conv2d), (torch.nn.MaxPool2d, cnn.MaxPool2d))


def _is_plain_2x2_pool(module) -> bool:
    """A max-pool the fused kernel computes: 2x2 windows, stride 2, no padding or dilation, floor mode,
    values only."""
    def pair(v):
        return tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    return (isinstance(module, torch.nn.MaxPool2d) and pair(module.kernel_size) == (2, 2)
            and pair(module.stride if module.stride is not None else module.kernel_size) == (2, 2)
            and pair(module.padding) == (0, 0) and pair(module.dilation) == (1, 1)
            and not module.ceil_mode and not module.return_indices)


def convert(model: torch.nn.Module, fuse_relu: bool = True, fuse_pool: bool = True) -> torch.nn.Module:
    """Replace, in place, every torch.nn.Conv2d and torch.nn.MaxPool2d in `model` by cuconv's
    module sharing the same parameters (so an optimizer built before keeps working), and return
    `model`. A model that is itself such a layer is returned converted.

    With `fuse_relu` (the default), a Conv2d directly followed by a ReLU inside an nn.Sequential
    becomes one fused conv+bias+ReLU and the ReLU an nn.Identity: the same function and the same
    state_dict keys, one pass over the output instead of two. With `fuse_pool` too (the default),
    a Conv2d, ReLU, MaxPool2d(2, 2) sequence becomes one fused conv+bias+ReLU+max-pool and both the
    ReLU and the MaxPool2d nn.Identity."""
    def swap(module):
        for torch_cls, ours in _SWAPS:
            if type(module) is torch_cls:
                return ours.from_torch(module)
        return module

    for parent in list(model.modules()):
        for name, child in list(parent._modules.items()):
            if child is not None:
                new = swap(child)
                if new is not child:
                    parent._modules[name] = new
    if fuse_relu:
        for parent in list(model.modules()):
            if isinstance(parent, torch.nn.Sequential):
                names = list(parent._modules)
                for i, (first, second) in enumerate(zip(names, names[1:])):
                    conv, relu = parent._modules[first], parent._modules[second]
                    if type(conv) is cnn.Conv2d and type(relu) is torch.nn.ReLU and not conv.fused_relu:
                        conv.fused_relu = True
                        parent._modules[second] = torch.nn.Identity()
                        pool = parent._modules[names[i + 2]] if i + 2 < len(names) else None
                        if fuse_pool and type(pool) is cnn.MaxPool2d and _is_plain_2x2_pool(pool):
                            conv.fused_pool = True
                            parent._modules[names[i + 2]] = torch.nn.Identity()
    return swap(model)
