"""loom.Client against a real `loom serve` and `loom agent` on loopback: a real tuning job
watched to its end and its result compiled, simulated jobs, and the service's errors."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import Service, wait_for

import loom


def test_watch_yields_the_events_of_a_real_job(service: Service, tmp_path: Path) -> None:
    client = loom.Client(service.server, token="tok-alice")
    job = client.submit(
        "zoo:tiny_cnn", tasks=[0], trials=2, batch_size=2, tuner="random", min_repeat_ms=5,
        repeat=2, name="py-real",
    )  # fmt: skip
    assert job.id and job.name == "py-real" and job.owner == "alice"
    assert job.state in ("queued", "running") and not job.ended
    assert len(job.tasks) == 1 and job.tasks[0].trials == 2
    events = list(client.watch(job.id))
    assert events, "no events"
    assert events[0].job is not None and events[0].job.id == job.id  # the current state first
    states = [e.job.state for e in events if e.job is not None]
    assert states[-1] == "succeeded", service.logs()
    assert any(e.message for e in events), [e for e in events]
    assert all(events[i].time <= events[i + 1].time for i in range(len(events) - 1))

    done = client.status(job.id)
    assert done.state == "succeeded" and done.ended
    assert done.records >= 2 and done.tasks[0].trials_done == 2
    assert done.submitted is not None and done.finished is not None
    assert done.started is not None and done.submitted <= done.started <= done.finished
    assert done.finished >= done.submitted
    assert done.priority == 0 and done.failure_reason == "" and done.queue_position == 0
    assert done.expected_start is None  # only while queued
    assert done.cpu_seconds > 0 and done.device_seconds > 0
    assert done.estimated_latency_ms > 0
    assert job.id in [j.id for j in client.jobs(include_ended=True)]
    assert job.id not in [j.id for j in client.jobs()]  # ended jobs only when asked
    assert client.logs(job.id), "no log lines"
    assert len(client.logs(job.id, tail=1)) == 1

    result = client.result(job.id, tmp_path / "result")
    assert result.job.id == job.id and len(result.best) == 1
    assert result.best[0].gflops > 0 and result.records_written >= 2
    assert isinstance(json.loads(result.best[0].config_json), dict)
    assert result.model == "zoo:tiny_cnn"
    assert Path(result.best_json).is_file() and Path(result.records_db).is_file()
    with loom.records.open(result.records_db) as db:
        assert db.count() == result.records_written
    compiled = loom.load_artifact(result.artifact)
    assert compiled.compile_stats["tuned_kernels"] >= 1
    # Compiled for the class the job was tuned on (the agent's: this host's), saying so.
    assert result.target == ":".join(loom.records.host_target().split(":")[:2])
    assert result.target_key == compiled.compile_stats["target"]
    assert result.tuned.startswith(f"{compiled.compile_stats['tuned_kernels']} of 3 kernels tuned")
    with pytest.raises(loom.InvalidArgumentError, match="compiling the tuned model for cpu:avx9"):
        client.result(job.id, tmp_path / "other", target="cpu:avx9")
    (out,) = compiled.run(np.zeros((1, 3, 32, 32), np.float32))
    assert out.shape == (1, 10)
    bare = client.result(job.id)
    assert bare.records_db is None and bare.artifact is None
    assert len(bare.records_jsonl.splitlines()) == result.records_written


def test_simulated_jobs_cancel_and_agents(service: Service) -> None:
    client = loom.Client(service.server, token="tok-bob")
    long = client.submit(simulated={"tasks": 1, "rounds": 1000, "measure": 0.05}, name="long")
    wait_for(lambda: client.status(long.id).state == "running", 30, "the simulated job to start")
    cancelled = client.cancel(long.id)
    assert cancelled.id == long.id
    wait_for(lambda: client.status(long.id).state == "cancelled", 30, "the job to be cancelled")
    events = list(client.watch(long.id))  # an ended job: its state, then the stream ends
    assert events and events[-1].job is not None and events[-1].job.state == "cancelled"
    agents = loom.Client(service.server, token="tok-root").agents()
    assert [a.hostname for a in agents if a.alive] and agents[0].cpu_slots == 1
    assert agents[0].agent_id and agents[0].devices == 1
    assert 0 <= agents[0].devices_busy <= 1 and 0 <= agents[0].cpu_slots_used <= 1
    assert agents[0].leases >= 0
    # Users see only their own jobs; an admin sees every user's.
    alice = loom.Client(service.server, token="tok-alice")
    assert long.id not in [j.id for j in alice.jobs(include_ended=True)]
    with pytest.raises(loom.NotFoundError):
        alice.status(long.id)
    root = loom.Client(service.server, token="tok-root")
    assert long.id in [j.id for j in root.jobs(all_users=True, include_ended=True)]


def test_breaking_out_of_a_watch_cancels_it(service: Service) -> None:
    client = loom.Client(service.server, token="tok-alice")
    job = client.submit(simulated={"tasks": 1, "rounds": 200, "measure": 0.05})
    watch = client.watch(job.id)
    first = next(watch)
    assert first.job is not None and first.job.id == job.id
    started = time.monotonic()
    watch.close()  # what `break` does
    assert time.monotonic() - started < 10
    client.cancel(job.id)


def test_service_errors_are_typed(service: Service, tmp_path: Path) -> None:
    with pytest.raises(loom.UnauthenticatedError):
        loom.Client(service.server, token="tok-wrong").jobs()
    client = loom.Client(service.server, token="tok-alice")
    with pytest.raises(loom.NotFoundError, match="j999"):
        client.status("j999")
    with pytest.raises(loom.NotFoundError):
        list(client.watch("j999"))
    with pytest.raises(loom.InvalidArgumentError, match="trials must be at least 1"):
        client.submit("zoo:tiny_cnn", trials=0)
    with pytest.raises(loom.InvalidArgumentError, match="not both"):
        client.submit("zoo:tiny_cnn", simulated={"tasks": 1})
    with pytest.raises(loom.InvalidArgumentError, match="unknown key 'speed'"):
        client.submit(simulated={"speed": 1})
    with pytest.raises(loom.InvalidArgumentError, match="a model is required"):
        client.submit()
    with pytest.raises(loom.NotFoundError, match="missing.onnx"):
        client.submit(tmp_path / "missing.onnx")
    with pytest.raises(loom.InvalidArgumentError, match="tail"):
        client.logs("j1", tail=-1)
    with pytest.raises(loom.InvalidArgumentError, match="timeout"):
        loom.Client(service.server, timeout=0)


def test_an_unreachable_server_is_unavailable() -> None:
    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = loom.Client(f"127.0.0.1:{port}", token="x", timeout=5)
    assert client.server == f"127.0.0.1:{port}"
    with pytest.raises(loom.UnavailableError, match=f"127.0.0.1:{port}") as e:
        client.jobs()
    assert isinstance(e.value, ConnectionError)
