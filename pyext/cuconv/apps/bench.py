"""`python -m cuconv bench`: cuconv's kernels against the native ones (oneDNN/ATen on the CPU, cuDNN
on a GPU), per layer and per training step, with the machine's own ceiling measured in the same run.

The case list (CONV_SHAPES, POOL_SHAPES, TRAIN_MODELS, `build_cases`) is shared with the
pytest-benchmark suite in benchmarks/, so both time exactly the same calls. `--models` runs the
real-model benchmark of bench_models instead, on this module's timing, ceiling and header."""
from __future__ import annotations

import copy
import json
import math
import os
import platform
import re
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ..ops import _conv_out
from . import models

# ---------------------------------------------------------------------------------------- the cases

@dataclass(frozen=True)
class ConvShape:
    name: str
    cin: int
    cout: int
    size: int  # input height = width
    kernel: int
    stride: int
    pad: int


@dataclass(frozen=True)
class PoolShape:
    name: str
    channels: int
    size: int
    kernel: int = 2
    stride: int = 2


# The seed CNN (conv 3->32, ReLU, pool 2, conv 32->64, ReLU, pool 2, linear; valid padding) and
# ResNet-18 for CIFAR (3x3 convs pad 1, 1x1 stride-2 shortcuts pad 0).
CONV_SHAPES = (
    ConvShape("seed.conv1", 3, 32, 32, 3, 1, 0),
    ConvShape("seed.conv2", 32, 64, 15, 3, 1, 0),
    ConvShape("r18.conv1", 3, 64, 32, 3, 1, 1),
    ConvShape("r18.l1", 64, 64, 32, 3, 1, 1),
    ConvShape("r18.l2.down", 64, 128, 32, 3, 2, 1),
    ConvShape("r18.l2", 128, 128, 16, 3, 1, 1),
    ConvShape("r18.l3", 256, 256, 8, 3, 1, 1),
    ConvShape("r18.l4", 512, 512, 4, 3, 1, 1),
    ConvShape("r18.sc2", 64, 128, 32, 1, 2, 0),
    ConvShape("r18.sc3", 128, 256, 16, 1, 2, 0),
    ConvShape("r18.sc4", 256, 512, 8, 1, 2, 0),
)
POOL_SHAPES = (
    PoolShape("seed.pool1", 32, 30),
    PoolShape("seed.pool2", 64, 13),
)
# Training-step models, all built from cuconv.apps.models: the seed CNN as `cuconv train` builds it
# (cifar_cnn, an nn.Sequential, so `convert` fuses conv+ReLU+pool), the same layers with functional
# ReLUs and a shared pool module (nothing to fuse: convert swaps the layers only), a small ResNet
# with a max-pool head (residual blocks and cuconv's pooling in one step), and ResNet-18.
TRAIN_MODELS = ("seed_cnn", "seed_cnn_functional", "resnet_mini", "models.resnet")

CONV_OPS = ("conv_fwd", "conv_grad_input", "conv_grad_weight", "conv_bias_relu", "conv_bias_relu_pool")
# The conv layers followed by a ReLU and a 2x2 stride-2 max-pool (the conv_bias_relu_pool rows).
CONV_RELU_POOL_SHAPES = ("seed.conv1", "seed.conv2")
POOL_OPS = ("pool_fwd", "pool_bwd")
TRAIN_OPS = ("train_step",)
ALL_OPS = CONV_OPS + POOL_OPS + TRAIN_OPS

# --quick: the seed CNN's layers and its training step, batch 32.
QUICK_SHAPES = ("seed.conv1", "seed.conv2", "seed.pool1", "seed.pool2", "seed_cnn")

DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
          "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Case:
    op: str
    shape: str  # a ConvShape/PoolShape name or a TRAIN_MODELS name
    batch: int
    dtype: str
    layout: str  # "nchw" | "channels_last"
    device: str  # "cpu" | "cuda"

    @property
    def name(self) -> str:
        return f"{self.op}/{self.shape}/n{self.batch}/{self.dtype}/{self.layout}"


@dataclass
class Prepared:
    """The two callables of one case, timed against each other, and the work one call does."""
    cuconv: Callable[[], object]
    native: Callable[[], object]
    work: float  # FLOPs, or bytes for pooling, or images for a training step
    unit: str  # "GFLOP/s" | "GB/s" | "img/s"


