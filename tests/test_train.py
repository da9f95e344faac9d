"""`python -m cuconv train | evaluate | predict` on tiny synthetic CIFAR-10 data: logs, plots,
checkpoints, bit-identical resume, a 2-process DDP run, and (when the shared data is present) a
real-data smoke run."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import cuconv
from cuconv.apps import train as ctrain
from cuconv.apps.cli import build_parser
from cuconv.apps.models import build_model

from test_data import CLASSES, write_image_folder, write_python_batches

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("CUCONV_REAL_DATA", REPO.parent / "shared" / "data" / "cifar10-jpg"))
# `python -m cuconv` in a fresh interpreter, with torch loaded before cuconv's extension.
LAUNCHER = "import sys, torch; from cuconv.apps.cli import main; sys.exit(main())"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CUCONV_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CUCONV_DATA", raising=False)


@pytest.fixture(scope="module")
def batches(tmp_path_factory):
    # 5 x 16 training images, 40 test images; colours depend on the class, so they are learnable.
    return write_python_batches(tmp_path_factory.mktemp("cifar") / "py", per_batch=16, test=40)


def run_cli(argv):
    """The command in this process (as `python -m cuconv ...` parses it); returns its exit code."""
    args = build_parser().parse_args(argv)
    return args.func(args)


def tiny(data, out, *extra):
    return ["train", "--data", str(data), "--out", str(out), "--threads", "1", "--no-progress",
            "--batch-size", "16", *extra]


def read_metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_cli_defaults_are_the_seed_recipe():
    args = build_parser().parse_args(["train"])
    config = ctrain._resolve_config(args)
    assert (config["model"], config["backend"], config["optimizer"], config["lr"], config["batch_size"],
            config["epochs"], config["normalize"], config["augment"]) == \
        ("cifar-cnn", "cuconv", "adam", 1e-3, 32, 10, "scale", False)
    resnet = ctrain._resolve_config(build_parser().parse_args(["train", "--model", "resnet", "--lr", "0.05"]))
    assert (resnet["optimizer"], resnet["lr"], resnet["augment"]) == ("sgd", 0.05, True)
    for command in ("train", "evaluate", "predict"):
        assert command in build_parser().format_help()


def test_seed_cnn_shapes_and_backends_share_weights():
    torch.manual_seed(3)
    native = build_model("cifar-cnn", "native")
    torch.manual_seed(3)
    ours = build_model("cifar-cnn", "cuconv")
    import cuconv
    assert sum(isinstance(m, cuconv.nn.Conv2d) for m in ours.modules()) == 2
    assert sum(isinstance(m, cuconv.nn.Conv2d) and m.fused_pool for m in ours.modules()) == 2
    assert ours[-1].in_features == 2304
    for (k1, v1), (k2, v2) in zip(native.state_dict().items(), ours.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    x = torch.rand(4, 3, 32, 32)
    torch.testing.assert_close(ours(x), native(x), rtol=1e-4, atol=1e-5)


def test_resnet_forward_matches_native():
    torch.manual_seed(0)
    native = build_model("resnet", "native").eval()
    ours = build_model("resnet", "cuconv").eval()
    ours.load_state_dict(native.state_dict())
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        out = ours(x)
        torch.testing.assert_close(out, native(x), rtol=1e-3, atol=1e-4)
    assert out.shape == (1, 10)


def test_train_writes_logs_plots_checkpoint(batches, tmp_path):
    out = tmp_path / "run"
    assert run_cli(tiny(batches, out, "--epochs", "2", "--augment", "--lr", "3e-3", "--channels-last")) == 0
    assert {"metrics.jsonl", "config.json", "last.pt", "curves.png", "confusion.png"} <= {p.name for p in out.iterdir()}
    records = read_metrics(out)
    assert [r["epoch"] for r in records] == [1, 2]
    last = records[-1]
    for key in ("train_loss", "test_loss", "test_accuracy", "macro_f1", "images_per_second", "train_seconds"):
        assert key in last
    assert set(last["per_class"]) == set(CLASSES)
    assert sum(map(sum, last["confusion_matrix"])) == 40
    assert last["test_accuracy"] > 0.3  # chance is 0.1; the classes differ in colour
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    ckpt = ctrain.load_checkpoint(str(out))
    assert ckpt["epoch"] == 2 and set(ckpt["rng"][0]) >= {"torch", "numpy", "python", "data", "augment"}


def test_resume_is_bit_identical(batches, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    common = ("--augment", "--seed", "7")
    assert run_cli(tiny(batches, straight, "--epochs", "2", "--no-plots", *common)) == 0
    assert run_cli(tiny(batches, split, "--epochs", "1", "--no-plots", *common)) == 0
    assert run_cli(["train", "--resume", str(split / "last.pt"), "--epochs", "2", "--threads", "1",
                    "--no-progress"]) == 0
    assert ctrain.load_checkpoint(str(split))["config"]["backend"] == "cuconv"
    a, b = ctrain.load_checkpoint(str(straight)), ctrain.load_checkpoint(str(split))
    assert a["epoch"] == b["epoch"] == 2
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key, state in a["optimizer"]["state"].items():
        for name in state:
            assert torch.equal(torch.as_tensor(state[name]), torch.as_tensor(b["optimizer"]["state"][key][name]))
    assert read_metrics(straight)[-1]["test_loss"] == read_metrics(split)[-1]["test_loss"]
    assert len(read_metrics(split)) == 2  # the resumed run keeps epoch 1's record


def test_evaluate_and_predict(batches, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(tiny(batches, out, "--epochs", "1", "--lr", "3e-3", "--no-plots")) == 0
    capsys.readouterr()
    assert run_cli(["evaluate", str(out / "last.pt"), "--json", "--out", str(tmp_path / "eval")]) == 0
    report = json.loads(capsys.readouterr().out)
    # The same weights on the same test set: what the training run logged.
    assert report["accuracy"] == read_metrics(out)[-1]["test_accuracy"]
    assert report["images"] == 40 and (tmp_path / "eval" / "evaluation.json").is_file()
    native = ctrain.evaluate_checkpoint(build_parser().parse_args(
        ["evaluate", str(out), "--backend", "native"]))
    assert native["confusion_matrix"] == report["confusion_matrix"]

    imgs = write_image_folder(tmp_path / "imgs", train_per_class=1, test_per_class=1)
    files = [str(p) for p in sorted((imgs / "test").rglob("*.png"))[:3]]
    assert run_cli(["predict", str(out), *files, "--top-k", "4", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in results] == files
    for r in results:
        probs = [t["probability"] for t in r["top"]]
        assert len(probs) == 4 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert all(t["class"] in CLASSES for t in r["top"])
    # The probabilities are the model's softmax on the decoded image.
    ckpt = ctrain.load_checkpoint(str(out))
    model = build_model("cifar-cnn", "native")
    model.load_state_dict(ckpt["model"])
    x = ctrain.load_image(files[0])[None].float() / 255
    expected = torch.softmax(model(x), 1)[0].max().item()
    assert results[0]["top"][0]["probability"] == pytest.approx(expected, rel=1e-4)
    assert run_cli(["predict", str(out), str(tmp_path / "missing.png")]) == 2


def test_image_folder_training(tmp_path):
    data = write_image_folder(tmp_path / "imgs", train_per_class=4, test_per_class=2, fmt="jpg")
    out = tmp_path / "run"
    assert run_cli(tiny(data, out, "--epochs", "1", "--no-plots", "--limit-test", "10",
                        "--model", "cifar-cnn", "--backend", "native")) == 0
    rec = read_metrics(out)[0]
    assert sum(map(sum, rec["confusion_matrix"])) == 10
    # A resumed run keeps the checkpoint's backend and test subset unless told otherwise.
    assert run_cli(["train", "--resume", str(out), "--epochs", "2", "--no-progress"]) == 0
    ckpt = ctrain.load_checkpoint(str(out))
    assert (ckpt["epoch"], ckpt["config"]["backend"], ckpt["config"]["limit_test"]) == (2, "native", 10)


def test_missing_data_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "readme.txt").write_text("not cifar")
    assert run_cli(tiny(tmp_path / "junk", tmp_path / "run", "--epochs", "1")) == 2
    assert "CUCONV_DATA" in capsys.readouterr().err


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes(batches, tmp_path):
    out = tmp_path / "ddp"
    script = tmp_path / "cuconv_main.py"
    script.write_text(LAUNCHER.replace("; ", "\n") + "\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "pyext"), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", GLOO_SOCKET_IFNAME="lo")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           "--master_addr=127.0.0.1", str(script),
           *tiny(batches, out, "--epochs", "2", "--no-plots", "--batch-size", "8", "--augment")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("epoch 2/2") == 1  # only rank 0 reports
    records = read_metrics(out)
    assert [r["epoch"] for r in records] == [1, 2]
    assert sum(map(sum, records[-1]["confusion_matrix"])) == 40  # both ranks' halves of the test set
    ckpt = ctrain.load_checkpoint(str(out))
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2
    # Each rank augments with its own stream, and both are saved.
    assert not torch.equal(ckpt["rng"][0]["augment"], ckpt["rng"][1]["augment"])
    # 80 images over 2 ranks in batches of 8: 5 steps per epoch, all ranks in lock-step.
    assert ckpt["scheduler"]["last_epoch"] == 10
    assert records[-1]["test_accuracy"] > 0.2


@pytest.mark.slow
@pytest.mark.skipif(not REAL_DATA.is_dir(), reason="the shared CIFAR-10 tree is not present")
def test_real_cifar10_smoke(tmp_path, monkeypatch):
    # The decoded tree is cached in the user's cache directory: decoding 60k JPEGs takes a while.
    monkeypatch.delenv("CUCONV_CACHE", raising=False)
    out = tmp_path / "real"
    assert run_cli(["train", "--data", str(REAL_DATA), "--out", str(out), "--epochs", "1", "--limit-train", "5000",
                    "--limit-test", "2000", "--threads", "2", "--no-progress", "--no-plots"]) == 0
    rec = read_metrics(out)[0]
    assert sum(map(sum, rec["confusion_matrix"])) == 2000
    assert rec["test_accuracy"] > 0.25, rec["test_accuracy"]


def test_compile_trains_like_eager(batches, tmp_path):
    # --compile wraps the model in torch.compile (inductor); cuconv's ops trace through their fake
    # kernels, so the compiled run learns what the eager one does and checkpoints the same keys.
    eager, compiled = tmp_path / "eager", tmp_path / "compiled"
    assert run_cli(tiny(batches, eager, "--epochs", "1", "--no-plots", "--seed", "3")) == 0
    assert run_cli(tiny(batches, compiled, "--epochs", "1", "--no-plots", "--seed", "3", "--compile")) == 0
    a, b = read_metrics(eager)[-1], read_metrics(compiled)[-1]
    assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
    assert b["test_loss"] == pytest.approx(a["test_loss"], rel=1e-3)
    ka, kb = ctrain.load_checkpoint(str(eager))["model"], ctrain.load_checkpoint(str(compiled))["model"]
    assert list(ka) == list(kb)
    for key in ka:
        torch.testing.assert_close(kb[key], ka[key], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_trains_on_16bit_convolutions(batches, tmp_path, amp, monkeypatch):
    """--amp runs the model under torch.autocast: cuconv's convolutions in the 16-bit dtype (fp16
    with a gradient scaler), the run learns, and its scaler state is checkpointed."""
    seen = []  # the dtype of every fused conv+ReLU+pool output (autocast casts inside the op's dispatch)
    call = cuconv.ops._call  # the modules' way into the ops

    def recording(op, *args):
        out = call(op, *args)
        if op is cuconv.ops._CONV2D_BIAS_RELU_MAX_POOL2D:
            seen.append(out[0].dtype)
        return out
    monkeypatch.setattr(cuconv.ops, "_call", recording)
    out = tmp_path / amp
    assert run_cli(tiny(batches, out, "--epochs", "2", "--no-plots", "--amp", amp)) == 0
    assert set(seen) == {ctrain.AMP_DTYPES[amp]}
    metrics = read_metrics(out)
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"] or metrics[-1]["test_accuracy"] > 0.1
    ckpt = torch.load(out / "last.pt", weights_only=False)
    assert (ckpt["scaler"] is not None) == (amp == "fp16")
