"""Grouped (2 to 64 groups, 4 to 128 channels per group) and dilated conv layers, cuconv against
native torch (oneDNN/ATen), per pass, interleaved in one process with cuconv.apps.bench's timer
(medians; `BENCHMARKS.md`, "Method").

The 3x3 grouped layers of ResNeXt-50 32x4d and RegNetY-400MF and a dilated DeepLab-style layer, at
a model input of --resolution (64: the `bench --models` default; 224: ImageNet), batch --batch,
padding dilation * (kernel // 2).

    PYTHONPATH=pyext python3 benchmarks/grouped.py [--threads 2] [--batch 32] [--resolution 64]
        [--layout both] [--ops fwd,grad_input,grad_weight] [--shapes rx] [--dtype float32]
        [--target-time 1.0] [--isa auto]

ratio = native time / cuconv time (> 1: cuconv is faster), of the medians; `min ratio` of the
fastest calls (what the kernels reach when no other process takes the cores)."""
import argparse

import torch

import cuconv
from cuconv.apps import bench

# name, channels, groups, input size at a 224 model input (scaled by resolution / 224), stride, dilation
SHAPES = (
    ("rx.l1", 128, 32, 56, 1, 1),
    ("rx.l2s2", 256, 32, 56, 2, 1),
    ("rx.l2", 256, 32, 28, 1, 1),
    ("rx.l3s2", 512, 32, 28, 2, 1),
    ("rx.l3", 512, 32, 14, 1, 1),
    ("rx.l4s2", 1024, 32, 14, 2, 1),
    ("rx.l4", 1024, 32, 7, 1, 1),
    ("rg.s1s2", 48, 6, 112, 2, 1),
    ("rg.s1", 48, 6, 56, 1, 1),
    ("rg.s2", 104, 13, 28, 1, 1),
    ("rg.s3", 208, 26, 14, 1, 1),
    ("rg.s4", 440, 55, 7, 1, 1),
    ("g2.c64", 64, 2, 28, 1, 1),
    ("dil2.c256", 256, 1, 14, 1, 2),
)
OPS = ("fwd", "grad_input", "grad_weight")


def prepare(shape, op, batch, resolution, dtype, fmt):
    name, C, G, size224, stride, dil = shape
    size = max(1, size224 * resolution // 224)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, C, size, size, generator=gen).to(dtype).contiguous(memory_format=fmt)
    w = (torch.randn(C, C // G, 3, 3, generator=gen) / 3).to(dtype).contiguous(memory_format=fmt)
    st, pad, dl = [stride] * 2, [dil] * 2, [dil] * 2
    P = (size + 2 * dil - 2 * dil - 1) // stride + 1
    gy = torch.randn(batch, C, P, P, generator=gen).to(dtype).contiguous(memory_format=fmt)
    cu, aten = torch.ops.cuconv, torch.ops.aten
    if op == "fwd":
        ours = lambda: cu.conv2d(x, w, None, st, pad, dl, G)  # noqa: E731
        native = lambda: aten.convolution(x, w, None, st, pad, dl, False, [0, 0], G)  # noqa: E731
    else:
        mask = [op == "grad_input", op == "grad_weight", False]
        ours = lambda: cu.conv2d_backward(gy, x, w, st, pad, dl, G, mask)  # noqa: E731
        native = lambda: aten.convolution_backward(gy, x, w, None, st, pad, dl, False, [0, 0], G, mask)  # noqa: E731
    return ours, native, f"{size}x{size}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--layout", default="both", choices=("nchw", "channels_last", "both"))
    ap.add_argument("--ops", default=",".join(OPS))
    ap.add_argument("--shapes", default="", help="comma list of substrings of the shape names to keep")
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--target-time", type=float, default=1.0, help="seconds per side and row")
    ap.add_argument("--isa", default="auto", help="cuconv.config's cpu_isa")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cuconv.config.set(cpu_isa=args.isa)
    dtype = getattr(torch, args.dtype)
    ceiling = bench.measure_ceiling("cpu", dtype)
    info = bench.machine_info("cpu")
    print(f"# {info['cpu_model']}; {args.threads} threads; batch {args.batch}; resolution {args.resolution}; "
          f"{args.dtype}; cpu_isa={args.isa}; sgemm {ceiling['matmul_gflops']:.0f} GFLOP/s; load {bench._loadavg()}")
    print(f"{'layer':12} {'map':7} {'layout':13} {'op':11} {'cuconv ms':>9} {'native ms':>9} {'ratio':>6} {'min ratio':>9}")
    layouts = ("nchw", "channels_last") if args.layout == "both" else (args.layout,)
    keep = [s for s in args.shapes.split(",") if s]
    timer = bench.CpuTimer()
    for shape in SHAPES:
        if keep and not any(k in shape[0] for k in keep):
            continue
        for layout in layouts:
            fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
            for op in args.ops.split(","):
                ours, native, size = prepare(shape, op, args.batch, args.resolution, dtype, fmt)
                a, b = bench.time_pair(timer, ours, native, warmup=3, min_reps=10, max_reps=400,
                                       target_s=args.target_time)
                print(f"{shape[0]:12} {size:7} {layout:13} {op:11} {a.median_s * 1e3:9.3f} {b.median_s * 1e3:9.3f} "
                      f"{b.median_s / a.median_s:6.2f} {b.min_s / a.min_s:9.2f}", flush=True)
    print(f"# load at end {bench._loadavg()}")


if __name__ == "__main__":
    main()
