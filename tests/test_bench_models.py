"""CI smoke of `python -m cuconv bench --models`: a tiny run of one small torchvision model through the
CLI (both views, its JSON and Markdown), the layer grouping, and that whatever cuconv rejects or gets
wrong shows up in the report instead of stopping the run. Speed is never asserted."""
import copy
import json

import pytest
import torch

import cuconv
from cuconv.apps import bench, bench_models
from cuconv.apps.cli import main

pytest.importorskip("torchvision")

TINY = ["--device", "cpu", "--batch", "2", "--resolution", "64", "--warmup", "1", "--min-reps", "1", "--max-reps", "1",
        "--target-time", "0", "--threads", "1", "--ceiling-n", "256", "--quick"]
# A small model that has both layer kinds: 26 convolutions and 3 max-pools (ceil mode).
MODEL = "squeezenet1_1"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_models")
    js, md = str(out / "models.json"), str(out / "models.md")
    cuconv.config.set(poison=False)  # module-scoped: the autouse poison fixture is not active yet
    rc = main(["bench", "--models", MODEL, "--view", "both"] + TINY + ["--json", js, "--markdown", md])
    with open(js) as f, open(md) as g:
        return rc, json.load(f), g.read()


def test_json_has_both_views(tiny_run):
    rc, report, _ = tiny_run
    assert rc == 0
    assert {"cpu_model", "cpu_cores", "torch", "cuconv", "loadavg_end"} <= set(report["machine"])
    st = report["settings"]
    assert st["models"] == [MODEL] and st["resolution"] == 64 and st["layouts"] == ["nchw", "channels_last"]
    assert st["views"] == ["models", "layers"] and st["batches"] == [2]
    assert report["ceiling"]["copy_gbs"] > 0 and report["ceiling"]["matmul_gflops"] > 0
    assert {(r["pass"], r["layout"]) for r in report["models"]} == {
        (p, lay) for p in ("train_step", "inference") for lay in ("nchw", "channels_last")}
    for r in report["models"]:
        assert r["skipped"] is None and r["model"] == MODEL and r["batch"] == 2
        assert r["ratio"] == pytest.approx(r["native"]["median_s"] / r["cuconv"]["median_s"])
        assert r["cuconv"]["reps"] == 1
    assert len(report["checks"]) == 2
    for c in report["checks"]:
        assert c["ok"] is True and 0 <= c["max_rel_diff"] <= c["tol"] and c["error"] is None
    s = report["summary"]
    assert s["timed_rows"] == 4 and s["geomean_ratio"] > 0 and not s["checks_failed"]
    assert set(s["by_pass_layout"]) == {f"{p}/{lay}" for p in ("train_step", "inference")
                                        for lay in ("nchw", "channels_last")}


def test_layer_rows(tiny_run):
    _, report, _ = tiny_run
    rows = report["layers"]
    for layout in ("nchw", "channels_last"):
        mine = [r for r in rows if r["layout"] == layout]
        convs = {r["layer"] for r in mine if r["geometry"]["kind"] == "conv"}
        pools = {r["layer"] for r in mine if r["geometry"]["kind"] == "pool"}
        assert len(convs) == 18 and len(pools) == 3
        assert sum(r["count"] for r in mine if r["pass"] in ("conv_fwd", "pool_fwd")) == 26 + 3
        assert {r["pass"] for r in mine} == set(bench_models.CONV_PASSES + bench_models.POOL_PASSES)
    for r in rows:
        assert r["skipped"] is None, r
        assert r["count"] == len(r["modules"]) >= 1
        assert r["bound"] in ("memory", "compute") and r["bytes"] > 0
        if r["geometry"]["kind"] == "pool":
            assert r["bound"] == "memory" and r["flops"] == 0
        for side in ("cuconv", "native"):
            t = r[side]["median_s"]
            assert r[f"{side}_bw_share"] == pytest.approx(r["bytes"] / t / 1e9 / report["ceiling"]["copy_gbs"])
            step = next(m for m in report["models"] if m["pass"] == "train_step" and m["layout"] == r["layout"])
            assert r[f"{side}_model_share"] == pytest.approx(r["count"] * t / step[side]["median_s"])
        assert r["weighted_delta_s"] == pytest.approx(r["count"] * (r["cuconv"]["median_s"] - r["native"]["median_s"]))
    first = next(r for r in rows if r["modules"][0] == "features.0")
    assert first["layer"] == "conv 3->64 3x3 s2 p0 @64x64" and first["flops"] == 2.0 * 2 * 64 * 31 * 31 * 3 * 9


