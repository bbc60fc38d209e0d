#!/usr/bin/env bash
# The GPU check of issue 23: every GPU figure of its "Done when" in one device call of at most
# 10 minutes (one H100 or H200, 16 cores, no network), written under $OUT:
#  1. tunes ResNet-18, MobileNetV2, vit_tiny and bert_small together (`loom tune MODEL... --target
#     cuda`, one concurrent job each), for MODEL_TRIALS trials per task within MODEL_TUNE_S;
#  2. writes every record (records.jsonl) and the CUDA tuning prior of the card
#     (`loom records prior`, cuda-sm_XY.json: copy it to data/priors/ to ship it);
#  3. benches the four models untuned and tuned (`loom bench --target cuda --check`, outputs
#     checked against the reference executor) next to PyTorch eager and CUDA-graph latency
#     (bench/torch_model_latency.py: torchvision for the CNNs and vit_tiny, transformers'
#     BertModel for bert_small, the configs of ../shared/transformers/README.md);
#  4. times cuDNN on ResNet-18's 11 distinct convolutions (bench/cudnn_conv.py) against the best
#     of this check's records of the same tasks: per-layer table and geomean;
#  5. runs the GPU thesis experiment (`loom experiment experiments/thesis-gpu.yaml`: 4 jobs,
#     dedicated, uncontrolled, interleaved, predictive) within EXPERIMENT_S: makespan, GPU
#     utilization, distortion, final latency;
#  6. compiles a GPU artifact (`loom compile zoo:resnet18 --target cuda -o DIR`), runs it (`loom
#     run DIR`) and compares its output with the reference executor's.
# Everything lands in $OUT in at most 8 files (the device call's limit): summary.md (every table),
# gpu-check.log, records.jsonl, cuda-sm_XY.json, experiment.tar.gz (the experiment's folder:
# results.csv/json, report.html, Gantt charts), details.json (the raw figures of steps 3-4).
#
#   cmake --build build/default --target loom && scripts/gpu-bundle.sh   # here: build/gpu-bundle
#   OUT=$OUT scripts/gpu-check.sh                                       # there (carry build/gpu-bundle)
#
# A machine without an NVIDIA GPU stops at the start with one line (TARGET=cpu runs every step on
# this CPU instead, with tiny budgets, to test the script: DRY=1 sets those). A second call can
# resume the tuning from the first's records: RECORDS=<its records.jsonl> and a larger MODEL_TRIALS
# (the jobs keep their ids, so `loom tune` continues where they stopped).
#
# Settings (environment):
#   OUT            output folder (default build/gpu-check)
#   BUNDLE         default build/gpu-bundle (its `run` starts loom, its models/ holds the shared
#                  archives); LOOM: a loom binary to use instead
#   TOTAL_S        the whole check's deadline in seconds, default 560; each step's timeout is cut
#                  to what is left, so the call ends before its 10 minutes
#   MODEL_TRIALS   trials per task in step 1, default 32; MODEL_TUNE_S its budget, default 200
#   BATCH          candidates per round, default 16; MIN_REPEAT_MS default 40
#   RECORDS        record files (JSON lines) imported before step 1
#   MODELS         the models of steps 1 and 3 (default: resnet18 mobilenet_v2 vit_tiny bert_small)
#   EXPERIMENT_S   step 5's budget, default 190 (0 skips it); SPEC: its spec (thesis-gpu.yaml)
#   TARGET         cuda (default) or cpu (tests the script here)
#   DRY            1: TARGET=cpu, 2 trials, resnet18 and bert_small, experiments/smoke.yaml for
#                  step 5 (about 3 minutes here)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then
  sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit 0
