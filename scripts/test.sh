#!/usr/bin/env bash
# Installs cuconv with its test tools, then runs the whole test suite: pytest (CPU fallback,
# simulator of the CUDA kernels, modules, training, benchmarks smoke), the C++ tests (ctest) and
# the rehearsal of the GPU check.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
start=$(date +%s)
bash scripts/install.sh --test
"$PY" -m pytest -q -ra tests
# The C++ library and its tests, built with AddressSanitizer and UndefinedBehaviorSanitizer
# (the simulator's own targets add ThreadSanitizer builds of theirs).
# CUDA off here: the sanitizers instrument the CPU and simulator code, and the pip build above has
# compiled the CUDA sources already.
cmake -S . -B build/cmake -DPython3_EXECUTABLE="$(command -v "$PY")" -DCUCONV_SANITIZE=address,undefined \
  -DCUCONV_WITH_CUDA=OFF \
  > build-cmake.log 2>&1 || { cat build-cmake.log; exit 1; }
cmake --build build/cmake -j"$(nproc)" >> build-cmake.log 2>&1 || { tail -50 build-cmake.log; exit 1; }
ctest --test-dir build/cmake --output-on-failure
# The one-shot GPU check (scripts/gpu_check.sh), rehearsed here on the simulator and the CPU, so
# that a mistake in it never costs the time of a lent GPU.
bash scripts/gpu_check.sh --rehearse build/gpu_check_rehearsal > build/gpu_check_rehearsal.log 2>&1 \
  || { cat build/gpu_check_rehearsal.log; exit 1; }
tail -6 build/gpu_check_rehearsal.log
echo "test.sh: all tests passed in $(( $(date +%s) - start )) s"
