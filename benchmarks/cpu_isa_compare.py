"""cuconv against itself under two CPU code paths (cuconv.config's cpu_isa), interleaved
in one process so a change in the machine's speed hits both: what the AVX-512 kernels buy over the
AVX2 ones on this CPU. Same cases as `python -m cuconv bench` (cuconv.apps.bench.build_cases).

    PYTHONPATH=pyext python3 benchmarks/cpu_isa_compare.py [--paths avx2,avx512] [--ops conv]
        [--shapes 'seed|r18'] [--batch 32] [--layout both] [--threads 2] [--target-time 1.0]

Prints one row per case: median ms under each path and the ratio (first / second, > 1 means the
second path is faster)."""
import argparse
import statistics
import time

import torch

import cuconv
from cuconv.apps import bench


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paths", default="avx2,avx512")
    ap.add_argument("--ops", default="conv_fwd,conv_grad_input,conv_grad_weight,pool_fwd,pool_bwd,train_step")
    ap.add_argument("--shapes", default=None)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--layout", default="both", choices=("nchw", "channels_last", "both"))
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--target-time", type=float, default=1.0, help="seconds per path and case")
    args = ap.parse_args()
    first, second = args.paths.split(",")
    torch.set_num_threads(args.threads)
    layouts = ("nchw", "channels_last") if args.layout == "both" else (args.layout,)
    cases = bench.build_cases("cpu", [args.batch], ("float32",), layouts, args.ops.split(","),
                              args.shapes.split(",") if args.shapes else None)
    print(f"cuconv under cpu_isa={first} vs {second}, {args.threads} threads, interleaved; "
          f"ratio = {first} time / {second} time")
    for case in cases:
        fn = bench.prepare(case).cuconv
        times = {first: [], second: []}
        for path in (first, second, first, second):  # warm-up
            with cuconv.config.flags(cpu_isa=path):
                fn()
        end = time.perf_counter() + 2 * args.target_time
        while time.perf_counter() < end or len(times[first]) < 5:
            for path in (first, second):
                with cuconv.config.flags(cpu_isa=path):
                    t = time.perf_counter()
                    fn()
                    times[path].append(time.perf_counter() - t)
        a, b = statistics.median(times[first]), statistics.median(times[second])
        print(f"{case.name:58s} {first} {a * 1e3:9.3f} ms  {second} {b * 1e3:9.3f} ms  ratio {a / b:5.2f}",
              flush=True)

if __name__ == "__main__":
    main()
