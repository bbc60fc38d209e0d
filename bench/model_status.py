#!/usr/bin/env python3
"""Where Loom stands on a set of models (issue 17): for each model, does it load (`loom
inspect`), run on the reference executor (`loom run MODEL`) and match ONNX Runtime, compile (`loom
compile`) and match through the artifact (`loom run DIR`), on every input set beside the model
(peer_models.Model.extra_sets: bert_small's mask2), and where the compiled model's time
goes (`loom bench DIR --profile`: reference steps, the top step kinds). Writes a Markdown report
with a table per loom binary, the first error line of each failure, and the operators across the
models by frequency (how many models use each, and which models an error blocks).

  bench/model_status.py /work/models-extra shared --out /work/models-extra/STATUS.md
  bench/model_status.py M... --loom build/default/loom/cli/loom --loom ../main/build/...

Model arguments as bench/ort_compare.py (bench/peer_models.py). One thread, no pinning: these
are status checks; the profile's milliseconds are sanity figures, not benchmarks.
"""
import argparse
import collections
import datetime
import json
import os
import re
import sys

import peer_models as pm


def status_of(args, loom, model, ref, ref_error, every_output):
    """One model through one loom binary -> a dict of findings."""
    s = {"inspect": "-", "run": "-", "run_ms": None, "compiled": "-", "ref_steps": None,
         "profile": "", "error": ""}

    def fail(stage, line):
        if not s["error"]:
            s["error"] = f"{stage}: {line}"

    r = pm.run([loom, "inspect", model.path, "--json"], timeout=args.timeout)
    if not r.ok:
        s["inspect"] = "fails"
        fail("inspect", r.error_line())
        return s
    j = json.loads(r.stdout)
    s["inspect"] = f"ok ({j.get('nodes', '?')} nodes)"
    if ref is None:
        fail("ORT", ref_error)
        return s

    work = os.path.join(args.work, "status", model.name)
    # The model's other input sets (e.g. bert_small.mask2): ORT's outputs for each.
    sets = [("", model.input_files, ref)] + [
        (name, files, pm.ort_reference(model, args.work, files))
        for name, files in model.extra_sets.items()]

    def check(target, stage, threads=None):
        """`loom run TARGET` on every input set against ORT -> the cell text; True if it ran."""
        texts = []
        for name, files, expect in sets:
            r, got = pm.loom_run_outputs(loom, target, model, expect,
                                         os.path.join(work, stage, name or "inputs"),
                                         threads=threads, timeout=args.timeout,
                                         every_output=every_output, input_files=files)
            label = f"{name}: " if name else ""
            if not r.ok:
                fail(stage, r.error_line())
                return "fails", False
            if stage == "run" and not name:
                for line in r.stdout.splitlines():
                    if line.startswith("latency"):
                        s["run_ms"] = float(line.split()[1])
            if got is None:
                texts.append(f"{label}runs (outputs not checked)")
                continue
            ok, worst, msg = pm.compare(expect, got)
            texts.append(f"{label}matches ({worst:.0e})" if ok else f"{label}MISMATCH")
            if not ok:
                fail(stage, f"{label}{msg}")
        return "; ".join(texts), True

    s["run"], _ = check(model.path, "run")
    art = os.path.join(work, "artifact")
    r = pm.loom_compile(loom, model, art, timeout=args.timeout)
    if not r.ok:
        s["compiled"] = "fails"
        fail("compile", r.error_line())
        return s
    s["compiled"], ran = check(art, "compiled")
    if not ran:
        return s
    r = pm.run([loom, "bench", art, "--profile", "--json", "--min-time", "0", "--min-runs", "3"],
               timeout=args.timeout)
    if not r.ok:
        fail("bench", r.error_line())
        return s
    res = json.loads(r.stdout)["results"][0]
    s["ref_steps"] = res.get("reference_steps")
    s["bench_ms"] = res.get("median_ms")
    kinds = res.get("profile", {}).get("by_kind", [])
    total = sum(k["ms"] for k in kinds) or 1.0
    s["profile"] = ", ".join(f"`{k['kind']}` {100 * k['ms'] / total:.0f}%" for k in kinds[:4])
    return s


