"""`python -m cuconv audit`: what the compiler made of the CUDA kernels.

Reads the built extension (or given .so / .o / .cubin files) with cuobjdump and nvdisasm from the
triton package and reports, per kernel and architecture: registers, stack and local memory
(cuobjdump -res-usage), local-memory instructions (LDL/STL: spills or local arrays; the binary
cannot tell them apart), static shared memory, threads per block (__launch_bounds__, from the ELF
attributes), theoretical occupancy, and the counts in the SASS of tensor-core instructions (HMMA),
asynchronous global->shared copies (LDGSTS, from cp.async), shared-memory matrix loads (LDSM, from
ldmatrix), and 128-bit global / shared loads (LDG.E.128 / LDS.128).

Each kernel's main loop is found in the SASS: the innermost loop (a backward branch and the
instructions from its target to it) that holds the kernel's math instruction (HMMA; FFMA or DFMA in
the SIMT kernels), the pipelined one (fewest barriers) where a kernel has two. `--mix` prints its
instruction mix: instructions per HMMA / FMA, the integer address arithmetic (IMAD, ISETP, SHF,
LEA), integer divisions (the inline I2F.RP + MUFU.RCP sequences nvcc emits for a 32-bit `/` or `%`
by a run-time value, and calls to its 64-bit division subroutines), calls, barriers and vector
memory instructions; and the divisions and calls of the whole kernel and of all its loops.

`--check` exits non-zero when a hot kernel (regex `--hot`) touches local memory, or a tensor-core
kernel (regex `--tensorcore`) has no HMMA, or one of the required tensor-core ops (`--require`;
by default fprop, dgrad and wgrad when auditing the built extension) has no tensor-core kernel at
all, or there is no device code at all; and, against the recorded baseline (`--baseline`, by
default tests/data/audit_baseline.json when it exists), when a kernel's main loop has more
instructions per HMMA / FMA than recorded (beyond the recorded slack) or any kernel more divisions
or calls, in its loops or in all. `--write-baseline PATH` records today's numbers.

`--model` predicts H100 times from these counts (pyext/cuconv/apps/gpu_model.py), and
`--sim-counts` runs layers in the simulator and reports its counters (sim_counts.py).
"""
from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

# Kernels that must not touch local memory: the conv implicit GEMMs (fprop/dgrad/wgrad) and the
# tensor-core kernels. Matched against the mangled name.
# Hot kernels: the convolution main loops in the dtypes that run fast on a GPU (float32, float16,
# bfloat16); float64 instantiations exist for exactness, not speed, and may spill. Matched against
# the demangled name.
DEFAULT_HOT = r"^(?!.*\bdouble\b).*(implicit_gemm_kernel|conv2d_\w*(fprop|dgrad|wgrad)|tensorcore)"
DEFAULT_TENSORCORE = r"tensorcore"
# The tensor-core kernel of each convolution pass, by its Problem type (in the mangled name).
TENSORCORE_OPS = {"fprop": r"Conv2dFpropTcProblem", "dgrad": r"Conv2dDgradTcProblem", "wgrad": r"Conv2dWgradTcProblem"}
DEFAULT_THREADS = 256  # used when a kernel has no __launch_bounds__ (reported as assumed)
# Today's counts that --check holds later builds to (written by --write-baseline).
DEFAULT_BASELINE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "tests", "data", "audit_baseline.json")

# Per-SM limits (CUDA C Programming Guide, compute capabilities 8.0 and 9.0). Shared memory per
# SM is what a kernel may configure; the driver reserves 1 KiB of it per block.
ARCH_LIMITS = {
    "sm_80": dict(max_warps=64, max_blocks=32, regs=65536, reg_unit=256, smem=164 * 1024, smem_reserved=1024, smem_unit=128),
    # sm_90: cuobjdump's SHARED already includes the 1 KiB reservation (same kernel: sm_80 8320 B, sm_90 9344 B).
    "sm_90": dict(max_warps=64, max_blocks=32, regs=65536, reg_unit=256, smem=228 * 1024, smem_reserved=0, smem_unit=128),
}


@dataclass
class LoopMix:
    """One loop of a kernel's SASS: its address range and what it issues per iteration (per warp)."""
    start: int  # address of the loop's first instruction (the backward branch's target)
    end: int  # address of the backward branch
    instructions: int = 0
    math: int = 0  # the kernel's math op (HMMA / FFMA / DFMA)
    divisions: int = 0
    calls: int = 0
    ops: dict = field(default_factory=dict)  # opcode without modifiers (IMAD, ISETP, BAR, LDGSTS, ...) -> count
    wide: dict = field(default_factory=dict)  # 128-bit memory instructions: ldg128, lds128, stg128, sts128

    @property
    def per_math(self) -> float | None:
        """Instructions per HMMA (per FMA in the SIMT kernels)."""
        return self.instructions / self.math if self.math else None

    def count(self, op: str) -> int:
        return self.ops.get(op, 0)


