"""CI smoke of the benchmark tooling: a tiny filtered run through the CLI, its JSON and PNG, the
case wiring (cuconv and native compute the same thing), and the pytest-benchmark suite. Speed is
never asserted."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

import cuconv
from cuconv.apps import bench
from cuconv.apps.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYEXT = os.path.dirname(os.path.dirname(os.path.abspath(cuconv.__file__)))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    js, png = str(out / "bench.json"), str(out / "bench.png")
    cuconv.config.set(poison=False)  # module-scoped: the autouse poison fixture is not active yet
    rc = main(["bench", "--device", "cpu", "--ops", "conv_fwd,conv_grad_weight,conv_bias_relu,pool_bwd",
               "--shapes", "seed.conv2,seed.pool2", "--batch", "2", "--quick", "--warmup", "1",
               "--min-reps", "3", "--max-reps", "3", "--threads", "1", "--ceiling-n", "512", "--json", js, "--plot", png])
    with open(js) as f:
        return rc, json.load(f), png


def test_cli_json_is_well_formed(tiny_run):
    rc, report, _ = tiny_run
    assert rc == 0
    assert {"cpu_model", "cpu_cores", "torch", "cuconv"} <= set(report["machine"])
    assert report["settings"]["threads"] == 1 and report["settings"]["device"] == "cpu"
    assert report["ceiling"]["matmul_gflops"] > 0 and report["ceiling"]["copy_gbs"] > 0
    names = [r["name"] for r in report["rows"]]
    assert names == ["conv_fwd/seed.conv2/n2/float32/nchw", "conv_grad_weight/seed.conv2/n2/float32/nchw",
                     "conv_bias_relu/seed.conv2/n2/float32/nchw", "conv_bias_relu_pool/seed.conv2/n2/float32/nchw",
                     "pool_bwd/seed.pool2/n2/float32/nchw"]
    timed = [r for r in report["rows"] if not r["skipped"]]
    assert len(timed) == 5
    for r in timed:
        for side in ("cuconv", "native"):
            s = r[side]
            assert s["reps"] == 3
            assert 0 < s["min_s"] <= s["q1_s"] <= s["median_s"] <= s["q3_s"] <= s["max_s"]
            assert isinstance(s["faults"], float) and s["faults"] >= 0
        assert r["ratio"] == pytest.approx(r["native"]["median_s"] / r["cuconv"]["median_s"])
        scale = 1e9 if r["unit"] != "img/s" else 1.0
        assert r["cuconv_rate"] == pytest.approx(r["work"] / r["cuconv"]["median_s"] / scale)
        ceiling = report["ceiling"]["matmul_gflops" if r["unit"] == "GFLOP/s" else "copy_gbs"]
        assert r["native_share"] == pytest.approx(r["native_rate"] / ceiling)
    conv = timed[0]
    assert conv["unit"] == "GFLOP/s" and conv["work"] == 2 * 2 * 64 * 32 * 9 * 13 * 13
    pool = report["rows"][-1]
    assert pool["unit"] == "GB/s" and pool["work"] == 2 * 64 * 13 * 13 * 4 + 2 * 64 * 6 * 6 * (4 + 8)
    fused = report["rows"][2]
    assert fused["op"] == "conv_bias_relu" and fused["ratio"] > 0


def test_header_names_the_allocator_policy(tiny_run):
    _, report, _ = tiny_run
    assert report["settings"]["malloc"] == "glibc defaults"
    header = bench.format_header(report)
    assert "malloc: glibc defaults" in header and "faults = page faults per call" in header


def test_page_faults_are_charged_to_the_call_that_made_them():
    import mmap
    pages = 64

    def touch_fresh_pages():  # a new anonymous mapping each call: every page faults in once
        m = mmap.mmap(-1, pages * mmap.PAGESIZE)
        for i in range(pages):
            m[i * mmap.PAGESIZE] = 1
        m.close()

    a, b = bench.time_pair(bench.CpuTimer(), touch_fresh_pages, lambda: None, warmup=1, min_reps=5, max_reps=5)
    assert a.faults >= pages and b.faults < pages / 2


def test_malloc_mode_rejects_unknown_names():
    assert bench.set_malloc_mode("default") == "glibc defaults"
    with pytest.raises(ValueError, match="unknown malloc mode"):
        bench.set_malloc_mode("fast")


def test_plot_is_a_png(tiny_run):
    _, _, png = tiny_run
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(png) > 2000


def test_case_filters():
    quick = bench.build_cases("cpu", quick=True)
    assert quick and all(c.batch == 32 for c in quick)
    assert {c.shape for c in quick} <= set(bench.QUICK_SHAPES)
    full = bench.build_cases("cpu", layouts=("nchw", "channels_last"))
    assert {c.batch for c in full} == {32, 128}
    assert {c.batch for c in bench.build_cases("cuda", ops=["pool_fwd"])} == {32, 128, 256}
    assert len({c.name for c in full}) == len(full)
    picked = bench.build_cases("cpu", batches=(32,), ops=["conv_grad"], shapes=[r"^r18\.sc"])
    assert {(c.op, c.shape) for c in picked} == {(op, f"r18.sc{i}") for op in ("conv_grad_input", "conv_grad_weight")
                                                 for i in (2, 3, 4)}
    pooled = bench.build_cases("cpu", batches=(32,), ops=["conv_bias_relu_pool"])
    assert {c.shape for c in pooled} == set(bench.CONV_RELU_POOL_SHAPES) == {"seed.conv1", "seed.conv2"}


@pytest.mark.parametrize("name", ["conv_fwd/r18.l2.down", "conv_grad_input/r18.sc3", "conv_grad_weight/seed.conv2",
                                  "conv_bias_relu_pool/seed.conv1", "pool_fwd/seed.pool2", "pool_bwd/seed.pool1"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_both_sides_compute_the_same(name, layout):
    # The ratio only means something if cuconv and native do the same work: compare in float64.
    op, shape = name.split("/")
    prepared = bench.prepare(bench.Case(op, shape, 2, "float64", layout, "cpu"))
    ours, theirs = prepared.cuconv(), prepared.native()
    ours = ours if isinstance(ours, (tuple, list)) else (ours,)
    theirs = theirs if isinstance(theirs, (tuple, list)) else (theirs,)
    compared = 0
    for a, b in zip(ours, theirs):
        if b is None or a.numel() == 0:
            continue
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
        compared += 1
    assert compared >= 1


def test_train_step_case_runs():
    prepared = bench.prepare(bench.Case("train_step", "seed_cnn", 2, "float32", "nchw", "cpu"))
    a, b = prepared.cuconv(), prepared.native()
    assert math.isfinite(a.item()) and math.isfinite(b.item())
    assert prepared.unit == "img/s" and prepared.work == 2


def test_pytest_benchmark_suite_runs():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [PYEXT, os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-m", "pytest", "benchmarks/", "-q", "-p", "no:cacheprovider",
                           "--benchmark-disable", "--bench-batch", "2", "-k", "pool_fwd/seed.pool2/"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout, proc.stdout


@pytest.mark.parametrize("model", ["seed_cnn", "seed_cnn_functional"])
def test_seed_cnn_train_steps_agree(model):
    # Both seed-CNN rows train the same function on both sides: the first step's loss (before any
    # update) must match between cuconv's converted model and torch.nn's.
    prepared = bench.prepare(bench.Case("train_step", model, 4, "float32", "nchw", "cpu"))
    a, b = prepared.cuconv(), prepared.native()
    assert abs(a.item() - b.item()) <= 1e-4 * max(1.0, abs(b.item()))


@pytest.mark.parametrize("sides", [["--paths", "portable,avx2"], ["--paths", "portable", "--dtypes", "float32,bfloat16"]],
                         ids=["paths", "dtypes"])
def test_cpu_isa_compare_script_runs(sides):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [PYEXT, os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "benchmarks/cpu_isa_compare.py", *sides,
                           "--ops", "pool_fwd", "--shapes", "seed.pool2", "--batch", "2", "--layout", "nchw",
                           "--target-time", "0.01"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("pool_fwd/seed.pool2/n2/float32/")]
    assert len(rows) == 1 and "ratio" in rows[0], proc.stdout
    assert "1 cases: geometric mean" in proc.stdout


@pytest.mark.parametrize("after_matmul,malloc", [(False, "default"), (True, "default"), (False, "steady")])
def test_train_step_fresh_script_runs(after_matmul, malloc):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [PYEXT, os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "benchmarks/train_step_fresh.py", "--batch", "2", "--layout", "nchw", "--reps", "2",
           "--malloc", malloc]
    proc = subprocess.run(cmd + (["--after-matmul"] if after_matmul else []),
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ("matmul first" in proc.stdout) == after_matmul
    assert ("malloc: steady" in proc.stdout) == (malloc == "steady")
    rows = [line for line in proc.stdout.splitlines() if line.startswith("train_step/seed_cnn/n2/float32/nchw")]
    assert len(rows) == 1 and "ratio" in rows[0] and "faults" in rows[0], proc.stdout
