"""Determinism across runs and thread counts, concurrent calls from Python threads, flat memory."""
import concurrent.futures
import gc
import os

import pytest
import torch
import torch.nn.functional as F

import cuconv


def all_passes(x, w, b):
    """Outputs of every op and every gradient, for one set of inputs."""
    x, w, b = (t.detach().clone().requires_grad_() for t in (x, w, b))
    y = cuconv.conv2d(x, w, b, padding=1)
    p, idx = cuconv.max_pool2d(y, 3, 2, 1, return_indices=True)
    gx, gw, gb = torch.autograd.grad(p, (x, w, b), torch.ones_like(p))
    return [y, p, idx, gx, gw, gb]


def inputs(fmt=torch.contiguous_format, dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 16, 19, 17, generator=g, dtype=dtype).contiguous(memory_format=fmt)
    return x, torch.randn(24, 16, 3, 3, generator=g, dtype=dtype), torch.randn(24, generator=g, dtype=dtype)


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_bitwise_same_across_runs_and_thread_counts(fmt):
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2, 3, 1):
            torch.set_num_threads(n)
            results.append(all_passes(*inputs(fmt)))
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


def test_concurrent_python_threads_match_sequential():
    cases = [inputs(fmt, dtype) for fmt in (torch.contiguous_format, torch.channels_last)
             for dtype in (torch.float32, torch.float64)]
    expected = [all_passes(*c) for c in cases]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda c: all_passes(*c), cases * 3))
    for i, result in enumerate(got):
        for a, b in zip(expected[i % len(cases)], result):
            assert torch.equal(a, b)


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc to read resident memory")
def test_memory_flat_over_10000_calls():
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    w = torch.randn(4, 4, 3, 3, requires_grad=True)
    b = torch.randn(4, requires_grad=True)

    def step():
        y = cuconv.conv2d(x, w, b, padding=1)
        p = cuconv.max_pool2d(y, 2)
        p.sum().backward()

    for _ in range(500):  # warm-up: allocator caches, lazy initialisation
        step()
    gc.collect()
    before = rss_bytes()
    for _ in range(10_000):
        step()
    gc.collect()
    growth = rss_bytes() - before
    assert growth < 8 * 2**20, f"resident memory grew by {growth / 2**20:.1f} MiB over 10,000 calls"