@dataclass
class KernelReport:
    name: str  # mangled
    arch: str
    registers: int = 0
    stack_bytes: int = 0
    local_bytes: int = 0
    shared_bytes: int = 0  # static shared memory
    threads: int = DEFAULT_THREADS
    threads_assumed: bool = True
    local_instructions: int = 0  # LDL / STL
    hmma: int = 0
    ldgsts: int = 0  # cp.async
    ldsm: int = 0  # ldmatrix
    ldg128: int = 0
    lds128: int = 0
    stg128: int = 0
    sts128: int = 0
    # The instruction mix (see LoopMix); None where the SASS was not read.
    instructions: int = 0  # the kernel's own code, without its subroutines
    calls: int = 0
    divisions: int = 0  # inline 32-bit sequences + calls to a division subroutine
    loop_calls: int = 0  # in any loop of the kernel (main, epilogue, grid-stride)
    loop_divisions: int = 0
    outside_loop_instructions: int = 0  # everything but the math loops: prologue, epilogue, other paths
    math_op: str | None = None  # HMMA, FFMA or DFMA: what the main loop is found by
    main_loop: LoopMix | None = None
    math_loops: list[LoopMix] = field(default_factory=list)  # every innermost loop with the math op
    label: str = ""  # short description: family, pass, dtype, layout, tile, loads
    info: dict = field(default_factory=dict)
    occupancy: float | None = None  # resident warps / max warps, None for an arch without limits here
    blocks_per_sm: int | None = None
    limiter: str | None = None
    demangled: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def uses_local_memory(self) -> bool:
        return self.local_instructions > 0 or self.local_bytes > 0 or self.stack_bytes > 0


# ------------------------------------------------------------------------------------ parsers

_ARCH_RE = re.compile(r"^\s*arch\s*=\s*(sm_\d+a?)")
_CODE_FOR_RE = re.compile(r"^\s*(?:code for|\.target)\s+(sm_\d+a?)")
_RES_FUNC_RE = re.compile(r"^\s*Function\s+(\S+?):\s*$")
_RES_LINE_RE = re.compile(r"REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)\s+LOCAL:(\d+)")
_SASS_FUNC_RE = re.compile(r"^\s*Function\s*:\s*(\S+)\s*$")  # cuobjdump -sass
_NVDISASM_FUNC_RE = re.compile(r"^\.text\.(\S+):\s*$")  # nvdisasm
_INSN_RE = re.compile(r"^\s*/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_]*(?:\.[A-Z0-9_]+)*)")


def parse_res_usage(text: str) -> dict[tuple[str | None, str], dict]:
    """cuobjdump -res-usage -> {(arch or None, kernel): {registers, stack_bytes, shared_bytes, local_bytes}}."""
    out, arch, func = {}, None, None
    for line in text.splitlines():
        if m := _ARCH_RE.match(line):
            arch = m.group(1)
        elif m := _RES_FUNC_RE.match(line):
            func = m.group(1)
        elif func and (m := _RES_LINE_RE.search(line)):
            regs, stack, shared, local = map(int, m.groups())
            out[(arch, func)] = dict(registers=regs, stack_bytes=stack, shared_bytes=shared, local_bytes=local)
            func = None
    return out


def parse_elf_max_threads(text: str) -> dict[tuple[str | None, str], int]:
    """cuobjdump -elf -> {(arch, kernel): threads per block from EIATTR_MAX_THREADS / EIATTR_REQNTID}."""
    out, arch, func, want = {}, None, None, False
    for line in text.splitlines():
        if m := _ARCH_RE.match(line):
            arch = m.group(1)
        elif line.startswith(".nv.info."):
            func, want = line[len(".nv.info."):].strip(), False
        elif line.startswith("."):
            func, want = None, False
        elif func and ("EIATTR_MAX_THREADS" in line or "EIATTR_REQNTID" in line):
            want = True
        elif want and "Value:" in line:
            dims = [int(v, 16) for v in re.findall(r"0x[0-9a-fA-F]+", line)[:3]]
            if dims:
                out[(arch, func)] = math.prod(dims)
            want = False
    return out


_FULL_INSN_RE = re.compile(
    r"^\s*/\*([0-9a-f]{4,})\*/\s+(@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_]*(?:\.[A-Z0-9_]+)*)\s*([^;]*);")
_LABEL_RE = re.compile(r"^([.$A-Za-z_][\w.$]*):\s*$")  # nvdisasm: `.L_x_12:`, `$__internal_0_$__cuda_sm20_div_s64:`
_TARGET_RE = re.compile(r"`\(([^)]+)\)|\b0x([0-9a-f]+)\b")  # nvdisasm `(.L_x_12), cuobjdump 0x1a40


@dataclass(slots=True)
class Insn:
    addr: int
    op: str  # opcode with its modifiers, e.g. LDG.E.128
    args: str = ""  # operands
    pred: str = ""  # guard predicate, e.g. @!P0
    base: str = field(init=False, default="")  # the opcode without modifiers, e.g. LDG

    def __post_init__(self):
        self.base = self.op.split(".", 1)[0]


@dataclass
class SassFunction:
    insns: list[Insn] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)  # nvdisasm labels -> address


def parse_functions(text: str) -> dict[tuple[str | None, str], SassFunction]:
    """SASS from cuobjdump -sass or nvdisasm -> {(arch, kernel): its instructions and labels}."""
    out, arch, fn, pending = {}, None, None, []
    for line in text.splitlines():
        if fn is not None and line.lstrip().startswith("/*"):  # most lines: an instruction (or its encoding)
            if m := _FULL_INSN_RE.match(line):
                addr = int(m.group(1), 16)
                for label in pending:
                    fn.labels[label] = addr
                pending = []
                fn.insns.append(Insn(addr, m.group(3), m.group(4).strip(), (m.group(2) or "").strip()))
            continue
        if m := _CODE_FOR_RE.match(line):
            arch = m.group(1)
            continue
        m = _SASS_FUNC_RE.match(line) or _NVDISASM_FUNC_RE.match(line)
        if m:
            fn = out.setdefault((arch, m.group(1)), SassFunction())
            pending = []
            continue
        if fn is not None and (m := _LABEL_RE.match(line.strip())):
            pending.append(m.group(1))
    return out