_CONV_BY_NAME = {s.name: s for s in CONV_SHAPES}
_POOL_BY_NAME = {s.name: s for s in POOL_SHAPES}


def _matches(name: str, patterns) -> bool:
    # A filter matches as a substring or as a regular expression.
    if not patterns:
        return True
    for pat in patterns:
        if pat in name:
            return True
        try:
            if re.search(pat, name):
                return True
        except re.error:
            pass
    return False


def build_cases(device="cpu", batches=None, dtypes=("float32",), layouts=("nchw",), ops=None,
                shapes=None, quick=False):
    """Every case to run, filtered: `ops` and `shapes` are lists of substrings/regexes matched
    against the op name and the shape name (for `shapes`, also against the full row name)."""
    if batches is None:
        batches = (32,) if quick else ((32, 128) if device == "cpu" else (32, 128, 256))
    out = []
    shape_names = [(op, s.name) for op in CONV_OPS for s in CONV_SHAPES
                   if op != "conv_bias_relu_pool" or s.name in CONV_RELU_POOL_SHAPES] + \
                  [(op, s.name) for op in POOL_OPS for s in POOL_SHAPES] + \
                  [(op, m) for op in TRAIN_OPS for m in TRAIN_MODELS]
    for op, shape in shape_names:
        if quick and shape not in QUICK_SHAPES:
            continue
        if not _matches(op, ops):
            continue
        for batch in batches:
            for dtype in dtypes:
                for layout in layouts:
                    case = Case(op, shape, batch, dtype, layout, device)
                    if shapes and not (_matches(shape, shapes) or _matches(case.name, shapes)):
                        continue
                    out.append(case)
    return out


def _fmt(layout):
    return torch.channels_last if layout == "channels_last" else torch.contiguous_format


def prepare(case: Case, seed: int = 0) -> Prepared:
    """Allocate the tensors/models of `case` and return its two callables."""
    import cuconv  # noqa: F401  (registers torch.ops.cuconv)

    gen = torch.Generator().manual_seed(seed)
    dtype = DTYPES[case.dtype]
    dev = torch.device(case.device)
    fmt = _fmt(case.layout)

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float32).to(dev, dtype).contiguous(memory_format=fmt)

    if case.op in CONV_OPS:
        s = _CONV_BY_NAME[case.shape]
        x = rand(case.batch, s.cin, s.size, s.size)
        w = rand(s.cout, s.cin, s.kernel, s.kernel) * (1.0 / math.sqrt(s.cin * s.kernel * s.kernel))
        w = w.contiguous(memory_format=fmt)
        b = torch.randn(s.cout, generator=gen).to(dev, dtype)
        stride, pad, dil = [s.stride] * 2, [s.pad] * 2, [1, 1]
        p = _conv_out(s.size, s.kernel, 2 * s.pad, s.stride, 1)
        gy = rand(case.batch, s.cout, p, p)
        flops = 2.0 * case.batch * s.cout * s.cin * s.kernel * s.kernel * p * p
        if case.op in ("conv_fwd", "conv_grad_input", "conv_grad_weight"):
            cu_fn, native_fn = conv_pass(case.op, x, w, gy, stride, pad, dil, 1)
            return Prepared(cu_fn, native_fn, flops, "GFLOP/s")
        cu, aten = torch.ops.cuconv, torch.ops.aten
        if case.op == "conv_bias_relu_pool":
            two = [2, 2]
            return Prepared(lambda: cu.conv2d_bias_relu_max_pool2d(x, w, b, stride, pad, dil, 1),
                            lambda: aten.max_pool2d_with_indices(
                                torch.relu_(aten.convolution(x, w, b, stride, pad, dil, False, [0, 0], 1)),
                                two, two, [0, 0], [1, 1], False),
                            flops, "GFLOP/s")
        return Prepared(lambda: cu.conv2d_bias_relu(x, w, b, stride, pad, dil, 1),
                        lambda: torch.relu_(aten.convolution(x, w, b, stride, pad, dil, False, [0, 0], 1)),
                        flops, "GFLOP/s")

    if case.op in POOL_OPS:
        s = _POOL_BY_NAME[case.shape]
        x = rand(case.batch, s.channels, s.size, s.size)
        k, st, pad, dil = [s.kernel] * 2, [s.stride] * 2, [0, 0], [1, 1]
        y, idx = torch.ops.aten.max_pool2d_with_indices(x, k, st, pad, dil, False)
        gy = torch.randn(y.shape, generator=gen).to(dev, dtype).contiguous(memory_format=fmt)
        cu_fn, native_fn = pool_pass(case.op, x, gy, idx, k, st, pad, dil, False)
        return Prepared(cu_fn, native_fn, float(pool_bytes(x, y)), "GB/s")

    if case.op == "train_step":
        torch.manual_seed(seed)
        model = make_train_model(case.shape).to(dev, dtype).to(memory_format=fmt)
        import cuconv
        ours = cuconv.convert(copy.deepcopy(model))
        x = rand(case.batch, 3, 32, 32)
        labels = torch.randint(0, 10, (case.batch,), generator=gen).to(dev)
        return Prepared(train_step(ours, x, labels), train_step(model, x, labels), float(case.batch), "img/s")
    raise ValueError(f"unknown op {case.op}")


