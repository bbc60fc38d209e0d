#!/usr/bin/env python3
"""The peer autotuner: TVM MetaSchedule tuning the ResNet-18 conv2d layers of issue 3's
sample-efficiency figure (NCHW fp32, batch 1, 3x3, pad 1) with a given trial budget, one core.

Reports per layer: best GFLOPS (the best schedule re-timed on the device core after tuning), the
best run time MetaSchedule itself recorded, and the tuning wall time. Loom's side of the figure is
`loom tune-task --conv2d ... --trials N --tuner xgb --device-cores 1` (wall time and best GFLOPS).

Placement mirrors Loom's tune-task on this 2-core machine: the runner (the "device") is pinned to
--device-core (default 1) and the builder workers to the other cores (default 0), via the
builder's/runner's popen-pool initializer; the search itself runs in this process with
num_tuning_cores=1.

Setup (PyPI wheel, CPU LLVM backend; tested with apache-tvm 0.27.0.post1, Python 3.11):
  python3 -m venv /tmp/tvmvenv
  /tmp/tvmvenv/bin/pip install apache-tvm "apache-tvm-ffi==0.1.14.post0" cloudpickle psutil \
      tornado xgboost
  (apache-tvm 0.27.0.post1 pulls apache-tvm-ffi 0.1.15.post2, with which every
  tvm.ir.save_json / pickle of an IRModule segfaults in tvm::ffi::ToJSONGraph; 0.1.14.post0 works.
  cloudpickle/psutil/xgboost are MetaSchedule's undeclared (extra) dependencies.)
Run (the figure in docs/BENCHMARKS.md, "Tuning engine (issue 3)"):
  /tmp/tvmvenv/bin/python3 bench/metaschedule_conv.py --trials 64 --layers 0,1,2
"""

import argparse
import json
import os
import shutil
import tempfile
import time

import numpy as np
import tvm
from tvm import te, topi
from tvm.s_tir import meta_schedule as ms

LAYERS = [
    # name, C, HW, K, stride
    ("64->64 3x3 @56", 64, 56, 64, 1),
    ("128->128 3x3 @28", 128, 28, 128, 1),
    ("256->512 3x3 s2 @14", 256, 14, 512, 2),
]


def conv_func(c, hw, k, stride):
    data = te.placeholder((1, c, hw, hw), name="data", dtype="float32")
    weight = te.placeholder((k, c, 3, 3), name="weight", dtype="float32")
    out = topi.nn.conv2d_nchw(data, weight, stride, 1, 1, out_dtype="float32")
    return te.create_prim_func([data, weight, out])


def flops(c, hw, k, stride):
    oh = (hw + 2 - 3) // stride + 1
    return 2.0 * k * oh * oh * c * 9


