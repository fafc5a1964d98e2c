#!/usr/bin/env bash
# Virtual environments for the peer engines that bench/bench_encoder.py compares with the service's
# ONNX Runtime encoder. Their pins clash with each other and with the project's .venv, so each gets its own,
# under var/peers/<name>/ (ignored by git):
#
#   st5-onnx   sentence-transformers 5.x with its ONNX backend (optimum-onnx; transformers < 4.58)
#   fastembed  fastembed (ONNX Runtime, no torch)
#   infinity   infinity-emb 0.0.78 (sentence-transformers < 4, numpy < 2): not part of bench_encoder.py,
#              for the load benchmark of the served API
#
# sentence-transformers 6.x (torch backend) and the project's own torch model run in the project's .venv
# (the dev extra has sentence-transformers, the train extra torch), so they need nothing here.
#
#   bench/peers/setup.sh [NAME ...]          # default: all three; PYTHON=python3.11 to choose the interpreter
#
# Idempotent: a venv whose recorded requirements equal the ones below is left as it is. torch is always
# pinned to 2.13.0, the local CPU wheel in /opt/wheels (PIP_FIND_LINKS); any other torch spec downloads GBs.
# Exits non-zero, naming the venv and the pip log, when an install fails.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
export PIP_FIND_LINKS=${PIP_FIND_LINKS:-/opt/wheels}
export PIP_DISABLE_PIP_VERSION_CHECK=1

requirements() {
  case $1 in
    st5-onnx) echo "torch==2.13.0 sentence-transformers[onnx]==5.7.0 transformers>=4.50,<4.58 optimum-onnx[onnxruntime]==0.1.0" ;;
    fastembed) echo "fastembed==0.9.1" ;;
    infinity) echo "torch==2.13.0 infinity-emb[server,torch,optimum]==0.0.78 sentence-transformers<4 numpy<2" ;;
    *) echo "unknown peer venv: $1 (known: st5-onnx fastembed infinity)" >&2; return 2 ;;
  esac
}

names=("$@")
[ ${#names[@]} -gt 0 ] || names=(st5-onnx fastembed infinity)
failed=()
for name in "${names[@]}"; do
  reqs=$(requirements "$name")
  dir=var/peers/$name
  stamp=$dir/.requirements
  if [ -x "$dir/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$reqs" ]; then
    echo "$name: up to date ($dir)"
    continue
  fi
  echo "$name: installing $reqs into $dir"
  rm -f "$stamp"
  log=$dir/pip.log
  if [ ! -x "$dir/bin/python" ]; then
    "$PYTHON" -m venv "$dir" && "$dir/bin/python" -m pip install --upgrade pip >"$log" 2>&1 \
      || { echo "$name: FAILED: could not create the venv $dir with $PYTHON" >&2; failed+=("$name"); continue; }
  fi
  # shellcheck disable=SC2086  # the requirement list is split on purpose
  if "$dir/bin/python" -m pip install $reqs >>"$log" 2>&1; then
    "$dir/bin/python" -m pip freeze >"$dir/freeze.txt"
    echo "$reqs" >"$stamp"
    echo "$name: ok"
  else
    echo "$name: FAILED: pip install $reqs (log: $log)" >&2
    tail -n 15 "$log" >&2
    failed+=("$name")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "error: could not install: ${failed[*]}" >&2
  exit 1
fi