def _counts(insns) -> dict:
    counts = dict(hmma=0, ldgsts=0, ldsm=0, ldg128=0, lds128=0, stg128=0, sts128=0, local_instructions=0)
    for insn in insns:
        parts = insn.op.split(".")
        if parts[0] == "HMMA":
            counts["hmma"] += 1
        elif parts[0] == "LDGSTS":
            counts["ldgsts"] += 1
        elif parts[0] == "LDSM":
            counts["ldsm"] += 1
        elif parts[0] in ("LDG", "LDS", "STG", "STS") and "128" in parts:
            counts[parts[0].lower() + "128"] += 1
        elif parts[0] in ("LDL", "STL"):
            counts["local_instructions"] += 1
    return counts


def parse_sass(text: str) -> dict[tuple[str | None, str], dict]:
    """SASS from cuobjdump -sass or nvdisasm -> {(arch, kernel): instruction counts}."""
    return {key: _counts(fn.insns) for key, fn in parse_functions(text).items()}


# ------------------------------------------------------------------------------------ the main loop

MATH_OPS = ("HMMA", "DFMA", "FFMA")  # in this order: a tensor-core kernel's FFMAs are its epilogue's


def _target(fn: SassFunction, insn: Insn) -> int | None:
    found = list(_TARGET_RE.finditer(insn.args))
    if not found:
        return None
    last = found[-1]
    return fn.labels.get(last.group(1)) if last.group(1) else int(last.group(2), 16)


def _is_division(insn: Insn) -> bool:
    """The reciprocal estimate that starts nvcc's integer division (I2F.U32.RP, I2F.RP, I2F.U64.RP):
    32-bit `/` and `%` by a run-time value inline, 64-bit inside the division subroutines."""
    parts = insn.op.split(".")
    return parts[0] == "I2F" and "RP" in parts[1:]


@dataclass
class _Code:
    body: list[Insn]  # the kernel's own instructions
    division_calls: set[int]  # addresses of CALLs into a division subroutine
    calls: set[int]  # addresses of every CALL


def _split_subroutines(fn: SassFunction) -> _Code:
    """The kernel's own code, and which of its calls reach a division subroutine. Subroutines
    (nvcc's 64-bit division and remainder) follow the kernel's code in its section: they start at
    the call targets (cuobjdump) or at the `$__internal_...` labels (nvdisasm)."""
    insns = fn.insns
    # Subroutines follow the kernel's last EXIT. A CALL to an address before it is how ptxas (sm_80)
    # leaves a divergent loop for its reconvergence point: a jump within the kernel, not a call.
    last_exit = max((i.addr for i in insns if i.base == "EXIT"), default=None)
    calls = [i for i in insns if i.base == "CALL"
             and (last_exit is None or (t := _target(fn, i)) is None or t > last_exit)]
    starts = {t for i in calls if (t := _target(fn, i)) is not None}
    named = {addr: name for name, addr in fn.labels.items() if name.startswith("$")}
    starts |= set(named)
    first_sub = min(starts) if starts else None
    body = [i for i in insns if first_sub is None or i.addr < first_sub]
    subs = sorted(starts)

    def is_division_subroutine(start: int) -> bool:
        if "div" in named.get(start, "") or "rem" in named.get(start, ""):
            return True
        after = [a for a in subs if a > start]
        end = after[0] if after else float("inf")
        for insn in insns:
            if start <= insn.addr < end:
                if _is_division(insn) or insn.op.startswith("MUFU.RCP64H"):
                    return True
                if insn.base == "RET":
                    break
        return False

    division_targets = {t for t in subs if is_division_subroutine(t)}
    return _Code(body, {i.addr for i in calls if _target(fn, i) in division_targets and i.addr < (first_sub or 1 << 62)},
                 {i.addr for i in calls if i.addr < (first_sub or 1 << 62)})


def _loops(fn: SassFunction, body: list[Insn]) -> list[tuple[int, int]]:
    """(first, last) indices into `body` of every loop: a backward branch and the code from its
    target to it. A branch to itself (the trap after the last EXIT) is not a loop."""
    index = {insn.addr: i for i, insn in enumerate(body)}
    out = []
    for i, insn in enumerate(body):
        if insn.base == "BRA":
            t = _target(fn, insn)
            if t is not None and t in index and index[t] < i:
                out.append((index[t], i))
    return out


def loop_mix(body: list[Insn], first: int, last: int, math_op: str | None, code: _Code) -> LoopMix:
    insns = body[first: last + 1]
    ops = Counter(i.base for i in insns)
    mix = LoopMix(start=insns[0].addr, end=insns[-1].addr, instructions=len(insns),
                  math=ops.get(math_op, 0) if math_op else 0, ops=dict(ops.most_common()),
                  wide={k: v for k, v in _counts(insns).items() if k.endswith("128")})
    for insn in insns:
        if _is_division(insn) or insn.addr in code.division_calls:
            mix.divisions += 1
        if insn.addr in code.calls:
            mix.calls += 1
    return mix


