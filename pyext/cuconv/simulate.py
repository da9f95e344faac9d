"""Route CPU tensors through the CUDA kernel source, compiled for the CPU by the simulator."""
from __future__ import annotations

from . import config


def simulate(enabled: bool = True):
    """Inside `with cuconv.simulate():` every cuconv op on CPU tensors runs the CUDA kernels
    (csrc/kernels) under the simulator instead of the CPU fallback. Short for
    `cuconv.config.flags(simulate=enabled)`; the switch is process-wide."""
    return config.flags(simulate=enabled)
