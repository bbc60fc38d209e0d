#!/usr/bin/env bash
# Runs bench/ort_compare.py (Loom vs ONNX Runtime on whole models, issues 4 and 17) with a Python
# that has onnxruntime and numpy: $LOOM_BENCH_PYTHON if set (e.g. /work/bench-env/bin/python),
# else the venv build/ort-venv, created once from PyPI (ORT_PIP_SPEC picks the wheel, e.g.
# ORT_PIP_SPEC=onnxruntime==1.32.0). Every argument goes to the Python tool; see
# `bench/ort_compare.sh --help`.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${LOOM_BENCH_PYTHON:-}"
if [[ -z "$py" ]]; then
  venv="$root/build/ort-venv"
  if [[ ! -x "$venv/bin/python" ]] ||
    ! "$venv/bin/python" -c 'import onnxruntime, numpy' 2>/dev/null; then
    echo "== creating $venv with onnxruntime and numpy (PyPI)" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "${ORT_PIP_SPEC:-onnxruntime}" numpy
  fi
  py="$venv/bin/python"
fi
exec "$py" "$root/bench/ort_compare.py" "$@"
