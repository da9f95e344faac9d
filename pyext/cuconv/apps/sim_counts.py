"""`python -m cuconv audit --sim-counts`: the simulator's counters (csrc/sim/runtime.h) for a few
layers, per pass and dtype: the MMA FLOPs the tensor-core kernels issue against the problem's
useful FLOPs, the global bytes they request against the compulsory bytes, shared-memory bank
conflicts per warp-wide access (ldmatrix, cp.async destinations, register-staged stores) and barriers.

The simulator runs a CPU thread per CUDA thread, so layers run at a reduced batch (--sim-batch,
default 1) with everything else as in the network, and with the tile configuration the chooser picks
for the full batch on an H100. The batch changes the counts only through the last partial tile of
rows (fprop, dgrad) or slice of the reduction (wgrad): the model (gpu_model.py) counts the full batch
with the same formulas, which the counters here check exactly on the reduced one (column `=model`),
and the table gives its useful/issued at the full batch beside the simulator's (`at N`).

Counted in the simulator: MMA instructions and FLOPs, cp.async and register-staged load bytes, bank
conflicts, barriers. Not counted (taken from the model): the epilogue's stores and grad weight's
split-K workspace traffic. The SIMT kernel (float32 without TF32) has no counting hooks.
"""
from __future__ import annotations

import json
import re
import time

from . import gpu_model

DEFAULT_LAYERS = "n256/r50.l1.3x3,n256/r50.l1.1x1up,n256/r50.l2.3x3s2,n256/r50.l3.3x3,n32/r18.l1,n32/seed.conv2"
# (r50.l3.3x3 also selects r50.l3.3x3s2: name fragments match by substring)
DEFAULT_DTYPES = "f16,tf32"


def read(reset: bool = False) -> dict:
    """The simulator's counters: {"total": {...}, "launches": [{"signature", "grid", "block", ...}]}."""
    import torch

    return json.loads(torch.ops.cuconv._sim_counters(reset))


