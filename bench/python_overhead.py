#!/usr/bin/env python3
"""The Python package's cost over Loom's native entry points, for docs/BENCHMARKS.md (issue 20,
item 5). Run it on a quiet machine, with the package installed (scripts/test.sh installs it into
build/default/python-venv):

  build/default/python-venv/bin/python bench/python_overhead.py [--libloom build/default/loom/api/libloom.so]
      [--model zoo:resnet18] [--db r18.db] [--threads 1] [--calls 20000] [--min-time 5]

Two comparisons, measured in the same run and printed as one JSON object, each with its ratio
(`python_over_c_api`, `python_over_cli`: 1.0 means no cost over the native path):

1. `overhead`: the per-call time of `loom.load_artifact(dir).run(x)` on zoo:tiny_cnn (a model of
   about 20 us) against the same artifact run through the C API (`loom_model_run` of libloom.so)
   in a C loop compiled here with `cc`, both on one thread, same input, median of `--repeats`
   batches of `--calls` calls each. Their difference is the binding's cost per call: argument
   parsing, the input copy, the output arrays and releasing the GIL.
2. `latency`: `--model` compiled with `--db`'s records through `loom.Model(...).compile().
   benchmark()` against `loom bench MODEL --db DB --json` (the same compile, timed by the CLI),
   median and p90 in ms.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import loom
from loom._binary import loom_binary

REPO = Path(__file__).resolve().parents[1]

# Times `calls` runs of the artifact through the C API, `repeats` times; prints each batch's
# seconds per call, one a line.
C_TIMER = r"""
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "loom/loom_c.h"
static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}
static size_t count(loom_status_t (*shape)(const loom_model_t*, int32_t, int64_t*, int32_t,
                                            int32_t*), const loom_model_t* m, int32_t i) {
  int64_t dims[8];
  int32_t rank = 0;
  if (shape(m, i, dims, 8, &rank) != LOOM_OK || rank > 8) return 0;
  size_t n = 1;
  for (int32_t d = 0; d < rank; ++d) n *= (size_t)dims[d];
  return n;
}
int main(int argc, char** argv) {
  if (argc != 4) return 2;
  loom_model_t* m = NULL;
  if (loom_model_load(argv[1], 1, &m) != LOOM_OK) {
    fprintf(stderr, "%s\n", loom_last_error());
    return 1;
  }
  const long calls = atol(argv[2]), repeats = atol(argv[3]);
  const int32_t ni = loom_model_num_inputs(m), no = loom_model_num_outputs(m);
  const float** in = calloc((size_t)ni, sizeof(float*));
  float** out = calloc((size_t)no, sizeof(float*));
  for (int32_t i = 0; i < ni; ++i) in[i] = calloc(count(loom_model_input_shape, m, i), 4);
  for (int32_t i = 0; i < no; ++i) out[i] = calloc(count(loom_model_output_shape, m, i), 4);
  for (long w = 0; w < calls / 10 + 1; ++w) loom_model_run(m, in, out);
  for (long r = 0; r < repeats; ++r) {
    const double t0 = now();
    for (long c = 0; c < calls; ++c) {
      if (loom_model_run(m, in, out) != LOOM_OK) {
        fprintf(stderr, "%s\n", loom_last_error());
        return 1;
      }
    }
    printf("%.9g\n", (now() - t0) / calls);
  }
  loom_model_free(m);
  return 0;
}
"""


def c_api_per_call(libloom: Path, artifact: Path, calls: int, repeats: int, work: Path) -> list:
    src = work / "c_timer.c"
    src.write_text(C_TIMER)
    exe = work / "c_timer"
    cc = os.environ.get("CC", "cc")
    subprocess.run([cc, "-O2", "-std=c11", str(src), "-o", str(exe), f"-I{REPO / 'include'}",
                    str(libloom), f"-Wl,-rpath,{libloom.parent}"], check=True)  # fmt: skip
    out = subprocess.run([str(exe), str(artifact), str(calls), str(repeats)], check=True,
                         capture_output=True, text=True).stdout  # fmt: skip
    return [float(line) for line in out.split()]


def python_per_call(artifact: Path, calls: int, repeats: int) -> list:
    compiled = loom.load_artifact(artifact, threads=1)
    x = np.zeros(compiled.inputs[0].shape, np.float32)
    for _ in range(calls // 10 + 1):
        compiled.run(x)
    batches = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            compiled.run(x)
        batches.append((time.perf_counter() - t0) / calls)
    return batches


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--libloom", type=Path, default=REPO / "build/default/loom/api/libloom.so")
    p.add_argument("--calls", type=int, default=20000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--model", default="zoo:resnet18")
    p.add_argument("--db", default="", help="records of --model (empty: untuned)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--min-time", type=float, default=5.0)
    a = p.parse_args()
    if not a.libloom.exists():
        sys.exit(f"python_overhead.py: error: no libloom.so at {a.libloom} (--libloom)")

    work = Path(tempfile.mkdtemp(prefix="loom-pybench-"))
    try:
        artifact = work / "tiny_cnn"
        loom.Model.load("zoo:tiny_cnn").compile(threads=1).export(artifact)
        c = c_api_per_call(a.libloom, artifact, a.calls, a.repeats, work)
        py = python_per_call(artifact, a.calls, a.repeats)
        c_us, py_us = statistics.median(c) * 1e6, statistics.median(py) * 1e6
        overhead = {"model": "zoo:tiny_cnn", "calls": a.calls, "repeats": a.repeats,
                    "c_api_us": c_us, "python_us": py_us, "binding_us": py_us - c_us,
                    "python_over_c_api": py_us / c_us}  # fmt: skip

        model = loom.Model.load(a.model).compile(threads=a.threads, db=a.db or None)
        b = model.benchmark(min_seconds=a.min_time, min_runs=10)
        cmd = [loom_binary(), "bench", a.model, "--threads", str(a.threads), "--json",
               "--min-time", str(a.min_time)] + (["--db", a.db] if a.db else [])  # fmt: skip
        cli = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        row = cli["results"][-1]  # the tuned variant when --db is given
        latency = {"model": a.model, "threads": a.threads, "db": a.db,
                   "python_median_ms": b.median_ms, "python_p90_ms": b.p90_ms,
                   "cli_variant": row["variant"], "cli_median_ms": row["median_ms"],
                   "cli_p90_ms": row["p90_ms"],
                   "python_over_cli": b.median_ms / row["median_ms"]}  # fmt: skip
        print(json.dumps({"overhead": overhead, "latency": latency}, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
