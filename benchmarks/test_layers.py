"""The cases of `python -m cuconv bench` (imported from cuconv.apps.bench, not repeated here) as
pytest-benchmark tests: each case's cuconv and native calls share one group, so they sit side by
side in the table and in `pytest-benchmark compare`."""
import pytest
import torch

from cuconv.apps.bench import measure_ceiling, prepare


@pytest.fixture(scope="session", autouse=True)
def warm_native(request):
    # A large sgemm first: native (MKL/oneDNN) convolution is several times slower in a process
    # that has not run one, which would flatter cuconv.
    device = request.config.getoption("--bench-device")
    if not request.config.getoption("--benchmark-disable"):
        measure_ceiling(device, torch.float32, quick=True)


@pytest.mark.parametrize("impl", ["cuconv", "native"])
def test_case(benchmark, bench_case, impl):
    prepared = prepare(bench_case)
    fn = prepared.cuconv if impl == "cuconv" else prepared.native
    if bench_case.device == "cuda":
        def call():
            fn()
            torch.cuda.synchronize()
    else:
        call = fn
    benchmark.group = bench_case.name
    benchmark.extra_info.update(op=bench_case.op, shape=bench_case.shape, batch=bench_case.batch,
                                dtype=bench_case.dtype, layout=bench_case.layout, device=bench_case.device,
                                work=prepared.work, unit=prepared.unit, threads=torch.get_num_threads())
    benchmark(call)
