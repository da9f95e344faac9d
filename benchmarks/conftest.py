"""pytest-benchmark suite options. Run: PYTHONPATH=pyext pytest benchmarks/ --benchmark-only
(add --bench-quick for the short case list, --benchmark-autosave / --benchmark-compare to keep and
compare runs)."""
import torch  # before cuconv: its extension links against torch's libraries


def pytest_addoption(parser):
    group = parser.getgroup("cuconv bench")
    group.addoption("--bench-device", default="cpu", choices=("cpu", "cuda"))
    group.addoption("--bench-quick", action="store_true", help="the --quick case list of python -m cuconv bench")
    group.addoption("--bench-batch", default=None, help="comma-separated batch sizes")
    group.addoption("--bench-dtype", default="float32")
    group.addoption("--bench-layout", default="nchw", choices=("nchw", "channels_last", "both"))
    group.addoption("--bench-threads", type=int, default=0, help="CPU threads (default torch's)")


def pytest_generate_tests(metafunc):
    if "bench_case" not in metafunc.fixturenames:
        return
    from cuconv.apps.bench import build_cases

    opt = metafunc.config.getoption
    layout = opt("--bench-layout")
    batches = [int(b) for b in opt("--bench-batch").split(",")] if opt("--bench-batch") else None
    cases = build_cases(opt("--bench-device"), batches, opt("--bench-dtype").split(","),
                        ("nchw", "channels_last") if layout == "both" else (layout,), quick=opt("--bench-quick"))
    metafunc.parametrize("bench_case", cases, ids=[c.name for c in cases])


def pytest_configure(config):
    if config.getoption("--bench-threads", default=0):
        torch.set_num_threads(config.getoption("--bench-threads"))