def pin(cores):
    def init():
        os.sched_setaffinity(0, cores)

    return init


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=64, help="trial budget per layer")
    p.add_argument("--per-iter", type=int, default=0,
                   help="candidates per search iteration (default: min(64, trials))")
    p.add_argument("--layers", default="0,1,2")
    p.add_argument("--mcpu", default="znver4")
    p.add_argument("--device-core", type=int, default=1)
    p.add_argument("--build-cores", default="0")
    p.add_argument("--build-workers", type=int, default=1)
    p.add_argument("--build-timeout", type=float, default=120.0,
                   help="seconds per candidate build (MetaSchedule's default of 30 s times out "
                   "on this loaded machine)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", default="")
    p.add_argument("--json", action="store_true")
    p.add_argument("--database", default="memory",
                   help="json | memory (see the README note on the JSON database)")
    a = p.parse_args()

    # TVM 0.27 takes the dict form only ("llvm -mcpu=... -num-cores 1" is rejected).
    target = tvm.target.Target({"kind": "llvm", "mcpu": a.mcpu, "num-cores": 1})
    device_cores = {a.device_core}
    build_cores = {int(x) for x in a.build_cores.split(",")}
    # Same timing rule as Loom's measurer in spirit: repeats of >= 50 ms, 3 repeats.
    evaluator = ms.runner.EvaluatorConfig(number=1, repeat=3, min_repeat_ms=50,
                                          enable_cpu_cache_flush=False)
    results = []
    print(f"tvm {tvm.__version__}, target {target}, device core {a.device_core}, "
          f"build cores {sorted(build_cores)}, load average {os.getloadavg()}", flush=True)
    for li in [int(x) for x in a.layers.split(",")]:
        name, c, hw, k, stride = LAYERS[li]
        func = conv_func(c, hw, k, stride)
        work_dir = a.work_dir or tempfile.mkdtemp(prefix="ms_conv_")
        if a.work_dir:
            work_dir = os.path.join(a.work_dir, f"layer{li}")
            shutil.rmtree(work_dir, ignore_errors=True)
            os.makedirs(work_dir)
        builder = ms.builder.LocalBuilder(max_workers=a.build_workers,
                                          timeout_sec=a.build_timeout,
                                          initializer=pin(build_cores))
        runner = ms.runner.LocalRunner(evaluator_config=evaluator, initializer=pin(device_cores))
        load_before = os.getloadavg()
        t0 = time.time()
        db = ms.tune_tir(
            mod=func,
            target=target,
            work_dir=work_dir,
            max_trials_global=a.trials,
            num_trials_per_iter=a.per_iter or min(64, a.trials),
            builder=builder,
            runner=runner,
            num_tuning_cores=1,
            seed=a.seed,
            database=a.database,
        )
        wall = time.time() - t0
        records = db.get_all_tuning_records()
        measured = [r for r in records if r.run_secs]
        tuned_best = min(
            (float(np.median([float(s) for s in r.run_secs])) for r in measured), default=None)
        fl = flops(c, hw, k, stride)
        r = {
            "layer": name,
            "trials_requested": a.trials,
            "records": len(records),
            "measured_ok": len(measured),
            "tune_wall_s": wall,
            "best_gflops_during_tuning": fl / tuned_best / 1e9 if tuned_best else None,
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "work_dir": work_dir,
        }
        # Re-time the best schedule on the device core.
        sch = ms.tir_integration.compile_tir(db, func, target)
        if sch is None:
            r["best_gflops_retimed"] = None
            r["error"] = "no candidate built and ran successfully (see work_dir/logs)"
            results.append(r)
            print(json.dumps(r), flush=True)
            continue
        lib = tvm.compile(sch.mod, target=target)
        dev = tvm.cpu()
        rng = np.random.default_rng(0)
        oh = (hw + 2 - 3) // stride + 1
        args = [
            tvm.runtime.tensor(rng.standard_normal((1, c, hw, hw)).astype("float32"), dev),
            tvm.runtime.tensor(rng.standard_normal((k, c, 3, 3)).astype("float32"), dev),
            tvm.runtime.tensor(np.zeros((1, k, oh, oh), dtype="float32"), dev),
        ]
        old = os.sched_getaffinity(0)
        os.sched_setaffinity(0, device_cores)
        rt = lib.jit() if hasattr(lib, "jit") else lib  # tvm.compile gives an Executable
        timer = rt.time_evaluator("main", dev, number=1, repeat=5, min_repeat_ms=100)
        costs = timer(*args).results
        os.sched_setaffinity(0, old)
        best = float(np.median(costs))
        r["best_ms_retimed"] = best * 1e3
        r["best_gflops_retimed"] = fl / best / 1e9
        results.append(r)
        print(json.dumps(r), flush=True)
    if not a.json:
        print("| layer | trials | records | tuning wall s | best GFLOPS (re-timed) | "
              "best GFLOPS (during tuning) |")
        print("|---|---:|---:|---:|---:|---:|")
        def fmt(x):
            return f"{x:.1f}" if x else "-"

        for r in results:
            print(f"| {r['layer']} | {r['trials_requested']} | {r['records']} | "
                  f"{r['tune_wall_s']:.0f} | {fmt(r['best_gflops_retimed'])} | "
                  f"{fmt(r['best_gflops_during_tuning'])} |")


if __name__ == "__main__":
    main()