def error_kind(error):
    """An error line without what names one model (node names, file paths), so that the same
    problem in several models is counted once."""
    error = re.sub(r" (in|for) node '[^']*'", "", error)
    return re.sub(r"ONNX model '[^']*'", "ONNX model", error)


def op_counts(model):
    """Operator counts from info.json, else from the file (needs the onnx package)."""
    if model.info and "ops" in model.info:
        return model.info["ops"]
    try:
        import onnx
    except ImportError:
        return {}
    proto = onnx.load(model.path, load_external_data=False)
    return dict(collections.Counter(n.op_type for n in proto.graph.node))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("models", nargs="*", default=["shared"])
    p.add_argument("--loom", action="append", default=[],
                   help="loom binary, repeatable (default build/default/loom/cli/loom)")
    p.add_argument("--out", help="write the Markdown report here (default: stdout only)")
    p.add_argument("--work", default=os.path.join(pm.ROOT, "build/peer"))
    p.add_argument("--timeout", type=int, default=1800, help="seconds per command (1800)")
    args = p.parse_args()
    looms = args.loom or [os.path.join(pm.ROOT, "build/default/loom/cli/loom")]
    for loom in looms:
        if not (os.path.isfile(loom) and os.access(loom, os.X_OK)):
            p.error(f"no loom binary at {loom}")
    try:
        models = pm.resolve(args.models, args.work)
    except pm.ModelError as e:
        p.error(str(e))

    refs = {}
    for m in models:
        try:
            refs[m.name] = (pm.ort_reference(m, args.work), "")
        except Exception as e:
            refs[m.name] = (None, pm.ort_time.one_line(e))

    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = ["# Loom on models nobody here wrote: status", "",
           f"- date: {started}; command: `{pm.command_line()}`",
           f"- machine: {pm.cpu_model()}, {os.cpu_count()} cores, load average "
           f"{pm.load_average()} at the start (busy: profile ms are sanity figures only)", "",
           "Columns: `inspect` = loads and shape-infers; `loom run` = reference executor on the "
           "model's inputs vs ONNX Runtime (max|a-b|/max|ref|, limit 1e-3); `compiled` = `loom "
           "compile` + `loom run DIR`, same check; `ref steps` = steps of the compiled model "
           "that run a reference kernel; profile = `loom bench DIR --profile`, top step kinds "
           "by time, 1 thread; the first error line of the first stage that failed.", ""]
    errors = collections.defaultdict(list)
    for loom in looms:
        every_output = pm.loom_writes_every_output(loom)
        out += [f"## {os.path.relpath(loom, pm.ROOT)} at {pm.git_rev(loom)}", "",
                "| model | inspect | loom run | ms | compiled | ref steps | compiled ms | "
                "profile (top kinds) | first error |", "|---|---|---|---:|---|---:|---:|---|---|"]
        for m in models:
            print(f"== {m.name} ({loom})", file=sys.stderr, flush=True)
            ref, ref_error = refs[m.name]
            s = status_of(args, loom, m, ref, ref_error, every_output)
            print(f"   {s}", file=sys.stderr, flush=True)
            if s["error"] and loom == looms[0]:
                errors[error_kind(s["error"])].append(m.name)
            cells = [m.name, s["inspect"], s["run"],
                     "-" if s["run_ms"] is None else f"{s['run_ms']:.0f}", s["compiled"],
                     "-" if s["ref_steps"] is None else str(s["ref_steps"]),
                     "-" if s.get("bench_ms") is None else f"{s['bench_ms']:.1f}", s["profile"],
                     s["error"]]
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        out.append("")

    out += ["## First errors, by how many models they stop", "",
            "| models | first error |", "|---:|---|"]
    for err, names in sorted(errors.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        out.append(f"| {len(names)} ({', '.join(names)}) | {err.replace('|', chr(92) + '|')} |")
    out.append("")

    uses = collections.Counter()
    nodes = collections.Counter()
    for m in models:
        for op, n in op_counts(m).items():
            uses[op] += 1
            nodes[op] += n
    out += ["## Operators across these models", "",
            "By the number of models that use each (nodes in all models in brackets), as "
            "exported (before Loom's folding).", "",
            ", ".join(f"{op} {k} ({nodes[op]})" for op, k in
                      sorted(uses.items(), key=lambda kv: (-kv[1], -nodes[kv[0]], kv[0]))), ""]
    text = "\n".join(out)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
