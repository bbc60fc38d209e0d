#!/usr/bin/env bash
# Installs every Debian package Loom needs to build, test and benchmark. Idempotent: packages
# already present are skipped, so a second run costs only the dpkg query.
set -euo pipefail

PACKAGES=(
  # toolchain
  build-essential cmake ninja-build ccache clang clang-format clang-tidy lld
  libclang-rt-14-dev libfuzzer-14-dev pkg-config git xz-utils
  # foundation
  libprotobuf-dev protobuf-compiler libonnx-dev libabsl-dev libcli11-dev nlohmann-json3-dev
  libyaml-cpp-dev libsqlite3-dev sqlite3
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev python3-numpy
  # tuning engine and baselines
  libxgboost-dev xgboost libdnnl-dev ocl-icd-opencl-dev
  # candidate confinement (seccomp filters of the measure workers)
  libseccomp-dev
  # service
  libgrpc++-dev protobuf-compiler-grpc
  # PostgreSQL as the fleet's store: libpq (the client of the PostgreSQL record and state stores)
  # and the server binaries (initdb, postgres) the tests start a throw-away cluster with
  libpq-dev postgresql
  # agents under Slurm (loom fleet slurm, scripts/slurm/): its test starts munged, slurmctld and
  # slurmd in a temporary folder (loom_slurm_fleet_test; skipped without them)
  slurm-wlm munge
  # the service's web view (loom serve --http: cpp-httplib with OpenSSL); its end-to-end test
  # drives headless Chromium from Python (loom_web_test; that part skipped without them)
  libcpp-httplib-dev chromium-driver python3-selenium
  # the chart test checks trace.json against a JSON Schema of the Chrome trace format
  python3-jsonschema
  # the Python package (python/) and its tests: the binding, a virtual environment, pytest,
  # pandas (record DataFrames), the notebook's plotting and headless execution
  pybind11-dev python3-dev python3-venv python3-pip python3-pytest python3-pandas
  python3-matplotlib python3-nbclient python3-nbformat python3-ipykernel
  # charts rendered to PNG by headless Chromium (loom_chart_screenshots; skipped without it)
  chromium
  # shell completion: `loom completion zsh` is tested in a real zsh (CliFlagsTest.Zsh*)
  zsh
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
