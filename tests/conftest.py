import pytest
import torch

import cuconv


@pytest.fixture(autouse=True)
def poison_outputs():
    """Every op's outputs are filled with NaN (indices with -7) before its kernel runs, so an
    element a kernel forgets to write fails the comparison."""
    cuconv._C.set_poison_enabled(True)
    yield
    cuconv._C.set_poison_enabled(False)


@pytest.fixture(autouse=True)
def fixed_seed():
    torch.manual_seed(0)


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


_FLAGS = _cpu_flags()
# The CPU runner's code paths this machine can run (CUCONV_CPU_ISA forces one; csrc/cpu/cpu_isa.h).
CPU_ISA_PATHS = (["portable"] + (["avx2"] if {"avx2", "fma"} <= _FLAGS else [])
                 + (["avx512"] if {"avx2", "fma", "avx512f"} <= _FLAGS else []))


@pytest.fixture(params=CPU_ISA_PATHS)
def isa(request, monkeypatch):
    """Runs a test once per CPU code path, forced through CUCONV_CPU_ISA."""
    monkeypatch.setenv("CUCONV_CPU_ISA", request.param)
    return request.param