fi
if (($# > 0)); then
  echo "gpu-check.sh: error: no arguments expected (settings are environment variables; see --help)" >&2
  exit 2
fi

dry=${DRY:-0}
target=${TARGET:-cuda}
((dry)) && target=cpu
if [[ "$target" != cuda && "$target" != cpu ]]; then
  echo "gpu-check.sh: error: TARGET is cuda or cpu, not '$target'" >&2
  exit 2
fi
if [[ "$target" == cuda ]] && ! nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
  echo "gpu-check.sh: error: no NVIDIA GPU on this machine (nvidia-smi lists none); run it in a" \
    "device call, or DRY=1 to test the script on this CPU" >&2
  exit 1
fi

out=${OUT:-build/gpu-check}
mkdir -p "$out" || exit 1
out=$(cd "$out" && pwd)
exec > >(tee "$out/gpu-check.log") 2>&1

bundle=${BUNDLE:-build/gpu-bundle}
loom=${LOOM:-$bundle/run}
trials=${MODEL_TRIALS:-32}
tune_s=${MODEL_TUNE_S:-200}
batch=${BATCH:-16}
min_repeat_ms=${MIN_REPEAT_MS:-40}
experiment_s=${EXPERIMENT_S:-190}
spec=${SPEC:-experiments/thesis-gpu.yaml}
read -r -a models <<<"${MODELS:-resnet18 mobilenet_v2 vit_tiny bert_small}"
if ((dry)); then
  trials=2 batch=2 min_repeat_ms=5 tune_s=${MODEL_TUNE_S:-150} experiment_s=${EXPERIMENT_S:-150}
  spec=${SPEC:-experiments/smoke.yaml}  # thesis-gpu.yaml needs a GPU
  read -r -a models <<<"${MODELS:-resnet18 bert_small}"
fi
started=$(date +%s)
deadline=$((started + ${TOTAL_S:-560}))
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
summary="$out/summary.md"
details="$work/details.jsonl"
: >"$details"

# Seconds a step may take: its budget, cut to what is left before the deadline (at least 5).
left() {
  local l=$((deadline - $(date +%s)))
  ((l > $1)) && l=$1
  ((l < 5)) && l=5
  echo "$l"
}
note() { echo "== $* ($(($(date +%s) - started)) s)"; }

if ! "$loom" version; then
  echo "gpu-check.sh: error: cannot run $loom (build loom and run scripts/gpu-bundle.sh first)" >&2
  exit 1
fi
card=cpu
[[ "$target" == cuda ]] && card=$(nvidia-smi --query-gpu=name,driver_version,memory.total \
  --format=csv,noheader | head -n 1)
{
  echo "# GPU check ($(date -u '+%Y-%m-%d %H:%M UTC'))"
  echo
  echo "Device: $card. Loom: $("$loom" version 2>/dev/null | head -n 1). Target: $target."
  echo "Settings: MODEL_TRIALS=$trials MODEL_TUNE_S=$tune_s BATCH=$batch MIN_REPEAT_MS=$min_repeat_ms" \
    "EXPERIMENT_S=$experiment_s TOTAL_S=${TOTAL_S:-560} models: ${models[*]}."
} >"$summary"

# The transformers are ONNX files of ../shared/transformers (in the bundle's models/ on the device
# machine); the spec and step 1 read them from build/models/.
mkdir -p build/models
for name in "${models[@]}" vit_tiny bert_small; do
  [[ "$name" == vit_tiny || "$name" == bert_small ]] || continue
  [[ -s build/models/$name.onnx ]] && continue
  for archive in "$bundle/models/$name.tar.xz" "../shared/transformers/$name.tar.xz"; do
    if [[ -s "$archive" ]]; then
      tar -xJf "$archive" -C build/models && break
    fi
  done
  [[ -s build/models/$name.onnx ]] || echo "gpu-check.sh: warning: no $name.tar.xz in $bundle/models or ../shared/transformers" >&2
done
model_arg() {  # NAME -> what loom takes
  case "$1" in
    vit_tiny | bert_small) echo "build/models/$1.onnx" ;;
    *) echo "zoo:$1" ;;
  esac
}

