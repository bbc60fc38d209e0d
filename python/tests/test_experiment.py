"""loom.experiment: the smoke experiment run through the package and read back as objects,
tuning curves from its records, and the errors of specs, runs and result folders."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from conftest import REPO

import loom


def test_check_spec(tmp_path: Path) -> None:
    spec = loom.experiment.check_spec(REPO / "experiments" / "smoke.yaml")
    assert spec["name"] == "smoke"
    assert spec["setups"] == ["dedicated", "uncontrolled", "interleaved", "predictive"]
    assert [j["model"] for j in spec["jobs"]] == ["zoo:tiny_cnn", "zoo:tiny_cnn"]
    with pytest.raises(loom.NotFoundError):
        loom.experiment.check_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\njobs:\n  - {model: zoo:tiny_cnn, trails: 4}\n")
    with pytest.raises(loom.InvalidArgumentError, match="trails"):
        loom.experiment.check_spec(bad)


def test_run_reads_back_every_setup(smoke_results) -> None:
    r = smoke_results
    assert r.name == "smoke"
    assert [s.setup for s in r.setups] == ["dedicated", "uncontrolled", "interleaved", "predictive"]
    for s in r.setups:
        assert s.makespan_s > 0 and s.lower_bound_s > 0
        assert 0 < s.device_utilization <= 1 and s.cpu_utilization >= 0
        # The bound and the CPU utilization divide the CPU work by the slots, which uncontrolled
        # jobs oversubscribe; the other setups keep within them.
        if s.setup != "uncontrolled":
            assert s.makespan_s >= s.lower_bound_s * 0.99
            assert s.cpu_utilization <= 1
        assert len(s.jobs) == 2
        assert {t.kind for t in s.stages} == {"propose", "build", "measure", "update"}
        assert all(t.end >= t.start >= 0 for t in s.stages)
        assert all(t.resource and t.job in (0, 1) for t in s.stages)
        # Rounds from 0; -1 is the build and measure of a task's default config.
        assert all(t.round >= 0 or (t.round == -1 and t.kind in ("build", "measure"))
                   for t in s.stages)  # fmt: skip
        assert any(t.round == -1 for t in s.stages)
        assert 0 < s.device_busy_s <= s.makespan_s * 1.01
        assert s.device_hours > 0
        assert not math.isnan(s.distortion_median)
        for j in s.jobs:
            assert j.error == "" and j.records >= 4 and j.job_id.endswith("@" + s.setup)
            assert j.final_latency_ms > 0 and j.latency_error == ""
            assert j.tuned_latency_ms > 0 and not math.isnan(j.distortion_median)
            assert len(j.distortion) <= 2
            for d in j.distortion:
                if d.error == "":
                    assert d.in_run_s > 0 and d.alone_s > 0
                    assert d.distortion == pytest.approx(abs(d.in_run_s / d.alone_s - 1))
    # The simulator check: each setup's simulated makespan beside the measured one.
    if r.simulation_error == "":
        assert r.simulation_source == "dedicated"
        assert {row.setup for row in r.simulation} == {s.setup for s in r.setups}
        for row in r.simulation:
            assert row.policy and row.measured_s == pytest.approx(r.setup(row.setup).makespan_s)
            assert row.ratio == pytest.approx(row.simulated_s / row.measured_s, rel=1e-6)
    else:
        assert r.simulation == []
    assert r.setup("predictive").setup == "predictive"
    with pytest.raises(KeyError, match="setups: dedicated"):
        r.setup("nope")
    # Fields read from results.json as attributes, including ones the dataclass does not list.
    assert r.setups[0].raw["setup"] == "dedicated"
    assert r.setups[0].jobs[0].raw["name"] == r.setups[0].jobs[0].name
    with pytest.raises(AttributeError, match="no field 'nonexistent'"):
        r.setups[0].nonexistent  # noqa: B018


def test_tuning_curves_from_the_records(smoke_results) -> None:
    curves = smoke_results.tuning_curves()
    assert {(c.setup, c.job) for c in curves} == {
        (s.setup, j.name) for s in smoke_results.setups for j in s.jobs
    }
    for c in curves:
        assert c.trials == list(range(1, len(c.trials) + 1))
        assert len(c.seconds) == len(c.best_gflops) == len(c.trials)
        assert all(a <= b for a, b in zip(c.best_gflops, c.best_gflops[1:]))
        assert all(a <= b for a, b in zip(c.seconds, c.seconds[1:]))
        assert c.best_gflops[-1] > 0
    # Every tuning record is on a curve (the database also holds each job's default-config
    # latency measurement, under job id JOB#default, which is not tuning).
    with smoke_results.records() as db:
        tuning = sum(db.count(job=j.job_id) for s in smoke_results.setups for j in s.jobs)
        assert tuning == sum(len(c.trials) for c in curves) > 0


def test_load_errors(smoke_results, tmp_path: Path) -> None:
    with pytest.raises(loom.NotFoundError, match="no results.json"):
        loom.experiment.load(tmp_path)
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(loom.DataLossError, match="results.json"):
        loom.experiment.load(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"name": "x", "setups": [{"setup": "a"}]}))
    with pytest.raises(loom.DataLossError, match="bad or missing 'jobs'"):
        loom.experiment.load(tmp_path)
    # A copy without records.db still loads; its records are missing, named.
    copy = tmp_path / "copy"
    shutil.copytree(smoke_results.path, copy, ignore=shutil.ignore_patterns("records.db*"))
    r = loom.experiment.load(copy)
    assert len(r.setups) == 4 and not math.isnan(r.setups[0].makespan_s)
    with pytest.raises(loom.NotFoundError, match="records.db"):
        r.tuning_curves()


def test_a_failing_run_raises_the_runners_error(tmp_path: Path) -> None:
    spec = {"name": "broken", "setups": ["dedicated"],
            "jobs": [{"model": "zoo:no_such_model", "trials": 1}]}  # fmt: skip
    with pytest.raises(loom.LoomError, match="no_such_model") as e:
        loom.experiment.run(spec, tmp_path / "out", progress=False)
    assert "loom experiment" in e.value.message
    assert (tmp_path / "out" / "spec.yaml").is_file()
    with pytest.raises(loom.InvalidArgumentError, match="jobs"):
        loom.experiment.run({"name": "empty", "jobs": []}, tmp_path / "out2", progress=False)
