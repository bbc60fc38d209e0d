#!/usr/bin/env bash
# Peer comparison for issue 4: `loom bench` (untuned, and tuned with --db) against ONNX Runtime on
# the reference models, same thread count and same cores, one model/thread pair after the other in
# the same run. ONNX Runtime comes from PyPI into a venv under build/ (created once).
#
# usage: bench/ort_compare.sh [--db FILE] [--markdown FILE] [--loom BIN] [--models "a b"]
#                             [--threads "1 2"] [--min-time S] [--min-runs N]
#   --db FILE        records database: adds the tuned Loom column
#   --markdown FILE  also writes the table as Markdown to FILE
#   --loom BIN       loom binary (default: build/ort/loom/cli/loom, else build/default/...)
# ORT_PIP_SPEC (env) picks the wheel on first install, e.g. ORT_PIP_SPEC=onnxruntime==1.30.0.
# Cores: 1 thread runs under `taskset -c 0`, 2 threads under `taskset -c 0,1` (N threads: 0..N-1).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

db=""
markdown=""
loom=""
models="resnet18 mobilenet_v2 squeezenet1_1"
threads="1 2"
min_time=1
min_runs=10
while [[ $# -gt 0 ]]; do
  case "$1" in
    --db) db="$2"; shift 2 ;;
    --markdown) markdown="$2"; shift 2 ;;
    --loom) loom="$2"; shift 2 ;;
    --models) models="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --min-time) min_time="$2"; shift 2 ;;
    --min-runs) min_runs="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

if [[ -z "$loom" ]]; then
  for cand in build/ort/loom/cli/loom build/default/loom/cli/loom; do
    if [[ -x "$cand" ]]; then loom="$cand"; break; fi
  done
fi
if [[ -z "$loom" || ! -x "$loom" ]]; then
  echo "no loom binary found; build it (cmake --build build/default --target loom) or pass --loom" >&2
  exit 1
fi
if [[ -n "$db" && ! -f "$db" ]]; then
  echo "records database not found: $db" >&2
  exit 1
fi

shared="${LOOM_SHARED_DIR:-$root/../shared}"
venv="build/ort-venv"
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import onnxruntime, numpy' 2>/dev/null; then
  echo "== creating $venv with onnxruntime and numpy (PyPI)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "${ORT_PIP_SPEC:-onnxruntime}" numpy
fi
py="$venv/bin/python"

mkdir -p build/models
for m in $models; do
  if [[ ! -f "build/models/$m.onnx" || ! -f "build/models/$m.input.npy" ]]; then
    tar -xJf "$shared/models/$m.tar.xz" -C build/models
  fi
done

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "load before: $(uptime | sed 's/.*load average: //')"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) cores"
  echo "onnxruntime: $("$py" -c 'import onnxruntime; print(onnxruntime.__version__)')"
  echo "loom: $loom ($(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
} > "$out/header"


for m in $models; do
  for n in $threads; do
    cores="$(seq -s, 0 $((n - 1)))"
    echo "== $m, $n thread(s), cores $cores" >&2
    db_args=()
    [[ -n "$db" ]] && db_args=(--db "$db")
    taskset -c "$cores" "$loom" bench "build/models/$m.onnx" --threads "$n" --json \
      --min-time "$min_time" --min-runs "$min_runs" "${db_args[@]}" > "$out/$m.$n.loom.json"
    taskset -c "$cores" "$py" bench/ort_time.py "build/models/$m.onnx" \
      --input "build/models/$m.input.npy" --threads "$n" \
      --min-time "$min_time" --min-runs "$min_runs" > "$out/$m.$n.ort.json"
  done
done
echo "load after: $(uptime | sed 's/.*load average: //')" >> "$out/header"

"$py" - "$out" "$markdown" "$models" "$threads" <<'EOF'
import json, os, sys
out, markdown, models, threads = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split()
rows = []
tuned_any = False
for m in models:
    for n in threads:
        loom = json.load(open(os.path.join(out, f"{m}.{n}.loom.json")))
        ort = json.load(open(os.path.join(out, f"{m}.{n}.ort.json")))
        v = {r["variant"]: r for r in loom["results"]}
        u = v["untuned"]["median_ms"]
        t = v["tuned"]["median_ms"] if "tuned" in v else None
        tk = f'{v["tuned"]["tuned_kernels"]}/{v["tuned"]["kernels"]}' if "tuned" in v else ""
        tuned_any |= t is not None
        o = ort["median_ms"]
        rows.append((m, n, u, t, tk, o, v["untuned"]["p90_ms"], ort["p90_ms"]))

def fmt(x, spec):
    return "-" if x is None else format(x, spec)

head = ["model", "threads", "Loom untuned ms", "Loom tuned ms", "tuned kernels", "ORT ms",
        "untuned/ORT", "tuned/ORT", "p90 untuned", "p90 ORT"]
if not tuned_any:
    head = [h for h in head if h not in ("Loom tuned ms", "tuned kernels", "tuned/ORT")]
table = []
for m, n, u, t, tk, o, up90, op90 in rows:
    cells = {"model": m, "threads": str(n), "Loom untuned ms": fmt(u, ".2f"),
             "Loom tuned ms": fmt(t, ".2f"), "tuned kernels": tk or "-", "ORT ms": fmt(o, ".2f"),
             "untuned/ORT": fmt(u / o, ".2f") + "x",
             "tuned/ORT": "-" if t is None else fmt(t / o, ".2f") + "x",
             "p90 untuned": fmt(up90, ".2f"), "p90 ORT": fmt(op90, ".2f")}
    table.append([cells[h] for h in head])

header = open(os.path.join(out, "header")).read().strip()
print(header)
print("latencies are medians (ms); ratios Loom/ORT (below 1 = Loom faster)")
widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(head)]
print("  ".join(h.rjust(w) for h, w in zip(head, widths)))
for r in table:
    print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
if markdown:
    with open(markdown, "w") as f:
        for line in header.splitlines():
            f.write(f"- {line}\n")
        f.write("\n| " + " | ".join(head) + " |\n")
        f.write("|" + "|".join("---" if i < 2 else "---:" for i in range(len(head))) + "|\n")
        for r in table:
            f.write("| " + " | ".join(r) + " |\n")
    print(f"markdown written to {markdown}", file=sys.stderr)
EOF
