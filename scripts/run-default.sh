#!/usr/bin/env bash
# Installs the dependencies, builds Loom and runs its main job on the built-in default model
# (zoo:resnet18, nothing downloaded). This is the README's first command.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake --preset default >/dev/null
cmake --build --preset default -j "$(nproc)" --target loom
LOOM=build/default/loom/cli/loom
"$LOOM" inspect zoo:resnet18
"$LOOM" tasks zoo:resnet18
"$LOOM" run zoo:resnet18
