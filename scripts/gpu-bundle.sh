#!/usr/bin/env bash
# Packs a built `loom` binary and the shared libraries it needs into one folder that runs on a
# GPU machine whose image has the NVIDIA driver and the CUDA 13 toolkit but none of Loom's
# Debian -dev dependencies (abseil, protobuf, gRPC, XGBoost, SQLite, ONNX, yaml-cpp, ...).
#
#   scripts/gpu-bundle.sh [BUILD_DIR] [OUT_DIR]     (defaults: build/default, build/gpu-bundle)
#
# OUT_DIR gets bin/loom (stripped), lib/ (every library `ldd` resolves, stripped), `run`, a
# wrapper that puts lib/ and the machine's CUDA libraries on LD_LIBRARY_PATH and execs loom
# (`OUT_DIR/run tune-task --target cuda ...`), and models/: the archives of ../shared/transformers
# (vit_tiny, bert_small), which scripts/gpu-check.sh and experiments/thesis-gpu.yaml use (the
# device machine gets the checkout, not ../shared; the CNNs come from loom's zoo). Left out, because the GPU machine has its own and
# they must match its kernel, driver or compiler: glibc (libc, libm, libdl, libpthread, librt,
# ld-linux), libstdc++ and libgcc_s (the target's are newer), the driver (libcuda, libnvidia-*)
# and the CUDA toolkit (libnvrtc*, libcudart; NVRTC alone is over 100 MB).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${1:-build/default}
out_dir=${2:-build/gpu-bundle}
loom="$build_dir/loom/cli/loom"
if [[ ! -x "$loom" ]]; then
  echo "gpu-bundle.sh: error: $loom not found; build it first (cmake --build $build_dir --target loom)" >&2
  exit 1
fi

# Libraries the target machine provides itself (matched against the file name).
system_lib='^(linux-vdso|ld-linux|libc|libm|libdl|libpthread|librt|libresolv|libutil|libstdc\+\+|libgcc_s|libcuda|libnvidia-|libnvrtc|libcudart)([.-]|$)'

if ! ldd "$loom" | grep -q 'libnvrtc'; then
  echo "gpu-bundle.sh: warning: $loom does not link NVRTC (built without the CUDA toolkit);" \
    "its --target cuda cannot build kernels" >&2
fi

rm -rf "$out_dir"
mkdir -p "$out_dir/bin" "$out_dir/lib"
cp "$loom" "$out_dir/bin/loom"
strip --strip-unneeded "$out_dir/bin/loom"

missing=()
while read -r name arrow path _; do
  [[ "$arrow" == "=>" ]] || continue
  if [[ "$path" == "not" ]]; then
    missing+=("$name")
    continue
  fi
  [[ "$name" =~ $system_lib ]] && continue
  cp -L "$path" "$out_dir/lib/$name"
  chmod u+w "$out_dir/lib/$name"
  strip --strip-unneeded "$out_dir/lib/$name"
done < <(ldd "$loom")
if ((${#missing[@]} > 0)); then
  echo "gpu-bundle.sh: error: ldd cannot resolve ${missing[*]} for $loom" >&2
  exit 1
fi

mkdir -p "$out_dir/models"
shared=${LOOM_SHARED_DIR:-../shared}
for name in vit_tiny bert_small; do
  if [[ ! -s "$shared/transformers/$name.tar.xz" ]]; then
    echo "gpu-bundle.sh: error: $shared/transformers/$name.tar.xz not found (set LOOM_SHARED_DIR)" >&2
    exit 1
  fi
  cp "$shared/transformers/$name.tar.xz" "$out_dir/models/"
done

cat >"$out_dir/run" <<'EOF'
#!/usr/bin/env bash
# Runs the bundled loom with its libraries, and the machine's NVRTC (libnvrtc.so.13): from
# $CUDA_HOME or /usr/local/cuda, the linker cache, or a pip wheel (nvidia-cuda-nvrtc lays out
# nvidia/cuda_nvrtc/lib for CUDA 12 and nvidia/cu13/lib for CUDA 13), whichever is found first.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
nvrtc_dir=
for d in "${CUDA_HOME:-/usr/local/cuda}/lib64" /usr/local/cuda/lib64 /usr/local/cuda/lib \
    /usr/local/cuda/targets/x86_64-linux/lib; do
  if [[ -e "$d/libnvrtc.so.13" ]]; then
    nvrtc_dir=$d
    break
  fi
done
if [[ -z "$nvrtc_dir" ]] && ! ldconfig -p 2>/dev/null | grep -q 'libnvrtc\.so\.13 '; then
  if command -v python3 >/dev/null; then
    roots=$(python3 -c 'import nvidia; print(" ".join(nvidia.__path__))' 2>/dev/null || true)
    for r in $roots; do
      found=$(find "$r" -name 'libnvrtc.so.13*' -print -quit 2>/dev/null || true)
      if [[ -n "$found" ]]; then
        nvrtc_dir=$(dirname "$found")
        break
      fi
    done
  fi
  [[ -n "$nvrtc_dir" ]] || echo "loom bundle: warning: libnvrtc.so.13 not found; set CUDA_HOME" >&2
fi
export LD_LIBRARY_PATH="$here/lib${nvrtc_dir:+:$nvrtc_dir}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$here/bin/loom" "$@"
EOF
chmod +x "$out_dir/run"

# Every library loom needs, other than the target's own, must now come from the bundle.
while read -r name arrow path _; do
  [[ "$arrow" == "=>" ]] || continue
  [[ "$name" =~ $system_lib ]] && continue
  if [[ "$path" != "$(cd "$out_dir/lib" && pwd)/$name" ]]; then
    echo "gpu-bundle.sh: error: $name resolves to $path, not the bundle" >&2
    exit 1
  fi
done < <(LD_LIBRARY_PATH="$(cd "$out_dir/lib" && pwd)" ldd "$out_dir/bin/loom")

echo "bundle: $out_dir ($(du -sh "$out_dir" | cut -f1); $(find "$out_dir/lib" -type f | wc -l) libraries)"
