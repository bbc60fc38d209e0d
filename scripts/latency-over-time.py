#!/usr/bin/env python3
"""A model's estimated latency over a tuning run, from the records' timestamps.

The estimate at time t is the sum over the model's tasks of count x the task's best measured
kernel time among the job's records stored by t (its default config's record, `JOB#default`,
counts as one of them). It is defined from the time every task has a record. Inputs:
`loom records export --db DB` (JSON lines) and `loom tasks MODEL --json` (the task counts).

  scripts/latency-over-time.py --records run.jsonl --tasks tasks.json --start UNIX_SECONDS \
      [--job JOB_ID] [--reach MS]

prints one line per record that lowered the estimate: seconds since --start and the estimate in
ms, then the final estimate and, with --reach, the first time the estimate was at or below MS.
"""
import argparse
import datetime
import json
import math
import sys


def Seconds(timestamp):
    """UNIX seconds of a record's timestamp ("2026-12-07T21:20:01.123456Z", UTC)."""
    text = timestamp.rstrip("Z").replace("+00:00", "")
    return datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.timezone.utc).timestamp()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--records", required=True)
    p.add_argument("--tasks", required=True)
    p.add_argument("--start", type=float, required=True, help="the run's start, UNIX seconds")
    p.add_argument("--job", default="", help="job id (default: the only job in the records)")
    p.add_argument("--reach", type=float, default=None, help="ms: report when the estimate got there")
    a = p.parse_args()

    with open(a.tasks) as f:
        counts = {t["key"]: int(t["count"]) for t in json.load(f)}
    records = []
    with open(a.records) as f:
        for line in f:
            if line.strip():
                records.append(json.loads(line))
    jobs = {r["job_id"].removesuffix("#default") for r in records}
    job = a.job or (jobs.pop() if len(jobs) == 1 else None)
    if job is None:
        sys.exit(f"several jobs in the records ({sorted(jobs)}): give --job")
    mine = [r for r in records if r["job_id"] in (job, job + "#default") and r["task_key"] in counts]
    for r in mine:
        r["t"] = Seconds(r["timestamp"])
    mine.sort(key=lambda r: r["t"])
    best = {}
    lowest = math.inf
    reached = None
    for r in mine:
        cost = r.get("median_cost")
        if cost is None or not math.isfinite(cost):  # a failed record
            continue
        key = r["task_key"]
        if cost >= best.get(key, math.inf):
            continue
        best[key] = cost
        if len(best) < len(counts):
            continue
        ms = 1e3 * sum(counts[k] * best[k] for k in counts)
        if ms < lowest:
            lowest = ms
            t = r["t"] - a.start
            print(f"{t:9.1f} s  {ms:9.3f} ms")
            if a.reach is not None and reached is None and ms <= a.reach:
                reached = t
    if len(best) < len(counts):
        sys.exit(f"only {len(best)} of {len(counts)} tasks have a successful record")
    print(f"final estimate {lowest:.3f} ms over {len(counts)} tasks")
    if a.reach is not None:
        print(f"reached {a.reach:.3f} ms: " + (f"at {reached:.1f} s" if reached is not None else "never"))


if __name__ == "__main__":
    main()
