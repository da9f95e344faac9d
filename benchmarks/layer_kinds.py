"""Depthwise, grouped and dilated conv layers, cuconv against native torch (oneDNN/ATen), per pass,
interleaved in one process with cuconv.apps.bench's timer (medians; `BENCHMARKS.md`, "Method").

The depthwise layers of MobileNetV2, EfficientNet-B0 and ConvNeXt, the 3x3 grouped layers of
ResNeXt-50 32x4d and RegNetY-400MF, and a dilated DeepLab-style layer, at a model input of
--resolution (64: the `bench --models` default; 224: ImageNet), batch --batch, padding
dilation * (kernel // 2) ("same"). Each row also gives the rate of each side in GB/s of the bytes
the pass must move at least (its inputs read once, its output written once), against the machine's
copy rate measured first (that also runs the large sgemm oneDNN needs before its timings are
representative).

    PYTHONPATH=pyext python3 benchmarks/layer_kinds.py [--kinds dw,grouped,dilated] [--threads 2]
        [--batch 32] [--resolution 64] [--layout both] [--ops fwd,fwd_relu,grad_input,grad_weight]
        [--shapes mbv2,rx] [--dtype float32] [--target-time 1.0] [--isa auto]

ratio = native time / cuconv time (> 1: cuconv is faster), of the medians; `min ratio` of the fastest
calls (what the kernels reach when no other process takes the cores)."""
import argparse

import torch

import cuconv
from cuconv.apps import bench

# name, kind, input channels, groups, output channels per input channel, input size at a 224 model
# input (scaled by resolution / 224), kernel, stride, dilation
SHAPES = (
    ("mbv2.dw32", "dw", 32, 32, 1, 112, 3, 1, 1),
    ("mbv2.dw96s2", "dw", 96, 96, 1, 112, 3, 2, 1),
    ("mbv2.dw144", "dw", 144, 144, 1, 56, 3, 1, 1),
    ("mbv2.dw192", "dw", 192, 192, 1, 28, 3, 1, 1),
    ("mbv2.dw576", "dw", 576, 576, 1, 14, 3, 1, 1),
    ("effb0.dw240_5x5", "dw", 240, 240, 1, 28, 5, 1, 1),
    ("convnext.dw96_7x7", "dw", 96, 96, 1, 56, 7, 1, 1),
    ("rx.l1", "grouped", 128, 32, 1, 56, 3, 1, 1),
    ("rx.l2s2", "grouped", 256, 32, 1, 56, 3, 2, 1),
    ("rx.l2", "grouped", 256, 32, 1, 28, 3, 1, 1),
    ("rx.l3s2", "grouped", 512, 32, 1, 28, 3, 2, 1),
    ("rx.l3", "grouped", 512, 32, 1, 14, 3, 1, 1),
    ("rx.l4s2", "grouped", 1024, 32, 1, 14, 3, 2, 1),
    ("rx.l4", "grouped", 1024, 32, 1, 7, 3, 1, 1),
    ("rg.s1s2", "grouped", 48, 6, 1, 112, 3, 2, 1),
    ("rg.s1", "grouped", 48, 6, 1, 56, 3, 1, 1),
    ("rg.s2", "grouped", 104, 13, 1, 28, 3, 1, 1),
    ("rg.s3", "grouped", 208, 26, 1, 14, 3, 1, 1),
    ("rg.s4", "grouped", 440, 55, 1, 7, 3, 1, 1),
    ("g2.c64", "grouped", 64, 2, 1, 28, 3, 1, 1),
    ("dil2.c256", "dilated", 256, 1, 1, 14, 3, 1, 2),
)
OPS = ("fwd", "fwd_relu", "grad_input", "grad_weight")


def prepare(shape, op, batch, resolution, dtype, fmt):
    name, kind, C, G, mult, size224, k, stride, dil = shape
    size = max(1, size224 * resolution // 224)
    K = C * mult
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, C, size, size, generator=gen).to(dtype).contiguous(memory_format=fmt)
    w = (torch.randn(K, C // G, k, k, generator=gen) / k).to(dtype).contiguous(memory_format=fmt)
    b = torch.randn(K, generator=gen).to(dtype)
    st, pad, dl = [stride] * 2, [dil * (k // 2)] * 2, [dil] * 2
    P = (size + 2 * pad[0] - dil * (k - 1) - 1) // stride + 1
    gy = torch.randn(batch, K, P, P, generator=gen).to(dtype).contiguous(memory_format=fmt)
    cu, aten = torch.ops.cuconv, torch.ops.aten
    elem = x.element_size()
    if op in ("fwd", "fwd_relu"):
        bias = b if op == "fwd_relu" else None
        ours = (lambda: cu.conv2d_bias_relu(x, w, b, st, pad, dl, G)) if op == "fwd_relu" else \
               (lambda: cu.conv2d(x, w, None, st, pad, dl, G))

        def native():
            y = aten.convolution(x, w, bias, st, pad, dl, False, [0, 0], G)
            return torch.relu_(y) if op == "fwd_relu" else y
    else:
        mask = [op == "grad_input", op == "grad_weight", False]
        ours = lambda: cu.conv2d_backward(gy, x, w, st, pad, dl, G, mask)  # noqa: E731
        native = lambda: aten.convolution_backward(gy, x, w, None, st, pad, dl, False, [0, 0], G, mask)  # noqa: E731
    moved = (x.numel() + gy.numel()) * elem  # every pass reads or writes one of each
    return ours, native, moved, f"{size}x{size}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kinds", default="dw,grouped,dilated", help="comma list of dw, grouped, dilated")
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
          f"{args.dtype}; cpu_isa={args.isa}; copy {ceiling['copy_gbs']:.1f} GB/s, "
          f"sgemm {ceiling['matmul_gflops']:.0f} GFLOP/s; load {bench._loadavg()}")
    print(f"{'layer':18} {'map':7} {'layout':13} {'op':11} {'cuconv ms':>9} {'native ms':>9} {'ratio':>6} "
          f"{'cu GB/s':>7} {'nat GB/s':>8} {'min ratio':>9}")
    layouts = ("nchw", "channels_last") if args.layout == "both" else (args.layout,)
    kinds = set(args.kinds.split(","))
    keep = [s for s in args.shapes.split(",") if s]
    timer = bench.CpuTimer()
    for shape in SHAPES:
        if shape[1] not in kinds or (keep and not any(k in shape[0] for k in keep)):
            continue
        for layout in layouts:
            fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
            for op in args.ops.split(","):
                ours, native, moved, size = prepare(shape, op, args.batch, args.resolution, dtype, fmt)
                a, b = bench.time_pair(timer, ours, native, warmup=3, min_reps=10, max_reps=400,
                                       target_s=args.target_time)
                print(f"{shape[0]:18} {size:7} {layout:13} {op:11} {a.median_s * 1e3:9.3f} {b.median_s * 1e3:9.3f} "
                      f"{b.median_s / a.median_s:6.2f} {moved / a.median_s / 1e9:7.1f} {moved / b.median_s / 1e9:8.1f} "
                      f"{b.min_s / a.min_s:9.2f}", flush=True)
    print(f"# load at end {bench._loadavg()}")


if __name__ == "__main__":
    main()
