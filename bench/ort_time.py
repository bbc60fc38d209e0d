#!/usr/bin/env python3
"""Times one ONNX model under ONNX Runtime (CPU execution provider): the peer side of
bench/ort_compare.py (which runs it under `taskset`, in its own process, like `loom bench`).

Session: intra_op_num_threads=N, inter_op_num_threads=1, sequential execution, all graph
optimizations (ORT's own fusions are part of the peer), spinning as ORT defaults. Runs a warm-up,
then timed runs until both --min-time seconds and --min-runs runs are reached, and prints one JSON
object: median, p90, min and mean in ms (the same statistics and the same p90 index as
`loom bench`).

  ort_time.py MODEL --input FILE.npy                     (a single-input model)
  ort_time.py MODEL --input NAME=FILE.npy [--input ...]  (every graph input, by name)
"""
import argparse
import json
import sys
import time

import numpy as np

# onnxruntime is imported where a session is made, so that the helpers below (and
# bench/peer_models.py) load without it.

# ONNX Runtime's input type names -> numpy dtypes (the types Loom's models use).
ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int16)": np.int16,
    "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}


def one_line(e):
    """An exception as one line: its type and the first line of its message."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def make_session(model, threads):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model, sess_options=so, providers=["CPUExecutionProvider"])


def read_feeds(sess, specs):
    """--input values -> {name: array}, every graph input given once, cast to its ORT type."""
    inputs = sess.get_inputs()
    files = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            if len(inputs) != 1:
                raise ValueError(f"the model has {len(inputs)} inputs: give each as "
                                 "--input NAME=FILE.npy")
            name, path = inputs[0].name, spec
        files[name] = path
    known = {i.name for i in inputs}
    extra = sorted(set(files) - known)
    if extra:
        raise ValueError(f"the model has no input named {extra[0]!r}")
    feeds = {}
    for i in inputs:
        if i.name not in files:
            raise ValueError(f"missing --input for model input {i.name!r} ({i.type})")
        x = np.load(files[i.name], allow_pickle=False)
        feeds[i.name] = x.astype(ORT_TYPES.get(i.type, x.dtype), copy=False)
    return feeds


def time_runs(run, min_time, min_runs, warmup):
    for _ in range(warmup):
        run()
    ms = []
    begin = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        run()
        t1 = time.perf_counter()
        ms.append((t1 - t0) * 1e3)
        if len(ms) >= min_runs and t1 - begin >= min_time:
            break
    ms.sort()
    n = len(ms)
    return {"median_ms": ms[n // 2], "p90_ms": ms[min(n - 1, n * 9 // 10)], "min_ms": ms[0],
            "mean_ms": sum(ms) / n, "runs": n}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("model", help="ONNX file")
    p.add_argument("--input", action="append", default=[], required=True,
                   help="FILE.npy (single-input models) or NAME=FILE.npy, repeatable")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--min-time", type=float, default=1.0)
    p.add_argument("--min-runs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=5)
    args = p.parse_args()
    if args.threads < 1 or args.min_runs < 1:
        p.error("--threads and --min-runs must be at least 1")
    try:
        sess = make_session(args.model, args.threads)
        feeds = read_feeds(sess, args.input)
        stats = time_runs(lambda: sess.run(None, feeds), args.min_time, args.min_runs,
                          args.warmup)
    except Exception as e:  # one line, like loom's CLI
        print(f"ort_time: error: {one_line(e)}", file=sys.stderr)
        return 1
    import onnxruntime
    print(json.dumps({"runtime": "onnxruntime", "version": onnxruntime.__version__,
                      "model": args.model, "threads": args.threads, **stats}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
