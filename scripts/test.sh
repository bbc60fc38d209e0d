#!/usr/bin/env bash
# Installs the dependencies, builds Loom (preset `default`) and runs the whole test suite: the C++
# tests (ctest), then the Python package's tests (pytest) against the package pip-installed into a
# virtual environment under build/. This is the README's second command and what CI runs
# (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh

# The virtual environment of the Python tests: Debian's python3 with its packages (numpy, pytest,
# pandas, matplotlib, nbclient), plus scikit-build-core, the package's build backend (PyPI; kept
# in the environment, so later runs need no network). Created before the configure step so that
# CMake builds the extension module for this interpreter.
VENV=build/default/python-venv
if [[ ! -x $VENV/bin/python ]] || ! "$VENV/bin/python" -c 'import scikit_build_core' 2>/dev/null; then
  rm -rf "$VENV"
  /usr/bin/python3 -m venv --system-site-packages "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check 'scikit-build-core>=0.8'
fi

cmake --preset default -DPython_EXECUTABLE="$PWD/$VENV/bin/python" >/dev/null
cmake --build --preset default -j "$(nproc)"
ctest_rc=0
ctest --preset default -j "$(nproc)" --timeout 900 || ctest_rc=$?

# `pip install ./python` into the environment, building in build/default (the tree just built:
# only the extension module is new), then the package's tests. pytest's exit code 5 (no test
# collected) fails like any other.
"$VENV/bin/pip" install --quiet --disable-pip-version-check --no-build-isolation \
  --config-settings=build-dir="$PWD/build/default" \
  --config-settings=cmake.build-type=RelWithDebInfo \
  --config-settings=install.strip=false ./python
pytest_rc=0
LOOM_PLOTS_OUT="$PWD/build/default/python-plots" \
  "$VENV/bin/python" -m pytest python/tests -q -p no:cacheprovider || pytest_rc=$?
echo "test.sh: ctest exit ${ctest_rc}, pytest exit ${pytest_rc}"
if ((ctest_rc != 0)); then exit "$ctest_rc"; fi
exit "$pytest_rc"
