#!/usr/bin/env python3
"""Model-level peer benchmark (issue 17): Loom's compiled models against ONNX Runtime, the same
inputs, the same thread count, the same cores, in one run; prints a Markdown table.

For each model (see bench/peer_models.py for what a model argument may be; default `shared`):
  1. ONNX Runtime computes the reference outputs (CPU EP, 1 thread, default options).
  2. For each thread count N and variant (untuned; tuned with --db): `loom compile MODEL
     --threads N [--db FILE]` writes an artifact, and `loom run ARTIFACT` on the model's inputs
     must match ORT within max|a-b| <= 1e-3 * max|ref| for every output (integers exactly). A
     model that does not load or compile, crashes, or mismatches is marked in the table with the
     first error line and is not timed.
  3. Timing, in --rounds rounds that alternate the order (Loom first, then ORT first, ...) so
     machine drift hits both: `loom bench ARTIFACT --threads N --json` and bench/ort_time.py
     (intra-op threads N, inter-op 1, all graph optimizations: ORT's fusions are part of the
     peer; spinning as ORT defaults), each in its own process under `taskset`. A side's figure is
     the median of its rounds' medians (each round: at least --min-time s and --min-runs runs).

Cores: N threads run on the last N cores this process may use, on the 2-core machine 1 thread on
core 1 and 2 threads on cores 0-1: core 0 keeps the OS, the Python driver and, with --loaded, a
busy loop (a `while :` shell pinned to the first core for the whole timing phase, the issue's
"under background load"); 1-thread runs then have their core to themselves, and 2-thread runs
share one core with the loop.

The table: per thread count Loom ms, ORT ms and Loom/ORT (and the tuned columns with --db),
geomean and worst ratio rows, then the machine (lscpu model, load average before/after), the
date, the Loom and ORT versions and this exact command. --json FILE keeps every measurement.

  bench/ort_compare.py                                   # ../shared's models, 1 and 2 threads
  bench/ort_compare.py shared /work/models-extra --db build/tune.db --markdown build/peer.md
  bench/ort_compare.py resnet18 --threads 2 --loaded --rounds 5
Needs numpy and onnxruntime (bench/ort_compare.sh makes a venv with them) and a built loom.
"""
import argparse
import datetime
import json
import math
import os
import statistics
import subprocess
import sys

import onnxruntime

import peer_models as pm

HERE = os.path.dirname(os.path.abspath(__file__))