db="$work/all.db"
# shellcheck disable=SC2086  # RECORDS is a list of files
for f in ${RECORDS:-}; do
  "$loom" records import "$f" --db "$db" >/dev/null || echo "gpu-check.sh: cannot import $f" >&2
done

# 1. Tune the models together, one concurrent job each.
margs=()
for m in "${models[@]}"; do margs+=("$(model_arg "$m")"); done
s=$(left "$tune_s")
note "1. loom tune ${margs[*]} --target $target --trials $trials (at most $s s)"
timeout -k 5 "$s" "$loom" tune "${margs[@]}" --target "$target" --trials "$trials" \
  --batch-size "$batch" --min-repeat-ms "$min_repeat_ms" --db "$db" --json \
  >"$work/tune.json" 2>"$work/tune.err"
rc=$?
echo "exit $rc$( ((rc == 124)) && echo ' (stopped at its budget; every finished round is kept)')"
tail -n 3 "$work/tune.err"

# 2. Records and the prior of the card's architecture.
note "2. records and the tuning prior"
"$loom" records export --db "$db" -o "$out/records.jsonl" >/dev/null 2>&1 || : >"$out/records.jsonl"
key=$(python3 - "$out/records.jsonl" "$target" <<'PY'
import collections, json, sys
keys = collections.Counter(json.loads(l)["target_key"] for l in open(sys.argv[1]) if l.strip())
keys = [k for k, _ in keys.most_common() if k.split(":")[0] == sys.argv[2]]
print(keys[0] if keys else "")
PY
)
prior=
if [[ -n "$key" ]]; then
  arch=$(cut -d: -f2 <<<"$key")
  prior="$out/$target-$arch.json"
  "$loom" records prior --db "$db" --target "$key" -o "$prior" || prior=
fi
python3 - "$out/records.jsonl" "$summary" "${prior:-}" <<'PY'
import collections, json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ok = sum(r["error"] == "none" for r in recs)
tasks = collections.Counter(r["task_key"] for r in recs)
line = (f"Records: {len(recs)} ({ok} valid) of {len(tasks)} tasks in records.jsonl; prior: "
        f"{sys.argv[3].rsplit('/', 1)[-1] if sys.argv[3] else 'none (no records)'}")
print(line)
with open(sys.argv[2], "a") as f:
    f.write(f"\n{line} (copy it to data/priors/ to ship it).\n")
PY

# 3. The compiled models, untuned and tuned, checked against the reference, and PyTorch.
note "3. loom bench --target $target, and PyTorch"
dbarg=()
[[ -s "$db" ]] && dbarg=(--db "$db")  # bench and compile refuse a --db that does not exist
for m in "${models[@]}"; do
  s=$(left 90)
  if ! timeout -k 5 "$s" "$loom" bench "$(model_arg "$m")" --target "$target" "${dbarg[@]}" --check \
    --json --build-threads "$(nproc)" >"$work/bench_$m.json" 2>"$work/bench_$m.err"; then
    echo "loom bench $m failed: $(tail -n 1 "$work/bench_$m.err")"
  fi
done
torch_args=()
for m in "${models[@]}"; do torch_args+=(--model "$m"); done
: >"$work/torch.jsonl"
if [[ "$target" == cuda ]]; then
  PYTHONUNBUFFERED=1 timeout -k 5 "$(left 120)" python3 bench/torch_model_latency.py \
    "${torch_args[@]}" >"$work/torch.jsonl" || echo "gpu-check.sh: PyTorch timing failed" >&2
fi
python3 - "$work" "$summary" "$details" "$target" "${models[@]}" <<'PY'
import json, os, sys
work, summary, details, target, models = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
torch = {}
for line in open(os.path.join(work, "torch.jsonl")):
    if line.strip():
        r = json.loads(line)
        torch[r["model"]] = r