def analyse_function(fn: SassFunction) -> dict:
    """The instruction mix of one kernel: its main loop, the other loops with its math op, and the
    divisions and calls of the kernel and of its loops (KernelReport's fields)."""
    code = _split_subroutines(fn)
    body = code.body
    loops = _loops(fn, body)
    ops_in = {(a, b): {i.base for i in body[a: b + 1]} for a, b in loops}
    math_op = next((op for op in MATH_OPS if any(op in ops for ops in ops_in.values())), None)
    math_loops = [(a, b) for a, b in loops if math_op and math_op in ops_in[(a, b)]]
    # innermost: no other loop with the math op strictly inside
    inner = [(a, b) for a, b in math_loops
             if not any((c, d) != (a, b) and a <= c and d <= b for c, d in math_loops)]
    mixes = [loop_mix(body, a, b, math_op, code) for a, b in inner]
    main = min(mixes, key=lambda m: (m.count("BAR"), -m.math, -m.instructions), default=None)
    in_loops = set()
    for a, b in loops:
        in_loops.update(range(a, b + 1))
    in_math_loops = set()
    for a, b in math_loops:
        in_math_loops.update(range(a, b + 1))
    divisions = sum(_is_division(i) or i.addr in code.division_calls for i in body)
    return dict(instructions=len(body), calls=len(code.calls), divisions=divisions,
                loop_calls=sum(body[i].addr in code.calls for i in in_loops),
                loop_divisions=sum(_is_division(body[i]) or body[i].addr in code.division_calls for i in in_loops),
                outside_loop_instructions=len(body) - len(in_math_loops), math_op=math_op, main_loop=main,
                math_loops=sorted(mixes, key=lambda m: m.start))


# ------------------------------------------------------------------------------------ occupancy

