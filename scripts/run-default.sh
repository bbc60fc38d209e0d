#!/usr/bin/env bash
# Installs the dependencies, builds Loom and runs its main job on the built-in default model
# (zoo:resnet18, nothing downloaded): inspect it, list its tasks, run it, and tune every task with
# a small budget (records go to loom.db; a second run resumes and finishes at once).
# This is the README's first command. TRIALS=N raises the budget per task.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake --preset default >/dev/null
cmake --build --preset default -j "$(nproc)" --target loom
LOOM=build/default/loom/cli/loom
"$LOOM" inspect zoo:resnet18
"$LOOM" tasks zoo:resnet18
"$LOOM" run zoo:resnet18
"$LOOM" tune zoo:resnet18 --trials "${TRIALS:-16}" --db loom.db
