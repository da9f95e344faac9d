"""Route CPU tensors through the CUDA kernel source, compiled for the CPU by the simulator."""
from __future__ import annotations

import contextlib
import os

from . import _C


@contextlib.contextmanager
def simulate(enabled: bool = True):
    """Inside `with cuconv.simulate():` every cuconv op on CPU tensors runs the CUDA kernels
    (csrc/kernels) under the simulator instead of the CPU fallback. The switch is process-wide."""
    previous = _C.simulate_enabled()
    _C.set_simulate_enabled(enabled)
    try:
        yield
    finally:
        _C.set_simulate_enabled(previous)


def _apply_environment():
    if os.environ.get("CUCONV_SIM", "0") not in ("", "0"):
        _C.set_simulate_enabled(True)