def parse_threads(text):
    try:
        values = [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--threads wants numbers like 1,2, not {text!r}")
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("--threads wants numbers of at least 1")
    return values


def cores_for(n):
    allowed = sorted(os.sched_getaffinity(0))
    if n > len(allowed):
        raise SystemExit(f"ort_compare: error: {n} threads but only {len(allowed)} cores")
    return allowed[-n:]


class Cell:
    """One model x thread count x variant: its check, then its timings."""

    def __init__(self):
        self.status = "ok"  # ok | unchecked | failed
        self.note = ""
        self.check = None
        self.artifact = None
        self.medians = []
        self.stats = {}

    def ms(self):
        return statistics.median(self.medians) if self.medians else None


def compile_and_check(args, model, ref, n, variant, every_output):
    cell = Cell()
    tag = f"{variant}.t{n}"
    art = os.path.join(args.work, "artifacts", model.name, tag)
    status, note, worst = pm.compile_and_check(
        args.loom, model, ref, art, os.path.join(args.work, "outputs", model.name, tag),
        threads=n, cores=cores_for(n), db=args.db if variant == "tuned" else None,
        build_threads=args.build_threads, timeout=args.timeout, every_output=every_output)
    cell.status, cell.note, cell.check = status, note, worst
    if status != "failed":
        cell.artifact = art
    return cell


def time_loom(args, cell, n):
    r = pm.run([args.loom, "bench", cell.artifact, "--threads", str(n), "--json",
                "--min-time", str(args.min_time), "--min-runs", str(args.min_runs)],
               cores=cores_for(n), timeout=args.timeout)
    if not r.ok:
        cell.status, cell.note = "failed", f"bench: {r.error_line()}"
        return
    res = json.loads(r.stdout)["results"][0]
    cell.medians.append(res["median_ms"])
    cell.stats = {k: res[k] for k in ("kernels", "tuned_kernels", "reference_steps",
                                      "layout_steps", "fused_ops") if k in res}


def time_ort(args, model, cell, n):
    argv = [sys.executable, os.path.join(HERE, "ort_time.py"), model.path, "--threads", str(n),
            "--min-time", str(args.min_time), "--min-runs", str(args.min_runs)]
    for name, path in model.input_files.items():
        argv += ["--input", f"{name}={path}"]
    r = pm.run(argv, cores=cores_for(n), timeout=args.timeout)
    if not r.ok:
        cell.status, cell.note = "failed", f"ORT: {r.error_line()}"
        return
    cell.medians.append(json.loads(r.stdout)["median_ms"])


def measure_model(args, model, variants, every_output):
    """Returns {n: {"untuned": Cell, "tuned": Cell, "ort": Cell}} and a model-wide note."""
    print(f"== {model.name}", file=sys.stderr, flush=True)
    cells = {n: {} for n in args.threads}
    try:
        ref = pm.ort_reference(model, args.work)
    except Exception as e:  # ORT cannot run it: nothing to compare with
        return cells, f"ORT cannot run it: {pm.ort_time.one_line(e)}"
    for n in args.threads:
        for v in variants:
            cells[n][v] = compile_and_check(args, model, ref, n, v, every_output)
            c = cells[n][v]
            print(f"   {n} thread(s) {v}: {c.status} {c.note}".rstrip(), file=sys.stderr,
                  flush=True)
        cells[n]["ort"] = Cell()
    return cells, ""


def time_model(args, model, cells, variants):
    for n in args.threads:
        for rnd in range(args.rounds):
            sides = [v for v in variants if cells[n][v].status != "failed"] + ["ort"]
            if rnd % 2:
                sides.reverse()
            for side in sides:
                if side == "ort":
                    time_ort(args, model, cells[n]["ort"], n)
                elif cells[n][side].status != "failed":
                    time_loom(args, cells[n][side], n)
        line = ", ".join(f"{s} {cells[n][s].ms():.2f} ms" for s in cells[n]
                         if cells[n][s].ms() is not None)
        print(f"   {n} thread(s): {line}", file=sys.stderr, flush=True)


def fmt_ms(x):
    return "-" if x is None else f"{x:.2f}"


def ratio(cell, ort):
    if cell is None or cell.status == "failed" or cell.ms() is None or ort.ms() is None:
        return None
    return cell.ms() / ort.ms()


def geomean(xs):
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def table(args, models, results, variants, header):
    cols = ["model"]
    for n in args.threads:
        t = f"{n}T"
        cols += [f"Loom {t} ms", f"ORT {t} ms", f"Loom/ORT {t}"]
        if "tuned" in variants:
            cols += [f"tuned {t} ms", f"tuned/ORT {t}"]
    cols.append("notes")
    rows, ratios = [], {c: [] for c in cols}
    for m in models:
        cells, note = results[m.name]
        row = [m.name]
        notes = {note: []} if note else {}  # note -> the cells it applies to ("1T untuned")
        for n in args.threads:
            c = cells[n]
            if not c:
                row += ["-"] * (5 if "tuned" in variants else 3)
                continue
            for v in variants:
                r = ratio(c[v], c["ort"])
                name = f"Loom/ORT {n}T" if v == "untuned" else f"tuned/ORT {n}T"
                if r is not None:
                    ratios[name].append((r, m.name))
                ms = c[v].ms() if c[v].status != "failed" else None
                row += [fmt_ms(ms), fmt_ms(c["ort"].ms())] if v == "untuned" else [fmt_ms(ms)]
                row.append("-" if r is None else f"{r:.2f}")
                steps = c[v].stats.get("reference_steps")
                for text in (c[v].note, f"{steps} reference step{'s' if steps > 1 else ''}"
                             if steps else ""):
                    if text:
                        notes.setdefault(text, []).append(f"{n}T {v}")
            if c["ort"].note:
                notes.setdefault(c["ort"].note, []).append(f"{n}T")
        every = len(args.threads) * len(variants)
        row.append("; ".join(text if not where or len(where) == every
                             else f"{', '.join(where)}: {text}"
                             for text, where in notes.items()).replace("|", "\\|"))
        rows.append(row)
    summary = []
    for label in ("geomean", "worst"):
        row = [f"**{label}**"]
        for c in cols[1:-1]:
            vals = ratios.get(c)
            if not vals or not c.startswith(("Loom/ORT", "tuned/ORT")):
                row.append("")
            elif label == "geomean":
                row.append(f"**{geomean([v for v, _ in vals]):.2f}** ({len(vals)}/{len(models)})")
            else:
                v, who = max(vals)
                row.append(f"{v:.2f} ({who})")
        row.append("")
        summary.append(row)
    lines = [f"- {h}" for h in header] + [""]
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|---|" + "|".join("---:" for _ in cols[1:-1]) + "|---|")
    for r in rows + summary:
        lines.append("| " + " | ".join(r) + " |")
    lines.append("")
    lines.append("Medians in ms (median of the rounds' medians); ratio Loom/ORT, below 1 = Loom "
                 "faster; geomean over the models that loaded and matched (count of all models); "
                 "`-`: not timed, see notes.")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("models", nargs="*", default=["shared"],
                   help="model files, folders, shared archives or names (default: shared)")
    p.add_argument("--loom", default=os.path.join(pm.ROOT, "build/default/loom/cli/loom"))
    p.add_argument("--db", help="records database: adds the tuned variant")
    p.add_argument("--threads", type=parse_threads, default=[1, 2], help="e.g. 1,2 (default)")
    p.add_argument("--rounds", type=int, default=3, help="alternating timing rounds (default 3)")
    p.add_argument("--min-time", type=float, default=1.0, help="seconds per timing (default 1)")
    p.add_argument("--min-runs", type=int, default=10, help="runs per timing at least (10)")
    p.add_argument("--loaded", action="store_true",
                   help="a busy loop pinned to the first core while timing")
    p.add_argument("--markdown", help="also write the table to this file")
    p.add_argument("--json", help="write every measurement to this file")
    p.add_argument("--work", default=os.path.join(pm.ROOT, "build/peer"),
                   help="artifacts, unpacked and generated inputs, outputs (default build/peer)")
    p.add_argument("--build-threads", type=int, default=2, help="loom compile's (default 2)")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per command (1800)")
    args = p.parse_args()
    if args.rounds < 1 or args.min_runs < 1:
        p.error("--rounds and --min-runs must be at least 1")
    if not (os.path.isfile(args.loom) and os.access(args.loom, os.X_OK)):
        p.error(f"no loom binary at {args.loom}: build it (cmake --build --preset default "
                "--target loom) or pass --loom")
    if args.db and not os.path.isfile(args.db):
        p.error(f"records database not found: {args.db}")
    for n in args.threads:
        cores_for(n)
    try:
        models = pm.resolve(args.models, args.work)
    except pm.ModelError as e:
        p.error(str(e))
    variants = ["untuned"] + (["tuned"] if args.db else [])
    every_output = pm.loom_writes_every_output(args.loom)

    load_before = pm.load_average()
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    results = {m.name: measure_model(args, m, variants, every_output) for m in models}
    busy = None
    if args.loaded:
        busy = subprocess.Popen(["taskset", "-c", str(sorted(os.sched_getaffinity(0))[0]),
                                 "sh", "-c", "while :; do :; done"])
    try:
        for m in models:
            cells, note = results[m.name]
            if not note:
                print(f"== timing {m.name}", file=sys.stderr, flush=True)
                time_model(args, m, cells, variants)
    finally:
        if busy:
            busy.kill()
            busy.wait()

    header = [
        f"date: {started}; command: `{pm.command_line()}`",
        f"machine: {pm.cpu_model()}, {os.cpu_count()} cores; load average {load_before} before, "
        f"{pm.load_average()} after" + ("; **loaded**: a busy loop pinned to core "
                                        f"{sorted(os.sched_getaffinity(0))[0]}" if args.loaded
                                        else ""),
        "cores: " + ", ".join(f"{n} thread{'s' if n > 1 else ''} on core{'s' if n > 1 else ''} "
                              f"{','.join(map(str, cores_for(n)))}" for n in args.threads),
        f"loom: {os.path.relpath(args.loom, pm.ROOT)} at {pm.git_rev(args.loom)}; onnxruntime "
        f"{onnxruntime.__version__}" + (f"; records: {args.db}" if args.db else ""),
    ]
    text = table(args, models, results, variants, header)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")
    if args.json:
        dump = {"header": header, "models": {}}
        for m in models:
            cells, note = results[m.name]
            dump["models"][m.name] = {"path": m.path, "note": note, "threads": {
                str(n): {s: {"status": c.status, "note": c.note, "check": c.check,
                             "round_medians_ms": c.medians, "ms": c.ms(), **c.stats}
                         for s, c in cells[n].items()} for n in args.threads}}
        with open(args.json, "w") as f:
            json.dump(dump, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
