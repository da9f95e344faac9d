"""`python -m cuconv audit --model`: a PREDICTED H100 time for every layer, pass and dtype, from what
can be counted without a GPU. Nothing here was measured on a GPU.

Per layer (the seed CNN's, ResNet-50's and ResNet-18-for-CIFAR's convolutions at batch 32 and 256),
pass (fprop, dgrad, wgrad), dtype (float16, bfloat16, float32 as TF32 on tensor cores, float32 on
the SIMT kernel) and layout:

- the plan: which kernel, tile and split-K the chooser picks on an H100 (the simulator's plan op
  with the H100's properties), and which load modes the launcher takes (the rules of
  conv2d_{fprop,dgrad,wgrad}_tensorcore.cuh, for 16-byte-aligned tensors);
- issue time: the SASS mix of that kernel (audit: main-loop instructions per warp per slice, and the
  instructions outside the loop once per warp) x warps x slices x blocks, at one warp instruction per
  clock on each of the 4 SMSPs of 132 SMs, blocks spread evenly (waves rounded up);
- tensor time: the MMA FLOPs the blocks issue (whole tiles, whole 32-deep slices) at the mma.sync
  rate (FMA FLOPs at the FP32 rate for the SIMT kernel);
- memory time: DRAM bytes at the HBM bandwidth, where DRAM bytes = the compulsory bytes (inputs read
  once, outputs written once) + the re-reads that miss L2; re-reads are the global bytes the kernels
  request (every operand element each block loads, zero padding excluded; the stores, the split-K
  workspace and its reduction) beyond the compulsory ones, and L2 serves the fraction --l2-hit of them;
- predicted = the largest of the three; ideal = useful FLOPs at the dense (wgmma) peak or compulsory
  bytes at HBM bandwidth, whichever is larger; the mma.sync roofline likewise at the mma.sync rate;
- cuDNN's published time where one exists, and measured times from a GPU run's bench.json
  (--measured), which calibrate all of the above.

The H100 figures are in H100 below, each with its source.
"""
from __future__ import annotations

import functools
import json
import math
import os
import re
from dataclasses import asdict, dataclass, field

# ------------------------------------------------------------------------------------ the H100

H100 = {
    "sm_count": 132,  # H100 SXM5 (NVIDIA's H100 datasheet; NVIDIA/cudnn-frontend PR #650)
    "clock_hz": 1.83e9,  # the boost clock behind the 989 TFLOP/s figure (132 SM x 4096 FLOP/clk x 1.83 GHz)
    "smsp_per_sm": 4,  # warp schedulers, one warp instruction issued per clock each
    "dense_tflops": {"f16": 989.0, "bf16": 989.0, "tf32": 495.0, "f32": 67.0},  # NVIDIA's H100 SXM table
    # mma.sync (sm_80-style warp MMA) on Hopper reaches about 60-65% of the wgmma peak (HazyResearch,
    # "GPUs Go Brrr", 2024): 62% is taken. An assumption until a GPU run calibrates it.
    "mma_sync_fraction": 0.62,
    "hbm_bytes_per_s": 3.0e12,  # a device-to-device copy measured on an H100 SXM (3.35 TB/s nominal)
    "l2_bytes": 50 * 2**20,
}
# The properties the chooser sees on an H100 (cudaDevAttr*): the simulator's plan op takes them.
H100_DEVICE = dict(sm_count=132, cc_major=9, cc_minor=0, max_threads_per_sm=2048, max_blocks_per_sm=32,
                   regs_per_sm=65536, smem_per_sm=228 * 1024, smem_per_block_optin=227 * 1024)
DEFAULT_L2_HIT = 0.8  # an assumption, to be calibrated by the first GPU run
# Published cuDNN times on an H100: (layer, N, pass, dtype) -> (microseconds, source).
CUDNN_PUBLISHED = {
    ("r50.l1.3x3", 32, "fprop", "bf16"): (31.2, "cuDNN's conv kernel alone (NHWC inside; the NCHW path adds "
                                                "41 us of transposes), gabrieldemarmiesse/torch-mojo-backend "
                                                "PR #387"),
}

PASSES = ("fprop", "dgrad", "wgrad")
DTYPES = ("f16", "bf16", "tf32", "f32")  # f32: the SIMT kernel (TF32 off)
LAYOUTS = ("nhwc", "nchw")
ELEM_BYTES = {"f16": 2, "bf16": 2, "tf32": 4, "f32": 4}

# ------------------------------------------------------------------------------------ the layers


