"""cuconv against itself under two CPU code paths (cuconv.config's cpu_isa) or in two dtypes on one
path, interleaved in one process so a change in the machine's speed hits both: what the AVX-512
kernels buy over the AVX2 ones on this CPU, or what a 16-bit dtype costs or saves against float32.
Same cases as `python -m cuconv bench` (cuconv.apps.bench.build_cases).

    PYTHONPATH=pyext python3 benchmarks/cpu_isa_compare.py [--paths avx2,avx512 | --paths avx2
        --dtypes float32,float16] [--ops conv] [--shapes 'seed|r18'] [--batch 32] [--layout both]
        [--threads 2] [--target-time 1.0]

Prints one row per case: median ms of each side and the ratio (first / second, > 1 means the
second side is faster), then the geometric mean, the smallest ratio and the count below --below."""
import argparse
import math
import statistics
import time

import torch

import cuconv
from cuconv.apps import bench


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paths", default="avx2,avx512", help="two paths, or one with two --dtypes")
    ap.add_argument("--dtypes", default="float32", help="one dtype, or two on one path")
    ap.add_argument("--ops", default="conv_fwd,conv_grad_input,conv_grad_weight,pool_fwd,pool_bwd,train_step")
    ap.add_argument("--shapes", default=None)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--layout", default="both", choices=("nchw", "channels_last", "both"))
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--target-time", type=float, default=1.0, help="seconds per side and case")
    ap.add_argument("--below", type=float, default=1.0, help="count the ratios under this")
    args = ap.parse_args()
    paths, dtypes = args.paths.split(","), args.dtypes.split(",")
    if len(paths) * len(dtypes) != 2:
        ap.error("give two --paths and one dtype, or one path and two --dtypes")
    sides = [(p, d) for p in paths for d in dtypes]  # (cpu_isa, dtype) of the first and second side
    labels = [p if len(paths) == 2 else d for p, d in sides]
    torch.set_num_threads(args.threads)
    layouts = ("nchw", "channels_last") if args.layout == "both" else (args.layout,)
    cases = bench.build_cases("cpu", [args.batch], (dtypes[0],), layouts, args.ops.split(","),
                              args.shapes.split(",") if args.shapes else None)
    print(f"cuconv: {labels[0]} vs {labels[1]} ({'dtype ' + dtypes[0] if len(paths) == 2 else 'cpu_isa=' + paths[0]}), "
          f"{args.threads} threads, interleaved; ratio = {labels[0]} time / {labels[1]} time")
    ratios = []
    for case in cases:
        fns = [bench.prepare(bench.Case(case.op, case.shape, case.batch, d, case.layout, case.device)).cuconv
               for _, d in sides]
        times = [[], []]
        for i in (0, 1, 0, 1):  # warm-up
            with cuconv.config.flags(cpu_isa=sides[i][0]):
                fns[i]()
        end = time.perf_counter() + 2 * args.target_time
        while time.perf_counter() < end or len(times[0]) < 5:
            for i in (0, 1):
                with cuconv.config.flags(cpu_isa=sides[i][0]):
                    t = time.perf_counter()
                    fns[i]()
                    times[i].append(time.perf_counter() - t)
        a, b = statistics.median(times[0]), statistics.median(times[1])
        ratios.append(a / b)
        print(f"{case.name:58s} {labels[0]} {a * 1e3:9.3f} ms  {labels[1]} {b * 1e3:9.3f} ms  ratio {a / b:5.2f}",
              flush=True)
    if ratios:
        geomean = math.exp(sum(map(math.log, ratios)) / len(ratios))
        print(f"{len(ratios)} cases: geometric mean {geomean:.2f}, smallest {min(ratios):.2f}, "
              f"{sum(r < args.below for r in ratios)} below {args.below}")


if __name__ == "__main__":
    main()
