"""Depthwise conv layers (groups == channels), cuconv against native torch (oneDNN/ATen), per pass,
interleaved in one process with cuconv.apps.bench's timer (medians; `BENCHMARKS.md`, "Method").

The layers of MobileNetV2, EfficientNet-B0 and ConvNeXt at 64x64 model inputs, batch 32, padding
kernel // 2 ("same"). Each row also gives the rate of each side in GB/s of the bytes the pass must
move at least (its inputs read once, its output written once), against the machine's copy rate
measured first (that also runs the large sgemm oneDNN needs before its timings are representative).

    PYTHONPATH=pyext python3 benchmarks/depthwise.py [--threads 2] [--batch 32] [--layout both]
        [--ops fwd,fwd_relu,grad_input,grad_weight] [--shapes mbv2] [--dtype float32]
        [--target-time 1.0] [--isa auto]

ratio = native time / cuconv time (> 1: cuconv is faster), of the medians; `min ratio` of the fastest
calls (what the kernels reach when no other process takes the cores)."""
import argparse

import torch

import cuconv
from cuconv.apps import bench

# name, channels, input size, kernel, stride, multiplier
SHAPES = (
    ("mbv2.dw32", 32, 32, 3, 1, 1),
    ("mbv2.dw96s2", 96, 32, 3, 2, 1),
    ("mbv2.dw144", 144, 16, 3, 1, 1),
    ("mbv2.dw192", 192, 8, 3, 1, 1),
    ("mbv2.dw576", 576, 4, 3, 1, 1),
    ("effb0.dw240_5x5", 240, 8, 5, 1, 1),
    ("convnext.dw96_7x7", 96, 16, 7, 1, 1),
)
OPS = ("fwd", "fwd_relu", "grad_input", "grad_weight")


def prepare(shape, op, batch, dtype, fmt):
    name, C, size, k, stride, mult = shape
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, C, size, size, generator=gen).to(dtype).contiguous(memory_format=fmt)
    w = (torch.randn(C * mult, 1, k, k, generator=gen) / k).to(dtype).contiguous(memory_format=fmt)
    b = torch.randn(C * mult, generator=gen).to(dtype)
    st, pad, dil = [stride] * 2, [k // 2] * 2, [1, 1]
    P = (size + 2 * (k // 2) - k) // stride + 1
    gy = torch.randn(batch, C * mult, P, P, generator=gen).to(dtype).contiguous(memory_format=fmt)
    cu, aten = torch.ops.cuconv, torch.ops.aten
    elem = x.element_size()
    if op in ("fwd", "fwd_relu"):
        bias = b if op == "fwd_relu" else None
        ours = (lambda: cu.conv2d_bias_relu(x, w, b, st, pad, dil, C)) if op == "fwd_relu" else \
               (lambda: cu.conv2d(x, w, None, st, pad, dil, C))

        def native():
            y = aten.convolution(x, w, bias, st, pad, dil, False, [0, 0], C)
            return torch.relu_(y) if op == "fwd_relu" else y
        moved = (x.numel() + gy.numel()) * elem
    else:
        mask = [op == "grad_input", op == "grad_weight", False]
        ours = lambda: cu.conv2d_backward(gy, x, w, st, pad, dil, C, mask)  # noqa: E731
        native = lambda: aten.convolution_backward(gy, x, w, None, st, pad, dil, False, [0, 0], C, mask)  # noqa: E731
        moved = (gy.numel() + x.numel()) * elem  # grad input: gy in, gx out; grad weight: x and gy in
    return ours, native, moved


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--layout", default="both", choices=("nchw", "channels_last", "both"))
    ap.add_argument("--ops", default=",".join(OPS))
    ap.add_argument("--shapes", default="", help="substring of the shape names to keep")
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--target-time", type=float, default=1.0, help="seconds per side and row")
    ap.add_argument("--isa", default="auto", help="cuconv.config's cpu_isa")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cuconv.config.set(cpu_isa=args.isa)
    dtype = getattr(torch, args.dtype)
    ceiling = bench.measure_ceiling("cpu", dtype)
    info = bench.machine_info("cpu")
    print(f"# {info['cpu_model']}; {args.threads} threads; batch {args.batch}; {args.dtype}; cpu_isa={args.isa}; "
          f"copy {ceiling['copy_gbs']:.1f} GB/s, sgemm {ceiling['matmul_gflops']:.0f} GFLOP/s; load {bench._loadavg()}")
    print(f"{'layer':20} {'layout':13} {'op':11} {'cuconv ms':>9} {'native ms':>9} {'ratio':>6} "
          f"{'cu GB/s':>7} {'nat GB/s':>8} {'min ratio':>9}")
    layouts = ("nchw", "channels_last") if args.layout == "both" else (args.layout,)
    timer = bench.CpuTimer()
    for shape in SHAPES:
        if args.shapes and args.shapes not in shape[0]:
            continue
        for layout in layouts:
            fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
            for op in args.ops.split(","):
                ours, native, moved = prepare(shape, op, args.batch, dtype, fmt)
                a, b = bench.time_pair(timer, ours, native, warmup=3, min_reps=10, max_reps=400,
                                       target_s=args.target_time)
                print(f"{shape[0]:20} {layout:13} {op:11} {a.median_s * 1e3:9.3f} {b.median_s * 1e3:9.3f} "
                      f"{b.median_s / a.median_s:6.2f} {moved / a.median_s / 1e9:7.1f} {moved / b.median_s / 1e9:8.1f} {b.min_s / a.min_s:9.2f}",
                      flush=True)
    print(f"# load at end {bench._loadavg()}")


if __name__ == "__main__":
    main()