rows, raw = [], {"torch": torch, "bench": {}}
fmt = lambda v: f"{v:.3f}" if v else "-"
for m in models:
    try:
        res = {r["variant"]: r for r in json.load(open(os.path.join(work, f"bench_{m}.json")))["results"]}
    except Exception:
        err = open(os.path.join(work, f"bench_{m}.err")).read().strip().splitlines()
        res = {"error": err[-1] if err else "no output"}
    raw["bench"][m] = res
    t = torch.get(m, {})
    u, tu = res.get("untuned", {}), res.get("tuned", {})
    graph = t.get("graph_ms")
    ratio = f"{tu['median_ms'] / graph:.2f}" if tu and graph else "-"
    rows.append([m, fmt(u.get("median_ms")), fmt(tu.get("median_ms")),
                 f"{tu.get('tuned_kernels', '-')} of {tu.get('kernels', '-')}" if tu else "-",
                 f"{tu.get('max_rel_err', float('nan')):.1e}" if tu else res.get("error", "-")[:80],
                 fmt(t.get("eager_ms")), fmt(graph), ratio])
head = ["model", "Loom untuned ms", "Loom tuned ms", "tuned kernels", "check max rel err",
        "PyTorch eager ms", "PyTorch CUDA graph ms", "Loom tuned / PyTorch graph"]
with open(summary, "a") as f:
    f.write(f"\n## Compiled models, batch 1, fp32\n\n`loom bench MODEL --target {target} --db <this "
            "check's records> --check`; PyTorch: bench/torch_model_latency.py (cudnn.benchmark, TF32 off).\n\n")
    f.write("| " + " | ".join(head) + " |\n|" + "---|" * len(head) + "\n")
    for r in rows:
        f.write("| " + " | ".join(r) + " |\n")
        print("  ".join(r))
with open(details, "a") as f:
    f.write(json.dumps({"models": raw}) + "\n")
PY

