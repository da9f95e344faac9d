"""Quick side-by-side timing of the CPU runner against torch's native CPU path (oneDNN conv,
ATen max-pool), same process, same thread count: median of interleaved runs.
    PYTHONPATH=pyext python3 benchmarks/cpu_quick.py [--threads 2] [--reps 15] [--only conv|pool|step|resnet]"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import cuconv  # noqa: F401

ops = torch.ops.cuconv


def timed(fn):
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3


def compare(name, ours, theirs, reps):
    ours(), theirs()  # warm up
    a, b = [], []
    for _ in range(reps):
        a.append(timed(ours))
        b.append(timed(theirs))
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"{name:48s} cuconv {ma:8.3f} ms  torch {mb:8.3f} ms  speedup {mb / ma:5.2f}x", flush=True)


def conv_rows(N, C, H, K, R, stride, pad, cl, reps, fwd_only=False):
    fmt = torch.channels_last if cl else torch.contiguous_format
    x = torch.randn(N, C, H, H).contiguous(memory_format=fmt)
    w, b = torch.randn(K, C, R, R) * 0.1, torch.randn(K)
    y = F.conv2d(x, w, b, stride, pad)
    gy = torch.randn(y.shape).contiguous(memory_format=fmt)
    tag = f"{'NHWC' if cl else 'NCHW'} N{N} {C}->{K} {R}x{R}/{stride} @{H}"
    P4 = [pad] * 4
    compare(f"conv fwd   {tag}", lambda: ops.conv2d(x, w, b, [stride] * 2, P4, [1, 1], 1),
            lambda: F.conv2d(x, w, b, stride, pad), reps)
    if fwd_only:
        return
    mask = [C != 3, True, True]
    compare(f"conv bwd   {tag}", lambda: ops.conv2d_backward(gy, x, w, [stride] * 2, P4, [1, 1], 1, mask),
            lambda: torch.ops.aten.convolution_backward(gy, x, w, [K], [stride] * 2, [pad] * 2, [1, 1], False, [0, 0],
                                                        1, mask), reps)


def pool_rows(N, C, H, cl, reps):
    fmt = torch.channels_last if cl else torch.contiguous_format
    x = torch.randn(N, C, H, H).contiguous(memory_format=fmt)
    tag = f"{'NHWC' if cl else 'NCHW'} ({N},{C},{H},{H}) 2x2"
    compare(f"pool fwd   {tag}", lambda: ops.max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], False),
            lambda: F.max_pool2d_with_indices(x, 2, 2), reps)
    y, idx = F.max_pool2d_with_indices(x, 2, 2)
    gy = torch.randn(y.shape).contiguous(memory_format=fmt)
    compare(f"pool bwd   {tag}", lambda: ops.max_pool2d_backward(gy, x, idx, [2, 2], [2, 2], [0, 0], [1, 1], False),
            lambda: torch.ops.aten.max_pool2d_with_indices_backward(gy, x, [2, 2], [2, 2], [0, 0], [1, 1], False, idx),
            reps)


def seed_cnn(conv, pool):
    return torch.nn.Sequential(conv(3, 32, 3), torch.nn.ReLU(), pool(2), conv(32, 64, 3), torch.nn.ReLU(), pool(2),
                               torch.nn.Flatten(), torch.nn.Linear(64 * 6 * 6, 10))


def step_rows(N, cl, reps):
    torch.manual_seed(0)
    ours = seed_cnn(cuconv.nn.Conv2d, cuconv.nn.MaxPool2d)
    torch.manual_seed(0)
    theirs = seed_cnn(torch.nn.Conv2d, torch.nn.MaxPool2d)
    fmt = torch.channels_last if cl else torch.contiguous_format
    x = torch.randn(N, 3, 32, 32).contiguous(memory_format=fmt)
    t = torch.randint(0, 10, (N,))

    def step(model):
        def run():
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), t).backward()
        return run

    compare(f"train step seed CNN {'NHWC' if cl else 'NCHW'} N{N}", step(ours), step(theirs), reps)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.only in ("", "conv"):
        for cl in (False, True):
            for N in (32, 128):
                conv_rows(N, 3, 32, 32, 3, 1, 0, cl, a.reps)
                conv_rows(N, 32, 15, 64, 3, 1, 0, cl, a.reps)
    if a.only in ("", "pool"):
        for cl in (False, True):
            for N in (32, 128):
                pool_rows(N, 32, 30, cl, a.reps)
                pool_rows(N, 64, 13, cl, a.reps)
    if a.only in ("", "step"):
        for cl in (False, True):
            for N in (32, 128):
                step_rows(N, cl, a.reps)
    if a.only in ("resnet",):
        for cl in (False, True):
            for (C, H, K, R, s, pad) in [(3, 32, 64, 3, 1, 1), (64, 32, 64, 3, 1, 1), (64, 32, 128, 3, 2, 1),
                                         (128, 16, 128, 3, 1, 1), (256, 8, 256, 3, 1, 1), (512, 4, 512, 3, 1, 1),
                                         (64, 32, 128, 1, 2, 0), (128, 16, 256, 1, 2, 0), (256, 8, 512, 1, 2, 0)]:
                conv_rows(32, C, H, K, R, s, pad, cl, max(3, a.reps // 3))


if __name__ == "__main__":
    main()