def occupancy(arch: str, registers: int, shared_bytes: int, threads: int) -> tuple[float, int, str] | None:
    """Theoretical occupancy (resident warps / max warps), blocks per SM, and the limiting resource."""
    lim = ARCH_LIMITS.get(arch)
    if lim is None or threads <= 0:
        return None
    warps = math.ceil(threads / 32)
    by = {"warps": lim["max_warps"] // warps, "blocks": lim["max_blocks"]}
    if registers > 0:
        regs_per_warp = math.ceil(registers * 32 / lim["reg_unit"]) * lim["reg_unit"]
        by["registers"] = lim["regs"] // (regs_per_warp * warps)
    smem = math.ceil((shared_bytes + lim["smem_reserved"]) / lim["smem_unit"]) * lim["smem_unit"]
    if smem > 0:  # a kernel without shared memory (and no per-block reservation) is not limited by it
        by["shared memory"] = lim["smem"] // smem
    limiter = min(by, key=by.get)
    blocks = by[limiter]
    return blocks * warps / lim["max_warps"], blocks, limiter


# ------------------------------------------------------------------------------------ tools

def find_tool(name: str) -> str:
    """cuobjdump / nvdisasm from the triton package, else from CUDA_HOME or PATH."""
    spec = importlib.util.find_spec("triton")
    candidates = []
    if spec and spec.submodule_search_locations:
        candidates.append(os.path.join(list(spec.submodule_search_locations)[0], "backends", "nvidia", "bin", name))
    cuda_home = os.environ.get("CUDA_HOME")
    if cuda_home:
        candidates.append(os.path.join(cuda_home, "bin", name))
    for c in candidates:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(f"{name} not found (install triton, or set CUDA_HOME)")


def _run(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    text = proc.stdout + proc.stderr
    if proc.returncode != 0 and "does not contain device code" not in text:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {text.strip()[:500]}")
    return proc.stdout


def demangle(names: list[str]) -> dict[str, str]:
    tool = shutil.which("c++filt")
    if not tool or not names:
        return {n: n for n in names}
    proc = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True)
    lines = proc.stdout.splitlines()
    return dict(zip(names, lines)) if len(lines) == len(names) else {n: n for n in names}


def extension_path() -> str:
    """The built cuconv._C library, found without loading it."""
    spec = importlib.util.find_spec("cuconv._C")
    if spec is None or not spec.origin:
        raise FileNotFoundError("cuconv._C is not built; run `python setup.py build_ext --inplace` (FORCE_CUDA=1)")
    return spec.origin


def _single_arch(keys) -> str | None:
    archs = {a for a, _ in keys if a}
    return archs.pop() if len(archs) == 1 else None


# ------------------------------------------------------------------------------------ kernel names

_DTYPES = {"__half": "f16", "__nv_bfloat16": "bf16", "float": "f32", "double": "f64"}
_TC_LOADS = ("sync_k", "sync_row", "cp4_k", "cp4_row", "cp16", "cp16_mn")  # TcLoad's enumerators, in order
# kTcConfigs by (rows, columns, warps); small_channel is the large tile with one stage
_TC_TILES = {(128, 64, 8): "large", (64, 64, 4): "medium", (64, 32, 4): "narrow", (128, 128, 4): "wide",
             (128, 64, 4): "tall"}
# Conv2dWgradTcMnProblem<T>: channels_last only (its operands' rows are contiguous)
_TC_RE = re.compile(r"implicit_gemm_tensorcore_kernel<cuconv::kern::Conv2d(Fprop|Dgrad|Wgrad)Tc(?:Mn)?Problem<([\w:]+)"
                    r"(?:, (true|false))?>, [^,]+, cuconv::kern::TcTile<(\d+), (\d+), (\d+), (\d+)>, "
                    r"\(cuconv::kern::TcLoad\)(\d), \(cuconv::kern::TcLoad\)(\d)")
_SIMT_RE = re.compile(r"implicit_gemm_kernel<cuconv::kern::Conv2d(Fprop|Dgrad|Wgrad|FpropReluPool)Problem<([\w:]+), "
                      r"(true|false)>")
_OTHER_RE = re.compile(r"cuconv::kern::(\w+?)(?:_kernel)?<([\w:]+)(?:, (int|long))?>")
_INDEX = {"int": "i32", "long": "i64"}  # the max-pool kernels' index type


def describe(demangled: str) -> dict:
    """What a kernel is, from its demangled name: family (tensorcore, simt, or the kernel's own
    name), pass, dtype (float is f32; on tensor cores it runs as TF32), layout, tile and loads."""
    if m := _TC_RE.search(demangled):
        conv_pass, t, cl, bm, bn, wm, wn, la, lb = m.groups()
        dtype = _DTYPES.get(t, t)
        return dict(family="tensorcore", conv_pass=conv_pass.lower(), dtype="tf32" if dtype == "f32" else dtype,
                    layout="nchw" if cl == "false" else "nhwc", tile=f"{bm}x{bn}",
                    config=_TC_TILES.get((int(bm), int(bn), int(wm) * int(wn)), "?"), warps=int(wm) * int(wn),
                    load_a=_TC_LOADS[int(la)], load_b=_TC_LOADS[int(lb)])
    if m := _SIMT_RE.search(demangled):
        problem, t, cl = m.groups()
        conv_pass = "fprop+relu+pool" if problem == "FpropReluPool" else problem.lower()
        return dict(family="simt", conv_pass=conv_pass, dtype=_DTYPES.get(t, t), layout="nhwc" if cl == "true" else "nchw",
                    tile="64x64", config="simt", warps=8)
    if m := _OTHER_RE.search(demangled):
        info = dict(family=m.group(1), dtype=_DTYPES.get(m.group(2), m.group(2)))
        if m.group(3):
            info["index"] = _INDEX[m.group(3)]
        return info
    return dict(family="other")


def label_of(info: dict, fallback: str) -> str:
    """A short unique name: `tc fprop f16 nhwc 128x64 cp16/sync_k`, `simt dgrad f32 nchw`, ...; the
    tall tile (128x64 in 4 warps, as the large one's outputs in 8) ends in ` tall`."""
    if info["family"] == "tensorcore":
        return (f"tc {info['conv_pass']} {info['dtype']} {info['layout']} {info['tile']} "
                f"{info['load_a']}/{info['load_b']}" + (" tall" if info["config"] == "tall" else ""))
    if info["family"] == "simt":
        return f"simt {info['conv_pass']} {info['dtype']} {info['layout']}"
    if info["family"] != "other":
        return f"{info['family']} {info['dtype']}" + (f" {info['index']}" if "index" in info else "")
    return fallback


# ------------------------------------------------------------------------------------ audit

def audit_texts(res_text: str, sass_text: str, elf_text: str = "", hot: str = DEFAULT_HOT,
                tensorcore: str = DEFAULT_TENSORCORE) -> list[KernelReport]:
    """Combines the three tools' outputs into one report per (kernel, arch)."""
    functions = parse_functions(sass_text)
    res, threads = parse_res_usage(res_text), parse_elf_max_threads(elf_text)
    sass = {key: _counts(fn.insns) for key, fn in functions.items()}
    # A bare .cubin's -res-usage and -elf carry no `arch =` line: take the SASS's single target.
    fallback = _single_arch(sass)
    norm = lambda d: {((a or fallback), f): v for (a, f), v in d.items()}
    res, sass, threads, functions = norm(res), norm(sass), norm(threads), norm(functions)
    keys = sorted(set(res) | set(sass), key=lambda k: (k[1], k[0] or ""))
    names = demangle(sorted({f for _, f in keys}))
    hot_re, tc_re = re.compile(hot), re.compile(tensorcore)
    reports = []
    for arch, func in keys:
        r = KernelReport(name=func, arch=arch or "?", demangled=names.get(func, func))
        for k, v in {**res.get((arch, func), {}), **sass.get((arch, func), {})}.items():
            setattr(r, k, v)
        if (arch, func) in functions:
            for k, v in analyse_function(functions[(arch, func)]).items():
                setattr(r, k, v)
        r.info = describe(r.demangled)
        r.label = label_of(r.info, _short(r.demangled))
        if (arch, func) in threads:
            r.threads, r.threads_assumed = threads[(arch, func)], False
        occ = occupancy(r.arch, r.registers, r.shared_bytes, r.threads)
        if occ:
            r.occupancy, r.blocks_per_sm, r.limiter = round(occ[0], 4), occ[1], occ[2]
        if hot_re.search(r.demangled) and r.uses_local_memory:
            r.problems.append(f"uses local memory ({r.local_instructions} LDL/STL, stack {r.stack_bytes} B, "
                              f"local {r.local_bytes} B)")
        if tc_re.search(func) and r.hmma == 0:
            r.problems.append("tensor-core kernel without HMMA")
        reports.append(r)
    seen = Counter((r.arch, r.label) for r in reports)
    for r in reports:  # labels must name one kernel per arch (the baseline is keyed by them)
        if seen[(r.arch, r.label)] > 1:
            r.label = r.name
    return reports


def missing_tensorcore_ops(reports: list[KernelReport], required: list[str], tensorcore: str = DEFAULT_TENSORCORE) -> list[str]:
    """The required ops (keys of TENSORCORE_OPS) that no tensor-core kernel in `reports` implements."""
    tc_re = re.compile(tensorcore)
    return [op for op in required
            if not any(tc_re.search(r.name) and re.search(TENSORCORE_OPS[op], r.name) for r in reports)]


def _cubins(path: str, workdir: str) -> list[str]:
    """The cubins inside a fat binary (.so, .o), extracted with cuobjdump -xelf into workdir."""
    subprocess.run([find_tool("cuobjdump"), "-xelf", "all", os.path.abspath(path)], cwd=workdir,
                   capture_output=True, text=True)
    return sorted(glob.glob(os.path.join(workdir, "*.cubin")))


def disassemble(path: str, archs: set[str] | None = None) -> str:
    """The SASS of every kernel in `path` (optionally only of the given archs), as nvdisasm prints
    it (labels for branch targets and subroutine names), one cubin per process, in parallel.
    Falls back to cuobjdump -sass for a file cuobjdump cannot extract cubins from."""
    nvdisasm = find_tool("nvdisasm")
    if path.endswith(".cubin"):
        return _run([nvdisasm, "-c", "-ndf", path])
    with tempfile.TemporaryDirectory() as work:
        cubins = _cubins(path, work)
        if archs:
            cubins = [c for c in cubins if any(c.endswith(f".{a}.cubin") for a in archs)]
        if not cubins:
            return _run([find_tool("cuobjdump"), "-sass", path])
        with ThreadPoolExecutor(max_workers=max(1, min(len(cubins), os.cpu_count() or 1))) as pool:
            return "\n".join(pool.map(lambda c: _run([nvdisasm, "-c", "-ndf", c]), cubins))


def audit_file(path: str, hot: str = DEFAULT_HOT, tensorcore: str = DEFAULT_TENSORCORE) -> list[KernelReport]:
    cuobjdump = find_tool("cuobjdump")
    res_text = _run([cuobjdump, "-res-usage", path])
    elf_text = _run([cuobjdump, "-elf", path])
    return audit_texts(res_text, disassemble(path), elf_text, hot, tensorcore)


# ------------------------------------------------------------------------------------ baseline, targets

# Per kernel in the baseline file: these fields, in this order (one short list per kernel).
BASELINE_FIELDS = ("loop_instructions", "math", "loop_divisions", "loop_calls", "divisions", "calls",
                   "outside_loop_instructions", "registers", "threads", "one_stage_loop_instructions")
# The issue's targets for later kernel work: instructions per HMMA in the large-tile tensor-core main
# loops (NHWC, the three passes, the tensor-core dtypes), and no division or call in any loop.
TARGET_PER_HMMA = 4.0


def one_stage_loop(r: KernelReport) -> LoopMix | None:
    """The tensor-core kernels' other main loop, run when the pipeline has one stage (two barriers
    per slice): the math loop with the most barriers, if it is not the main one."""
    other = [m for m in r.math_loops if m is not r.main_loop]
    return max(other, key=lambda m: m.count("BAR"), default=None)


def baseline_entry(r: KernelReport) -> list:
    m, one = r.main_loop, one_stage_loop(r)
    return [m.instructions if m else 0, m.math if m else 0, r.loop_divisions, r.loop_calls, r.divisions, r.calls,
            r.outside_loop_instructions, r.registers, r.threads, one.instructions if one else 0]


def baseline_document(reports: list[KernelReport], slack: float = 0.02) -> dict:
    kernels: dict[str, dict] = {}
    for r in sorted(reports, key=lambda r: (r.arch, r.label)):
        kernels.setdefault(r.arch, {})[r.label] = baseline_entry(r)
    return {"comment": "Today's SASS counts per kernel (python -m cuconv audit --write-baseline). audit --check fails "
                       "when a kernel's main loop has more instructions per HMMA/FMA than here (beyond `slack`), or "
                       "a kernel more divisions or calls, in its loops or in all; improvements pass. Re-record it "
                       "when a change improves the counts, or when a new nvcc moves them (say so in the commit).",
            "tools": f"nvcc {_nvcc_version()}; cuobjdump/nvdisasm from triton", "slack": slack,
            "fields": list(BASELINE_FIELDS), "kernels": kernels}


def write_baseline(doc: dict, path: str) -> None:
    """The baseline as JSON with one kernel per line, so that a re-recorded file diffs by kernel."""
    head = {k: v for k, v in doc.items() if k != "kernels"}
    lines = ["{"] + [f" {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()] + [' "kernels": {']
    archs = list(doc["kernels"])
    for i, arch in enumerate(archs):
        kernels = doc["kernels"][arch]
        lines.append(f"  {json.dumps(arch)}: {{")
        lines += [f"   {json.dumps(label)}: {json.dumps(v)}{',' if j < len(kernels) - 1 else ''}"
                  for j, (label, v) in enumerate(kernels.items())]
        lines.append("  }" + ("," if i < len(archs) - 1 else ""))
    lines += [" }", "}"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def _nvcc_version() -> str:
    nvcc = os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc")
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    except OSError:
        return "unknown"
    m = re.search(r"release (\S+),", out)
    return m.group(1) if m else "unknown"


def load_baseline(path: str) -> dict:
    """{(arch, label): {field: value}} from a baseline file."""
    with open(path) as f:
        doc = json.load(f)
    fields = doc["fields"]
    out = {(arch, label): dict(zip(fields, values)) for arch, kernels in doc["kernels"].items()
           for label, values in kernels.items()}
    return {"slack": doc.get("slack", 0.0), "kernels": out}


def compare_to_baseline(reports: list[KernelReport], baseline: dict) -> tuple[list[str], list[str]]:
    """(regressions, improvements) of each kernel against its baseline entry, as sentences."""
    worse, better = [], []
    slack = baseline["slack"]
    for r in reports:
        b = baseline["kernels"].get((r.arch, r.label))
        if b is None:
            continue
        m = r.main_loop
        if b["math"] and m and m.math:
            now, then = m.instructions / m.math, b["loop_instructions"] / b["math"]
            if now > then * (1 + slack):
                worse.append(f"{r.arch} {r.label}: {now:.1f} instructions per {r.math_op} in the main loop, "
                             f"baseline {then:.1f}")
            elif now < then:
                better.append(f"{r.arch} {r.label}: {now:.1f} instructions per {r.math_op} (baseline {then:.1f})")
        elif b["math"] and not (m and m.math):
            worse.append(f"{r.arch} {r.label}: no main loop found (baseline had one of {b['loop_instructions']} "
                         f"instructions)")
        for key in ("loop_divisions", "loop_calls", "divisions", "calls"):
            now, then = getattr(r, key), b[key]
            if now > then:
                worse.append(f"{r.arch} {r.label}: {now} {key.replace('_', ' ')}, baseline {then}")
            elif now < then:
                better.append(f"{r.arch} {r.label}: {now} {key.replace('_', ' ')} (baseline {then})")
    return worse, better


def target_misses(reports: list[KernelReport]) -> list[dict]:
    """Where the kernels stand against the issue's SASS targets (reported, not enforced). The
    instructions-per-HMMA target applies to the largest tile of each NHWC tensor-core kernel family
    (pass, dtype, loads): `wide` where the family has one (16-bit operands both by 16-byte copies),
    else `large`."""
    def family(i: dict) -> tuple:
        return (i.get("conv_pass"), i.get("dtype"), i.get("load_a"), i.get("load_b"))
    wide = {(r.arch, family(r.info)) for r in reports if r.info.get("config") == "wide"}
    out = []
    for r in reports:
        i, m = r.info, r.main_loop
        largest = i.get("config") == "wide" or (i.get("config") == "large" and (r.arch, family(i)) not in wide)
        if (i.get("family") == "tensorcore" and largest and i.get("layout") == "nhwc"
                and m and m.math and m.per_math > TARGET_PER_HMMA):
            out.append(dict(target=f"<= {TARGET_PER_HMMA:g} instructions per HMMA (largest tile, NHWC)", arch=r.arch,
                            kernel=r.label, value=round(m.per_math, 2), limit=TARGET_PER_HMMA))
        if r.loop_divisions or r.loop_calls:
            out.append(dict(target="no division or call in any loop", arch=r.arch, kernel=r.label,
                            value=r.loop_divisions + r.loop_calls, limit=0))
    return out


# ------------------------------------------------------------------------------------ CLI

def _short(name: str, width: int = 70) -> str:
    """The demangled name without namespaces, return type and parameter list, cut to width."""
    name = name.replace("cuconv::kern::", "").removeprefix("void ")
    depth = 0
    for i, ch in enumerate(name):
        depth += ch == "<"
        depth -= ch == ">"
        if ch == "(" and depth == 0:
            name = name[:i]
            break
    return name if len(name) <= width else name[: width - 3] + "..."


def format_table(reports: list[KernelReport]) -> str:
    head = (f"{'kernel':70} {'arch':6} {'regs':>4} {'stack':>5} {'local':>5} {'smem':>6} {'thr':>4} {'occ':>5} "
            f"{'HMMA':>5} {'LDGSTS':>6} {'LDSM':>5} {'LDG128':>6} {'LDS128':>6} {'LDL/STL':>7}")
    rows = [head]
    for r in reports:
        occ = f"{r.occupancy:.2f}" if r.occupancy is not None else "-"
        thr = f"{r.threads}{'?' if r.threads_assumed else ''}"
        rows.append(f"{_short(r.demangled):70} {r.arch:6} {r.registers:>4} {r.stack_bytes:>5} {r.local_bytes:>5} "
                    f"{r.shared_bytes:>6} {thr:>4} {occ:>5} {r.hmma:>5} {r.ldgsts:>6} {r.ldsm:>5} {r.ldg128:>6} "
                    f"{r.lds128:>6} {r.local_instructions:>7}")
        for p in r.problems:
            rows.append(f"    ! {p}")
    return "\n".join(rows)


def format_mix_table(reports: list[KernelReport]) -> str:
    """One row per kernel: its main loop's mix (per warp per iteration: a 32-deep slice for the
    tensor-core kernels, 16-deep for SIMT), then the divisions and calls of its loops and of all."""
    head = (f"{'kernel':46} {'arch':5} {'loop':>5} {'math':>9} {'/math':>6} {'IMAD':>4} {'ISETP':>5} {'SHF':>4} "
            f"{'LEA':>4} {'BAR':>3} {'LDGSTS':>6} {'LDSM':>4} {'LDG':>4} {'STS':>4} {'128b ld/st':>10} "
            f"{'div/call loop':>13} {'div/call all':>12}")
    rows = [head]
    for r in reports:
        m = r.main_loop
        if m and m.math:
            c, w = m.count, m.wide
            wide = f"{w['ldg128'] + w['lds128']}/{w['stg128'] + w['sts128']}"
            loop = (f"{m.instructions:>5} {m.math:>4} {r.math_op:4} {m.per_math:>6.1f} {c('IMAD'):>4} {c('ISETP'):>5} "
                    f"{c('SHF'):>4} {c('LEA'):>4} {c('BAR'):>3} {c('LDGSTS'):>6} {c('LDSM'):>4} {c('LDG'):>4} "
                    f"{c('STS'):>4} {wide:>10}")
        else:
            loop = f"{'-':>5} {'':>80}"
        rows.append(f"{r.label[:46]:46} {r.arch[3:] if r.arch.startswith('sm_') else r.arch:5} {loop} "
                    f"{f'{r.loop_divisions}/{r.loop_calls}':>13} {f'{r.divisions}/{r.calls}':>12}")
    return "\n".join(rows)


def report_dict(r: KernelReport) -> dict:
    d = asdict(r)
    for loop, m in [(d["main_loop"], r.main_loop)] + list(zip(d["math_loops"], r.math_loops)):
        if loop is not None:
            loop["per_math"] = round(m.per_math, 3) if m.per_math else None
    return d


def audit_paths(paths: list[str], hot: str = DEFAULT_HOT, tensorcore: str = DEFAULT_TENSORCORE) -> list[KernelReport]:
    reports = []
    for path in paths:
        reports += audit_file(path, hot, tensorcore)
    return reports


def run(args) -> int:
    if args.model or args.sim_counts:
        from . import gpu_model, sim_counts
        return gpu_model.run(args) if args.model else sim_counts.run(args)
    paths = args.paths or [extension_path()]
    reports = audit_paths(paths, args.hot, args.tensorcore)
    if args.arch:
        reports = [r for r in reports if r.arch in args.arch.split(",")]
    failed = [r for r in reports if r.problems]
    required = args.require.split(",") if args.require is not None else (list(TENSORCORE_OPS) if not args.paths else [])
    required = [op for op in required if op]
    unknown = [op for op in required if op not in TENSORCORE_OPS]
    if unknown:
        raise SystemExit(f"audit: --require takes {','.join(TENSORCORE_OPS)}; got {','.join(unknown)}")
    missing = missing_tensorcore_ops(reports, required, args.tensorcore) if reports else []
    if args.write_baseline:
        write_baseline(baseline_document(reports), args.write_baseline)
    baseline_path = args.baseline if args.baseline is not None else (DEFAULT_BASELINE if not args.paths else "")
    worse, better = [], []
    if baseline_path and os.path.isfile(baseline_path) and not args.write_baseline:
        worse, better = compare_to_baseline(reports, load_baseline(baseline_path))
    misses = target_misses(reports)
    if args.json:
        print(json.dumps({"files": paths, "kernels": [report_dict(r) for r in reports],
                          "missing_tensorcore_ops": missing, "baseline": baseline_path or None,
                          "regressions": worse, "improvements": better, "target_misses": misses,
                          "problems": sum(len(r.problems) for r in reports) + len(missing) + len(worse)}, indent=2))
    else:
        if not reports:
            print("no device code found in " + ", ".join(paths))
        else:
            print(format_mix_table(reports) if args.mix else format_table(reports))
        for op in missing:
            print(f"    ! no tensor-core {op} kernel")
        for line in worse:
            print(f"    ! worse than the baseline: {line}")
        if args.check and reports:
            print(f"\n{len(misses)} miss(es) against the targets (reported, not enforced); "
                  f"{len(better)} count(s) better than the baseline")
            print(f"{len(failed)} kernel(s) with problems, {len(missing)} tensor-core op(s) missing, "
                  f"{len(worse)} regression(s) against the baseline"
                  if failed or missing or worse else "check passed")
    if args.check and (failed or missing or worse or not reports):
        if not reports:
            print("audit --check: no device code (build with FORCE_CUDA=1)", file=sys.stderr)
        return 1
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("audit", help="registers, spills, occupancy, tensor-core use and main-loop mix of the "
                              "CUDA kernels; the H100 model; the simulator's counters",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="*", help="CUDA objects (.so, .o, .cubin); default: the built cuconv._C")
    p.add_argument("--check", action="store_true",
                   help="exit 1 on local memory in hot kernels, no HMMA in tensor-core kernels, or counts worse than "
                        "the baseline")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--mix", action="store_true", help="print each kernel's main-loop instruction mix")
    p.add_argument("--arch", default=None, help="only these architectures, e.g. sm_90")
    p.add_argument("--hot", default=DEFAULT_HOT, help=f"regex of hot kernels (default: {DEFAULT_HOT})")
    p.add_argument("--tensorcore", default=DEFAULT_TENSORCORE, help=f"regex of tensor-core kernels (default: {DEFAULT_TENSORCORE})")
    p.add_argument("--require", default=None,
                   help="comma-separated ops (fprop,dgrad,wgrad) that must have a tensor-core kernel "
                        "(default: all three for the built extension, none for given files)")
    p.add_argument("--baseline", default=None,
                   help="counts --check holds the kernels to (default: tests/data/audit_baseline.json for the built "
                        "extension; '' for none)")
    p.add_argument("--write-baseline", default=None, metavar="PATH", help="record today's counts as a baseline")
    from . import gpu_model, sim_counts
    gpu_model.add_arguments(p)
    sim_counts.add_arguments(p)
    p.set_defaults(func=run)
