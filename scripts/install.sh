#!/usr/bin/env bash
# Installs cuconv and everything it needs into the current Python environment.
#   bash scripts/install.sh          the library and the training extras
#   bash scripts/install.sh --test   the test tools as well
# The CUDA kernels are compiled when a CUDA toolkit is found (CUDA_HOME, or nvcc under
# /usr/local/cuda), even without a GPU; otherwise the build is CPU-only (CPU fallback + simulator).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extras=train
[ "${1:-}" = "--test" ] && extras=test

if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
fi
"$PY" -m pip install -q pybind11 ninja numpy setuptools wheel

if [ -z "${FORCE_CUDA:-}" ]; then
  if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then export CUDA_HOME=/usr/local/cuda; fi
  if [ -n "${CUDA_HOME:-}" ] && [ -x "$CUDA_HOME/bin/nvcc" ]; then export FORCE_CUDA=1; fi
fi
MAX_JOBS=${MAX_JOBS:-$(nproc)} "$PY" -m pip install --no-build-isolation -v -e ".[$extras]" 2>&1 \
  | grep -E "^cuconv build|error|Error|Successfully installed" || true
"$PY" -c "import cuconv; print('cuconv installed: CUDA kernels', 'compiled' if cuconv._C.with_cuda else 'not compiled')"
