#!/usr/bin/env bash
# Builds cuconv against another torch version in a throwaway virtual environment, from a copy of
# this checkout (the working tree's files), CUDA sources included when a toolkit is found, then
# imports it and runs every op once on the CPU fallback and the simulator.
#   bash scripts/build_against_torch.sh 2.11.0 [WORKDIR]
# pyproject.toml's torch floor is the oldest version shown to build this way.
set -euo pipefail
version=${1:?usage: build_against_torch.sh TORCH_VERSION [WORKDIR]}
work=${2:-$(mktemp -d)}
root=$(cd "$(dirname "$0")/.." && pwd)
python3 -m venv "$work/venv"
py="$work/venv/bin/python"
"$py" -m pip install -q "torch==$version" pybind11 ninja numpy setuptools wheel
mkdir -p "$work/src"
(cd "$root" && git ls-files -z --cached --others --exclude-standard | xargs -0 tar -cf -) | tar -xf - -C "$work/src"
cd "$work/src"
"$py" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"
MAX_JOBS=${MAX_JOBS:-$(nproc)} "$py" setup.py build_ext --inplace > build.log 2>&1 || { tail -40 build.log; exit 1; }
grep "^cuconv build" build.log
PYTHONPATH="$work/src/pyext" "$py" - <<'PY'
import torch, cuconv
import torch.nn.functional as F
x, w = torch.randn(2, 8, 9, 9, dtype=torch.float64), torch.randn(4, 8, 3, 3, dtype=torch.float64)
for simulate in (False, True):
    with cuconv.simulate(simulate):
        y = cuconv.conv2d(x, w, padding=1)
        p = cuconv.max_pool2d(y, 2)
    assert torch.allclose(y, F.conv2d(x, w, padding=1)) and torch.equal(p, F.max_pool2d(y, 2))
print("cuconv", cuconv.__version__, "built against torch", torch.__version__, "with CUDA kernels:", cuconv._C.with_cuda,
      "- conv2d and max_pool2d match torch on the CPU fallback and the simulator")
PY
echo "build_against_torch.sh: torch $version OK ($work)"
