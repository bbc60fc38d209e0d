#!/usr/bin/env bash
# The GPU check, one prepared run on a machine with an NVIDIA GPU (about 9 minutes):
#  1. tunes the 11 distinct convolutions of ResNet-18 (batch 1, fp32) with
#     `loom tune-task --target cuda`, then briefly two depthwise convs and a dense layer;
#  2. times cuDNN on the same convolutions (bench/cudnn_conv.py: PyTorch, cudnn.benchmark on,
#     TF32 off) and prints per layer Loom GFLOPS, cuDNN GFLOPS, their ratio, the trials, the
#     tuning wall time, the card and the geomean ratio;
#  3. compiles ResNet-18 and MobileNetV2 for the GPU (`loom bench --target cuda --check`), untuned
#     and with step 1's records (and RECORDS), next to PyTorch's latency
#     (bench/torch_model_latency.py); with MODEL_TRIALS, tunes the models' tasks and benches again;
#  4. writes a GPU artifact (`loom compile zoo:resnet18 --target cuda -o DIR`), runs it (`loom run
#     DIR`) and compares its output with the reference executor's;
#  5. writes the CUDA tuning prior of the card's architecture from every record of the check
#     (`loom records prior`, $OUT/cuda-sm_XY.json; ship it as data/priors/cuda-sm_XY.json).
# Also writes the tables as markdown.
#
#   scripts/gpu-bundle.sh build/default build/gpu-bundle     # here, after building loom
#   scripts/gpu-check.sh                                     # there (carry build/gpu-bundle)
#
# Settings (environment):
#   BUNDLE         default build/gpu-bundle; its `run` starts loom
#   LOOM           a loom binary to use instead of the bundle
#   TRIALS         per layer, default 200
#   BATCH          candidates per round, default 16
#   MIN_REPEAT_MS  default 40
#   TUNE_BUDGET    seconds for all of step 1's convolutions, default 360 (the whole check then fits
#                  a 10-minute device call); each layer may use what is left divided by the layers
#                  left, so a slow layer cannot starve the others, and a layer stopped at its share
#                  keeps the trials its database holds
#   LAYERS         tune only the first N layers (0: skip steps 1 and 2)
#   OTHER_TRIALS   trials for each depthwise conv and the dense layer, default 16; 0 skips them
#   MODELS         0 skips step 3
#   RECORDS        record files (JSON lines, space-separated) that step 3 imports besides this
#                  check's, e.g. an earlier check's gpu-check-records.jsonl on the same card
#   MODEL_TRIALS   when set, step 3 then tunes each model's tasks (`loom tune zoo:NAME`) to this
#                  many trials, within MODEL_TUNE_S seconds per model (default 120), and benches it
#                  again; TUNE_MODELS names the models to tune (default both)
#   MD             markdown output; default $OUT/gpu-check.md when OUT is set, else
#                  build/gpu-check.md
#   TARGET         cpu runs the whole script on a host without a GPU, to test the script
# When OUT is set, every record (JSON lines) and the whole log also land there.
#
# Fail fast: when the first layer measures no valid candidate, the check stops there and prints its
# errors, so that a broken setup costs seconds of GPU time, not the whole budget.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

[[ -n "${OUT:-}" ]] && exec > >(tee "$OUT/gpu-check.log") 2>&1
loom=${LOOM:-${BUNDLE:-build/gpu-bundle}/run}
trials=${TRIALS:-200}
batch=${BATCH:-16}
min_repeat_ms=${MIN_REPEAT_MS:-40}
tune_budget=${TUNE_BUDGET:-360}
target=${TARGET:-cuda}
if [[ -n "${OUT:-}" ]]; then md=${MD:-$OUT/gpu-check.md}; else md=${MD:-build/gpu-check.md}; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# N,C,H,W,K,R,S,STRIDE,PAD: conv1, then layer1..layer4 (3x3 convs and 1x1 stride-2 shortcuts).
layers=(
  "1,3,224,224,64,7,7,2,3"
  "1,64,56,56,64,3,3,1,1"
  "1,64,56,56,128,3,3,2,1"
  "1,64,56,56,128,1,1,2,0"
  "1,128,28,28,128,3,3,1,1"
  "1,128,28,28,256,3,3,2,1"
  "1,128,28,28,256,1,1,2,0"
  "1,256,14,14,256,3,3,1,1"
  "1,256,14,14,512,3,3,2,1"
  "1,256,14,14,512,1,1,2,0"
  "1,512,7,7,512,3,3,1,1"
)
layers=("${layers[@]:0:${LAYERS:-${#layers[@]}}}")

