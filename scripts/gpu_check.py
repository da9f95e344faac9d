"""The stages of the one-shot GPU check (scripts/gpu_check.sh) that run Python: the environment
record, the correctness sweep of every CUDA path, the timing against cuDNN, and the summary.

    python scripts/gpu_check.py env OUT/env.json
    python scripts/gpu_check.py sweep GROUP OUT/correctness.jsonl [--tiny] [--device cuda|sim]
    python scripts/gpu_check.py perf OUT/bench.json OUT/bench.md [--device cuda|cpu] [--budget-s S]
    python scripts/gpu_check.py summary OUT

With --device sim (the rehearsal on a machine without a GPU) the sweep runs the same CUDA kernel
source under the simulator, on CPU tensors and small shapes; perf --device cpu times the CPU
fallback against oneDNN instead of the CUDA kernels against cuDNN. Every case is written as soon
as it is done, so a stage cut short by its time budget still leaves its results."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback

import torch
import torch.nn.functional as F

import cuconv

ops = torch.ops.cuconv
GROUPS = ("conv", "tensorcore", "fused", "pool", "depthwise")

# Relative error (norm of the difference / norm of the float64 reference) allowed per mode; 16-bit
# modes must also stay within twice torch's own error in that dtype, where torch can compute it.
TOLERANCE = {"f64": 1e-12, "f32": 1e-5, "tf32": 3e-3, "f16": 5e-3, "bf16": 4e-2}
DTYPE = {"f64": torch.float64, "f32": torch.float32, "tf32": torch.float32, "f16": torch.float16,
         "bf16": torch.bfloat16}


# ----------------------------------------------------------------------------------- the cases

# (N, C, H, W, K, R, S, stride, padding [t, l, b, r], dilation, groups, why)
CONV_SHAPES = [
    (2, 3, 9, 7, 5, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1, "first-layer channels, partial tiles"),
    (1, 8, 11, 10, 40, 3, 2, (2, 1), (1, 0, 2, 1), (2, 1), 1, "two N tiles, asymmetric padding, dilation, stride"),
    (2, 16, 8, 8, 16, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1, "16 channels: 16-byte cp.async in both layouts"),
    (2, 16, 6, 6, 16, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), 2, "groups of 8 channels, 1x1"),
    (1, 20, 5, 5, 33, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1, "reduction over several slices, odd K"),
    (2, 13, 11, 11, 21, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), 1, "stride 2, odd channels"),
    (2, 64, 14, 14, 64, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1, "ResNet-50 3x3 at a small map"),
    (2, 64, 14, 14, 256, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), 1, "ResNet-50 1x1 expansion"),
    (2, 128, 14, 14, 128, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), 1, "ResNet-50 strided 3x3"),
    (4, 3, 32, 32, 32, 3, 3, (1, 1), (0, 0, 0, 0), (1, 1), 1, "the seed CNN's first layer"),
]
TINY_CONV_SHAPES = [s for s in CONV_SHAPES if s[0] * s[1] * s[2] * s[3] * s[4] * s[5] * s[6] <= 200_000]
DEPTHWISE_SHAPES = [
    (2, 8, 9, 9, 8, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 8, "depthwise 3x3"),
    (2, 6, 10, 9, 12, 5, 5, (2, 2), (2, 1, 2, 1), (1, 1), 6, "depthwise 5x5, multiplier 2, stride 2"),
    (1, 16, 12, 12, 16, 7, 7, (1, 1), (3, 3, 3, 3), (1, 1), 16, "depthwise 7x7"),
]
# (N, C, H, W, kernel, stride, padding, dilation, ceil_mode)
POOL_SHAPES = [
    (2, 16, 30, 30, (2, 2), (2, 2), (0, 0), (1, 1), False),
    (2, 5, 13, 13, (2, 2), (2, 2), (0, 0), (1, 1), True),
    (1, 24, 17, 19, (3, 3), (2, 2), (1, 1), (1, 1), False),
    (2, 3, 9, 10, (3, 2), (1, 3), (1, 0), (2, 1), True),
]


def modes(device, group):
    """The dtype modes a group runs: exact float64 and float32, TF32, float16, bfloat16."""
    if group == "pool":
        return ["f64", "f32", "f16", "bf16"]
    if group == "tensorcore":
        return ["tf32", "f16", "bf16"]
    return ["f64", "f32", "tf32", "f16", "bf16"]


@contextlib.contextmanager
def precision(mode, device):
    """TF32 allowed for convolutions (on the simulator: its sim_tf32 switch follows it) or not."""
    tf32 = mode == "tf32"
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=tf32), cuconv.config.flags(sim_tf32=tf32):
        yield


# --------------------------------------------------------------------------------- comparison

def rel_error(out, ref):
    if ref.numel() == 0:
        return 0.0
    num = (out.detach().cpu().double() - ref).norm().item()
    return num / max(ref.norm().item(), 1e-300)


def judge(mode, ours, torch_err=None):
    """Pass: within the mode's tolerance, or (16-bit) within twice torch's own error."""
    if ours <= TOLERANCE[mode]:
        return True
    return mode in ("f16", "bf16") and torch_err is not None and ours <= 2 * torch_err + 1e-6


def conv_reference(x, w, b, stride, pad, dil, groups, gy):
    """float64 CPU forward and gradients of the conv."""
    xd, wd = x.detach().cpu().double().requires_grad_(), w.detach().cpu().double().requires_grad_()
    bd = b.detach().cpu().double().requires_grad_() if b is not None else None
    y = F.conv2d(F.pad(xd, (pad[1], pad[3], pad[0], pad[2])), wd, bd, stride, 0, dil, groups)
    y.backward(gy.detach().cpu().double())
    return y.detach(), xd.grad, wd.grad, bd.grad if bd is not None else None


def torch_in_dtype(x, w, b, stride, pad, dil, groups, gy):
    """torch's own forward and gradients in the inputs' dtype and device (None where it has none)."""
    try:
        xt, wt = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
        y = F.conv2d(F.pad(xt, (pad[1], pad[3], pad[0], pad[2])), wt, b, stride, 0, dil, groups)
        y.backward(gy)
        return y.detach(), xt.grad, wt.grad
    except (RuntimeError, NotImplementedError):
        return None


class Recorder:
    """Appends one JSON line per case, flushed at once."""

    def __init__(self, path, group, device):
        self.f = open(path, "a")
        self.group, self.device = group, device
        self.failures = 0

    def write(self, **record):
        record = {"group": self.group, "device": self.device, **record}
        self.failures += not record.get("pass", False)
        self.f.write(json.dumps(record) + "\n")
        self.f.flush()


def synchronize(device):
    if device == "cuda":
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------------- the sweep

def sweep_conv(rec, device, shapes, layouts, forced_configs, group):
    """Forward (with bias, and bias + ReLU), grad input, grad weight, grad bias through the
    public ops (the router picks the kernel), or with the tensor cores forced per configuration."""
    tdev = "cuda" if device == "cuda" else "cpu"
    for shape in shapes:
        N, C, H, W, K, R, S, stride, pad, dil, groups, why = shape
        for mode in modes(device, group):
            if group == "tensorcore" and mode not in ("tf32", "f16", "bf16"):
                continue
            for layout in layouts:
                for config in forced_configs:
                    dtype = DTYPE[mode]
                    fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
                    name = dict(shape=list(shape[:11]), why=why, mode=mode, layout=layout, config=config)
                    t0 = time.perf_counter()
                    try:
                        with precision(mode, device):
                            torch.manual_seed(0)
                            x = torch.randn(N, C, H, W, device=tdev).to(dtype).contiguous(memory_format=fmt)
                            w = (torch.randn(K, C // groups, R, S, device=tdev) / (C // groups * R * S) ** 0.5).to(dtype)
                            b = torch.randn(K, device=tdev).to(dtype) if config is None else None
                            args = (list(stride), list(pad), list(dil), groups)
                            if config is None:
                                y = ops.conv2d(x, w, b, *args)
                                y_relu = ops.conv2d_bias_relu(x, w, b, *args)
                            else:
                                y = ops._conv2d_tensorcore(x, w, None, *args, mode == "tf32", config)
                                y_relu = None
                            gy = torch.randn(y.shape, device=tdev).to(dtype).contiguous(memory_format=fmt)
                            if config is None:
                                gx, gw, gb = ops.conv2d_backward(gy, x, w, *args, [True, True, True])
                            else:
                                gx = ops._conv2d_backward_input_tensorcore(gy, x, w, *args, mode == "tf32", config)
                                gw = ops._conv2d_backward_weight_tensorcore(gy, x, w, *args, mode == "tf32", config)
                                gb = None
                            gw_again = (ops.conv2d_backward(gy, x, w, *args, [False, True, False])[1] if config is None
                                        else ops._conv2d_backward_weight_tensorcore(gy, x, w, *args, mode == "tf32",
                                                                                     config))
                            synchronize(device)
                        ref = conv_reference(x, w, b, stride, pad, dil, groups, gy)
                        theirs = torch_in_dtype(x, w, b, stride, pad, dil, groups, gy) if mode in ("f16", "bf16") else None
                        passes = {"fprop": (y, ref[0], 0), "dgrad": (gx, ref[1], 1), "wgrad": (gw, ref[2], 2)}
                        if y_relu is not None:
                            passes["fprop_relu"] = (y_relu, ref[0].relu(), 0)
                        if gb is not None:
                            passes["bgrad"] = (gb, ref[3], None)
                        for p, (out, r, i) in passes.items():
                            err = rel_error(out, r)
                            torch_err = rel_error(theirs[i], r) if theirs is not None and i is not None else None
                            ok = judge(mode, err, torch_err) and not torch.isnan(out).any().item()
                            extra = {}
                            if p == "fprop":
                                extra["layout_ok"] = bool(out.is_contiguous(memory_format=fmt))
                                ok = ok and extra["layout_ok"]
                            if p == "wgrad":
                                extra["deterministic"] = bool(torch.equal(gw, gw_again))
                                ok = ok and extra["deterministic"]
                            rec.write(op="conv2d", conv_pass=p, **name, rel_err=err, torch_rel_err=torch_err,
                                      tol=TOLERANCE[mode], **extra, time_s=round(time.perf_counter() - t0, 3),
                                      **{"pass": bool(ok)})
                    except Exception as e:  # a fault names its kernel (sync_launches); record and go on
                        rec.write(op="conv2d", conv_pass="all", **name, error=f"{type(e).__name__}: {e}"[:2000],
                                  **{"pass": False})
                        if device == "cuda" and "CUDA" in str(e):
                            raise  # a sticky CUDA error: this group's process cannot go on


def sweep_misaligned(rec, device):
    """A storage offset of one element: the 16-byte copy paths must fall back to element loads."""
    tdev = "cuda" if device == "cuda" else "cpu"
    for mode in ("f16", "tf32"):
        with precision(mode, device):
            dtype = DTYPE[mode]
            base = torch.randn(2 * 16 * 8 * 8 + 1, device=tdev).to(dtype)
            x = base[1:].view(2, 8, 8, 16).permute(0, 3, 1, 2)  # channels_last, offset by one element
            w = torch.randn(16, 16, 3, 3, device=tdev).to(dtype) / 12
            try:
                y = ops.conv2d(x, w, None, [1, 1], [1, 1, 1, 1], [1, 1], 1)
                synchronize(device)
                err = rel_error(y, F.conv2d(x.cpu().double(), w.cpu().double(), None, 1, 1))
                rec.write(op="conv2d", conv_pass="fprop", mode=mode, layout="nhwc+1", why="misaligned base",
                          rel_err=err, tol=TOLERANCE[mode], **{"pass": bool(judge(mode, err))})
            except Exception as e:
                rec.write(op="conv2d", conv_pass="fprop", mode=mode, layout="nhwc+1", why="misaligned base",
                          error=f"{type(e).__name__}: {e}"[:2000], **{"pass": False})


def sweep_fused(rec, device, shapes):
    """conv + bias + ReLU + 2x2 max-pool and its backward, against the composition in float64."""
    tdev = "cuda" if device == "cuda" else "cpu"
    for shape in shapes:
        N, C, H, W, K, R, S, stride, pad, dil, groups, why = shape
        for mode in ("f64", "f32", "f16", "bf16"):
            for layout in ("nchw", "nhwc"):
                fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
                dtype = DTYPE[mode]
                name = dict(shape=list(shape[:11]), why=why, mode=mode, layout=layout)
                try:
                    with precision(mode, device):
                        x = torch.randn(N, C, H, W, device=tdev).to(dtype).contiguous(memory_format=fmt)
                        w = (torch.randn(K, C // groups, R, S, device=tdev) / (C // groups * R * S) ** 0.5).to(dtype)
                        b = torch.randn(K, device=tdev).to(dtype)
                        args = (list(stride), list(pad), list(dil), groups)
                        out, idx = ops.conv2d_bias_relu_max_pool2d(x, w, b, *args)
                        synchronize(device)
                    xd, wd, bd = (t.cpu().double() for t in (x, w, b))
                    conv = F.conv2d(F.pad(xd, (pad[1], pad[3], pad[0], pad[2])), wd, bd, stride, 0, dil, groups).relu()
                    ref, ridx = F.max_pool2d(conv, 2, 2, return_indices=True)
                    err = rel_error(out, ref)
                    # 16-bit rounding can flip a window's winner between near-equal values: count indices
                    # that differ where the values do not.
                    wrong_idx = ((idx.cpu() != ridx) & ((out.cpu().double() - ref).abs() > 1e-2 * ref.abs().max())).sum()
                    ok = judge(mode, err) and (wrong_idx.item() == 0) and (mode in ("f16", "bf16") or torch.equal(idx.cpu(), ridx))
                    rec.write(op="conv2d_bias_relu_max_pool2d", conv_pass="fprop", **name, rel_err=err,
                              tol=TOLERANCE[mode], **{"pass": bool(ok)})
                except Exception as e:
                    rec.write(op="conv2d_bias_relu_max_pool2d", conv_pass="fprop", **name,
                              error=f"{type(e).__name__}: {e}"[:2000], **{"pass": False})
                    if device == "cuda" and "CUDA" in str(e):
                        raise


def sweep_pool(rec, device, shapes):
    """max_pool2d forward (values, indices exactly) and backward in every dtype and layout."""
    tdev = "cuda" if device == "cuda" else "cpu"
    for N, C, H, W, k, s, pad, dil, ceil in shapes:
        for mode in modes(device, "pool"):
            for layout in ("nchw", "nhwc"):
                fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
                name = dict(shape=[N, C, H, W], kernel=list(k), stride=list(s), padding=list(pad),
                            dilation=list(dil), ceil_mode=ceil, mode=mode, layout=layout)
                try:
                    x = torch.randn(N, C, H, W, device=tdev).to(DTYPE[mode]).contiguous(memory_format=fmt)
                    y, idx = ops.max_pool2d(x, list(k), list(s), list(pad), list(dil), ceil)
                    gy = torch.randn(y.shape, device=tdev).to(DTYPE[mode]).contiguous(memory_format=fmt)
                    gx = ops.max_pool2d_backward(gy, x, idx, list(k), list(s), list(pad), list(dil), ceil)
                    synchronize(device)
                    ry, ridx = F.max_pool2d(x.cpu().double(), k, s, pad, dil, ceil, return_indices=True)
                    rgx = torch.ops.aten.max_pool2d_with_indices_backward(gy.cpu().double(), x.cpu().double(), k, s,
                                                                          pad, dil, ceil, ridx)
                    exact = torch.equal(y.cpu().double(), ry) and torch.equal(idx.cpu(), ridx)
                    err = rel_error(gx, rgx)
                    ok = exact and err <= TOLERANCE[mode] and gx.is_contiguous(memory_format=fmt)
                    rec.write(op="max_pool2d", conv_pass="fwd+bwd", **name, exact_forward=bool(exact), rel_err=err,
                              tol=TOLERANCE[mode], **{"pass": bool(ok)})
                except Exception as e:
                    rec.write(op="max_pool2d", conv_pass="fwd+bwd", **name, error=f"{type(e).__name__}: {e}"[:2000],
                              **{"pass": False})
                    if device == "cuda" and "CUDA" in str(e):
                        raise


def sweep(args):
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("sweep --device cuda: no GPU")
    rec = Recorder(args.out, args.group, device)
    conv_shapes = TINY_CONV_SHAPES if args.tiny else CONV_SHAPES
    sim = contextlib.nullcontext() if device == "cuda" else cuconv.simulate()
    with sim, cuconv.config.flags(poison=True, sync_launches=device == "cuda"):
        if args.group == "conv":
            sweep_conv(rec, device, conv_shapes, ("nchw", "nhwc"), [None], "conv")
            sweep_misaligned(rec, device)
        elif args.group == "tensorcore":
            # the tile configurations forced (medium: the chooser's for these small shapes), and the
            # chooser's (-1); --tiny: two shapes, the chooser and the configuration with the fewest stages
            configs = [-1, 3] if args.tiny else [-1, 0, 2, 3, 4, 5]
            sweep_conv(rec, device, conv_shapes[:2] if args.tiny else conv_shapes[:6], ("nchw", "nhwc"), configs,
                       "tensorcore")
        elif args.group == "fused":
            sweep_fused(rec, device, conv_shapes[:3] + [s for s in DEPTHWISE_SHAPES[:1]])
        elif args.group == "pool":
            sweep_pool(rec, device, POOL_SHAPES[:2] if args.tiny else POOL_SHAPES)
        elif args.group == "depthwise":
            sweep_conv(rec, device, DEPTHWISE_SHAPES[:1] if args.tiny else DEPTHWISE_SHAPES, ("nchw", "nhwc"), [None],
                       "conv")
    print(f"sweep {args.group} on {device}: {rec.failures} failing records")
    return 1 if rec.failures else 0


# ----------------------------------------------------------------------------------- the timing

# (name, N, C, H, W, K, R, S, stride, pad)
PERF_LAYERS = [
    ("seed.conv1", 32, 3, 32, 32, 32, 3, 3, 1, 0),
    ("seed.conv2", 32, 32, 15, 15, 64, 3, 3, 1, 0),
    ("r50.l1.3x3", 32, 64, 56, 56, 64, 3, 3, 1, 1),
    ("r50.l1.1x1up", 32, 64, 56, 56, 256, 1, 1, 1, 0),
    ("r50.l2.3x3s2", 32, 128, 56, 56, 128, 3, 3, 2, 1),
    ("r50.l2.3x3", 32, 128, 28, 28, 128, 3, 3, 1, 1),
    ("r50.l3.3x3", 32, 256, 14, 14, 256, 3, 3, 1, 1),
    ("r50.l4.3x3", 32, 512, 7, 7, 512, 3, 3, 1, 1),
    ("r50.l3.3x3.n256", 256, 256, 14, 14, 256, 3, 3, 1, 1),
    ("r50.l4.1x1down.n256", 256, 2048, 7, 7, 512, 1, 1, 1, 0),
]
PERF_MODES = ["f16", "bf16", "tf32", "f32"]


def time_call(fn, device, reps):
    """(median device time, median host time) per call in ms: CUDA events around a synchronised
    call, and the time the call takes to return without synchronising (the launch overhead)."""
    for _ in range(2):
        fn()
    synchronize(device)
    dev, host = [], []
    for _ in range(reps):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            t = time.perf_counter()
            start.record()
            fn()
            host.append((time.perf_counter() - t) * 1e3)
            end.record()
            end.synchronize()
            dev.append(start.elapsed_time(end))
        else:
            t = time.perf_counter()
            fn()
            dev.append((time.perf_counter() - t) * 1e3)
            host.append(dev[-1])
    return statistics.median(dev), statistics.median(host)


def perf(args):
    device = args.device
    tdev = "cuda" if device == "cuda" else "cpu"
    layers = PERF_LAYERS if device == "cuda" else [(n, 2, c, h, w, k, r, s, st, p)
                                                   for n, _, c, h, w, k, r, s, st, p in PERF_LAYERS[:2]]
    modes_ = PERF_MODES if device == "cuda" else ["f32"]
    rows, deadline = [], time.time() + args.budget_s
    torch.backends.cudnn.benchmark = True
    with open(args.json + ".partial", "w") as partial:
        for mode in modes_:
            for layout in ("nhwc", "nchw"):
                for name, N, C, H, W, K, R, S, st, p in layers:
                    if time.time() > deadline:
                        break
                    fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
                    dtype = DTYPE[mode]
                    with precision(mode, device):
                        x = torch.randn(N, C, H, W, device=tdev).to(dtype).contiguous(memory_format=fmt)
                        w = torch.randn(K, C, R, S, device=tdev).to(dtype).contiguous(memory_format=fmt)
                        y = F.conv2d(x, w, None, st, p)
                        gy = torch.randn_like(y)
                        a = ([st, st], [p, p], [1, 1], 1)
                        calls = {
                            "fprop": (lambda: ops.conv2d(x, w, None, *a), lambda: F.conv2d(x, w, None, st, p)),
                            "dgrad": (lambda: ops.conv2d_backward(gy, x, w, *a, [True, False, False]),
                                      lambda: torch.ops.aten.convolution_backward(
                                          gy, x, w, None, [st, st], [p, p], [1, 1], False, [0, 0], 1, [True, False, False])),
                            "wgrad": (lambda: ops.conv2d_backward(gy, x, w, *a, [False, True, False]),
                                      lambda: torch.ops.aten.convolution_backward(
                                          gy, x, w, None, [st, st], [p, p], [1, 1], False, [0, 0], 1, [False, True, False])),
                        }
                        for conv_pass, (ours, native) in calls.items():
                            try:
                                ours_dev, ours_host = time_call(ours, device, args.reps)
                                nat_dev, nat_host = time_call(native, device, args.reps)
                                row = dict(layer=name, conv_pass=conv_pass, mode=mode, layout=layout, N=N,
                                           cuconv_ms=ours_dev, native_ms=nat_dev, cuconv_host_ms=ours_host,
                                           native_host_ms=nat_host, ratio=nat_dev / ours_dev,
                                           tflops=2 * N * K * y.shape[2] * y.shape[3] * C * R * S / ours_dev / 1e9)
                            except Exception as e:
                                row = dict(layer=name, conv_pass=conv_pass, mode=mode, layout=layout, N=N,
                                           error=f"{type(e).__name__}: {e}"[:500])
                            rows.append(row)
                            partial.write(json.dumps(row) + "\n")
                            partial.flush()
    native = "cuDNN (cudnn.benchmark on)" if device == "cuda" else "oneDNN/ATen"
    with open(args.json, "w") as f:
        json.dump({"device": device, "native": native, "reps": args.reps, "rows": rows}, f, indent=1)
    os.remove(args.json + ".partial")
    with open(args.markdown, "w") as f:
        f.write(f"cuconv against {native}, device time per call (median of {args.reps}), ratio = native / cuconv "
                f"(> 1: cuconv faster); host ms: the call's own time before the kernels finish\n\n")
        f.write("| layer | N | pass | mode | layout | cuconv ms | native ms | ratio | cuconv TFLOP/s | cuconv host ms | "
                "native host ms |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
        for r in rows:
            if "error" in r:
                f.write(f"| {r['layer']} | {r['N']} | {r['conv_pass']} | {r['mode']} | {r['layout']} | error: "
                        f"{r['error'][:80]} | | | | | |\n")
            else:
                f.write(f"| {r['layer']} | {r['N']} | {r['conv_pass']} | {r['mode']} | {r['layout']} | "
                        f"{r['cuconv_ms']:.4f} | {r['native_ms']:.4f} | {r['ratio']:.2f} | {r['tflops']:.1f} | "
                        f"{r['cuconv_host_ms']:.4f} | {r['native_host_ms']:.4f} |\n")
    print(f"perf: {len(rows)} rows ({sum('error' in r for r in rows)} errors)")
    return 0


# ------------------------------------------------------------------------- environment, summary

def env(args):
    def run(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"unavailable: {e}"
    record = {
        "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
        "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": torch.cuda.is_available(),
        "gpu": run(["nvidia-smi", "--query-gpu=name,driver_version,compute_cap,memory.total,clocks.sm,"
                    "clocks.max.sm,clocks.mem,ecc.mode.current,power.limit", "--format=csv"]),
        "nvcc": run([os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc"), "--version"]),
        "cuconv_with_cuda": bool(cuconv._C.with_cuda), "cuconv_config": cuconv.config.get(),
        "cpu": run(["sh", "-c", "lscpu | grep -E 'Model name|Flags' | cut -c1-200"]),
    }
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        record["device"] = dict(name=p.name, sm_count=p.multi_processor_count, cc=f"{p.major}.{p.minor}",
                                memory_gb=round(p.total_memory / 2**30, 1))
    with open(args.out, "w") as f:
        json.dump(record, f, indent=1, default=str)
    print(json.dumps({k: record[k] for k in ("torch", "torch_cuda", "cudnn", "cuda_available", "cuconv_with_cuda")}))
    return 0


def summary(args):
    out = args.outdir
    lines = []
    records = []
    path = os.path.join(out, "correctness.jsonl")
    if os.path.exists(path):
        with open(path) as f:
            records = [json.loads(line) for line in f if line.strip()]
    by_group = {}
    for r in records:
        g = by_group.setdefault(r["group"], [0, 0])
        g[0] += 1
        g[1] += not r.get("pass", False)
    lines.append("correctness (cases, failing): " + ", ".join(f"{g} {n}/{bad}" for g, (n, bad) in by_group.items())
                 if by_group else "correctness: no records")
    worst = {}
    for r in records:
        if "rel_err" in r and r.get("mode"):
            worst[r["mode"]] = max(worst.get(r["mode"], 0.0), r["rel_err"])
    lines.append("largest relative error per mode: " + ", ".join(f"{m} {e:.2e}" for m, e in sorted(worst.items())))
    for r in [r for r in records if not r.get("pass", False)][:15]:
        lines.append("  FAIL " + json.dumps({k: r[k] for k in r if k not in ("device",)})[:300])
    bench = os.path.join(out, "bench.json")
    if os.path.exists(bench):
        with open(bench) as f:
            rows = [r for r in json.load(f)["rows"] if "ratio" in r]
        if rows:
            rows.sort(key=lambda r: r["ratio"])
            fmt = lambda r: f"{r['layer']} {r['conv_pass']} {r['mode']} {r['layout']} {r['ratio']:.2f}x"
            lines.append(f"timing: {len(rows)} rows; slowest: " + "; ".join(fmt(r) for r in rows[:3]))
            lines.append("        fastest: " + "; ".join(fmt(r) for r in rows[-3:]))
    stages = os.path.join(out, "stages.txt")
    if os.path.exists(stages):
        with open(stages) as f:
            lines = [line.rstrip() for line in f] + lines
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "summary.txt"), "w") as f:
        f.write(text)
    if os.path.exists(stages):
        os.remove(stages)
    print(text)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("env")
    p.add_argument("out")
    p = sub.add_parser("sweep")
    p.add_argument("group", choices=GROUPS)
    p.add_argument("out")
    p.add_argument("--device", choices=("cuda", "sim"), default="cuda")
    p.add_argument("--tiny", action="store_true", help="the smallest shapes only (the sanitizers, the rehearsal)")
    p = sub.add_parser("perf")
    p.add_argument("json")
    p.add_argument("markdown")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--budget-s", type=float, default=150)
    p = sub.add_parser("summary")
    p.add_argument("outdir")
    args = ap.parse_args()
    try:
        return {"env": env, "sweep": sweep, "perf": perf, "summary": summary}[args.cmd](args)
    except SystemExit:
        raise
    except Exception:
        traceback.print_exc()
        return 2


if __name__ == "__main__":
    sys.exit(main())
