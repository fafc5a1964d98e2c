#!/usr/bin/env bash
# Trains X-X-mono, X-Y and hybrid at the same budget (configs/*.yaml differ in alpha only), then evaluates
# each exported artifact and the base model on the XQuAD-R test half. Interrupt at any time; rerunning
# resumes each run from its checkpoint and skips what is finished; evaluations reuse cached embeddings.
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

# Dev selection picked hybrid's step-40 weights (see its artifact.json); its last (step-120) weights
# compare the three strategies at an equal number of steps.
[ -f runs/hybrid/artifact-last/artifact.json ] || "$PY" -m trainer export runs/hybrid --weights last

# The comparison: the base model and the three runs on the XQuAD-R test half (never trained on), at both
# precisions (fp32 = the trained weights; int8 = what the service runs by default).
[ -f artifacts/models/e5-small-base/artifact.json ] || make base-model
for precision in ${PRECISIONS:-fp32 int8}; do
  "$PY" -m evaluation lareqa --split test --precision "$precision" --out "reports/xquad-r-test-$precision" \
    --model artifacts/models/e5-small-base --name base \
    --model runs/xx_mono/artifact --name X-X-mono \
    --model runs/xy/artifact --name X-Y \
    --model runs/hybrid/artifact --name hybrid \
    --model runs/hybrid/artifact-last --name hybrid-step120
done