@dataclass(frozen=True)
class Layer:
    name: str
    N: int
    C: int
    H: int
    W: int
    K: int
    R: int
    S: int
    stride: int = 1
    pad: int = 0
    count: int = 1  # how many convolutions of this shape the network has
    groups: int = 1

    @property
    def P(self) -> int:
        return (self.H + 2 * self.pad - self.R) // self.stride + 1

    @property
    def Q(self) -> int:
        return (self.W + 2 * self.pad - self.S) // self.stride + 1

    @property
    def net(self) -> str:
        return self.name.split(".", 1)[0]

    def with_batch(self, n: int) -> "Layer":
        return Layer(self.name, n, self.C, self.H, self.W, self.K, self.R, self.S, self.stride, self.pad, self.count,
                     self.groups)


# (name, C, H=W, K, R=S, stride, pad, count): ImageNet ResNet-50 (torchvision, stride on the 3x3),
# ResNet-18 for CIFAR (3x3 stem, no pooling) and the seed CNN (valid convolutions).
_SHAPES = [
    ("seed.conv1", 3, 32, 32, 3, 1, 0, 1), ("seed.conv2", 32, 15, 64, 3, 1, 0, 1),
    ("r50.conv1", 3, 224, 64, 7, 2, 3, 1),
    ("r50.l1.1x1a", 64, 56, 64, 1, 1, 0, 1), ("r50.l1.3x3", 64, 56, 64, 3, 1, 1, 3),
    ("r50.l1.1x1up", 64, 56, 256, 1, 1, 0, 4), ("r50.l1.1x1down", 256, 56, 64, 1, 1, 0, 2),
    ("r50.l2.1x1a", 256, 56, 128, 1, 1, 0, 1), ("r50.l2.3x3s2", 128, 56, 128, 3, 2, 1, 1),
    ("r50.l2.1x1up", 128, 28, 512, 1, 1, 0, 4), ("r50.l2.proj", 256, 56, 512, 1, 2, 0, 1),
    ("r50.l2.1x1down", 512, 28, 128, 1, 1, 0, 3), ("r50.l2.3x3", 128, 28, 128, 3, 1, 1, 3),
    ("r50.l3.1x1a", 512, 28, 256, 1, 1, 0, 1), ("r50.l3.3x3s2", 256, 28, 256, 3, 2, 1, 1),
    ("r50.l3.1x1up", 256, 14, 1024, 1, 1, 0, 6), ("r50.l3.proj", 512, 28, 1024, 1, 2, 0, 1),
    ("r50.l3.1x1down", 1024, 14, 256, 1, 1, 0, 5), ("r50.l3.3x3", 256, 14, 256, 3, 1, 1, 5),
    ("r50.l4.1x1a", 1024, 14, 512, 1, 1, 0, 1), ("r50.l4.3x3s2", 512, 14, 512, 3, 2, 1, 1),
    ("r50.l4.1x1up", 512, 7, 2048, 1, 1, 0, 3), ("r50.l4.proj", 1024, 14, 2048, 1, 2, 0, 1),
    ("r50.l4.1x1down", 2048, 7, 512, 1, 1, 0, 2), ("r50.l4.3x3", 512, 7, 512, 3, 1, 1, 2),
    ("r18.conv1", 3, 32, 64, 3, 1, 1, 1), ("r18.l1", 64, 32, 64, 3, 1, 1, 4),
    ("r18.l2.down", 64, 32, 128, 3, 2, 1, 1), ("r18.l2", 128, 16, 128, 3, 1, 1, 3),
    ("r18.l3.down", 128, 16, 256, 3, 2, 1, 1), ("r18.l3", 256, 8, 256, 3, 1, 1, 3),
    ("r18.l4.down", 256, 8, 512, 3, 2, 1, 1), ("r18.l4", 512, 4, 512, 3, 1, 1, 3),
    ("r18.sc2", 64, 32, 128, 1, 2, 0, 1), ("r18.sc3", 128, 16, 256, 1, 2, 0, 1), ("r18.sc4", 256, 8, 512, 1, 2, 0, 1),
]
BATCHES = (32, 256)
LAYERS = [Layer(name, n, c, hw, hw, k, rs, rs, st, pad, count)
          for n in BATCHES for name, c, hw, k, rs, st, pad, count in _SHAPES]


def select_layers(spec: str | None) -> list[Layer]:
    """Layers whose name contains any comma-separated fragment (all for None); a fragment `n32/`
    or `n256/` selects a batch, alone or before a name fragment (`n256/r50.l3`)."""
    if not spec:
        return list(LAYERS)
    out = []
    for frag in spec.split(","):
        batch, _, name = frag.rpartition("/")
        n = int(batch[1:]) if batch.startswith("n") else None
        out += [l for l in LAYERS if name in l.name and (n is None or l.N == n) and l not in out]
    return out