if ! "$loom" version; then
  echo "gpu-check.sh: error: cannot run $loom (build it and run scripts/gpu-bundle.sh first)" >&2
  exit 1
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
started=$(date +%s)

((${#layers[@]} > 0)) && echo "== Loom: tune-task --target $target, $trials trials per layer, $tune_budget s in all"
deadline=$(($(date +%s) + tune_budget))
for i in "${!layers[@]}"; do
  l=${layers[$i]}
  left=$((${#layers[@]} - i))
  share=$(((deadline - $(date +%s)) / left))
  ((share < 20)) && share=20
  t0=$(date +%s.%N)
  timeout -k 5 "$share" "$loom" tune-task --target "$target" --conv2d "$l" --trials "$trials" \
    --batch-size "$batch" --min-repeat-ms "$min_repeat_ms" --no-transfer --json \
    --db "$work/loom_$i.db" >"$work/loom_$i.json" 2>"$work/loom_$i.err"
  rc=$?
  wall=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  echo "{\"layer\": \"$l\", \"rc\": $rc, \"wall_s\": $wall, \"share_s\": $share}" >"$work/wall_$i.json"
  # Every record, also of a layer stopped at its share (the database commits each round).
  "$loom" records export --db "$work/loom_$i.db" -o "$work/records_$i.jsonl" >/dev/null 2>&1 ||
    : >"$work/records_$i.jsonl"
  echo "layer $((i + 1))/${#layers[@]} $l: exit $rc, $wall s (share $share s)"
  if ((rc != 0)); then tail -n 3 "$work/loom_$i.err" >&2; fi
  if ((i == 0)); then
    job=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["job_id"])' \
      "$work/loom_0.json" 2>/dev/null || true)
    [[ -n "$job" ]] && "$loom" records stages --db "$work/loom_0.db" --job "$job" || true
    if ! grep -q '"error":"none"' "$work/records_0.jsonl"; then
      echo "gpu-check.sh: error: the first layer measured no valid candidate; stopping here" >&2
      cat "$work/loom_0.err" >&2
      python3 -c 'import collections,json,sys
errs = collections.Counter((r["error"], r["error_msg"][:300]) for r in map(json.loads, open(sys.argv[1])))
for (kind, msg), n in errs.most_common(8): print(f"  {n} x {kind}: {msg}", file=sys.stderr)' \
        "$work/records_0.jsonl"
      [[ -n "${OUT:-}" ]] && cp "$work/loom_0.err" "$work/records_0.jsonl" "$OUT/" 2>/dev/null
      exit 2
    fi
  fi
done

# The other CUDA templates, briefly: that they build, launch and pass the reference check on the
# card (figures without a peer; OTHER_TRIALS=0 skips them).
others=(
  "--conv2d 1,32,112,112,32,3,3,1,1 --groups 32"
  "--conv2d 1,144,56,56,144,3,3,2,1 --groups 144"
  "--dense 1,1000,512"
)
other_trials=${OTHER_TRIALS:-16}
if ((other_trials > 0)); then
  echo "== Loom: the other CUDA templates, $other_trials trials each"
  for j in "${!others[@]}"; do
    # shellcheck disable=SC2086  # each entry is a list of flags
    timeout -k 5 30 "$loom" tune-task --target "$target" ${others[$j]} --trials "$other_trials" \
      --batch-size "$batch" --min-repeat-ms "$min_repeat_ms" --no-transfer --json \
      --db "$work/other_$j.db" >"$work/other_$j.json" 2>"$work/other_$j.err"
    rc=$?
    "$loom" records export --db "$work/other_$j.db" -o "$work/records_other_$j.jsonl" \
      >/dev/null 2>&1 || : >"$work/records_other_$j.jsonl"
    python3 - "$work/records_other_$j.jsonl" "${others[$j]}" "$rc" <<'EOF'
import json, sys
recs = [json.loads(x) for x in open(sys.argv[1]) if x.strip()]
ok = [r for r in recs if r["error"] == "none" and r.get("median_cost")]
best = max((r["flops"] / r["median_cost"] / 1e9 for r in ok), default=None)
errors = sorted({f'{r["error"]}: {r["error_msg"][:160]}' for r in recs if r["error"] != "none"})
print(f"{sys.argv[2]}: exit {sys.argv[3]}, {len(recs)} trials, {len(recs) - len(ok)} errors, "
      f"best {best:.0f} GFLOPS" if best else f"{sys.argv[2]}: exit {sys.argv[3]}, no valid trial")
for e in errors[:3]:
    print(f"  {e}")
EOF
  done
fi
if [[ -n "${OUT:-}" ]]; then cat "$work"/records_*.jsonl >"$OUT/gpu-check-records.jsonl" 2>/dev/null; fi

if ((${#layers[@]} > 0)); then
echo "== cuDNN (PyTorch) on ${#layers[@]} layers"
cudnn_args=()
for l in "${layers[@]}"; do cudnn_args+=(--conv2d "$l"); done
PYTHONUNBUFFERED=1 timeout 180 python3 bench/cudnn_conv.py "${cudnn_args[@]}" >"$work/cudnn.jsonl" ||
  echo "gpu-check.sh: cuDNN timing failed (see above); its column stays empty" >&2
cat "$work/cudnn.jsonl"

python3 - "$work" "${#layers[@]}" "$md" "$trials" "$(($(date +%s) - started))" <<'EOF'
import json, math, os, sys

work, n, md, budget, total = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
cudnn = {}
for line in open(os.path.join(work, "cudnn.jsonl")):
    if line.strip():
        r = json.loads(line)
        cudnn[r["layer"]] = r
card = next((r["device"] for r in cudnn.values()), "")
rows = []
for i in range(n):
    wall = json.load(open(os.path.join(work, f"wall_{i}.json")))
    layer = wall["layer"]
    loom, trials, errors, note = None, "-", "-", ""
    try:
        out = json.load(open(os.path.join(work, f"loom_{i}.json")))
        task = out["tasks"][0]
        loom, trials, errors = task.get("best_gflops"), task["trials"], task["errors"]
        card = card or out["target"].split(":", 2)[-1]
    except Exception:
        # Stopped at its share of the budget, or failed: what its database holds.
        recs = [json.loads(x) for x in open(os.path.join(work, f"records_{i}.jsonl")) if x.strip()]
        ok = [r for r in recs if r["error"] == "none" and r.get("median_cost")]
        if recs:
            trials, errors = len(recs), len(recs) - len(ok)
        if ok:
            loom = max(r["flops"] / r["median_cost"] / 1e9 for r in ok)
        err = open(os.path.join(work, f"loom_{i}.err")).read().strip().splitlines()
        note = (f"stopped at {wall['share_s']} s" if wall["rc"] in (124, 137)
                else (err[-1] if err else f"exit {wall['rc']}"))
    ref = cudnn.get(layer, {}).get("gflops")
    ratio = f"{loom / ref:.2f}" if loom and ref else "-"
    rows.append([str(i + 1), layer, f"{loom:.0f}" if loom else "-", f"{ref:.0f}" if ref else "-",
                 ratio, str(trials), str(errors), f"{wall['wall_s']:.1f}", note])
head = ["#", "layer N,C,H,W,K,R,S,stride,pad", "Loom GFLOPS", "cuDNN GFLOPS", "Loom/cuDNN",
        "trials", "errors", "tune s", "note"]
widths = [max(len(r[c]) for r in rows + [head]) for c in range(len(head))]
fmt = lambda r: "  ".join(v.rjust(w) if c in (0, 2, 3, 4, 5, 6, 7) else v.ljust(w)
                          for c, (v, w) in enumerate(zip(r, widths))).rstrip()
ratios = [float(r[4]) for r in rows if r[4] != "-"]
geomean = math.exp(sum(map(math.log, ratios)) / len(ratios)) if ratios else None
summary = (f"Loom/cuDNN geomean over {len(ratios)} of {n} layers: {geomean:.2f}" if geomean
           else "Loom/cuDNN geomean: no layer has both figures")
print(f"\nGPU: {card}; Loom budget {budget} trials per layer; steps 1-2 took {total} s")
print(fmt(head))
for r in rows:
    print(fmt(r))
print(summary)
os.makedirs(os.path.dirname(os.path.abspath(md)), exist_ok=True)
with open(md, "w") as f:
    f.write(f"GPU: {card}. ResNet-18 convolutions, batch 1, fp32. Loom: `loom tune-task --target cuda "
            f"--trials {budget}` per layer; cuDNN: PyTorch, cudnn.benchmark=True, TF32 off "
            f"(bench/cudnn_conv.py). Steps 1-2 of the check took {total} s.\n\n")
    f.write("| " + " | ".join(head) + " |\n|" + "---|" * len(head) + "\n")
    for r in rows:
        f.write("| " + " | ".join(r) + " |\n")
    f.write(f"\n{summary}\n")
print(f"markdown: {md}")
EOF
fi

# Compiled inference on the GPU: `loom bench --target cuda`, untuned and with every record of this
# check, its output checked against the reference executor, next to PyTorch on the same card
# (MODELS=0 skips it).
if ((${MODELS:-1})); then
  echo "== Compiled models on the GPU: loom bench --target cuda, and PyTorch"
  # shellcheck disable=SC2086  # RECORDS is a list of files
  for f in "$work"/records_*.jsonl ${RECORDS:-}; do
    [[ -s "$f" ]] || continue
    "$loom" records import "$f" --db "$work/all.db" >/dev/null || echo "gpu-check.sh: cannot import $f" >&2
  done
  bench_model() {  # NAME: bench_NAME.json, also in the log (and $OUT) as soon as it is done
    if ! timeout -k 5 120 "$loom" bench "zoo:$1" --target "$target" --db "$work/all.db" --check \
      --json --build-threads "$(nproc)" >"$work/bench_$1.json" 2>"$work/bench_$1.err"; then
      echo "loom bench zoo:$1 failed:"
      tail -n 3 "$work/bench_$1.err"
    fi
    python3 - "$work/bench_$1.json" "$1" <<'EOF'
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    print(f"zoo:{sys.argv[2]} {r['variant']}: median {r['median_ms']:.3f} ms, {r['tuned_kernels']} of "
          f"{r['kernels']} kernels tuned, max rel err {r.get('max_rel_err', -1):.1e}, "
          f"compile {r['compile_s']:.1f} s")
EOF
    [[ -n "${OUT:-}" ]] && cp "$work/bench_$1.json" "$work/bench_$1.err" "$OUT/"
  }
  for m in resnet18 mobilenet_v2; do bench_model "$m"; done
  PYTHONUNBUFFERED=1 timeout 100 python3 bench/torch_model_latency.py --model resnet18 \
    --model mobilenet_v2 >"$work/torch.jsonl" || echo "gpu-check.sh: PyTorch timing failed" >&2
  cat "$work/torch.jsonl"
  if ((${MODEL_TRIALS:-0} > 0)); then
    for m in ${TUNE_MODELS:-resnet18 mobilenet_v2}; do
      echo "== loom tune zoo:$m --target $target --trials $MODEL_TRIALS (at most ${MODEL_TUNE_S:-120} s)"
      timeout -k 5 "${MODEL_TUNE_S:-120}" "$loom" tune "zoo:$m" --target "$target" \
        --trials "$MODEL_TRIALS" --batch-size "$batch" --min-repeat-ms "$min_repeat_ms" \
        --db "$work/all.db" --json >"$work/tune_$m.json" 2>"$work/tune_$m.err"
      echo "exit $?"
      tail -n 2 "$work/tune_$m.err"
      bench_model "$m"
    done
    [[ -n "${OUT:-}" ]] && "$loom" records export --db "$work/all.db" -o "$OUT/models-records.jsonl"
  fi
  python3 - "$work" "$md" <<'EOF'
import json, os, sys
work, md = sys.argv[1], sys.argv[2]
torch = {}
for line in open(os.path.join(work, "torch.jsonl")):
    if line.strip():
        r = json.loads(line)
        torch[r["model"]] = r
rows = []
for m in ("resnet18", "mobilenet_v2"):
    try:
        res = {r["variant"]: r for r in json.load(open(os.path.join(work, f"bench_{m}.json")))["results"]}
    except Exception:
        res = {}
    t = torch.get(m, {})
    peer = min(v for v in (t.get("eager_ms"), t.get("graph_ms")) if v) if t else None
    u, tu = res.get("untuned", {}), res.get("tuned", {})
    fmt = lambda v: f"{v:.3f}" if v else "-"
    ratio = f"{tu['median_ms'] / peer:.2f}" if tu and peer else "-"
    rows.append([m, fmt(u.get("median_ms")), fmt(tu.get("median_ms")), str(tu.get("tuned_kernels", "-")),
                 f"{tu.get('max_rel_err', float('nan')):.1e}" if tu else "-",
                 fmt(t.get("eager_ms")), fmt(t.get("graph_ms")), ratio])
head = ["model", "Loom untuned ms", "Loom tuned ms", "tuned kernels", "check max rel err",
        "PyTorch eager ms", "PyTorch graph ms", "tuned / best PyTorch"]
print("  ".join(head))
for r in rows:
    print("  ".join(r))
with open(md, "a") as f:
    f.write("\nCompiled models, batch 1 (`loom bench zoo:NAME --target cuda --db <this check's records> "
            "--check`; PyTorch: bench/torch_model_latency.py):\n\n")
    f.write("| " + " | ".join(head) + " |\n|" + "---|" * len(head) + "\n")
    for r in rows:
        f.write("| " + " | ".join(r) + " |\n")
EOF
fi

# GPU artifacts on the card: `loom compile --target cuda` writes cubins, weights and the plan;
# `loom run DIR` loads and runs them (graph replay) and the output is compared with the reference
# executor's (MODELS=0 skips it, as step 3).
if ((${MODELS:-1})) && [[ "$target" == cuda ]]; then
  echo "== GPU artifact: loom compile zoo:resnet18 --target cuda, loom run DIR"
  rm -rf "$work/artifact"
  if timeout -k 5 120 "$loom" compile zoo:resnet18 --target cuda --db "$work/all.db" \
    --build-threads "$(nproc)" -o "$work/artifact" 2>"$work/artifact.err"; then
    timeout -k 5 60 "$loom" run "$work/artifact" --output "$work/artifact_out.npy" ||
      echo "gpu-check.sh: loom run of the GPU artifact failed" >&2
    timeout -k 5 60 "$loom" run zoo:resnet18 --output "$work/reference_out.npy" >/dev/null ||
      echo "gpu-check.sh: the reference run failed" >&2
    python3 - "$work/artifact_out.npy" "$work/reference_out.npy" <<'PY' || true
import sys
import numpy as np
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
err, mag = float(np.abs(a - b).max()), float(np.abs(b).max())
print(f"GPU artifact vs reference executor: max|a-b| {err:.3g}, max|ref| {mag:.3g}, "
      f"{'OK' if err <= 1e-3 * mag else 'MISMATCH'}")
PY
  else
    echo "gpu-check.sh: loom compile --target cuda failed:" >&2
    tail -n 3 "$work/artifact.err" >&2
  fi
fi

# The CUDA tuning prior (data/priors/cuda-<arch>.json, like cpu-avx512.json): every record of this
# check, as `loom records prior` writes it for the card's architecture. Copy it from $OUT into
# data/priors/ to ship it.
if [[ "$target" == cuda && -s "$work/all.db" ]]; then
  key=$(python3 - "$work" <<'PY'
import glob, json, os, sys
for f in sorted(glob.glob(os.path.join(sys.argv[1], "records_*.jsonl"))):
    for line in open(f):
        if line.strip():
            print(json.loads(line)["target_key"]); sys.exit(0)
PY
  )
  if [[ -n "$key" ]]; then
    arch=$(cut -d: -f2 <<<"$key")
    prior="${OUT:-build}/cuda-$arch.json"
    "$loom" records prior --db "$work/all.db" --target "$key" -o "$prior" ||
      echo "gpu-check.sh: cannot write the prior" >&2
  fi
fi
