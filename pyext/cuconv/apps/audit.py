"""`python -m cuconv audit`: what the compiler made of the CUDA kernels.

Reads the built extension (or given .so / .o / .cubin files) with cuobjdump and nvdisasm from the
triton package and reports, per kernel and architecture: registers, stack and local memory
(cuobjdump -res-usage), local-memory instructions (LDL/STL: spills or local arrays; the binary
cannot tell them apart), static shared memory, threads per block (__launch_bounds__, from the ELF
attributes), theoretical occupancy, and the counts in the SASS of tensor-core instructions (HMMA),
asynchronous global->shared copies (LDGSTS, from cp.async), shared-memory matrix loads (LDSM, from
ldmatrix), and 128-bit global / shared loads (LDG.E.128 / LDS.128).

`--check` exits non-zero when a hot kernel (regex `--hot`) touches local memory, or a tensor-core
kernel (regex `--tensorcore`) has no HMMA, or one of the required tensor-core ops (`--require`;
by default fprop, dgrad and wgrad when auditing the built extension) has no tensor-core kernel at
all, or there is no device code at all.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
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

# Per-SM limits (CUDA C Programming Guide, compute capabilities 8.0 and 9.0). Shared memory per
# SM is what a kernel may configure; the driver reserves 1 KiB of it per block.
ARCH_LIMITS = {
    "sm_80": dict(max_warps=64, max_blocks=32, regs=65536, reg_unit=256, smem=164 * 1024, smem_reserved=1024, smem_unit=128),
    # sm_90: cuobjdump's SHARED already includes the 1 KiB reservation (same kernel: sm_80 8320 B, sm_90 9344 B).
    "sm_90": dict(max_warps=64, max_blocks=32, regs=65536, reg_unit=256, smem=228 * 1024, smem_reserved=0, smem_unit=128),
}


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


def parse_sass(text: str) -> dict[tuple[str | None, str], dict]:
    """SASS from cuobjdump -sass or nvdisasm -> {(arch, kernel): instruction counts}."""
    out, arch, func = {}, None, None
    for line in text.splitlines():
        if m := _CODE_FOR_RE.match(line):
            arch = m.group(1)
            continue
        m = _SASS_FUNC_RE.match(line) or _NVDISASM_FUNC_RE.match(line)
        if m:
            func = m.group(1)
            out.setdefault((arch, func), dict(hmma=0, ldgsts=0, ldsm=0, ldg128=0, lds128=0, local_instructions=0))
            continue
        if func is None or not (m := _INSN_RE.match(line)):
            continue
        op = m.group(1)
        parts = op.split(".")
        counts = out[(arch, func)]
        if parts[0] == "HMMA":
            counts["hmma"] += 1
        elif parts[0] == "LDGSTS":
            counts["ldgsts"] += 1
        elif parts[0] == "LDSM":
            counts["ldsm"] += 1
        elif parts[0] == "LDG" and "128" in parts:
            counts["ldg128"] += 1
        elif parts[0] == "LDS" and "128" in parts:
            counts["lds128"] += 1
        elif parts[0] in ("LDL", "STL"):
            counts["local_instructions"] += 1
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


def audit_texts(res_text: str, sass_text: str, elf_text: str = "", hot: str = DEFAULT_HOT,
                tensorcore: str = DEFAULT_TENSORCORE) -> list[KernelReport]:
    """Combines the three tools' outputs into one report per (kernel, arch)."""
    res, sass, threads = parse_res_usage(res_text), parse_sass(sass_text), parse_elf_max_threads(elf_text)
    # A bare .cubin's -res-usage and -elf carry no `arch =` line: take the SASS's single target.
    fallback = _single_arch(sass)
    norm = lambda d: {((a or fallback), f): v for (a, f), v in d.items()}
    res, sass, threads = norm(res), norm(sass), norm(threads)
    keys = sorted(set(res) | set(sass), key=lambda k: (k[1], k[0] or ""))
    names = demangle(sorted({f for _, f in keys}))
    hot_re, tc_re = re.compile(hot), re.compile(tensorcore)
    reports = []
    for arch, func in keys:
        r = KernelReport(name=func, arch=arch or "?", demangled=names.get(func, func))
        for k, v in {**res.get((arch, func), {}), **sass.get((arch, func), {})}.items():
            setattr(r, k, v)
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
    return reports


def missing_tensorcore_ops(reports: list[KernelReport], required: list[str], tensorcore: str = DEFAULT_TENSORCORE) -> list[str]:
    """The required ops (keys of TENSORCORE_OPS) that no tensor-core kernel in `reports` implements."""
    tc_re = re.compile(tensorcore)
    return [op for op in required
            if not any(tc_re.search(r.name) and re.search(TENSORCORE_OPS[op], r.name) for r in reports)]


def audit_file(path: str, hot: str = DEFAULT_HOT, tensorcore: str = DEFAULT_TENSORCORE) -> list[KernelReport]:
    cuobjdump = find_tool("cuobjdump")
    res_text = _run([cuobjdump, "-res-usage", path])
    elf_text = _run([cuobjdump, "-elf", path])
    if path.endswith(".cubin"):  # a bare cubin: nvdisasm disassembles it directly
        sass_text = _run([find_tool("nvdisasm"), "-c", path])
    else:
        sass_text = _run([cuobjdump, "-sass", path])
    return audit_texts(res_text, sass_text, elf_text, hot, tensorcore)


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


def run(args) -> int:
    paths = args.paths or [extension_path()]
    reports = []
    for path in paths:
        reports += audit_file(path, args.hot, args.tensorcore)
    failed = [r for r in reports if r.problems]
    required = args.require.split(",") if args.require is not None else (list(TENSORCORE_OPS) if not args.paths else [])
    required = [op for op in required if op]
    unknown = [op for op in required if op not in TENSORCORE_OPS]
    if unknown:
        raise SystemExit(f"audit: --require takes {','.join(TENSORCORE_OPS)}; got {','.join(unknown)}")
    missing = missing_tensorcore_ops(reports, required, args.tensorcore) if reports else []
    if args.json:
        print(json.dumps({"files": paths, "kernels": [asdict(r) for r in reports],
                          "missing_tensorcore_ops": missing,
                          "problems": sum(len(r.problems) for r in reports) + len(missing)}, indent=2))
    else:
        print(format_table(reports) if reports else "no device code found in " + ", ".join(paths))
        for op in missing:
            print(f"    ! no tensor-core {op} kernel")
        if args.check and reports:
            print(f"\n{len(failed)} kernel(s) with problems, {len(missing)} tensor-core op(s) missing"
                  if failed or missing else "\ncheck passed")
    if args.check and (failed or missing or not reports):
        if not reports:
            print("audit --check: no device code (build with FORCE_CUDA=1)", file=sys.stderr)
        return 1
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("audit", help="registers, spills, occupancy and tensor-core use of the CUDA kernels",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="*", help="CUDA objects (.so, .o, .cubin); default: the built cuconv._C")
    p.add_argument("--check", action="store_true", help="exit 1 on local memory in hot kernels or no HMMA in tensor-core kernels")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--hot", default=DEFAULT_HOT, help=f"regex of hot kernels (default: {DEFAULT_HOT})")
    p.add_argument("--tensorcore", default=DEFAULT_TENSORCORE, help=f"regex of tensor-core kernels (default: {DEFAULT_TENSORCORE})")
    p.add_argument("--require", default=None,
                   help="comma-separated ops (fprop,dgrad,wgrad) that must have a tensor-core kernel "
                        "(default: all three for the built extension, none for given files)")
    p.set_defaults(func=run)
