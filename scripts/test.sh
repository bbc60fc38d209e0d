#!/usr/bin/env bash
# Installs the dependencies, builds Loom (preset `default`) and runs the whole test suite.
# This is the README's second command and what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake --preset default >/dev/null
cmake --build --preset default -j "$(nproc)"
ctest --preset default -j "$(nproc)" --timeout 900
