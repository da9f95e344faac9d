"""The CPU plans: every shared case (tests/cases.py) reaches the strategy it is tagged with, on the
ISA path the tag is for, and every strategy the plans can choose is reached by some case. The
strategies' results are checked by the behaviour tests (test_conv2d_cases.py,
test_max_pool2d_cases.py); this file checks which code they exercise."""
import contextlib

import pytest
import torch

import cuconv
from cases import CONV, POOL
from conftest import CPU_ISA_PATHS

ops = torch.ops.cuconv

# Strategies no shared case reaches, with the test that does.
REACHED_ELSEWHERE = {
    "max_pool2d.forward:large_planes": "test_large_tensors.py (a plane past 2^31 elements: 8 GiB)",
    "max_pool2d.forward:planes_avx2": "test_max_pool2d_cpu_paths.py (planes too large to stage)",
    # bfloat16 only (AMX for the convs, AVX-512 for the pools); the cases' tags are float32 plans
    "conv2d.fprop:amx_direct": "test_low_precision_cpu.py (test_bfloat16_on_amx_plans, the AMX cases)",
    # float16 / bfloat16 only
    "conv2d.fprop:pointwise_16bit": "test_low_precision_cpu.py (test_pointwise_16bit_forward_and_grad_input)",
    "conv2d.dgrad:pointwise_16bit": "test_low_precision_cpu.py (test_pointwise_16bit_forward_and_grad_input)",
    "conv2d.wgrad:amx_direct": "test_bfloat16_amx.py, test_low_precision_cpu.py (the AMX cases)",
    "max_pool2d.forward:planes_2x2_bf16": "test_low_precision_cpu.py (test_16bit_2x2_pool_on_its_values)",
    "max_pool2d.forward:pixels_2x2_bf16": "test_low_precision_cpu.py (test_16bit_2x2_pool_on_its_values)",
    "max_pool2d.backward:windows_2x2_bf16": "test_low_precision_cpu.py (test_16bit_2x2_pool_on_its_values)",
    "conv2d.dgrad:amx_phases": "test_bfloat16_amx.py, test_low_precision_cpu.py (the AMX cases)",
}


@contextlib.contextmanager
def planned_as(case):
    """The tag's conditions: its ISA path and conv algorithm, at 2 threads (the grad weight's
    small-output GEMM runs only where the batch chunks, not the GEMM, take the threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with cuconv.config.flags(cpu_isa=case.isa, **({"cpu_conv_algo": case.algo} if hasattr(case, "algo") else {})):
            yield
    finally:
        torch.set_num_threads(threads)


def needs_isa(case):
    if case.isa not in CPU_ISA_PATHS:
        pytest.skip(f"the tag is for the {case.isa} path, which this CPU lacks")


@pytest.mark.parametrize("case", CONV, ids=lambda c: c.name)
def test_conv2d_case_reaches_its_plan(case):
    needs_isa(case)
    x, w, _ = case.tensors()
    with planned_as(case):
        assert tuple(ops._cpu_conv2d_plan(x, w, *case.args())) == case.plan, case.note


@pytest.mark.parametrize("case", POOL, ids=lambda c: c.name)
def test_max_pool2d_case_reaches_its_plan(case):
    needs_isa(case)
    with planned_as(case):
        assert tuple(ops._cpu_max_pool2d_plan(case.input(), *case.args())) == case.plan, case.note


def test_every_strategy_is_reached_by_a_case():
    tagged = set()
    for case in CONV:
        tagged |= {f"conv2d.{p}:{s}" for p, s in zip(("fprop", "dgrad", "wgrad"), case.plan)}
    for case in POOL:
        tagged |= {f"max_pool2d.{p}:{s}" for p, s in zip(("forward", "backward"), case.plan)}
    strategies = set(ops._cpu_plan_strategies())
    assert tagged <= strategies, f"tags that are no strategy: {sorted(tagged - strategies)}"
    missing = strategies - tagged - set(REACHED_ELSEWHERE)
    assert not missing, f"strategies no case reaches: {sorted(missing)}"


def test_float64_takes_no_float32_only_strategy():
    # Winograd, the AVX-512 row kernels and grouped_taps are float32 kernels: float64 falls back.
    only32 = {"winograd", "rows_avx512", "grouped_taps"}
    for case in CONV:
        if only32 & set(case.plan):
            x, w, _ = case.tensors(torch.float64)
            with planned_as(case):
                plan = ops._cpu_conv2d_plan(x, w, *case.args())
            assert not only32 & set(plan), case.name


def test_forced_winograd_only_where_it_applies():
    # cpu_conv_algo=winograd forces it on every 3x3 stride-1 undilated ungrouped float32 conv and
    # on nothing else; gemm keeps it off everywhere.
    for case in CONV:
        x, w, _ = case.tensors()
        applies = case.w[1:] == (3, 3) and case.stride == (1, 1) and case.dilation == (1, 1) and case.groups == 1
        with cuconv.config.flags(cpu_conv_algo="winograd"):
            assert (ops._cpu_conv2d_plan(x, w, *case.args()) == ["winograd"] * 3) == applies, case.name
        with cuconv.config.flags(cpu_conv_algo="gemm"):
            assert "winograd" not in ops._cpu_conv2d_plan(x, w, *case.args()), case.name
