#!/usr/bin/env python3
"""Times one ONNX model under ONNX Runtime (CPU execution provider) for bench/ort_compare.sh.

Session: intra_op_num_threads=N, inter_op_num_threads=1, sequential execution, all graph
optimizations. Runs a warm-up, then timed runs until both --min-time seconds and --min-runs runs
are reached, and prints one JSON object: median, p90, min and mean in ms (the same statistics and
the same p90 index as `loom bench`).
"""
import argparse
import json
import sys
import time

import numpy as np
import onnxruntime as ort


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("model", help="ONNX file")
    p.add_argument("--input", required=True, help=".npy input (fed to the first graph input)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--min-time", type=float, default=1.0)
    p.add_argument("--min-runs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=5)
    args = p.parse_args()
    if args.threads < 1 or args.min_runs < 1:
        p.error("--threads and --min-runs must be at least 1")

    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(args.model, sess_options=so, providers=["CPUExecutionProvider"])
    x = np.load(args.input).astype(np.float32)
    feeds = {sess.get_inputs()[0].name: x}

    for _ in range(args.warmup):
        sess.run(None, feeds)
    ms = []
    begin = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        sess.run(None, feeds)
        t1 = time.perf_counter()
        ms.append((t1 - t0) * 1e3)
        if len(ms) >= args.min_runs and t1 - begin >= args.min_time:
            break
    ms.sort()
    n = len(ms)
    print(json.dumps({
        "runtime": "onnxruntime",
        "version": ort.__version__,
        "model": args.model,
        "threads": args.threads,
        "median_ms": ms[n // 2],
        "p90_ms": ms[min(n - 1, n * 9 // 10)],
        "min_ms": ms[0],
        "mean_ms": sum(ms) / n,
        "runs": n,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
