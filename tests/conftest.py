import contextlib
from dataclasses import dataclass, field

import pytest
import torch

import cuconv


@pytest.fixture(autouse=True)
def poison_outputs():
    """Every op's outputs are filled with NaN (indices with -7) before its kernel runs, so an
    element a kernel forgets to write fails the comparison."""
    with cuconv.config.flags(poison=True):
        yield


@pytest.fixture(autouse=True)
def restore_config():
    """Whatever a test sets in cuconv.config is undone after it."""
    before = cuconv.config.get()
    yield
    cuconv.config.set(**before)


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
# The CPU runner's code paths this machine can run (cuconv.config's cpu_isa forces one; csrc/cpu/isa.h).
CPU_ISA_PATHS = (["portable"] + (["avx2"] if {"avx2", "fma"} <= _FLAGS else [])
                 + (["avx512"] if {"avx2", "fma", "avx512f"} <= _FLAGS else []))


# The bfloat16 GEMM paths (bfloat16 convolutions only; csrc/cpu/gemm/avx512_bf16.cpp): AVX512_BF16 dot
# products, and AMX tiles where Linux grants them (cpu_isa falls back to avx512 where it does not).
BF16_GEMM_PATHS = ((["avx512_bf16"] if "avx512" in CPU_ISA_PATHS and "avx512_bf16" in _FLAGS else [])
                   + (["amx"] if "avx512" in CPU_ISA_PATHS and {"amx_tile", "amx_bf16"} <= _FLAGS else []))


@pytest.fixture(params=CPU_ISA_PATHS)
def isa(request):
    """Runs a test once per CPU code path, forced through cuconv.config's cpu_isa."""
    with cuconv.config.flags(cpu_isa=request.param):
        yield request.param


@dataclass(frozen=True)
class Runner:
    """One way cuconv's ops run: the CPU fallback on one ISA path, the simulator (CPU tensors
    through the CUDA kernel source), or the CUDA kernels. `flags` are cuconv.config switches."""
    name: str
    device: str
    flags: dict = field(default_factory=dict)

    @property
    def is_gpu_kernels(self):
        return self.name in ("sim", "cuda")

    @contextlib.contextmanager
    def active(self):
        # float32 runs exactly on CUDA here (TF32 off): the tensor-core tests check TF32 by itself.
        # Tensors a test makes without naming a device are made on the runner's.
        cuda = self.device == "cuda"
        tf32 = torch.backends.cudnn.flags(allow_tf32=False) if cuda else contextlib.nullcontext()
        device = torch.device(self.device) if cuda else contextlib.nullcontext()
        with cuconv.config.flags(**self.flags), tf32, device:
            yield self


HAS_CUDA = cuconv._C.with_cuda and torch.cuda.is_available()
CPU_RUNNERS = [Runner(f"cpu-{isa}", "cpu", {"cpu_isa": isa}) for isa in reversed(CPU_ISA_PATHS)]
GPU_RUNNERS = [Runner("sim", "cpu", {"simulate": True})] + ([Runner("cuda", "cuda")] if HAS_CUDA else [])
RUNNERS = CPU_RUNNERS + GPU_RUNNERS
# One CPU path (the best this machine has) beside the GPU kernels: for tests about an op's
# semantics, where the CPU's ISA paths have their own cases.
RUNNERS_ONE_CPU = CPU_RUNNERS[:1] + GPU_RUNNERS


@pytest.fixture(params=RUNNERS, ids=lambda r: r.name)
def runner(request):
    """Every runner this machine has: each CPU ISA path, the simulator, CUDA when present."""
    with request.param.active() as r:
        yield r


@pytest.fixture(params=RUNNERS_ONE_CPU, ids=lambda r: r.name)
def op_runner(request):
    """The best CPU path, the simulator, and CUDA when present."""
    with request.param.active() as r:
        yield r


@pytest.fixture(params=GPU_RUNNERS, ids=lambda r: r.name)
def gpu_runner(request):
    """The CUDA kernels: under the simulator, and on the GPU when present."""
    with request.param.active() as r:
        yield r
