"""Per-call overhead: cuconv's ops against native's on tiny tensors, where the kernels cost next to
nothing and the time is the call itself (Python wrapper, dispatcher, argument checks, allocation,
the autograd node and its backward).

Each row times one call in three modes: `forward` (no input requires grad), `forward, grad` (the
inputs require grad, so the call records a node; nothing runs backward) and `fwd+bwd` (the same,
then torch.autograd.grad through it). Paths: `functional` (cuconv.conv2d against F.conv2d), `op`
(torch.ops.cuconv.*.default, the operator with no Python wrapper, against the same F call) and
`module` (cuconv.nn against torch.nn). cuconv and native alternate, one batch of --calls calls each,
for --rounds rounds; the table gives the medians of the per-call times and their difference.

The default clock is the process's CPU time, so that time the process spends descheduled on a
shared machine does not count (tiny tensors run on the calling thread only); `--clock wall` times
wall-clock time instead.

    PYTHONPATH=pyext python3 benchmarks/call_overhead.py [--calls 1000] [--rounds 41] [--threads 1]
        [--paths functional,op,module] [--modes forward,grad,fwd+bwd] [--clock cpu|wall]
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import cuconv

MODES = {"forward": "forward", "grad": "forward, grad", "fwd+bwd": "fwd+bwd"}


def conv_calls(path, grad):
    x = torch.randn(1, 1, 4, 4, requires_grad=grad)
    w = torch.randn(1, 1, 3, 3, requires_grad=grad)
    if path == "module":
        native = torch.nn.Conv2d(1, 1, 3, bias=False).requires_grad_(grad)
        mine = cuconv.nn.Conv2d.from_torch(native)
        return (x,), lambda x: mine(x), lambda x: native(x), [x, native.weight]
    if path == "op":
        op = torch.ops.cuconv.conv2d.default
        return (x, w), lambda x, w: op(x, w, None, [1, 1], [0, 0], [1, 1], 1), F.conv2d, [x, w]
    return (x, w), cuconv.conv2d, F.conv2d, [x, w]


def pool_calls(path, grad):
    x = torch.randn(1, 1, 4, 4, requires_grad=grad)
    if path == "module":
        native = torch.nn.MaxPool2d(2)
        mine = cuconv.nn.MaxPool2d.from_torch(native)
        return (x,), lambda x: mine(x), lambda x: native(x), [x]
    if path == "op":
        op = torch.ops.cuconv.max_pool2d.default
        return (x,), lambda x: op(x, [2, 2], [2, 2], [0, 0], [1, 1], False)[0], lambda x: F.max_pool2d(x, 2), [x]
    return (x,), lambda x: cuconv.max_pool2d(x, 2), lambda x: F.max_pool2d(x, 2), [x]


def conv_relu_pool_calls(path, grad):
    # The fused op against the three native calls it replaces.
    x = torch.randn(1, 1, 6, 6, requires_grad=grad)
    w = torch.randn(1, 1, 3, 3, requires_grad=grad)
    b = torch.randn(1, requires_grad=grad)
    native = lambda x, w, b: F.max_pool2d(F.relu(F.conv2d(x, w, b)), 2)  # noqa: E731
    if path == "op":
        op = torch.ops.cuconv.conv2d_bias_relu_max_pool2d.default
        return (x, w, b), lambda x, w, b: op(x, w, b, [1, 1], [0, 0], [1, 1], 1)[0], native, [x, w, b]
    return (x, w, b), cuconv.conv2d_relu_max_pool2d, native, [x, w, b]


# name: (the calls, the paths they have)
CASES = {
    "conv2d 1x1x4x4, w 1x1x3x3": (conv_calls, ("functional", "op", "module")),
    "max_pool2d 1x1x4x4, k 2": (pool_calls, ("functional", "op", "module")),
    "conv+relu+pool 1x1x6x6": (conv_relu_pool_calls, ("functional", "op")),
}


CLOCKS = {"cpu": time.process_time_ns, "wall": time.perf_counter_ns}


def timed(fn, args, inputs, mode, calls, clock):
    """ns per call of `calls` calls of fn(*args) (with its backward in fwd+bwd mode)."""
    if mode == "fwd+bwd":
        grad_out = torch.ones_like(fn(*args))

        def step():
            torch.autograd.grad(fn(*args), inputs, grad_out)
    else:
        def step():
            fn(*args)
    start = clock()
    for _ in range(calls):
        step()
    return (clock() - start) / calls


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=1000, help="calls per timed batch")
    ap.add_argument("--rounds", type=int, default=41, help="alternating cuconv/native batches per row")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--paths", default="functional,op,module")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--clock", choices=tuple(CLOCKS), default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    clock = CLOCKS[args.clock]
    print(f"per-call {args.clock} time, median of {args.rounds} alternating batches of {args.calls} calls, "
          f"{args.threads} thread(s), torch {torch.__version__}, cuconv from {cuconv.__file__}")
    print(f"{'case':28s} {'path':10s} {'mode':14s} {'cuconv us':>10s} {'native us':>10s} {'diff us':>8s}")
    for name, (make, paths) in CASES.items():
        for path in [p for p in args.paths.split(",") if p in paths]:
            for mode in args.modes.split(","):
                call_args, mine, native, inputs = make(path, mode != "forward")
                for fn in (mine, native):  # warm-up
                    timed(fn, call_args, inputs, mode, max(args.calls // 10, 10), clock)
                a, b = [], []
                for _ in range(args.rounds):
                    a.append(timed(mine, call_args, inputs, mode, args.calls, clock))
                    b.append(timed(native, call_args, inputs, mode, args.calls, clock))
                ma, mb = statistics.median(a) / 1e3, statistics.median(b) / 1e3
                print(f"{name:28s} {path:10s} {MODES[mode]:14s} {ma:10.2f} {mb:10.2f} {ma - mb:8.2f}", flush=True)


if __name__ == "__main__":
    main()