def conv_pass(op, x, w, gy, stride, pad, dil, groups):
    """cuconv's and native's callables of one convolution pass (no bias): conv_fwd, or one backward
    output alone (conv_grad_input / conv_grad_weight) through the output mask."""
    cu, aten = torch.ops.cuconv, torch.ops.aten
    if op == "conv_fwd":
        return (lambda: cu.conv2d(x, w, None, stride, pad, dil, groups),
                lambda: aten.convolution(x, w, None, stride, pad, dil, False, [0, 0], groups))
    if op not in ("conv_grad_input", "conv_grad_weight"):
        raise ValueError(f"unknown convolution pass {op}")
    mask = [op == "conv_grad_input", op == "conv_grad_weight", False]
    return (lambda: cu.conv2d_backward(gy, x, w, stride, pad, dil, groups, mask),
            lambda: aten.convolution_backward(gy, x, w, None, stride, pad, dil, False, [0, 0], groups, mask))


def pool_pass(op, x, gy, idx, k, st, pad, dil, ceil_mode):
    """cuconv's and native's callables of one max-pool pass: pool_fwd or pool_bwd."""
    cu, aten = torch.ops.cuconv, torch.ops.aten
    if op == "pool_fwd":
        return (lambda: cu.max_pool2d(x, k, st, pad, dil, ceil_mode),
                lambda: aten.max_pool2d_with_indices(x, k, st, pad, dil, ceil_mode))
    if op != "pool_bwd":
        raise ValueError(f"unknown pooling pass {op}")
    return (lambda: cu.max_pool2d_backward(gy, x, idx, k, st, pad, dil, ceil_mode),
            lambda: aten.max_pool2d_with_indices_backward(gy, x, k, st, pad, dil, ceil_mode, idx))


def pool_bytes(x, y) -> int:
    """What a max-pool pass must move at least: the input (or grad_input) once, the output (or
    grad_output) once, and the int64 indices once."""
    return x.numel() * x.element_size() + y.numel() * (y.element_size() + 8)


def train_step(model, x, labels, make_optimizer=None, loss_fn=F.cross_entropy):
    """One training step as a callable: forward, loss, backward, optimizer step (Adam 1e-3 unless
    `make_optimizer(params)` builds another)."""
    opt = (make_optimizer or (lambda params: torch.optim.Adam(params, lr=1e-3)))(model.parameters())

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), labels)
        loss.backward()
        opt.step()
        return loss
    return step


class FunctionalSeedCNN(torch.nn.Module):
    """models.cifar_cnn's layers called with F.relu in forward and one pool module used twice:
    `convert` swaps the layers but cannot fuse anything here."""

    def __init__(self, num_classes=10):
        super().__init__()
        conv1, _, pool, conv2, _, _, _, fc = models.cifar_cnn(num_classes)
        self.conv1, self.conv2, self.pool, self.fc = conv1, conv2, pool, fc

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        return self.fc(torch.flatten(x, 1))


def make_train_model(name: str) -> torch.nn.Module:
    if name == "seed_cnn":
        return models.cifar_cnn()
    if name == "seed_cnn_functional":
        return FunctionalSeedCNN()
    if name == "resnet_mini":  # stem 3->32, one block each of 32, 64/2, 128/2, max-pool 2, linear
        return models.ResNetCifar(blocks=(1, 1, 1), widths=(32, 64, 128), pool="max")
    if name == "models.resnet":
        return models.ResNetCifar()  # ResNet-18 for CIFAR
    raise ValueError(f"unknown model {name}")


