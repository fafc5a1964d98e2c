#!/usr/bin/env bash
# Trains X-X-mono, X-Y and hybrid at the same budget (configs/*.yaml differ in alpha only), then evaluates
# each exported artifact and the base model on the XQuAD-R test half. Interrupt at any time; rerunning
# resumes each run from its checkpoint and skips what is finished.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
for name in ${RUNS:-hybrid xy xx_mono}; do
  if [ -f "runs/$name/artifact/artifact.json" ]; then
    echo "== $name: done (runs/$name/artifact)"; continue
  fi
  resume=""
  [ -f "runs/$name/checkpoint.pt" ] && resume="--resume"
  echo "== $name: training $resume"
  "$PY" -m trainer train --config "configs/$name.yaml" $resume
done
