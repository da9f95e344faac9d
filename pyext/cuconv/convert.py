"""cuconv.convert: swap torch.nn layers for cuconv's in an existing model."""
from __future__ import annotations

import torch

from . import nn as cnn

_SWAPS = ((torch.nn.Conv2d, cnn.Conv2d), (torch.nn.MaxPool2d, cnn.MaxPool2d))


def convert(model: torch.nn.Module) -> torch.nn.Module:
    """Replace, in place, every torch.nn.Conv2d and torch.nn.MaxPool2d in `model` by cuconv's
    module sharing the same parameters (so an optimizer built before keeps working), and return
    `model`. A model that is itself such a layer is returned converted."""
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
    return swap(model)
