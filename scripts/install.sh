#!/usr/bin/env bash
# Installs cuconv and everything it needs into the current Python environment.
#   bash scripts/install.sh          the library and the training extras
#   bash scripts/install.sh --test   the test tools as well
# The CUDA kernels are compiled when torch is a CUDA build and a CUDA toolkit is found (CUDA_HOME,
# or nvcc on PATH or under /usr/local/cuda), with or without a GPU; CUCONV_WITH_CUDA=0 skips them
# (setup.py). A failed build stops the script with pip's own error.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extras=train
[ "${1:-}" = "--test" ] && extras=test

if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
fi
"$PY" -m pip install -q pybind11 ninja numpy setuptools wheel
log=$(mktemp)
if ! MAX_JOBS=${MAX_JOBS:-$(nproc)} "$PY" -m pip install --no-build-isolation -v -e ".[$extras]" > "$log" 2>&1; then
  grep -E "^cuconv build|error" "$log" | tail -40 || true
  tail -20 "$log"
  echo "install.sh: pip install failed (full log: $log)" >&2
  exit 1
fi
grep -E "^cuconv build|Successfully installed" "$log" || true
rm -f "$log"
"$PY" -c "import cuconv; print('cuconv installed: CUDA kernels', 'compiled' if cuconv._C.with_cuda else 'not compiled')"
