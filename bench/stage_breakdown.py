#!/usr/bin/python3
"""Per-round stage time breakdown of one tuning job, from a Loom record database.

Reads the stage_timings table (one row per stage of each round: propose, build, measure, update,
with start/end in unix microseconds and the resource it ran on) and prints, per stage, the mean
and median time, total time and share of the round time; then the device's busy fraction
(measure time / wall time), its idle time, and how long the CPU side (propose, build, update)
sits idle while the device measures. The idle times are the gap a scheduler can fill by
overlapping rounds of other tasks/jobs.

Usage (Debian python3, only the standard library):
  /usr/bin/python3 bench/stage_breakdown.py DB JOB_ID [--task TASK_KEY] [--json]

Example (the figure in docs/BENCHMARKS.md, "Tuning engine (issue 3)"):
  XDG_CACHE_HOME=/tmp/fresh build/bench3/loom/cli/loom tune-task --conv2d 1,64,56,56,64,3,3,1,1 --trials 64 \
      --batch-size 8 --tuner xgb --seed 0 --db /tmp/stages.db --job-id stages \
      --device-cores 1 --no-transfer
  /usr/bin/python3 bench/stage_breakdown.py /tmp/stages.db stages
"""

import argparse
import json
import sqlite3
import statistics
import sys

STAGES = ("propose", "build", "measure", "update")


def load(db, job_id, task_key):
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    sql = ("SELECT task_key, round, stage, start_us, end_us, resource FROM stage_timings "
           "WHERE job_id = ?")
    args = [job_id]
    if task_key:
        sql += " AND task_key = ?"
        args.append(task_key)
    rows = con.execute(sql + " ORDER BY id", args).fetchall()
    con.close()
    return rows


def breakdown(rows):
    # Rounds keyed by (task, round): stage -> (start, end, resource).
    rounds = {}
    for task, rnd, stage, start, end, resource in rows:
        rounds.setdefault((task, rnd), []).append((stage, start, end, resource))
    per_stage = {s: [] for s in STAGES}
    round_walls = []
    measure_total = 0.0
    cpu_total = 0.0
    resources = {}
    for stages in rounds.values():
        start = min(s[1] for s in stages)
        end = max(s[2] for s in stages)
        round_walls.append((end - start) / 1e6)
        for stage, s, e, res in stages:
            d = (e - s) / 1e6
            per_stage.setdefault(stage, []).append(d)
            resources.setdefault(stage, set()).add(res)
            if stage == "measure":
                measure_total += d
            else:
                cpu_total += d
    all_start = min(r[3] for r in rows)
    all_end = max(r[4] for r in rows)
    wall = (all_end - all_start) / 1e6
    round_sum = sum(round_walls)
    out = {
        "rounds": len(rounds),
        "wall_s": wall,
        "stages": {},
        "device_busy_s": measure_total,
        "device_busy_fraction": measure_total / wall if wall > 0 else 0.0,
        "device_idle_s": wall - measure_total,
        "cpu_busy_s": cpu_total,
        # In the single-job loop the CPU stages and the measure stage never overlap, so the CPU
        # side is idle for the whole measure time (and the device for the whole CPU time).
        "cpu_idle_during_measure_s": measure_total,
        "cpu_idle_fraction": 1 - cpu_total / wall if wall > 0 else 0.0,
        "gap_s": wall - measure_total - cpu_total,
        "mean_round_s": statistics.mean(round_walls) if round_walls else 0.0,
    }
    for stage, times in per_stage.items():
        if not times:
            continue
        total = sum(times)
        out["stages"][stage] = {
            "n": len(times),
            "mean_s": statistics.mean(times),
            "median_s": statistics.median(times),
            "max_s": max(times),
            "total_s": total,
            "share_of_round": total / round_sum if round_sum > 0 else 0.0,
            "resources": sorted(resources.get(stage, [])),
        }
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("db")
    p.add_argument("job_id")
    p.add_argument("--task", default=None, help="only this task key")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    rows = load(a.db, a.job_id, a.task)
    if not rows:
        print(f"no stage timings for job {a.job_id!r} in {a.db}", file=sys.stderr)
        return 1
    b = breakdown(rows)
    if a.json:
        print(json.dumps(b, indent=2))
        return 0
    print(f"job {a.job_id}: {b['rounds']} rounds, wall {b['wall_s']:.2f} s, "
          f"mean round {b['mean_round_s']:.3f} s")
    print(f"| stage | rounds | mean ms | median ms | max ms | total s | share of round | resource |")
    print(f"|---|---:|---:|---:|---:|---:|---:|---|")
    for stage in list(STAGES) + [s for s in b["stages"] if s not in STAGES]:
        st = b["stages"].get(stage)
        if not st:
            continue
        print(f"| {stage} | {st['n']} | {st['mean_s'] * 1e3:.1f} | {st['median_s'] * 1e3:.1f} | "
              f"{st['max_s'] * 1e3:.1f} | {st['total_s']:.2f} | {st['share_of_round'] * 100:.1f}% | "
              f"{', '.join(st['resources'])} |")
    print()
    print(f"device busy (measure) {b['device_busy_s']:.2f} s = "
          f"{b['device_busy_fraction'] * 100:.1f}% of wall; device idle {b['device_idle_s']:.2f} s "
          f"({(1 - b['device_busy_fraction']) * 100:.1f}%)")
    print(f"CPU stages busy {b['cpu_busy_s']:.2f} s; CPU idle while the device measures "
          f"{b['cpu_idle_during_measure_s']:.2f} s; CPU idle overall "
          f"{b['cpu_idle_fraction'] * 100:.1f}% of wall")
    print(f"time outside any stage (loop overhead, record writes) {b['gap_s']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