# -------------------------------------------------------------------------------------------- timing

@dataclass
class Stats:
    median_s: float
    q1_s: float
    q3_s: float
    min_s: float
    max_s: float
    reps: int
    faults: Optional[float] = None  # page faults per call (CPU), counted outside the timed calls

    @classmethod
    def of(cls, times, faults=None):
        ts = sorted(times)
        if len(ts) >= 2:
            q1, _, q3 = statistics.quantiles(ts, n=4, method="inclusive")
        else:
            q1 = q3 = ts[0]
        per_call = None if faults is None else faults / len(ts)
        return cls(statistics.median(ts), q1, q3, ts[0], ts[-1], len(ts), per_call)


def page_faults() -> int:
    """The process's page faults so far (all threads; minor and major), from getrusage."""
    import resource
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_minflt + use.ru_majflt


# mallopt parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def set_malloc_mode(mode: str) -> str:
    """The C allocator's policy for this process, as the bench header reports it.

    "default" leaves glibc alone: blocks above its mmap threshold (128 KiB at first, raised up to
    32 MiB each time a larger mmap'd block is freed) are mmap'd, and their pages are faulted in and
    zeroed on every use; the heap's top is returned to the OS once more than twice that is free.
    Either way a step that allocates and frees large temporaries can fault in all of them on every
    call, so a time can include ~1 us per 4 KiB page of what a kernel allocates.
    "steady" fixes the threshold at its 32 MiB maximum and never trims the heap: blocks up to 32
    MiB are reused as they are, as in a long-running process whose threshold has risen."""
    if mode == "default":
        return "glibc defaults"
    if mode != "steady":
        raise ValueError(f"unknown malloc mode {mode!r}; choose default or steady")
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        raise SystemExit("bench: --malloc steady needs glibc (Linux)")
    import ctypes
    libc = ctypes.CDLL(None)
    if not (libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20) and libc.mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1)):
        raise SystemExit("bench: mallopt refused the steady settings")
    return "steady (glibc: mmap threshold 32 MiB, heap never trimmed)"


class CpuTimer:
    """perf_counter around each call; A and B interleaved so drifts in the shared machine's speed
    hit both sides alike."""

    def __init__(self):
        self.device = "cpu"

    def once(self, fn):
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    def faults(self) -> Optional[int]:
        return page_faults()

    def sync(self):
        pass


class CudaTimer:
    """CUDA events around each call, with the L2 flushed (a 256 MiB buffer zeroed) before each."""

    def __init__(self):
        self.device = "cuda"
        self.flush_buf = torch.empty(256 * 2 ** 20, dtype=torch.int8, device="cuda")

    def once(self, fn):
        self.flush_buf.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    def faults(self) -> Optional[int]:
        return None  # host page faults say little about GPU kernels

    def sync(self):
        torch.cuda.synchronize()


def time_pair(timer, fn_a, fn_b, warmup=2, min_reps=3, max_reps=50, target_s=1.0):
    """Warm both up, then time A,B,A,B,...: as many pairs as fit in `target_s` per side (within
    [min_reps, max_reps]). Returns (Stats of A, Stats of B). Page faults are read between the
    calls, outside the timed region, and charged to the call they follow."""
    first = [0.0, 0.0]
    for _ in range(max(1, warmup)):
        first = [timer.once(fn_a), timer.once(fn_b)]
    per_pair = max(first[0], first[1], 1e-6)
    reps = int(min(max_reps, max(min_reps, target_s / per_pair)))
    ta, tb = [], []
    fa = fb = 0
    f0 = timer.faults()
    for _ in range(reps):
        ta.append(timer.once(fn_a))
        f1 = timer.faults()
        tb.append(timer.once(fn_b))
        f2 = timer.faults()
        if f0 is not None:
            fa, fb, f0 = fa + f1 - f0, fb + f2 - f1, f2
    counted = f0 is not None
    return Stats.of(ta, fa if counted else None), Stats.of(tb, fb if counted else None)


# ------------------------------------------------------------------------------------------ ceiling

