"""`python -m cuconv audit --model` (cuconv.apps.gpu_model): the H100 predictions from counts, their
inputs (plans, load modes, the analytic counts) and the issue's targets, reported against today's
kernels. The model reads the recorded sm_90 mix (tests/data/audit_baseline.json), so these tests
need no CUDA build; tests/test_sim_counters.py checks its counts against the simulator."""
import json
import os

import pytest

from cuconv.apps import cli, gpu_model
from cuconv.apps.gpu_model import Layer

BASELINE = os.path.join(os.path.dirname(__file__), "data", "audit_baseline.json")


@pytest.fixture(scope="module")
def mixes():
    return gpu_model.mixes_from_baseline(BASELINE)


def layer(name, n):
    (l,) = [l for l in gpu_model.LAYERS if l.name == name and l.N == n]
    return l


def test_layers():
    by_net = {}
    for l in gpu_model.LAYERS:
        if l.N == 32:
            by_net[l.net] = by_net.get(l.net, 0) + l.count
    assert by_net == {"seed": 2, "r50": 53, "r18": 20}  # every convolution of the three networks
    assert layer("r50.l2.3x3s2", 256).P == 28 and layer("r50.conv1", 32).P == 112 and layer("seed.conv2", 32).P == 13
    assert {l.N for l in gpu_model.select_layers("n256/r50.l3")} == {256}
    assert len(gpu_model.select_layers("r18.l1")) == 2  # both batches


def test_tap_counts():
    # 3x3, pad 1, stride 1 over 4 positions: 4 + 4 + 4 taps minus the two that fall off the edges
    assert gpu_model._taps(4, 4, 3, 1, 1) == 10
    assert gpu_model._taps(5, 5, 1, 1, 0) == 5
    # dgrad, stride 2: each input position is covered by the taps whose offset divides by 2
    assert gpu_model._dgrad_taps(8, 4, 3, 2, 1) == gpu_model._taps(8, 4, 3, 2, 1)  # the same pairs, counted both ways


def test_load_modes_follow_the_launchers():
    r50 = layer("r50.l1.3x3", 32)
    assert gpu_model.load_modes(r50, "fprop", "f16", "nhwc") == ("cp16", "cp16")  # weight as K x R x S x C
    assert gpu_model.load_modes(r50, "fprop", "bf16", "nchw") == ("sync_row", "cp16")
    assert gpu_model.load_modes(r50, "dgrad", "tf32", "nhwc") == ("cp16", "cp16")  # weight as C x R x S x K
    assert gpu_model.load_modes(r50, "wgrad", "f16", "nchw") == ("cp16", "sync_k")
    # channels_last grad weight: both operands along their rows (cp16_mn), but not on the narrow tile
    assert gpu_model.load_modes(r50, "wgrad", "f16", "nhwc") == ("cp16_mn", "cp16_mn")
    assert gpu_model.load_modes(r50, "wgrad", "tf32", "nhwc") == ("cp16_mn", "cp16_mn")
    assert gpu_model.load_modes(r50, "wgrad", "f16", "nhwc", config=2) == ("sync_row", "sync_k")
    assert gpu_model.load_modes(r50, "wgrad", "tf32", "nhwc", config=2) == ("cp4_row", "cp4_k")
    seed = layer("seed.conv1", 32)  # 3 channels: no 16-byte runs
    assert gpu_model.load_modes(seed, "fprop", "f16", "nhwc") == ("sync_k", "sync_k")
    assert gpu_model.load_modes(seed, "fprop", "tf32", "nchw") == ("cp4_row", "cp4_k")


def test_every_planned_kernel_has_a_recorded_mix(mixes):
    labels = {gpu_model.plan_of(l, p, d, lay).label for l in gpu_model.LAYERS for p in gpu_model.PASSES
              for d in gpu_model.DTYPES for lay in gpu_model.LAYOUTS}
    assert labels and labels <= set(mixes), sorted(labels - set(mixes))


def test_prediction_arithmetic(mixes):
    l = layer("r50.l3.3x3", 256)
    p = gpu_model.predict(l, "fprop", "f16", "nhwc", mixes)
    # 16-bit channels_last, 256 columns, plenty of tiles: the wide tile (128x128, 4 warps)
    assert p.kernel == "tc fprop f16 nhwc 128x128 cp16/cp16" and p.stages == 3 and p.splits == 1
    c = p.counts
    assert c.useful_flops == 2 * 256 * 256 * 14 * 14 * 256 * 9
    assert c.tiles == 392 * 2 and c.tile_slices == 392 * 2 * 72  # M = 50176 = 392 x 128, K = 256 = 2 x 128, 2304 / 32
    assert c.issued_flops == c.useful_flops  # whole tiles, whole slices
    h = gpu_model.H100
    mix = mixes[p.kernel]
    per_block = 4 * (mix["outside_loop_instructions"] + mix["loop_instructions"] * 72)
    assert p.issue_us == pytest.approx(6 * per_block / (4 * h["clock_hz"]) * 1e6)  # 784 blocks: 6 per SM
    assert p.tensor_us == pytest.approx(6 * c.issued_flops / 784 / (989e12 * 0.62 / 132) * 1e6)
    assert p.predicted_us == max(p.issue_us, p.tensor_us, p.memory_us) and p.bound == "tensor"
    assert p.roofline_us == pytest.approx(c.useful_flops / (989e12 * 0.62) * 1e6)
    assert p.ideal_us == pytest.approx(c.useful_flops / 989e12 * 1e6)
    # the same layer in TF32 takes the tall tile (128x64 in 4 warps: no wide tile for TF32)
    t = gpu_model.predict(l, "fprop", "tf32", "nhwc", mixes)
    assert t.kernel == "tc fprop tf32 nhwc 128x64 cp16/cp16 tall" and t.counts.tiles == 392 * 4


