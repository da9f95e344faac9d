#!/usr/bin/env bash
# The one-shot check of every CUDA path, for a GPU machine that is lent rarely and briefly:
#   bash scripts/gpu_check.sh OUTDIR               on the GPU machine, offline (at most 8 minutes:
#                                                  GPU_CHECK_SECONDS, default 480)
#   bash scripts/gpu_check.sh --rehearse OUTDIR    here, without a GPU: every stage that can run, on
#                                                  the simulator and the CPU (CI runs this)
# Writes at most 8 files to OUTDIR: env.json, build.log, audit.json, correctness.jsonl,
# sanitizer.log (compute-sanitizer, then the GPU tests), bench.json, bench.md, summary.txt. Every
# stage has its own time budget and the script goes on when one fails; the summary comes last.
set -uo pipefail
rehearse=0
if [ "${1:-}" = "--rehearse" ]; then rehearse=1; shift; fi
out=${1:?usage: gpu_check.sh [--rehearse] OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/pyext${PYTHONPATH:+:$PYTHONPATH}"
start=$(date +%s)
status=0
# The whole run must end, summary printed, within GPU_CHECK_SECONDS (a lent machine's command is cut
# off at its limit): each stage gets its own budget or what is left, whichever is less.
total_budget=${GPU_CHECK_SECONDS:-$([ $rehearse = 1 ] && echo 1800 || echo 480)}
stage() {  # stage NAME SECONDS COMMAND...: runs it under a time budget, records the outcome
  local name=$1 budget=$2; shift 2
  local left=$(( start + total_budget - 20 - $(date +%s) ))
  if [ $left -lt 5 ]; then
    echo "stage $name: SKIPPED (the run's time is spent)" | tee -a "$out/stages.txt"; status=1; return
  fi
  [ $budget -le $left ] || budget=$left
  local t0=$(date +%s) rc=0
  timeout --kill-after=5 "$budget" "$@" || rc=$?
  local msg="stage $name: $([ $rc = 0 ] && echo ok || echo "FAILED (exit $rc$([ $rc = 124 ] && echo ", over its ${budget} s budget"))") in $(( $(date +%s) - t0 )) s"
  echo "$msg" | tee -a "$out/stages.txt"
  [ $rc = 0 ] || status=1
}

if [ $rehearse = 1 ]; then device=sim; perf_device=cpu; else device=cuda; perf_device=cuda; fi

# 0. The machine.
stage env 60 "$PY" scripts/gpu_check.py env "$out/env.json"

# 1. Build for the present GPU only, with every core, offline: no build isolation, no index.
if [ $rehearse = 1 ]; then
  stage build 60 sh -c "echo 'rehearsal: the extension built by scripts/install.sh is used' > '$out/build.log' &&
    '$PY' -c 'import cuconv; print(\"cuconv imported; CUDA kernels compiled:\", cuconv._C.with_cuda)' >> '$out/build.log' 2>&1"
else
  arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1)
  stage build 240 sh -c "CUDA_HOME=\${CUDA_HOME:-/usr/local/cuda} TORCH_CUDA_ARCH_LIST='$arch' CUCONV_WITH_CUDA=1 \
    MAX_JOBS=$(nproc) '$PY' setup.py build_ext --inplace > '$out/build.log' 2>&1 || { tail -40 '$out/build.log'; exit 1; }"
fi

# 2. What the compiler made of the kernels (registers, spills, tensor-core instructions).
stage audit 60 sh -c "'$PY' -m cuconv audit --check --json > '$out/audit.json'"

# 3. Every CUDA path against float64, one process per group so that a sticky fault only ends its
#    group; launches synchronised and checked, so a fault names its kernel.
: > "$out/correctness.jsonl"
tiny=$([ $rehearse = 1 ] && echo --tiny)
for group in conv tensorcore fused pool depthwise; do
  stage "correctness:$group" $([ $rehearse = 1 ] && echo 300 || echo 50) \
    "$PY" scripts/gpu_check.py sweep $group "$out/correctness.jsonl" --device $device $tiny
done

# 4. compute-sanitizer on the tiny shapes of every kernel, then the GPU tests.
if [ $rehearse = 1 ]; then
  echo "== compute-sanitizer: skipped in the rehearsal (it needs a GPU)" > "$out/sanitizer.log"
else
  : > "$out/sanitizer.log"
  for tool in memcheck racecheck synccheck; do
    stage "sanitizer:$tool" 40 sh -c "echo '== compute-sanitizer --tool $tool' >> '$out/sanitizer.log';
      compute-sanitizer --tool $tool --error-exitcode 1 '$PY' scripts/gpu_check.py sweep tensorcore /dev/null \
        --device cuda --tiny >> '$out/sanitizer.log' 2>&1"
  done
fi
# The behaviour tests on the GPU runner (their `cuda` parametrisations; in the rehearsal the
# simulator's), without the files that need the test extra's expecttest.
# (The rehearsal runs two of the files: CI has just run them all.)
if [ $rehearse = 1 ]; then
  tests="tests/test_tensorcore.py tests/test_fused_pool.py"; select="sim and not gradcheck"
else
  tests="tests/test_conv2d_cases.py tests/test_max_pool2d_cases.py tests/test_tensorcore.py"
  tests="$tests tests/test_fused.py tests/test_fused_pool.py"; select=cuda
fi
stage tests $([ $rehearse = 1 ] && echo 400 || echo 90) sh -c "echo '== pytest -k \"$select\"' >> '$out/sanitizer.log';
  '$PY' -m pytest -q -p no:cacheprovider -x -k '$select' $tests >> '$out/sanitizer.log' 2>&1"

# 5. Against cuDNN (cudnn.benchmark on): device and host time per call.
stage bench $([ $rehearse = 1 ] && echo 90 || echo 120) \
  "$PY" scripts/gpu_check.py perf "$out/bench.json" "$out/bench.md" --device $perf_device \
    --budget-s $([ $rehearse = 1 ] && echo 30 || echo 100) --reps $([ $rehearse = 1 ] && echo 3 || echo 20)

# 6. The summary, printed last (a lent machine's reply shows the tail).
echo "total $(( $(date +%s) - start )) s$([ $rehearse = 1 ] && echo ' (rehearsal)')" >> "$out/stages.txt"
"$PY" scripts/gpu_check.py summary "$out"
exit $status