def measure_ceiling(device: str, dtype: torch.dtype, quick=False, n: Optional[int] = None) -> dict:
    """The rates this machine reaches right now: a large matmul (GFLOP/s) and a large copy (GB/s,
    read + write). On the CPU the matmul also warms MKL/oneDNN up, which native convolution
    needs before its timings are representative."""
    timer = CpuTimer() if device == "cpu" else CudaTimer()
    n = n or (2048 if device == "cpu" else 8192)
    mm_dtype = dtype if dtype in (torch.float32, torch.float64) or device == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=mm_dtype)
    b = torch.randn(n, n, device=device, dtype=mm_dtype)
    times = []
    for i in range(2 + (3 if quick else 7)):
        t = timer.once(lambda: torch.mm(a, b))
        if i >= 2:
            times.append(t)
    mm = Stats.of(times)
    nbytes = (64 if device == "cpu" else 1024) * 2 ** 20
    src = torch.empty(nbytes // 4, device=device, dtype=torch.float32).uniform_()
    dst = torch.empty_like(src)
    ctimes = []
    for i in range(8 if quick else 15):
        t = timer.once(lambda: dst.copy_(src))
        if i >= 3:
            ctimes.append(t)
    cp = Stats.of(ctimes)
    return {"matmul": f"torch.mm {n}x{n}x{n} {str(mm_dtype).replace('torch.', '')}",
            "matmul_gflops": 2.0 * n ** 3 / mm.median_s / 1e9,
            "matmul_gflops_best": 2.0 * n ** 3 / mm.min_s / 1e9,
            "copy": f"copy_ of {nbytes // 2 ** 20} MiB (read + write counted)",
            "copy_gbs": 2.0 * nbytes / cp.median_s / 1e9,
            "copy_gbs_best": 2.0 * nbytes / cp.min_s / 1e9}


# --------------------------------------------------------------------------------------------- run

def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str) -> dict:
    import cuconv
    info = {"cpu_model": _cpu_model(), "cpu_cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__,
            "cuconv": getattr(cuconv, "__version__", "unknown"), "cuconv_commit": _git_commit()}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        info["cudnn"] = torch.backends.cudnn.version()
        info["cuda"] = torch.version.cuda
    else:
        info["mkldnn"] = torch.backends.mkldnn.is_available()
    info["loadavg_start"] = _loadavg()
    return info


def _loadavg():
    # Other work on the machine skews CPU timings; the load average says how busy it was.
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _git_commit() -> Optional[str]:
    import subprocess
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def run_case(case: Case, timer, ceiling: Optional[dict] = None, **timing) -> dict:
    row = {"name": case.name, "op": case.op, "shape": case.shape, "batch": case.batch, "dtype": case.dtype,
           "layout": case.layout, "device": case.device, "skipped": None}
    try:
        prep = prepare(case)
        a, b = time_pair(timer, prep.cuconv, prep.native, **timing)
    except (RuntimeError, NotImplementedError, TypeError) as e:  # e.g. a dtype a kernel lacks
        row["skipped"] = f"error: {str(e).splitlines()[0]}"
        return row
    row["cuconv"], row["native"] = vars(a), vars(b)
    row["ratio"] = b.median_s / a.median_s
    row["unit"] = prep.unit
    row["work"] = prep.work
    scale = 1.0 if prep.unit == "img/s" else 1e9
    row["cuconv_rate"] = prep.work / a.median_s / scale
    row["native_rate"] = prep.work / b.median_s / scale
    set_shares(row, ceiling or {})
    return row


def set_shares(row: dict, ceiling: dict) -> None:
    """Each rate as a share of the ceiling (matmul GFLOP/s for convolution, copy GB/s for pooling)."""
    ceil = {"GFLOP/s": ceiling.get("matmul_gflops"), "GB/s": ceiling.get("copy_gbs")}.get(row.get("unit"))
    row["cuconv_share"] = row["cuconv_rate"] / ceil if ceil else None
    row["native_share"] = row["native_rate"] / ceil if ceil else None


def combine_ceilings(start: dict, end: dict) -> dict:
    """The ceiling the shares use: the better of the measurements taken before and after the
    rows, since other load on the machine only ever lowers a measurement."""
    out = dict(start)
    for key in ("matmul_gflops", "matmul_gflops_best", "copy_gbs", "copy_gbs_best"):
        out[key] = max(start[key], end[key])
        out[key + "_start"], out[key + "_end"] = start[key], end[key]
    return out


