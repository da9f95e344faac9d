"""The simulator's counters (csrc/sim/runtime.h, cuconv::_sim_counters): mma.sync instructions and
FLOPs, global bytes loaded, shared-memory bank conflicts per warp-wide access, barriers; checked on
single instructions, and on the tensor-core convolutions against the model's counts
(cuconv.apps.gpu_model.count), which must agree exactly."""
import json

import pytest
import torch

from cuconv.apps import cli, gpu_model, sim_counts
from cuconv.apps.gpu_model import Layer

ops = torch.ops.cuconv


def total():
    return sim_counts.read(reset=True)["total"]


def test_mma_counted_once_per_warp_instruction():
    sim_counts.read(reset=True)
    a, b, c = torch.zeros(32, 4, dtype=torch.int32), torch.zeros(32, 2, dtype=torch.int32), torch.zeros(32, 4)
    ops._mma_sync_sim(a, b, c, "f16")
    t = total()
    assert (t["mma_instructions"], t["mma_flops"], t["launches"], t["blocks"]) == (1, 2 * 16 * 8 * 16, 1, 1)
    ops._mma_sync_sim(a, b, c, "tf32")
    ops._mma_sync_sim(a, b, c, "bf16")
    t = total()
    assert (t["mma_instructions"], t["mma_flops"], t["launches"]) == (2, 2 * 16 * 8 * 8 + 2 * 16 * 8 * 16, 2)
    assert total()["launches"] == 0  # read with reset