def run_pass(layer: gpu_model.Layer, conv_pass: str, dtype: str, layout: str, config: int, seed: int = 0) -> dict:
    """Runs one pass on the tensor cores in the simulator (H100 properties, tile `config` forced) and
    returns the counters of its launches."""
    import torch

    import cuconv

    tdtype = {"f16": torch.float16, "bf16": torch.bfloat16, "tf32": torch.float32}[dtype]
    fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(layer.N, layer.C, layer.H, layer.W, generator=g).to(tdtype).contiguous(memory_format=fmt)
    w = torch.randn(layer.K, layer.C // layer.groups, layer.R, layer.S, generator=g).to(tdtype)
    gy = torch.randn(layer.N, layer.K, layer.P, layer.Q, generator=g).to(tdtype).contiguous(memory_format=fmt)
    conf = ([layer.stride] * 2, [layer.pad] * 2, [1, 1], layer.groups, dtype == "tf32", config)
    ops = torch.ops.cuconv
    with cuconv.config.flags(sim_device=gpu_model.H100_DEVICE), cuconv.simulate():
        read(reset=True)
        if conv_pass == "fprop":
            ops._conv2d_tensorcore(x, w, None, *conf)
        elif conv_pass == "dgrad":
            ops._conv2d_backward_input_tensorcore(gy, x, w, *conf)
        else:
            ops._conv2d_backward_weight_tensorcore(gy, x, w, *conf)
        return read(reset=True)


def counted(layer: gpu_model.Layer, conv_pass: str, dtype: str, layout: str, config: int) -> dict:
    """Runs `layer` with tile `config` forced and returns its counters beside the model's counts of
    the same problem (gpu_model.count, with the stages and split-K of the launch that ran)."""
    t0 = time.time()
    data = run_pass(layer, conv_pass, dtype, layout, config)
    seconds = time.time() - t0
    # the main kernel's launches (one per stride phase for grad input), not grad weight's split-K reduction
    mains = [l for l in data["launches"] if re.search(r"Tc(Mn)?Problem", l["signature"])]
    main = max(mains, key=lambda l: l["mma_flops"])
    t = data["total"]
    tile = gpu_model.TC_TILES[config]
    elem = gpu_model.ELEM_BYTES[dtype]
    stage_bytes = (tile.bm + tile.bn) * (32 + (8 if elem == 2 else 4)) * elem  # tc_stage_bytes
    stages = main["dynamic_smem_bytes"] // stage_bytes
    splits = main["grid"][2]
    blocks = sum(l["grid"][0] * l["grid"][1] * l["grid"][2] for l in mains)
    barriers = sum(l["barriers"] for l in mains)
    model = gpu_model.count(layer, conv_pass, dtype, tile, splits, stages)
    loads = t["cp_async_bytes"] + t["staged_load_bytes"]
    per = lambda conflicts, accesses: conflicts / accesses if accesses else 0.0
    return dict(
        stages=stages, splits=splits, blocks=blocks, mma_instructions=t["mma_instructions"],
        issued_flops=t["mma_flops"], useful_flops=model.useful_flops, useful_fraction=model.useful_flops / t["mma_flops"],
        load_bytes=loads, store_bytes=model.store_bytes, compulsory_bytes=model.compulsory_bytes,
        requested_over_compulsory=(loads + model.store_bytes) / model.compulsory_bytes,
        ldmatrix_conflicts_per_access=per(t["ldmatrix_conflicts"], t["ldmatrix_accesses"]),
        cp_async_smem_conflicts_per_access=per(t["cp_async_smem_conflicts"], t["cp_async_smem_accesses"]),
        smem_store_conflicts_per_access=per(t["smem_store_conflicts"], t["smem_store_accesses"]),
        barriers=barriers, barriers_per_block=barriers / blocks, launches=len(mains),
        model=dict(issued_flops=model.issued_flops, load_bytes=model.load_bytes, barriers=model.barriers),
        matches_model=(t["mma_flops"] == model.issued_flops and loads == model.load_bytes
                       and barriers == model.barriers and blocks == model.blocks),
        counters=t, signature=main["signature"], seconds=round(seconds, 1))


def measure(full: gpu_model.Layer, conv_pass: str, dtype: str, layout: str, batch: int = 1) -> dict:
    """One report row: `full` at batch `batch`, with the tile the chooser picks for `full` on an H100."""
    plan = gpu_model.plan_of(full, conv_pass, dtype, layout)
    at_full = gpu_model.count(full, conv_pass, dtype, plan.tile, plan.splits, plan.stages)
    row = dict(layer=full.name, N=full.N, sim_N=batch, conv_pass=conv_pass, dtype=dtype, layout=layout,
               kernel=plan.label, full_useful_fraction=at_full.useful_flops / at_full.issued_flops)
    return {**row, **counted(full.with_batch(batch), conv_pass, dtype, layout, plan.config)}


def format_table(rows: list[dict]) -> str:
    head = (f"{gpu_model.ROW_HEAD} {'sim N':>5} {'useful/issued':>13} {'at N':>6} {'req/comp':>8} "
            f"{'conflicts per access: ldsm':>27} {'cp.async':>8} {'st':>5} {'bar/block':>9} {'=model':>6}")
    lines = [head]
    for r in rows:
        full = r.get("full_useful_fraction")
        lines.append(f"{gpu_model.row_head(r['layer'], r['N'], r['conv_pass'], r['dtype'], r['layout'], r['kernel'])} "
                     f"{r['sim_N']:>5} {r['useful_fraction']:>13.1%} {f'{full:.1%}' if full else '-':>6} {r['requested_over_compulsory']:>8.2f} "
                     f"{r['ldmatrix_conflicts_per_access']:>27.2f} {r['cp_async_smem_conflicts_per_access']:>8.2f} "
                     f"{r['smem_store_conflicts_per_access']:>5.2f} {r['barriers_per_block']:>9.1f} "
                     f"{'yes' if r['matches_model'] else 'NO':>6}")
    return "\n".join(lines)


def add_arguments(p) -> None:
    g = p.add_argument_group("simulator counters (--sim-counts); --layers, --passes, --layouts as for --model")
    g.add_argument("--sim-counts", action="store_true",
                   help=f"run layers in the simulator and report its counters (default layers: {DEFAULT_LAYERS}; "
                        f"dtypes {DEFAULT_DTYPES})")
    g.add_argument("--sim-batch", type=int, default=1, help="the batch the simulator runs each layer at")


def run(args) -> int:
    layers = gpu_model.select_layers(args.layers or DEFAULT_LAYERS)
    dtypes = args.dtypes if args.dtypes != ",".join(gpu_model.DTYPES) else DEFAULT_DTYPES
    dtypes = [d for d in dtypes.split(",") if d != "f32"]  # the SIMT kernel has no counting hooks
    rows = []
    for layer in layers:
        for conv_pass in args.passes.split(","):
            for dtype in dtypes:
                for layout in args.layouts.split(","):
                    rows.append(measure(layer, conv_pass, dtype, layout, args.sim_batch))
                    if not args.json:
                        print(format_table(rows[-1:]).splitlines()[-1] if len(rows) > 1 else format_table(rows),
                              flush=True)
    if args.json:
        print(json.dumps({"rows": rows, "note": "simulator counts at batch sim_N; stores and the split-K "
                                                "workspace from the model"}, indent=1))
    return 0