# 4. ResNet-18's convolutions: this check's best record of each against cuDNN.
note "4. ResNet-18 convolutions vs cuDNN"
mapfile -t layers < <("$loom" tasks zoo:resnet18 2>/dev/null | python3 -c '
import re, sys
for line in sys.stdin:
    m = re.search(r"conv2d:f32:n(\d+)_c(\d+)_h(\d+)_w(\d+)_k(\d+)_r(\d+)_s(\d+)_st(\d+)x\d+_p(\d+)x", line)
    if m and "_g1" in line:
        print(",".join(m.groups()), line.split()[-1])')
: >"$work/cudnn.jsonl"
if ((${#layers[@]} > 0)) && [[ "$target" == cuda ]]; then
  cudnn_args=()
  for l in "${layers[@]}"; do cudnn_args+=(--conv2d "${l%% *}"); done
  PYTHONUNBUFFERED=1 timeout -k 5 "$(left 90)" python3 bench/cudnn_conv.py "${cudnn_args[@]}" \
    >"$work/cudnn.jsonl" || echo "gpu-check.sh: cuDNN timing failed; its column stays empty" >&2
fi
printf '%s\n' "${layers[@]}" >"$work/layers.txt"
python3 - "$work" "$out/records.jsonl" "$summary" "$details" <<'PY'
import json, math, os, sys
work, records, summary, details = sys.argv[1:5]
cudnn = {}
for line in open(os.path.join(work, "cudnn.jsonl")):
    if line.strip():
        r = json.loads(line)
        cudnn[r["layer"]] = r
best, trials = {}, {}
for line in open(records):
    if not line.strip():
        continue
    r = json.loads(line)
    trials[r["task_key"]] = trials.get(r["task_key"], 0) + 1
    if r["error"] == "none" and r.get("median_cost"):
        g = r["flops"] / r["median_cost"] / 1e9
        best[r["task_key"]] = max(best.get(r["task_key"], 0), g)
rows = []
for line in open(os.path.join(work, "layers.txt")):
    if not line.strip():
        continue
    layer, key = line.split()
    loom, ref = best.get(key), cudnn.get(layer, {}).get("gflops")
    rows.append([layer, f"{loom:.0f}" if loom else "-", f"{ref:.0f}" if ref else "-",
                 f"{loom / ref:.2f}" if loom and ref else "-", str(trials.get(key, 0))])
ratios = [float(r[3]) for r in rows if r[3] != "-"]
geo = math.exp(sum(map(math.log, ratios)) / len(ratios)) if ratios else None
line = (f"Loom/cuDNN geomean over {len(ratios)} of {len(rows)} layers: {geo:.2f}" if geo
        else "Loom/cuDNN geomean: no layer has both figures")
head = ["layer N,C,H,W,K,R,S,stride,pad", "Loom GFLOPS", "cuDNN GFLOPS", "Loom/cuDNN", "trials"]
with open(summary, "a") as f:
    f.write("\n## ResNet-18 convolutions vs cuDNN, batch 1, fp32\n\nLoom: the best record of step "
            "1's tuning of each task; cuDNN: bench/cudnn_conv.py (the faster of eager and CUDA "
            "graph).\n\n")
    f.write("| " + " | ".join(head) + " |\n|" + "---|" * len(head) + "\n")
    for r in rows:
        f.write("| " + " | ".join(r) + " |\n")
    f.write(f"\n{line}\n")
print(line)
with open(details, "a") as f:
    f.write(json.dumps({"cudnn": cudnn, "loom_best_gflops": best}) + "\n")
PY

# 5. The GPU thesis experiment.
if ((experiment_s > 0)); then
  s=$(left "$experiment_s")
  note "5. loom experiment $spec (at most $s s)"
  rm -rf "$work/experiment"
  timeout -k 5 "$s" "$loom" experiment "$spec" -o "$work/experiment" --progress-seconds 30 \
    >"$work/experiment.out" 2>"$work/experiment.err"
  rc=$?
  echo "exit $rc"
  tail -n 5 "$work/experiment.err"
  cat "$work/experiment.out"
  {
    echo
    echo "## The GPU thesis experiment ($spec, exit $rc)"
    echo
    echo '```'
    cat "$work/experiment.out"
    ((rc != 0)) && tail -n 3 "$work/experiment.err"
    echo '```'
  } >>"$summary"
  [[ -d "$work/experiment" ]] && tar -czf "$out/experiment.tar.gz" -C "$work" experiment
fi

# 6. A GPU artifact: compile, run, compare with the reference executor.
if [[ "$target" == cuda ]]; then
  note "6. GPU artifact: loom compile zoo:resnet18 --target cuda, loom run DIR"
  result="GPU artifact: failed"
  if timeout -k 5 "$(left 60)" "$loom" compile zoo:resnet18 --target cuda "${dbarg[@]}" \
    --build-threads "$(nproc)" -o "$work/artifact" 2>"$work/artifact.err" &&
    timeout -k 5 "$(left 30)" "$loom" run "$work/artifact" --output "$work/artifact_out.npy" &&
    timeout -k 5 "$(left 30)" "$loom" run zoo:resnet18 --output "$work/reference_out.npy" >/dev/null; then
    result=$(python3 - "$work/artifact_out.npy" "$work/reference_out.npy" <<'PY'
import sys
import numpy as np
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
err, mag = float(np.abs(a - b).max()), float(np.abs(b).max())
print(f"GPU artifact (loom run DIR) vs reference executor: max|a-b| {err:.3g}, max|ref| {mag:.3g}, "
      f"{'OK' if err <= 1e-3 * mag else 'MISMATCH'}")
PY
    )
  else
    tail -n 3 "$work/artifact.err"
  fi
  echo "$result"
  printf '\n%s\n' "$result" >>"$summary"
fi

python3 -c 'import json, sys; print(json.dumps([json.loads(l) for l in open(sys.argv[1]) if l.strip()]))' \
  "$details" >"$out/details.json"
note "done"
printf '\nThe check took %s s.\n' "$(($(date +%s) - started))" >>"$summary"
echo "summary: $summary"