@pytest.mark.parametrize("stride, conflicts", [
    (16, 0),  # each 8-row phase is 128 contiguous bytes: every bank once
    (80, 0),  # the kernels' padded rows: 8 rows on 8 disjoint groups of 4 banks
    (128, 4 * 7),  # all 8 rows of a phase in banks 0-3: 8-way, 7 extra wavefronts per phase
    (64, 4 * 3),  # rows 0, 2, 4, 6 in banks 0-3, the odd ones in banks 16-19: 4-way
    (32, 4 * 1),  # rows r and r + 4 share banks: 2-way
    (0, 0),  # one row for every lane: a broadcast, no conflict
])
def test_ldmatrix_bank_conflicts(stride, conflicts):
    smem = torch.zeros(32 * 128 // 4 + 4, dtype=torch.int32)
    sim_counts.read(reset=True)
    ops._ldmatrix_sim(smem, torch.arange(32, dtype=torch.int64) * stride, 4)
    t = total()
    assert (t["ldmatrix_accesses"], t["ldmatrix_conflicts"], t["barriers"]) == (1, conflicts, 1)


def test_launch_records():
    a, b, c = torch.zeros(32, 4, dtype=torch.int32), torch.zeros(32, 2, dtype=torch.int32), torch.zeros(32, 4)
    sim_counts.read(reset=True)
    ops._mma_sync_sim(a, b, c, "f16")
    data = sim_counts.read(reset=True)
    (launch,) = data["launches"]
    # the kernel's parameter types, its grid and block
    assert "const float*" in launch["signature"] and launch["grid"] == [1, 1, 1] and launch["block"] == [32, 1, 1]
    assert launch["mma_flops"] == data["total"]["mma_flops"]


# (layer, pass, dtype, layout, config): every load mode, the three passes, stride 2 (dgrad's gather
# of zeros), padding, partial tiles, split-K, the one-stage small_channel tile.
CASES = [
    (Layer("t", 2, 16, 6, 6, 40, 3, 3, 1, 1), "fprop", "f16", "nhwc", 1),  # cp16 / cp16 (K x R x S x C weight)
    (Layer("t", 2, 16, 6, 6, 40, 3, 3, 1, 1), "fprop", "bf16", "nchw", 2),  # sync_row / cp16
    (Layer("t", 2, 3, 7, 7, 24, 3, 3, 1, 1), "fprop", "tf32", "nhwc", 3),  # cp4_k / cp4_k, one stage
    (Layer("t", 2, 16, 7, 7, 16, 3, 3, 2, 1), "dgrad", "f16", "nhwc", 1),  # cp16 / cp16, stride 2
    (Layer("t", 1, 24, 7, 7, 12, 3, 3, 2, 1), "dgrad", "f16", "nchw", 0),  # sync_row / sync_k
    (Layer("t", 2, 16, 8, 8, 24, 3, 3, 1, 1), "wgrad", "f16", "nchw", 0),  # cp16 / sync_k, split-K
    (Layer("t", 2, 8, 6, 6, 20, 3, 3, 1, 1), "wgrad", "tf32", "nhwc", 1),  # cp4_row / cp4_k
    (Layer("t", 2, 8, 9, 11, 136, 3, 3, 1, 1), "fprop", "f16", "nhwc", 4),  # wide: the tap walk, slices over taps
    (Layer("t", 2, 48, 7, 7, 24, 3, 3, 2, 1), "dgrad", "bf16", "nhwc", 4),  # wide, stride 2
]


@pytest.mark.parametrize("layer, conv_pass, dtype, layout, config", CASES,
                         ids=[f"{c[1]}-{c[2]}-{c[3]}-cfg{c[4]}" for c in CASES])
def test_counters_match_the_model(layer, conv_pass, dtype, layout, config):
    row = sim_counts.counted(layer, conv_pass, dtype, layout, config)
    assert row["model"] == dict(issued_flops=row["issued_flops"], load_bytes=row["load_bytes"],
                                barriers=row["barriers"])
    assert row["matches_model"]
    # independently of the model: 2 * M * N * K with each dimension padded to the tile (the slice is 32 deep)
    l, tile = layer, gpu_model.TC_TILES[config]
    M, N, K = {"fprop": (l.N * l.P * l.Q, l.K, l.C * l.R * l.S), "dgrad": (l.N * l.H * l.W, l.C, l.K * l.R * l.S),
               "wgrad": (l.K, l.C * l.R * l.S, l.N * l.P * l.Q)}[conv_pass]
    pad = lambda n, t: -(-n // t) * t
    if conv_pass == "dgrad":  # one GEMM per stride phase: its input positions, its taps
        M, K = zip(*_phases_by_enumeration(layer))
        assert row["launches"] == len(M)
    else:
        M, K = [M], [K]
    assert row["issued_flops"] == sum(2 * pad(m, tile.bm) * pad(N, tile.bn) * pad(k, 32) for m, k in zip(M, K))
    assert row["mma_instructions"] * 2 * 16 * 8 * (16 if dtype != "tf32" else 8) == row["issued_flops"]
    assert row["ldmatrix_conflicts_per_access"] == 0  # the padded rows keep fragment loads conflict-free
    assert 0 < row["useful_fraction"] <= 1


def _phases_by_enumeration(l):
    """(M, Kdim) per stride phase of a grad input, by listing which taps reach which input position."""
    out = []
    for a in range(l.stride):
        for b in range(l.stride):
            hs = [h for h in range(l.H) if (h + l.pad) % l.stride == a]
            ws = [w for w in range(l.W) if (w + l.pad) % l.stride == b]
            rs = [r for r in range(l.R) if r % l.stride == a]
            ss = [s for s in range(l.S) if s % l.stride == b]
            if hs and ws:
                out.append((l.N * len(hs) * len(ws), l.K * len(rs) * len(ss)))
    return out


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_strided_grad_input_multiplies_no_inserted_zero(layout):
    """Stride 2 on whole tiles: every issued MMA FLOP is one of the convolution's own (useful = issued),
    where a single GEMM over the zero-inserted grad_output issued four times as many."""
    # phases of 8x8 positions x 2 images = 128 rows, 64 columns, 32 x (4, 2, 2, 1) taps deep
    l = Layer("t", 2, 64, 16, 16, 32, 3, 3, 2, 1)
    row = sim_counts.counted(l, "dgrad", "f16", layout, 0)
    assert row["matches_model"] and row["launches"] == 4
    assert row["issued_flops"] == row["useful_flops"] == 2 * 2 * 32 * 8 * 8 * 64 * 9


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_strided_one_by_one_grad_input_writes_zeros_off_its_phase(layout):
    """A 1x1 stride-2 shortcut reaches one input position in four: the other three phases have no
    taps, launch no MMA and write zeros (poisoned first, so an unwritten element would show)."""
    import torch

    import cuconv

    g = torch.Generator().manual_seed(0)
    fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
    x = torch.randn(2, 16, 7, 7, generator=g).half().contiguous(memory_format=fmt)
    w = torch.randn(32, 16, 1, 1, generator=g).half()
    gy = torch.randn(2, 32, 4, 4, generator=g).half().contiguous(memory_format=fmt)
    with cuconv.config.flags(sim_device=gpu_model.H100_DEVICE), cuconv.simulate():
        sim_counts.read(reset=True)
        gx = torch.ops.cuconv._conv2d_backward_input_tensorcore(gy, x, w, [2, 2], [0, 0], [1, 1], 1, False, 0)
        launches = sim_counts.read(reset=True)["launches"]
    assert [l["mma_flops"] > 0 for l in launches] == [True, False, False, False]
    ref = torch.nn.grad.conv2d_input(x.shape, w.double(), gy.double(), stride=2)
    assert gx[:, :, 1::2].abs().max() == 0 and gx[:, :, :, 1::2].abs().max() == 0
    torch.testing.assert_close(gx.double(), ref, atol=2e-2, rtol=2e-3)


def test_shared_store_conflicts_of_each_load_mode():
    """Conflicts per warp-wide shared write (the model of runtime.h). cp16's 16-byte copies of 16-bit
    runs go 8 lanes to a phase, each lane a different row of 80-byte pitch: 8 distinct bank quads, no
    conflict. Register-staged runs (sync_k) keep two rows of four runs per phase: 2-way on a quarter
    of the banks (1 extra per phase, 4 per access); sync_row's 2-byte stores to 32 rows 80 bytes
    apart are 4-way (3 extra)."""
    cp16 = sim_counts.counted(Layer("t", 2, 16, 8, 8, 64, 3, 3, 1, 1), "wgrad", "f16", "nchw", 0)
    assert cp16["counters"]["cp_async_smem_accesses"] > 0 and cp16["counters"]["smem_store_accesses"] > 0
    assert cp16["cp_async_smem_conflicts_per_access"] == 0  # A by cp16
    assert cp16["smem_store_conflicts_per_access"] == 4  # B by sync_k: one 16-byte store per run of 8
    both = sim_counts.counted(Layer("t", 2, 16, 6, 6, 64, 3, 3, 1, 1), "fprop", "f16", "nhwc", 0)
    assert both["counters"]["cp_async_smem_accesses"] > 0
    assert both["cp_async_smem_conflicts_per_access"] == 0  # input and K x R x S x C weight by cp16
    assert both["counters"]["smem_store_accesses"] == 0  # nothing register-staged
    dgrad = sim_counts.counted(Layer("t", 2, 16, 6, 6, 64, 3, 3, 1, 1), "dgrad", "f16", "nhwc", 0)
    assert dgrad["counters"]["smem_store_accesses"] == 0  # grad_output and C x R x S x K weight by cp16
    assert dgrad["cp_async_smem_conflicts_per_access"] == 0
    for config in (4, 5):  # the wide and tall tiles
        wide = sim_counts.counted(Layer("t", 2, 64, 8, 8, 128, 3, 3, 1, 1), "fprop", "f16", "nhwc", config)
        assert wide["cp_async_smem_conflicts_per_access"] == 0 and wide["ldmatrix_conflicts_per_access"] == 0
    row = sim_counts.counted(Layer("t", 2, 16, 6, 6, 64, 3, 3, 1, 1), "fprop", "f16", "nchw", 0)
    assert row["smem_store_conflicts_per_access"] == 3  # A by sync_row: 4-way


def test_cli_sim_counts_json(capsys):
    assert cli.main(["audit", "--sim-counts", "--json", "--layers", "n32/seed.conv2", "--passes", "fprop",
                     "--dtypes", "f16", "--layouts", "nhwc"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["rows"]
    assert (row["layer"], row["N"], row["sim_N"], row["conv_pass"], row["dtype"]) == ("seed.conv2", 32, 1, "fprop", "f16")
    assert row["matches_model"] and row["issued_flops"] == row["counters"]["mma_flops"] > 0
    # the chooser's tile for batch 32, run at batch 1: M = 13 x 13 rows, N = 64 columns, K = 32 x 3 x 3 = 9 slices
    bm, bn = (int(v) for v in row["kernel"].split()[4].split("x"))
    pad = lambda n, t: -(-n // t) * t
    assert row["useful_fraction"] == pytest.approx(169 * 64 / (pad(169, bm) * pad(64, bn)))