def test_markdown_and_text_tables(tiny_run):
    _, report, md = tiny_run
    assert "copy_ of 64 MiB" in md and "ratio = native time / cuconv time" in md
    assert f"| {MODEL} | " in md and "| train NCHW ms | ratio |" in md and "geometric mean" in md
    # five layer passes per model and layout
    assert sum(line.startswith(f"| {MODEL} | NCHW |") for line in md.splitlines()) == 5
    text = bench_models.format_layers(report, top=2)
    assert len(text.splitlines()) == 2 + 2 * 2
    assert MODEL in bench_models.format_models(report)
    lost = bench_models.sorted_layers([r for r in report["layers"] if r["layout"] == "nchw"], "lost")
    assert lost[0]["weighted_delta_s"] == max(r["weighted_delta_s"] for r in lost)
    assert lost[0]["layer"] in bench_models.format_layers(report, top=1, sort="lost").splitlines()[2]


def test_resnet18_groups_identical_layers():
    # torchvision's resnet18 at 64x64: 20 convolutions and one max-pool in 12 geometries; each stage's
    # 3x3 stride-1 convolutions are one geometry (4 in the first stage, 3 in the others).
    groups = bench_models.distinct_layers(bench_models.build_model("resnet18"), torch.randn(1, 3, 64, 64))
    counts = {layer.label: len(names) for layer, names in groups}
    assert len(groups) == 12 and sum(counts.values()) == 21
    assert counts["conv 64->64 3x3 s1 p1 @16x16"] == 4
    assert counts["conv 128->128 3x3 s1 p1 @8x8"] == 3
    assert counts["conv 512->512 3x3 s1 p1 @2x2"] == 3
    assert counts["maxpool 3x3 s2 p1 64@32x32"] == 1
    names = dict((layer.label, names) for layer, names in groups)["conv 64->64 3x3 s1 p1 @16x16"]
    assert names == ["layer1.0.conv1", "layer1.0.conv2", "layer1.1.conv1", "layer1.1.conv2"]


