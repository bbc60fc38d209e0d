"""loom.records against the database a real tuning run wrote, and against `loom records
export` / `summary`, the CLI's view of the same file."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_loom

import loom


def test_open_errors(tmp_path: Path) -> None:
    with pytest.raises(loom.NotFoundError, match="does not exist"):
        loom.records.open(tmp_path / "missing.db")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not an sqlite file at all, just text" * 100)
    with pytest.raises(loom.InvalidArgumentError):
        loom.records.open(junk)
    created = loom.records.open(tmp_path / "new.db", create=True)
    assert created.count() == 0 and created.records() == [] and created.targets() == []
    assert created.best() == {}
    created.close()
    with pytest.raises(loom.FailedPreconditionError, match="is closed"):
        created.count()


def test_records_match_the_export(tuned: dict, loom_bin: str, tmp_path: Path) -> None:
    db_path = tuned["db"]
    run_loom(loom_bin, "records", "export", "--db", str(db_path), "-o", str(tmp_path / "x.jsonl"))
    exported = [json.loads(line) for line in (tmp_path / "x.jsonl").read_text().splitlines()]
    with loom.records.open(db_path) as db:
        records = db.records()
        assert len(records) == len(exported) == db.count() == len(db)
        assert len(records) >= 8  # 2 tasks x 4 trials, and each task's default config
        for r, e in zip(records, exported):
            assert (r.task_key, r.template, r.target_key, r.config_index, r.job_id) == (
                e["task_key"], e["template"], e["target_key"], e["config_index"], e["job_id"],
            )  # fmt: skip
            assert r.config == e["config"] and list(r.costs) == e["costs"]
            assert r.median_cost == e["median_cost"] and r.error == e["error"]
        # The export's lines are the same records, one for one.
        assert [loom.records.Record.from_json(e) for e in exported] == records
        assert all(r.build_seconds >= 0 and r.measure_seconds >= 0 for r in records)
        assert any(r.ok and r.measure_seconds > 0 for r in records)
        with pytest.raises(KeyError, match="task_key"):
            loom.records.Record.from_json({"template": "x"})
        assert db.targets() == [loom.records.host_target()]
        job = records[0].job_id
        assert db.count(job=job) == len(db.records(job=job)) > 0
        assert db.count(task="conv2d:f32:no_such_task") == 0


def test_dataframe_matches_loom_records_export(tuned: dict, loom_bin: str, tmp_path: Path) -> None:
    run_loom(loom_bin, "records", "export", "--db", str(tuned["db"]), "-o", str(tmp_path / "x.jsonl"))
    want = pd.read_json(
        tmp_path / "x.jsonl", lines=True, convert_dates=["timestamp"], precise_float=True
    )
    with loom.records.open(tuned["db"]) as db:
        frame = db.dataframe()
    assert list(frame.columns) == list(want.columns) + ["gflops"]
    assert len(frame) == len(want)
    for column in want.columns:
        if column == "timestamp":
            assert (frame[column] == pd.to_datetime(want[column], utc=True)).all()
        elif column == "median_cost":
            got, exp = frame[column].to_numpy(), want[column].to_numpy(dtype=float)
            assert ((got == exp) | (pd.isna(got) & pd.isna(exp))).all()
        else:
            assert frame[column].tolist() == want[column].tolist(), column
    ok = frame[frame.error == "none"]
    assert ((ok.gflops - ok.flops / ok.median_cost / 1e9).abs() < 1e-9).all()
    assert (frame[frame.error != "none"].gflops == 0).all()


def test_best_history_and_summaries(tuned: dict, loom_bin: str) -> None:
    with loom.records.open(tuned["db"]) as db:
        summaries = db.tasks()
        assert len(summaries) == 2
        cli = run_loom(loom_bin, "records", "summary", "--db", str(tuned["db"])).stdout
        for s in summaries:
            assert s.task_key in cli
            assert s.trials >= 4 and 0 <= s.errors <= s.trials
        best = db.best()
        assert set(best) == {s.task_key for s in summaries}
        for key, record in best.items():
            history = db.history(key)
            assert len(history) == next(s.trials for s in summaries if s.task_key == key)
            ok = [r for r in history if r.ok]
            assert record.median_cost == min(r.median_cost for r in ok)
            assert record.gflops == pytest.approx(max(r.gflops for r in ok))
            top = db.best(key, k=3)
            assert top[0].median_cost == record.median_cost
            assert [r.median_cost for r in top] == sorted(r.median_cost for r in top)
            summary = next(s for s in summaries if s.task_key == key)
            assert summary.best_cost == pytest.approx(record.median_cost)
            assert (summary.best_template, summary.best_config_index) == (
                record.template, record.config_index,
            )  # fmt: skip
        assert db.tasks(target="cpu:avx512:no such cpu") == []
        with pytest.raises(loom.InvalidArgumentError):
            db.best(summaries[0].task_key, k=-1)


def test_stage_timings_of_a_job(tuned: dict) -> None:
    with loom.records.open(tuned["db"]) as db:
        job = db.records()[0].job_id
        timings = db.stage_timings(job)
        assert {t.stage for t in timings} == {"propose", "build", "measure", "update"}
        assert all(t.end >= t.start and t.seconds >= 0 for t in timings)
        assert {t.round for t in timings} == set(range(max(t.round for t in timings) + 1))
        assert all(t.resource for t in timings)
        assert db.stage_timings("no-such-job") == []


def test_failed_records_read_as_failed(tmp_path: Path, loom_bin: str) -> None:
    """A record of a failed candidate: error kind and message, no median cost, zero GFLOPS."""
    line = {
        "task_key": "conv2d:f32:n1_c3_h8_w8_k4_r3_s3_st1x1_p1x1x1x1_d1x1_g1",
        "template": "conv2d_nchwc",
        "target_key": "cpu:generic:test",
        "config_index": 5,
        "config": {"tile": 2},
        "costs": [],
        "median_cost": None,
        "flops": 1000.0,
        "error": "compile",
        "error_msg": "compiler exited with status 1",
        "timestamp": "2024-05-01T12:00:00.000001Z",
        "job_id": "j-test",
        "build_seconds": 0.5,
        "measure_seconds": 0.0,
    }
    (tmp_path / "r.jsonl").write_text(json.dumps(line) + "\n")
    run_loom(loom_bin, "records", "import", "--db", str(tmp_path / "r.db"), str(tmp_path / "r.jsonl"))
    with loom.records.open(tmp_path / "r.db") as db:
        (r,) = db.records()
        assert not r.ok and r.error == "compile" and r.median_cost is None and r.gflops == 0
        assert r.error_msg == "compiler exited with status 1"
        assert (r.build_seconds, r.measure_seconds) == (0.5, 0.0)
        assert r.timestamp.isoformat() == "2024-05-01T12:00:00.000001+00:00"
        assert db.tasks(target="cpu:generic:test")[0].best_cost is None
        assert db.best(target="cpu:generic:test") == {}
        assert math.isnan(db.dataframe().median_cost[0])
    with sqlite3.connect(tmp_path / "r.db") as con:  # the file is a plain SQLite database
        assert con.execute("select count(*) from sqlite_master").fetchone()[0] > 0