def _ms(s):
    return f"{s * 1e3:.3f}" if s < 10 else f"{s * 1e3:.0f}"


def format_header(report: dict) -> str:
    m, st, c = report["machine"], report["settings"], report["ceiling"]
    lines = [
        f"cuconv {m['cuconv']} (commit {m.get('cuconv_commit')}) vs {st['native']}; torch {m['torch']}",
        f"machine: {m['cpu_model']}, {m['cpu_cores']} cores" + (f", GPU {m['gpu']}" if "gpu" in m else "")
        + f"; load average at start {m.get('loadavg_start')}" + (f", at end {m['loadavg_end']}" if "loadavg_end" in m else ""),
        f"settings: device={st['device']} threads={st['threads']} dtype={','.join(st['dtypes'])} "
        f"layout={','.join(st['layouts'])} tf32={st['tf32']} cudnn.benchmark={st['cudnn_benchmark']} "
        f"(same on both sides)",
        f"ceiling (this run): {c['matmul']} = {c['matmul_gflops']:.1f} GFLOP/s (best {c['matmul_gflops_best']:.1f}); "
        f"{c['copy']} = {c['copy_gbs']:.1f} GB/s"
        + (f"  [better of start/end medians: matmul {c['matmul_gflops_start']:.1f}/{c['matmul_gflops_end']:.1f}, "
           f"copy {c['copy_gbs_start']:.1f}/{c['copy_gbs_end']:.1f}]" if "matmul_gflops_end" in c else ""),
        f"timing: {st['method']}" + (f"; malloc: {st['malloc']}" if "malloc" in st else ""),
        "ratio = native time / cuconv time (>1 means cuconv is faster); times are medians in ms with [IQR]; "
        "rate = GFLOP/s (conv), GB/s (pool), img/s (train step); %ceil = rate / ceiling above"
        + ("; faults = page faults per call, cuconv/native" if st.get("device") == "cpu" else ""),
    ]
    return "\n".join(lines)


def format_table(rows) -> str:
    head = ("case", "cuconv ms [q1-q3]", "native ms [q1-q3]", "ratio", "cuconv rate", "%ceil", "native rate",
            "%ceil", "faults")
    body = []
    for r in rows:
        if r.get("skipped"):
            body.append((r["name"], "skipped: " + r["skipped"], "", "", "", "", "", "", ""))
            continue
        a, b = r["cuconv"], r["native"]

        def share(v):
            return f"{100 * v:.1f}%" if v is not None else "-"
        body.append((r["name"], f"{_ms(a['median_s'])} [{_ms(a['q1_s'])}-{_ms(a['q3_s'])}]",
                     f"{_ms(b['median_s'])} [{_ms(b['q1_s'])}-{_ms(b['q3_s'])}]", f"{r['ratio']:.2f}",
                     f"{r['cuconv_rate']:.2f} {r['unit']}", share(r["cuconv_share"]),
                     f"{r['native_rate']:.2f} {r['unit']}", share(r["native_share"]), _faults(r)))
    timed = [row for row in body if row[2]]
    widths = [max([len(h)] + [len(row[i]) for row in timed]) for i, h in enumerate(head)]
    fmt_row = lambda row: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
    out = [fmt_row(head), "  ".join("-" * w for w in widths)]
    for row in body:
        out.append(fmt_row(row) if row[2] else f"{row[0].ljust(widths[0])}  {row[1]}")
    return "\n".join(out)


def _faults(row) -> str:
    """Page faults per call as cuconv/native, whole numbers ("-" where not counted)."""
    a, b = row["cuconv"].get("faults"), row["native"].get("faults")
    return "-" if a is None or b is None else f"{a:.0f}/{b:.0f}"