class _Twice(torch.nn.Module):
    """One conv module called twice on the same shape, then a 'same'-padded conv with an even
    kernel (padding one more row and column at the bottom/right)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.even = torch.nn.Conv2d(4, 4, 4, padding="same")

    def forward(self, x):
        return self.even(self.conv(self.conv(x)))


@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_a_module_called_twice_counts_twice():
    groups = bench_models.distinct_layers(_Twice(), torch.randn(1, 4, 8, 8))
    assert [(layer.label, names) for layer, names in groups] == [
        ("conv 4->4 3x3 s1 p1 @8x8", ["conv", "conv"]), ("conv 4->4 4x4 s1 p1x1x2x2 @8x8", ["even"])]


def _cfg(dtype="float32", passes=bench_models.CONV_PASSES + bench_models.POOL_PASSES + bench_models.MODEL_PASSES):
    return dict(batch=1, dtype=dtype, resolution=64, device="cpu", seed=0, passes=passes)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_unsupported_layer_passes_are_reported_not_raised(monkeypatch):
    timer, timing = bench.CpuTimer(), dict(warmup=1, min_reps=1, max_reps=1, target_s=0)
    groups = bench_models.distinct_layers(_Twice(), torch.randn(1, 4, 8, 8))
    rows = bench_models.bench_layers("twice", groups, "nchw", _cfg(), timer, timing)
    assert [r["skipped"] for r in rows[:3]] == [None] * 3
    assert all(r["skipped"].startswith("not timed: asymmetric padding") for r in rows[3:])

    # A layer cuconv rejects (every op of this float16 layer, here) is a row that says so.
    def reject(*args, **kwargs):
        raise NotImplementedError("cuconv::conv2d: this layer is not supported")
    monkeypatch.setattr(torch.ops.cuconv, "conv2d", reject)
    monkeypatch.setattr(torch.ops.cuconv, "conv2d_backward", reject)
    rows = bench_models.bench_layers("twice", groups[:1], "channels_last", _cfg("float16"), timer, timing)
    assert len(rows) == 3
    for r in rows:
        assert r["skipped"].startswith("unsupported by cuconv: NotImplementedError: cuconv::conv2d")
    report = {"ceiling": {"matmul_gflops": 1.0, "copy_gbs": 1.0}, "models": [], "checks": [], "layers": rows,
              "settings": {"layouts": ["channels_last"]}}
    bench_models.finish(report)
    text = bench_models.format_layers(report)
    assert text.count("unsupported by cuconv") == 3


def test_a_model_cuconv_rejects_is_a_row_not_an_exception(monkeypatch):
    # The modules reach the ops through cuconv.ops._call (direct calls in eager mode): every
    # convolution op rejects there, max-pool still runs.
    call, convs = cuconv.ops._call, {cuconv.ops._CONV2D, cuconv.ops._CONV2D_BIAS_RELU,
                                     cuconv.ops._CONV2D_BIAS_RELU_MAX_POOL2D}

    def reject(op, *args):
        if op in convs:
            raise NotImplementedError("cuconv::conv2d: this model is not supported")
        return call(op, *args)
    monkeypatch.setattr(cuconv.ops, "_call", reject)
    check, rows = bench_models.bench_model(MODEL, "nchw", _cfg(), bench.CpuTimer(),
                                           dict(warmup=1, min_reps=1, max_reps=1, target_s=0))
    assert check["error"].startswith("NotImplementedError") and check["ok"] is None
    assert [r["pass"] for r in rows] == ["train_step", "inference"]
    assert all(r["skipped"].startswith("error: NotImplementedError") for r in rows)


def test_a_wrong_answer_shows(monkeypatch):
    # A converted model that computes something else must fail the check, and the table say so.
    convert = cuconv.convert

    def wrong_convert(model):
        model = convert(model)
        with torch.no_grad():
            next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d)).weight.mul_(1.5)
        return model
    monkeypatch.setattr(cuconv, "convert", wrong_convert)
    check, rows = bench_models.bench_model(MODEL, "nchw", _cfg(passes=()), bench.CpuTimer(), {})
    assert rows == [] and check["ok"] is False and check["max_rel_diff"] > 0.01
    report = {"models": [dict(check, **{"pass": "inference", "skipped": "error: x"})], "checks": [check],
              "settings": {"layouts": ["nchw"]}}
    report["summary"] = bench_models.summarize(report["models"], report["checks"])
    assert "WRONG" in bench_models.format_models(report)
    assert f"outputs disagree or fail: {MODEL}/nchw" in bench_models.format_summary(report)


def test_model_names():
    assert bench_models.model_names("all") == list(bench_models.MODEL_NAMES) and len(bench_models.MODEL_NAMES) == 14
    assert bench_models.model_names("alexnet, vgg11") == ["alexnet", "vgg11"]
    with pytest.raises(SystemExit, match="unknown model"):
        bench_models.model_names("resnet19")


def test_googlenet_training_loss_sums_its_heads():
    out = (torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3))
    labels = torch.tensor([0, 1])
    single = torch.nn.functional.cross_entropy(out[0], labels)
    assert bench_models.model_loss(out, labels) == pytest.approx(3 * single.item())
    assert bench_models.model_loss(out[0], labels) == pytest.approx(single.item())


def test_the_check_looks_past_a_head_that_hides_the_features():
    # An untrained head whose bias dwarfs its input (googlenet's at init) gives the same logits
    # whatever the convolutions computed: the check compares the head's input too.
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 3))
    with torch.no_grad():
        model[2].weight.mul_(1e-12)
        model[2].bias.fill_(1.0)
    wrong = cuconv.convert(copy.deepcopy(model))
    with torch.no_grad():
        wrong[0].weight.mul_(2.0)
        x = torch.randn(2, 3, 8, 8)
        (out_a, feat_a), (out_b, feat_b) = (bench_models.outputs_and_features(m, x) for m in (wrong, model))
    assert bench_models.max_rel_diff(out_a, out_b) < 1e-6
    assert bench_models.max_rel_diff(feat_a, feat_b) > 0.5
    out, feat = bench_models.outputs_and_features(torch.nn.Conv2d(3, 4, 3), x)
    assert feat is None and out.shape == (2, 4, 6, 6)