# ------------------------------------------------------------------------------------ counts

@dataclass
class Gemm:
    """A pass as the implicit GEMM the kernels run (per group)."""
    M: int
    Ncols: int
    Kdim: int
    groups: int


def gemm_of(layer: Layer, conv_pass: str) -> Gemm:
    l, g = layer, layer.groups
    if conv_pass == "fprop":
        return Gemm(l.N * l.P * l.Q, l.K // g, l.C // g * l.R * l.S, g)
    if conv_pass == "dgrad":
        return Gemm(l.N * l.H * l.W, l.C // g, l.K // g * l.R * l.S, g)
    return Gemm(l.K // g, l.C // g * l.R * l.S, l.N * l.P * l.Q, g)


def _taps(size: int, out: int, k: int, stride: int, pad: int) -> int:
    """Pairs (output position, filter tap) along one dimension whose input position is in range:
    the elements an implicit-GEMM gather of fprop (or wgrad's input operand) actually loads."""
    return sum(sum(1 for o in range(out) if 0 <= o * stride - pad + r < size) for r in range(k))


def dgrad_axis_phases(size: int, k: int, stride: int, pad: int) -> list[tuple[int, int]]:
    """(input positions, taps) of each stride phase along one dimension (conv2d_dgrad_phase.cuh):
    the positions h with (h + pad) % stride == phase, and the taps r with r % stride == phase."""
    out = []
    for phase in range(stride):
        first = (phase - pad) % stride
        out.append((len(range(first, size, stride)), len(range(phase, k, stride))))
    return out


def dgrad_phases(layer: Layer) -> list[tuple[int, int]]:
    """(M, Kdim) of the implicit GEMM of each phase the grad input kernels launch (phases with input
    positions; one whose taps are empty launches with Kdim 0 and writes zeros)."""
    l = layer
    return [(l.N * hc * wc, l.K // l.groups * ht * wt)
            for hc, ht in dgrad_axis_phases(l.H, l.R, l.stride, l.pad)
            for wc, wt in dgrad_axis_phases(l.W, l.S, l.stride, l.pad) if l.N * hc * wc > 0]


def _dgrad_taps(size: int, out: int, k: int, stride: int, pad: int) -> int:
    """Pairs (input position, tap) with an output position that covers it: dgrad's gathered loads."""
    return sum(sum(1 for h in range(size) if (h + pad - r) >= 0 and (h + pad - r) % stride == 0
                   and (h + pad - r) // stride < out) for r in range(k))


@dataclass
class Tile:
    bm: int
    bn: int
    bk: int  # reduction depth of one slice
    warps: int
    mma_flops_per_slice: int  # per block
    name: str


TC_TILES = {0: Tile(128, 64, 32, 8, 128 * 64 * 32 * 2, "large"), 1: Tile(64, 64, 32, 4, 64 * 64 * 32 * 2, "medium"),
            2: Tile(64, 32, 32, 4, 64 * 32 * 32 * 2, "narrow"), 3: Tile(128, 64, 32, 8, 128 * 64 * 32 * 2, "small_channel"),
            4: Tile(128, 128, 32, 4, 128 * 128 * 32 * 2, "wide"), 5: Tile(128, 64, 32, 4, 128 * 64 * 32 * 2, "tall")}
SIMT_TILE = Tile(64, 64, 16, 8, 64 * 64 * 16 * 2, "simt")


def load_modes(layer: Layer, conv_pass: str, dtype: str, layout: str, config: int = 0) -> tuple[str, str]:
    """The A and B load modes the tensor-core launchers take (conv2d_*_tensorcore.cuh), for
    16-byte-aligned tensors and tile configuration `config`: 16-byte cp.async where a 16-byte run
    along k is contiguous (cp16) or, for grad weight in channels_last, along the rows (cp16_mn,
    tiles of 64 columns or more), else the scalar load (4-byte cp.async for float,
    register-staged for 16-bit), row-fast where rows are the contiguous direction."""
    elem = ELEM_BYTES[dtype]
    v = 16 // elem
    scalar = lambda row_fast: ("cp4_row" if row_fast else "cp4_k") if elem == 4 else ("sync_row" if row_fast else "sync_k")
    l, g = layer, layer.groups
    cl = layout == "nhwc"
    if conv_pass == "fprop":
        if cl:  # the weight as K x R x S x C/groups: contiguous along the reduction like the input's taps
            return ("cp16", "cp16") if (l.C // g) % v == 0 else (scalar(False), scalar(False))
        return scalar(True), ("cp16" if (l.C // g * l.R * l.S) % v == 0 else scalar(False))
    if conv_pass == "dgrad":  # channels_last: the weight per group as C x R x S x K, a tap's k contiguous
        if cl and (l.K // g) % v == 0:
            return "cp16", "cp16"
        return scalar(not cl), scalar(False)
    if cl and (l.C // g) % v == 0 and (l.K // g) % v == 0 and TC_TILES[config].name != "narrow":
        return "cp16_mn", "cp16_mn"
    if not cl and (l.P * l.Q) % v == 0:
        return "cp16", scalar(False)
    return scalar(cl), scalar(False)


@dataclass
class Counts:
    """What the kernels of one pass issue and move, counted from the plan (no SASS needed)."""
    tiles: int  # output tiles (x groups; over every phase of a strided grad input)
    blocks: int  # tiles x split-K chunks
    tile_slices: int  # 32-deep slices summed over the output tiles (and their chunks)
    issued_flops: float  # MMA (or FMA) FLOPs of whole tiles and slices
    useful_flops: float  # 2 * N * K * P * Q * C/g * R * S
    load_bytes: float  # operand elements the blocks load (zero padding is not loaded)
    store_bytes: float  # outputs, split-K workspace, and the workspace reduction's reads and writes
    compulsory_bytes: float  # inputs once, outputs once
    barriers: int  # __syncthreads the main kernel completes (all blocks)


def count(layer: Layer, conv_pass: str, dtype: str, tile: Tile, splits: int, stages: int) -> Counts:
    l, elem = layer, ELEM_BYTES[dtype]
    gm = gemm_of(l, conv_pass)
    n_tiles = math.ceil(gm.Ncols / tile.bn)
    # (M, Kdim) of each launch: grad input runs one GEMM per stride phase
    parts = dgrad_phases(l) if conv_pass == "dgrad" else [(gm.M, gm.Kdim)]
    m_tiles = [math.ceil(m / tile.bm) for m, _ in parts]
    tiles = gm.groups * n_tiles * sum(m_tiles)
    # Split-K chunks are multiples of the slice, so the chunks of a tile cover its reduction's slices once.
    tile_slices = gm.groups * n_tiles * sum(mt * math.ceil(k / tile.bk) for mt, (_, k) in zip(m_tiles, parts))
    cg, kg = l.C // l.groups, l.K // l.groups
    fwd_taps = _taps(l.H, l.P, l.R, l.stride, l.pad) * _taps(l.W, l.Q, l.S, l.stride, l.pad)
    x, w, y = l.N * l.C * l.H * l.W, l.K * cg * l.R * l.S, l.N * l.K * l.P * l.Q
    if conv_pass == "fprop":
        loads = n_tiles * l.N * l.C * fwd_taps + m_tiles[0] * l.K * gm.Kdim
        stores, compulsory = y * elem, (x + w + y) * elem
    elif conv_pass == "dgrad":
        taps = _dgrad_taps(l.H, l.P, l.R, l.stride, l.pad) * _dgrad_taps(l.W, l.Q, l.S, l.stride, l.pad)
        # every phase's tiles load the weights of the phase's taps (k and phase tap, kg each)
        loads = n_tiles * l.N * l.K * taps + sum(mt * l.C * k for mt, (_, k) in zip(m_tiles, parts))
        stores, compulsory = x * elem, (y + w + x) * elem
    else:
        loads = n_tiles * l.K * gm.Kdim + m_tiles[0] * l.N * l.C * fwd_taps
        # float partial sums per chunk (the tensor cores and the float32 SIMT kernel accumulate in float),
        # read back once by the reduction, which writes the weight gradient
        stores, compulsory = 2 * splits * w * 4 + w * elem, (y + x + w) * elem
    per_block_barriers = 2 if stages == 1 else 1  # the one-stage loop has two barriers per slice
    return Counts(tiles=tiles, blocks=tiles * splits, tile_slices=tile_slices,
                  issued_flops=float(tile_slices) * tile.mma_flops_per_slice,
                  useful_flops=2.0 * l.N * l.K * l.P * l.Q * cg * l.R * l.S, load_bytes=float(loads) * elem,
                  store_bytes=float(stores), compulsory_bytes=float(compulsory),
                  barriers=tile_slices * per_block_barriers)


# ------------------------------------------------------------------------------------ the plan

@dataclass
class Plan:
    kernel: str  # tensorcore or simt
    config: int  # the kTcConfigs entry (-1 for SIMT)
    tile: Tile
    stages: int
    splits: int
    label: str  # the kernel's audit label, by which its SASS mix is found


@functools.lru_cache(maxsize=None)
def _chooser(layer: Layer, conv_pass: str, dtype: str, layout: str) -> tuple[int, int, int, int]:
    """(kernel, tile configuration, stages, split-K chunks) from the simulator's plan op with the
    H100's device properties; float32 as TF32 forces the tensor cores, as allow_tf32 would."""
    import torch

    import cuconv

    tdtype = {"f16": torch.float16, "bf16": torch.bfloat16, "tf32": torch.float32, "f32": torch.float32}[dtype]
    # the plan reads shapes, the dtype and the layout: an expanded input, and a weight (small) in the
    # layout, which the conv takes as the input's when either is channels_last
    x = torch.empty(1, dtype=tdtype).expand(layer.N, layer.C, layer.H, layer.W)
    w = torch.empty(layer.K, layer.C // layer.groups, layer.R, layer.S, dtype=tdtype)
    if layout == "nhwc":
        w = w.to(memory_format=torch.channels_last)
    with cuconv.config.flags(sim_device=H100_DEVICE), cuconv.simulate():
        return tuple(torch.ops.cuconv._gpu_conv2d_plan(x, w, [layer.stride] * 2, [layer.pad] * 2, [1, 1], layer.groups,
                                                       conv_pass, dtype == "tf32"))


def plan_of(layer: Layer, conv_pass: str, dtype: str, layout: str) -> Plan:
    """What runs on an H100: the chooser's answer, and the kernel that implements it."""
    kernel, config, stages, splits = _chooser(layer, conv_pass, dtype, layout)
    if kernel == 2:
        tile = TC_TILES[config]
        a, b = load_modes(layer, conv_pass, dtype, layout, config)
        size = f"{tile.bm}x{tile.bn}"
        label = f"tc {conv_pass} {dtype} {layout} {size} {a}/{b}" + (" tall" if tile.name == "tall" else "")
        return Plan("tensorcore", config, tile, stages, splits, label)
    if kernel == 1:
        return Plan("simt", -1, SIMT_TILE, 1, splits, f"simt {conv_pass} {dtype} {layout}")
    raise ValueError(f"{layer.name}: the depthwise kernel is not modelled")


# ------------------------------------------------------------------------------------ the mix

def mixes_from_reports(reports, arch: str = "sm_90") -> dict[str, dict]:
    """{label: the counts the model needs} from audit reports (the built extension's SASS)."""
    from .audit import one_stage_loop

    out = {}
    for r in reports:
        if r.arch == arch and r.main_loop is not None:
            one = one_stage_loop(r)
            out[r.label] = dict(loop_instructions=r.main_loop.instructions, math=r.main_loop.math,
                                outside_loop_instructions=r.outside_loop_instructions, registers=r.registers,
                                one_stage_loop_instructions=one.instructions if one else 0)
    return out


def mixes_from_baseline(path: str, arch: str = "sm_90") -> dict[str, dict]:
    from .audit import load_baseline

    return {label: v for (a, label), v in load_baseline(path)["kernels"].items() if a == arch and v["math"]}


def load_mixes(source: str | None = None) -> tuple[dict[str, dict], str]:
    """The sm_90 mix of every kernel, and where it came from: `source` (a baseline file or a .so),
    else the built extension's SASS, else the recorded baseline (a build without CUDA, no tools)."""
    from . import audit

    if source and source.endswith(".json"):
        return mixes_from_baseline(source), source
    try:
        path = source or audit.extension_path()
        reports = audit.audit_texts("", audit.disassemble(path, {"sm_90"}))
        mixes = mixes_from_reports(reports)
        if mixes:
            return mixes, f"the SASS of {os.path.basename(path)}"
    except (FileNotFoundError, RuntimeError):
        pass
    return mixes_from_baseline(audit.DEFAULT_BASELINE), "the recorded baseline (tests/data/audit_baseline.json)"


# ------------------------------------------------------------------------------------ the model

@dataclass
class Prediction:
    layer: str
    N: int
    conv_pass: str
    dtype: str
    layout: str
    count: int  # convolutions of this shape in the network
    kernel: str  # the audit label of the main kernel
    stages: int
    splits: int
    counts: Counts
    issue_us: float | None  # None: no SASS mix for the kernel
    tensor_us: float
    memory_us: float
    predicted_us: float
    bound: str  # issue, tensor or memory
    ideal_us: float
    roofline_us: float  # the mma.sync roofline (FP32 rate for the SIMT kernel)
    cudnn_published_us: float | None = None
    measured: dict = field(default_factory=dict)  # from --measured: cuconv_us, cudnn_us

    @property
    def useful_fraction(self) -> float:
        return self.counts.useful_flops / self.counts.issued_flops

    @property
    def requested_over_compulsory(self) -> float:
        return (self.counts.load_bytes + self.counts.store_bytes) / self.counts.compulsory_bytes


def predict(layer: Layer, conv_pass: str, dtype: str, layout: str, mixes: dict[str, dict],
            l2_hit: float = DEFAULT_L2_HIT, hw: dict = H100) -> Prediction:
    plan = plan_of(layer, conv_pass, dtype, layout)
    c = count(layer, conv_pass, dtype, plan.tile, plan.splits, plan.stages)
    sms = hw["sm_count"]
    waves = math.ceil(c.blocks / sms)  # blocks per SM on the busiest SM
    slices_per_block = c.tile_slices / c.blocks
    mix = mixes.get(plan.label)
    issue_s = None
    if mix:
        loop = mix["loop_instructions"]
        if plan.stages == 1 and mix.get("one_stage_loop_instructions"):
            loop = mix["one_stage_loop_instructions"]
        per_block = plan.tile.warps * (mix["outside_loop_instructions"] + loop * slices_per_block)
        issue_s = waves * per_block / (hw["smsp_per_sm"] * hw["clock_hz"])
    peak = hw["dense_tflops"][dtype] * 1e12
    rate = peak * (hw["mma_sync_fraction"] if plan.kernel == "tensorcore" else 1.0)
    tensor_s = waves * (c.issued_flops / c.blocks) / (rate / sms)
    requested = c.load_bytes + c.store_bytes
    dram = c.compulsory_bytes + (1 - l2_hit) * max(0.0, requested - c.compulsory_bytes)
    memory_s = dram / hw["hbm_bytes_per_s"]
    terms = {"issue": issue_s or 0.0, "tensor": tensor_s, "memory": memory_s}
    bound = max(terms, key=terms.get)
    compulsory_s = c.compulsory_bytes / hw["hbm_bytes_per_s"]
    ideal_s = max(c.useful_flops / peak, compulsory_s)
    roofline_s = max(c.useful_flops / rate, compulsory_s)
    published = CUDNN_PUBLISHED.get((layer.name, layer.N, conv_pass, dtype))
    return Prediction(layer.name, layer.N, conv_pass, dtype, layout, layer.count, plan.label, plan.stages, plan.splits,
                      c, issue_s * 1e6 if issue_s is not None else None, tensor_s * 1e6, memory_s * 1e6,
                      terms[bound] * 1e6, bound, ideal_s * 1e6, roofline_s * 1e6,
                      published[0] if published else None)


def model(layers: list[Layer], passes, dtypes, layouts, mixes: dict[str, dict], l2_hit: float = DEFAULT_L2_HIT):
    out = []
    for layer in layers:
        for conv_pass in passes:
            for dtype in dtypes:
                for layout in layouts:
                    out.append(predict(layer, conv_pass, dtype, layout, mixes, l2_hit))
    return out


# ------------------------------------------------------------------------------------ measured times

_MODES = {"f16": "f16", "bf16": "bf16", "tf32": "tf32", "f32": "f32", "float16": "f16", "bfloat16": "bf16",
          "float32": "f32"}


def attach_measured(predictions: list[Prediction], path: str) -> int:
    """Puts the times of a GPU run's bench.json (scripts/gpu_check.py perf: rows with layer,
    conv_pass, mode, layout, N, cuconv_ms, native_ms) beside the predictions; returns how many
    matched. A layer named `<name>.n<batch>` there is `<name>` at that batch here."""
    with open(path) as f:
        rows = json.load(f).get("rows", [])
    index = {}
    for r in rows:
        if "cuconv_ms" not in r:
            continue
        name = re.sub(r"\.n\d+$", "", str(r.get("layer", "")))
        key = (name, int(r.get("N", 0)), r.get("conv_pass"), _MODES.get(r.get("mode"), r.get("mode")), r.get("layout"))
        index[key] = dict(cuconv_us=r["cuconv_ms"] * 1e3, cudnn_us=r.get("native_ms", float("nan")) * 1e3)
    matched = 0
    for p in predictions:
        m = index.get((p.layer, p.N, p.conv_pass, p.dtype, p.layout))
        if m:
            p.measured = m
            matched += 1
    return matched


# ------------------------------------------------------------------------------------ output

def assumptions(l2_hit: float, mix_source: str) -> list[str]:
    h = H100
    return [
        "PREDICTIONS from counts, not measurements: no GPU has run this code.",
        f"H100 SXM: {h['sm_count']} SMs, {h['clock_hz'] / 1e9:.2f} GHz (the boost clock of NVIDIA's 989 TFLOP/s "
        f"figure), {h['smsp_per_sm']} warp schedulers per SM issuing one warp instruction per clock each.",
        "Dense peaks (NVIDIA, with wgmma): FP16/BF16 989, TF32 495, FP32 67 TFLOP/s (FP32's figure is quoted at "
        "NVIDIA's 1.98 GHz boost; at 1.83 GHz it would be 62).",
        f"mma.sync reaches {h['mma_sync_fraction']:.0%} of the wgmma peak ({h['mma_sync_fraction'] * 989:.0f} "
        f"TFLOP/s FP16/BF16, {h['mma_sync_fraction'] * 495:.0f} TF32): HazyResearch 'GPUs Go Brrr' (2024) reports "
        "about 60-65%.",
        f"HBM3 {h['hbm_bytes_per_s'] / 1e12:.1f} TB/s (a device-to-device copy measured on an H100 SXM); L2 (50 MB) "
        f"serves {l2_hit:.0%} of the re-reads beyond the compulsory bytes (an assumption; L2 bandwidth itself "
        "is not modelled).",
        "Issue time: the main loop's SASS instructions per warp per slice, plus every instruction outside the "
        "loop once per warp (a static upper bound on prologue and epilogue), blocks spread evenly over the SMs "
        "(waves rounded up), no stalls; tensor and memory times likewise per wave.",
        f"Instruction mix from {mix_source} (sm_90); plans from the chooser with the H100's properties; "
        "16-byte-aligned tensors.",
    ]


def _fmt(v, digits=1):
    return "-" if v is None else f"{v:.{digits}f}"


ROW_HEAD = f"{'layer':16} {'N':>3} {'pass':5} {'dtype':5} {'lay':4} {'kernel (tile, loads)':30}"


def row_head(layer: str, n, conv_pass: str, dtype: str, layout: str, kernel: str, stages: int = 0) -> str:
    """The first columns of the model's and the simulator counters' tables (ROW_HEAD)."""
    short = kernel.split(" ", 4)[-1] if kernel.startswith("tc ") else "simt"
    if stages == 1 and kernel.startswith("tc "):
        short = short.replace(" ", " 1-stage ", 1)
    return f"{layer:16} {n!s:>3} {conv_pass:5} {dtype:5} {layout:4} {short[:30]:30}"


def format_table(preds: list[Prediction]) -> str:
    head = (f"{ROW_HEAD} {'issue':>8} {'tensor':>8} {'memory':>8} {'PRED us':>8} {'bound':6} {'ideal':>7} "
            f"{'mma.sync':>8} {'x roof':>6} {'useful':>6} {'req/comp':>8} {'cuDNN pub':>9} {'meas':>7} {'cuDNN':>7}")
    rows = [head]
    for p in preds:
        ratio = p.predicted_us / p.roofline_us
        rows.append(f"{row_head(p.layer, p.N, p.conv_pass, p.dtype, p.layout, p.kernel, p.stages)} "
                    f"{_fmt(p.issue_us):>8} {_fmt(p.tensor_us):>8} {_fmt(p.memory_us):>8} {_fmt(p.predicted_us):>8} "
                    f"{p.bound:6} {_fmt(p.ideal_us):>7} {_fmt(p.roofline_us):>8} {ratio:>6.1f} "
                    f"{p.useful_fraction:>6.0%} {p.requested_over_compulsory:>8.1f} {_fmt(p.cudnn_published_us):>9} "
                    f"{_fmt(p.measured.get('cuconv_us')):>7} {_fmt(p.measured.get('cudnn_us')):>7}")
    return "\n".join(rows)


def network_totals(preds: list[Prediction]) -> list[dict]:
    """Per network, batch, pass, dtype and layout: the predicted time of all its convolutions
    (each shape times its count), beside the ideal and the mma.sync roofline."""
    totals: dict[tuple, dict] = {}
    for p in preds:
        key = (p.layer.split(".", 1)[0], p.N, p.conv_pass, p.dtype, p.layout)
        t = totals.setdefault(key, dict(zip(("net", "N", "conv_pass", "dtype", "layout"), key),
                                        predicted_us=0.0, ideal_us=0.0, roofline_us=0.0, layers=0))
        t["predicted_us"] += p.count * p.predicted_us
        t["ideal_us"] += p.count * p.ideal_us
        t["roofline_us"] += p.count * p.roofline_us
        t["layers"] += p.count
    return list(totals.values())


def model_targets(preds: list[Prediction]) -> list[dict]:
    """The issue's model targets, reported: useful MMA work >= 90% of the issued on every ResNet-50
    and ResNet-18-for-CIFAR layer (tensor-core dtypes), and the prediction within 1.5x of the
    mma.sync roofline on ResNet-50's 3x3 and 1x1 layers at batch 256."""
    out = []
    for p in preds:
        net = p.layer.split(".", 1)[0]
        if net in ("r50", "r18") and p.dtype != "f32" and p.useful_fraction < 0.9:
            out.append(dict(target="useful MMA >= 90% of issued", layer=p.layer, N=p.N, conv_pass=p.conv_pass,
                            dtype=p.dtype, layout=p.layout, value=round(p.useful_fraction, 3), limit=0.9))
        if (net == "r50" and p.N == 256 and p.dtype != "f32" and p.layer != "r50.conv1"
                and p.predicted_us > 1.5 * p.roofline_us):
            out.append(dict(target="predicted <= 1.5x the mma.sync roofline", layer=p.layer, N=p.N,
                            conv_pass=p.conv_pass, dtype=p.dtype, layout=p.layout,
                            value=round(p.predicted_us / p.roofline_us, 2), limit=1.5))
    return out


def prediction_dict(p: Prediction) -> dict:
    d = asdict(p)
    d["useful_fraction"] = p.useful_fraction
    d["requested_over_compulsory"] = p.requested_over_compulsory
    return d


# ------------------------------------------------------------------------------------ CLI

def add_arguments(p) -> None:
    g = p.add_argument_group("model (--model): predicted H100 times")
    g.add_argument("--model", action="store_true", help="predict each layer's H100 time from the counts")
    g.add_argument("--layers", default=None, help="comma-separated name fragments, optionally n32/ or n256/ first "
                                                  "(default: all)")
    g.add_argument("--passes", default=",".join(PASSES), help="fprop,dgrad,wgrad")
    g.add_argument("--dtypes", default=",".join(DTYPES), help="f16,bf16,tf32,f32 (f32: the SIMT kernel)")
    g.add_argument("--layouts", default=",".join(LAYOUTS), help="nhwc,nchw")
    g.add_argument("--l2-hit", type=float, default=DEFAULT_L2_HIT, help="fraction of re-reads L2 serves")
    g.add_argument("--measured", default=None, metavar="BENCH_JSON",
                   help="a GPU run's bench.json (scripts/gpu_check.sh): measured times beside the predictions")
    g.add_argument("--mix-from", default=None, metavar="PATH",
                   help="the instruction mix from this .so or baseline .json (default: the built extension)")


def run(args) -> int:
    layers = select_layers(args.layers)
    mixes, source = load_mixes(args.mix_from)
    preds = model(layers, args.passes.split(","), args.dtypes.split(","), args.layouts.split(","), mixes, args.l2_hit)
    matched = attach_measured(preds, args.measured) if args.measured else 0
    notes = assumptions(args.l2_hit, source)
    if args.measured:
        notes.append(f"measured: {matched} row(s) of {args.measured} matched")
    if args.json:
        print(json.dumps({"predictions_not_measurements": True, "assumptions": notes, "h100": H100,
                          "rows": [prediction_dict(p) for p in preds], "network_totals": network_totals(preds),
                          "target_misses": model_targets(preds)}, indent=1))
        return 0
    print("\n".join("# " + n for n in notes))
    print(format_table(preds))
    print("\ntotals over the layers above, per network (PREDICTED us; each shape x its count; whole networks "
          "when --layers is not given):")
    for t in network_totals(preds):
        print(f"  {t['net']:5} N={t['N']:<4} {t['conv_pass']:5} {t['dtype']:5} {t['layout']:4} predicted "
              f"{t['predicted_us']:10.1f}  mma.sync roofline {t['roofline_us']:9.1f}  ideal {t['ideal_us']:9.1f}")
    misses = model_targets(preds)
    print(f"\n{len(misses)} row(s) miss the model targets (useful MMA >= 90%; within 1.5x of the mma.sync roofline "
          "on ResNet-50 3x3/1x1 at batch 256)")
    return 0