def format_markdown(rows) -> str:
    out = ["| case | cuconv ms [IQR] | native ms [IQR] | ratio | cuconv rate | % ceil | native rate | % ceil | faults |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("skipped"):
            out.append(f"| {r['name']} | skipped: {r['skipped']} | | | | | | | |")
            continue
        a, b = r["cuconv"], r["native"]
        sh = lambda v: f"{100 * v:.1f}%" if v is not None else "-"
        out.append(f"| {r['name']} | {_ms(a['median_s'])} [{_ms(a['q1_s'])}-{_ms(a['q3_s'])}] | "
                   f"{_ms(b['median_s'])} [{_ms(b['q1_s'])}-{_ms(b['q3_s'])}] | {r['ratio']:.2f} | "
                   f"{r['cuconv_rate']:.2f} {r['unit']} | {sh(r['cuconv_share'])} | "
                   f"{r['native_rate']:.2f} {r['unit']} | {sh(r['native_share'])} | {_faults(r)} |")
    return "\n".join(out)


def write_plot(report: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["rows"] if not r.get("skipped")]
    names = [r["name"] for r in rows]
    ratios = [r["ratio"] for r in rows]
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.32 * max(1, len(rows))))
    colors = ["tab:green" if v >= 1 else "tab:red" for v in ratios]
    ax.barh(range(len(rows)), ratios, color=colors)
    ax.set_yticks(range(len(rows)), names, fontsize=8)
    ax.set_ylim(len(rows) - 0.4, -0.6)  # first row on top, no empty margins
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xlim(min(ratios + [1.0]) / 1.5, max(ratios + [1.0]) * 1.5)
    for i, v in enumerate(ratios):
        ax.text(v, i, f" {v:.2f}", va="center", fontsize=7)
    ax.set_xlabel("native time / cuconv time  (>1: cuconv faster, log scale)")
    st = report["settings"]
    ax.set_title(f"cuconv vs {st['native']} - {st['device']}, {st['threads']} threads, torch "
                 f"{report['machine']['torch']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench: --device cuda but no GPU is available")
    return device


def open_run(args, layouts, batches) -> tuple:
    """The setup every bench run shares: device, threads, allocator and GPU flags as `args` asks, the
    ceiling (measured before any case), and the report's machine and settings. Returns (report, timer)."""
    import cuconv  # noqa: F401

    device = resolve_device(args.device)
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    malloc = set_malloc_mode(args.malloc)
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
    dtypes = args.dtype.split(",")
    timer = CpuTimer() if device == "cpu" else CudaTimer()
    # Measured first also because native CPU convolution needs a process that has run a large
    # sgemm (MKL/oneDNN warm-up) before its timings are representative.
    ceiling_start = measure_ceiling(device, DTYPES[dtypes[0]], quick=args.quick, n=args.ceiling_n)
    method = (f"warm-up {args.warmup}, then cuconv/native interleaved ABAB, {args.min_reps}..{args.max_reps} "
              f"pairs (as many as fit in {args.target_time}s per side), median and IQR; ")
    method += ("CUDA events, L2 flushed (256 MiB zeroed) before each call" if device == "cuda"
               else "time.perf_counter around each call")
    report = {
        "machine": machine_info(device),
        "settings": {"device": device, "threads": threads, "dtypes": dtypes, "layouts": list(layouts),
                     "batches": sorted(batches), "tf32": bool(args.tf32) if device == "cuda" else "n/a",
                     "cudnn_benchmark": device == "cuda", "quick": args.quick, "method": method,
                     "native": "cuDNN/ATen" if device == "cuda" else "oneDNN/ATen", "malloc": malloc,
                     "argv": sys.argv[1:]},
        "ceiling": ceiling_start,
    }
    return report, timer


def close_run(report, args) -> None:
    """The end of a run: the load average, and the ceiling measured again (see combine_ceilings)."""
    st = report["settings"]
    report["machine"]["loadavg_end"] = _loadavg()
    end = measure_ceiling(st["device"], DTYPES[st["dtypes"][0]], quick=args.quick, n=args.ceiling_n)
    report["ceiling"] = combine_ceilings(report["ceiling"], end)


def run(args) -> dict:
    layout = args.layout or "nchw"
    layouts = ("nchw", "channels_last") if layout == "both" else (layout,)
    batches = [int(b) for b in args.batch.split(",")] if args.batch else None
    cases = build_cases(resolve_device(args.device), batches, args.dtype.split(","), layouts, _split(args.ops),
                        _split(args.shapes), args.quick)
    report, timer = open_run(args, layouts, {c.batch for c in cases})
    report["rows"] = []
    ceiling_start = report["ceiling"]
    if not args.no_header:
        print(format_header(report), flush=True)
    for case in cases:
        row = run_case(case, timer, ceiling_start, warmup=args.warmup, min_reps=args.min_reps, max_reps=args.max_reps,
                       target_s=args.target_time)
        report["rows"].append(row)
        if args.verbose:
            print(format_table([row]).splitlines()[-1], flush=True)
    close_run(report, args)
    for row in report["rows"]:
        if not row.get("skipped"):
            set_shares(row, report["ceiling"])
    print(format_header(report).splitlines()[3])
    print(format_table(report["rows"]))
    print(f"load average at end: {report['machine']['loadavg_end']}")
    return report