def test_strided_dgrad_issues_only_useful_work(mixes):
    """One GEMM per stride phase: 56x56 inputs at stride 2 are four phases of 28x28 positions (M =
    256 x 784 = 1568 tiles of 128), reducing over 128 channels x 4, 2, 2 and 1 taps."""
    p = gpu_model.predict(layer("r50.l2.3x3s2", 256), "dgrad", "bf16", "nhwc", mixes)
    assert gpu_model.dgrad_phases(layer("r50.l2.3x3s2", 256)) == [(200704, 512), (200704, 256), (200704, 256),
                                                                   (200704, 128)]
    assert p.useful_fraction == 1.0
    assert p.kernel.endswith("128x128 cp16/cp16")  # 128 input channels: one 128-wide column tile
    assert p.counts.tiles == 4 * 1568 and p.counts.tile_slices == 1568 * (16 + 8 + 8 + 4)
    # a 1x1 stride-2 shortcut: one phase holds every tap; the other three write zeros without MMAs
    proj = gpu_model.dgrad_phases(layer("r50.l2.proj", 256))
    assert [k for _, k in proj] == [512, 0, 0, 0]
    assert gpu_model.predict(layer("r50.l2.proj", 256), "dgrad", "f16", "nhwc", mixes).useful_fraction == 1.0


def test_cudnn_published_point(mixes):
    p = gpu_model.predict(layer("r50.l1.3x3", 32), "fprop", "bf16", "nhwc", mixes)
    assert p.cudnn_published_us == 31.2


def test_measured_times_attach(tmp_path, mixes):
    preds = [gpu_model.predict(layer("r50.l3.3x3", 256), "fprop", "f16", "nhwc", mixes),
             gpu_model.predict(layer("seed.conv1", 32), "wgrad", "tf32", "nchw", mixes)]
    bench = {"device": "cuda", "rows": [
        dict(layer="r50.l3.3x3.n256", conv_pass="fprop", mode="f16", layout="nhwc", N=256, cuconv_ms=1.5, native_ms=0.4),
        dict(layer="seed.conv1", conv_pass="wgrad", mode="tf32", layout="nchw", N=32, cuconv_ms=0.02, native_ms=0.01),
        dict(layer="seed.conv1", conv_pass="fprop", mode="f16", layout="nhwc", N=32, error="boom")]}
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(bench))
    assert gpu_model.attach_measured(preds, str(path)) == 2
    assert preds[0].measured == dict(cuconv_us=1500.0, cudnn_us=400.0)


def test_cli_model_json(capsys):
    assert cli.main(["audit", "--model", "--json", "--layers", "n32/seed", "--mix-from", BASELINE]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["predictions_not_measurements"] is True
    assert any("PREDICTIONS" in a for a in doc["assumptions"])
    assert len(doc["rows"]) == 2 * 3 * 4 * 2
    for r in doc["rows"]:
        assert r["predicted_us"] >= max(r["tensor_us"], r["memory_us"]) > 0 and r["issue_us"] > 0
        assert r["predicted_us"] >= r["roofline_us"] >= r["ideal_us"] > 0
    assert cli.main(["audit", "--model", "--layers", "n32/seed.conv2", "--dtypes", "bf16", "--passes", "fprop",
                     "--mix-from", BASELINE]) == 0
    out = capsys.readouterr().out
    assert "PREDICTIONS" in out and "seed.conv2" in out


def test_memory_term_counts_compulsory_bytes_and_l2_misses(mixes):
    l = layer("r50.l4.1x1up", 32)
    all_hit = gpu_model.predict(l, "fprop", "f16", "nhwc", mixes, l2_hit=1.0)
    no_hit = gpu_model.predict(l, "fprop", "f16", "nhwc", mixes, l2_hit=0.0)
    c, hbm = all_hit.counts, gpu_model.H100["hbm_bytes_per_s"]
    assert c.compulsory_bytes == 2 * (32 * 512 * 49 + 2048 * 512 + 32 * 2048 * 49)
    assert all_hit.memory_us == pytest.approx(c.compulsory_bytes / hbm * 1e6)
    assert no_hit.memory_us == pytest.approx((c.load_bytes + c.store_bytes) / hbm * 1e6)
    assert no_hit.memory_us > all_hit.memory_us


def test_model_targets_flag_what_misses_them(mixes):
    stem = gpu_model.predict(layer("r50.conv1", 256), "dgrad", "f16", "nhwc", mixes)  # 3 of 32 columns
    whole = gpu_model.predict(layer("r50.l3.3x3", 256), "fprop", "f16", "nhwc", mixes)
    misses = gpu_model.model_targets([stem, whole])
    useful = [m for m in misses if m["target"].startswith("useful")]
    assert [(m["layer"], m["conv_pass"]) for m in useful] == [("r50.conv1", "dgrad")]
    roofline = {(m["layer"], m["conv_pass"]) for m in misses if m["target"].startswith("predicted")}
    assert ((whole.layer, whole.conv_pass) in roofline) == (whole.predicted_us > 1.5 * whole.roofline_us)
    assert ("r50.conv1", "dgrad") not in roofline  # the roofline target is for the 3x3 and 1x1 layers
    seed = gpu_model.predict(layer("seed.conv1", 32), "fprop", "f16", "nhwc", mixes)
    assert seed.useful_fraction < 0.9 and gpu_model.model_targets([seed]) == []  # the seed CNN has no target
