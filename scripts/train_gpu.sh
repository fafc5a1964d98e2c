#!/usr/bin/env bash
# The recommended recipe at a GPU budget (configs/gpu/recommended.yaml), then its full XQuAD-R score.
# Needs one CUDA device and torch with CUDA in $PYTHON's environment; ../shared/data beside the checkout
# (or DATA=path/to/shared/data). Resumable: rerun after an interruption. Tests and CI never run this.
#
#   scripts/train_gpu.sh [extra trainer flags, e.g. --steps 600]
#
# Writes runs/gpu-recommended/{adapter,artifact} and reports/gpu-recommended-full/ (copied to $OUT when set).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
"$PY" - <<'PYCHECK'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("error: scripts/train_gpu.sh needs a CUDA device (torch.cuda.is_available() is False)")
print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}", flush=True)
PYCHECK
config=configs/gpu/recommended.yaml
resume=""
[ -f runs/gpu-recommended/checkpoint.pt ] && resume="--resume"
start=$(date +%s)
"$PY" -m trainer train --config "$config" $resume "$@"
echo "training + export: $(( $(date +%s) - start )) s"
"$PY" -m evaluation lareqa --model runs/gpu-recommended/artifact --name gpu-recommended --precision fp32 \
  --calibration none center --no-progress --out reports/gpu-recommended-full
echo "total: $(( $(date +%s) - start )) s"
if [ -n "${OUT:-}" ]; then
  cp -r runs/gpu-recommended/adapter "$OUT/adapter"
  cp reports/gpu-recommended-full/report.md "$OUT/" 2>/dev/null || true
fi