def _split(value):
    return [v for v in value.split(",") if v] if value else None


def main(args) -> int:
    if args.models:
        from . import bench_models
        report = bench_models.run(args)
    else:
        report = run(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"wrote {args.json}")
    if args.markdown:
        with open(args.markdown, "w") as f:
            if args.models:
                from .bench_models import LEGEND, format_markdown as models_markdown
                f.write(format_header(report).rsplit("\n", 1)[0] + "\n" + LEGEND + "\n\n"
                        + models_markdown(report, args.top or 5, args.sort) + "\n")
            else:
                f.write(format_header(report) + "\n\n" + format_markdown(report["rows"]) + "\n")
        print(f"wrote {args.markdown}")
    if args.plot and not args.models:
        write_plot(report, args.plot)
        print(f"wrote {args.plot}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="time cuconv's kernels against cuDNN / oneDNN",
                              description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    p.add_argument("--ops", help=f"comma-separated substrings/regexes of op names: {', '.join(ALL_OPS)}; with "
                                 "--models: train_step, inference, conv_fwd, conv_grad_input, conv_grad_weight, "
                                 "pool_fwd, pool_bwd")
    p.add_argument("--shapes", help="comma-separated substrings/regexes of shape or row names "
                                    "(e.g. seed.conv2, r18.l, 'n32/'); with --models: of layer labels or module "
                                    "names (layers view)")
    p.add_argument("--dtype", default="float32", help="comma-separated: " + ", ".join(DTYPES))
    p.add_argument("--layout", choices=("nchw", "channels_last", "both"), default=None,
                   help="default nchw; both with --models")
    p.add_argument("--batch", help="comma-separated batch sizes (default 32,128 on the CPU, 32,128,256 on a GPU; "
                                   "32 with --models)")
    p.add_argument("--models", metavar="NAMES",
                   help="real-model benchmark instead of the layer suite: torchvision models (comma list, or all: "
                        "resnet18 ... vgg11), converted against unconverted; see --view")
    p.add_argument("--resolution", type=int, choices=(64, 224), default=64, help="--models: input height = width")
    p.add_argument("--view", choices=("models", "layers", "both"), default="both",
                   help="--models: whole models (training step, inference), every distinct conv/pool layer, or both")
    p.add_argument("--top", type=int, default=0,
                   help="--models: print only the first N layer passes per model and layout (Markdown: 5)")
    p.add_argument("--sort", choices=("ratio", "lost"), default="ratio",
                   help="--models: layer passes by ratio (lowest first) or by the time the model loses there, "
                        "calls x (cuconv - native) (largest first)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (default torch.get_num_threads())")
    p.add_argument("--tf32", action="store_true", help="allow TF32 on a GPU (both sides); default off")
    p.add_argument("--quick", action="store_true", help="few shapes, batch 32, short timing")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--min-reps", type=int, default=None)
    p.add_argument("--max-reps", type=int, default=None)
    p.add_argument("--target-time", type=float, default=None, help="seconds of timing per side per case")
    p.add_argument("--malloc", choices=("default", "steady"), default="default",
                   help="C allocator policy: glibc's defaults, or steady (blocks up to 32 MiB come from a "
                        "heap that is never trimmed, so freeing and reallocating them faults no pages in)")
    p.add_argument("--ceiling-n", type=int, default=None,
                   help="matmul size of the ceiling measurement (default 2048 on the CPU, 8192 on a GPU)")
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--markdown", metavar="PATH", help="write the header and table as Markdown")
    p.add_argument("--plot", metavar="PATH", help="PNG bar chart of the ratios")
    p.add_argument("--no-header", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true", help="print each row as it finishes")
    p.set_defaults(func=_entry)


def _entry(args) -> int:
    # Quick mode shortens timing unless the user set it explicitly.
    defaults = dict(warmup=(1, 3), min_reps=(3, 5), max_reps=(10, 100), target_time=(0.3, 1.0))
    for key, (quick, full) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    return main(args)
