"""Training steps, cuconv against native, interleaved ABAB in a fresh process: the state of the
C allocator (glibc malloc) that a training run has, which `python -m cuconv bench` does not.

Why: glibc serves large blocks with mmap until one that size is freed, then raises its threshold
and serves blocks below it from the heap. A mmap'd block's pages are faulted in (and zeroed) on
every use; heap blocks are reused as they are. `cuconv bench` times a 2048x2048 matmul first (its
ceiling), which frees 16 MiB matrices and so raises the threshold past every temporary of a
seed-CNN step: native's large temporaries (3.7 MB per layer output gradient at batch 32) are then
reused, and its step is much faster than in a process that never allocated that much. cuconv
keeps its scratch buffers between calls, so it moves much less. This script times the same cases
before any such allocation; `--after-matmul` runs the bench's matmul first and reproduces the
bench's numbers; `--malloc steady` (as in the bench) keeps every block up to 32 MiB in a heap that
is never trimmed. Each row also gives the page faults per step of each side.

    PYTHONPATH=pyext python3 benchmarks/train_step_fresh.py [--shapes seed_cnn] [--batch 32]
        [--layout both] [--threads 2] [--after-matmul] [--malloc default|steady]
"""
import argparse

import torch

from cuconv.apps import bench


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="seed_cnn$", help="train_step models (regular expressions, comma-separated)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--layout", default="both", choices=("nchw", "channels_last", "both"))
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--reps", type=int, default=60, help="ABAB pairs per case (after 5 warm-up pairs)")
    ap.add_argument("--after-matmul", action="store_true",
                    help="first multiply two 2048x2048 float32 matrices, as the bench's ceiling does")
    ap.add_argument("--malloc", choices=("default", "steady"), default="default",
                    help="C allocator policy (see `python -m cuconv bench --help`)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    malloc = bench.set_malloc_mode(args.malloc)
    if args.after_matmul:
        a = torch.randn(2048, 2048)
        b = a @ a
        del a, b
    layouts = ("nchw", "channels_last") if args.layout == "both" else (args.layout,)
    cases = bench.build_cases("cpu", [args.batch], ("float32",), layouts, ["train_step"], args.shapes.split(","))
    print(f"train_step, cuconv vs native, {args.threads} threads, ABAB in "
          f"{'a process that ran a 2048^3 matmul first' if args.after_matmul else 'a fresh process'}; "
          f"malloc: {malloc}; ratio = native time / cuconv time; faults = page faults per step")
    timer = bench.CpuTimer()
    for case in cases:
        prep = bench.prepare(case)
        a, b = bench.time_pair(timer, prep.cuconv, prep.native, warmup=5, min_reps=args.reps, max_reps=args.reps)
        print(f"{case.name:50s} cuconv {a.median_s * 1e3:8.3f} ms  native {b.median_s * 1e3:8.3f} ms  "
              f"ratio {b.median_s / a.median_s:5.2f}  faults {a.faults:.0f} / {b.faults:.0f}", flush=True)


if __name__ == "__main__":
    main()
