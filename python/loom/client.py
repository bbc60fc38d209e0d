"""A client of ``loom serve``: submit tuning jobs, follow them, collect their results.

It speaks the service's gRPC API through the same C++ client as the ``loom`` command's job
commands (``loom submit``, ``jobs``, ``status``, ``watch``, ``cancel``, ``logs``, ``result``),
and finds the server and token the same way: the arguments, else ``LOOM_SERVER`` /
``LOOM_TOKEN`` / ``LOOM_TLS_CA``, else ``~/.config/loom/config``, else ``127.0.0.1:7070``::

    client = loom.Client("10.0.0.5:7070", token="...")
    job = client.submit("zoo:resnet18", trials=64)
    for event in client.watch(job.id):
        print(event.message or event.job.state)
    result = client.result(job.id, "r18-result")      # records.db, best.json, compiled model
"""

from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from . import _loom
from .errors import LoomError

__all__ = ["Client", "Job", "TaskProgress", "Agent", "Event", "BestConfig", "JobResult"]

PathLike = Union[str, "os.PathLike[str]"]


def _time(us: int) -> Optional[datetime]:
    return None if us == 0 else datetime.fromtimestamp(us / 1e6, tz=timezone.utc)


@dataclass(frozen=True)
class TaskProgress:
    """One task of a job: trials done of ``trials``, the best GFLOPS so far, failed candidates
    (``errors``) and what runs or waits now (``stage``, e.g. ``"measure (queued)"``, ``"done"``)."""

    task_key: str
    trials_done: int
    trials: int
    best_gflops: float
    errors: int
    stage: str


@dataclass(frozen=True)
class Job:
    """A job as the service reports it. ``state`` is ``"queued"``, ``"running"``,
    ``"succeeded"``, ``"failed"`` or ``"cancelled"``; times are UTC datetimes, ``None`` until
    they happen; ``queue_position`` is 0 unless queued (1 = next)."""

    id: str
    owner: str
    name: str
    state: str
    priority: int
    target: str
    trials: int
    submitted: Optional[datetime]
    started: Optional[datetime]
    finished: Optional[datetime]
    failure_reason: str
    queue_position: int
    expected_start: Optional[datetime]
    tasks: Tuple[TaskProgress, ...]
    cpu_seconds: float
    device_seconds: float
    records: int
    estimated_latency_ms: float

    @property
    def ended(self) -> bool:
        """True once the job succeeded, failed or was cancelled."""
        return self.state in ("succeeded", "failed", "cancelled")

    @classmethod
    def _from(cls, d: Dict[str, Any]) -> "Job":
        return cls(
            id=d["id"],
            owner=d["owner"],
            name=d["name"],
            state=d["state"],
            priority=d["priority"],
            target=d["target"],
            trials=d["trials"],
            submitted=_time(d["submitted_us"]),
            started=_time(d["started_us"]),
            finished=_time(d["finished_us"]),
            failure_reason=d["failure_reason"],
            queue_position=d["queue_position"],
            expected_start=_time(d["expected_start_us"]),
            tasks=tuple(TaskProgress(**t) for t in d["tasks"]),
            cpu_seconds=d["cpu_seconds"],
            device_seconds=d["device_seconds"],
            records=d["records"],
            estimated_latency_ms=d["estimated_latency_ms"],
        )


@dataclass(frozen=True)
class Agent:
    """An agent's resources as the scheduler sees them (``loom jobs``' second table)."""

    agent_id: str
    hostname: str
    alive: bool
    cpu_slots: int
    cpu_slots_used: int
    devices: int
    devices_busy: int
    leases: int


@dataclass(frozen=True)
class Event:
    """One event of a watched job: a progress ``message`` (``"task 1/3: round 4 measured,
    ..."``) or a state change (then ``job`` is the job's new state; ``message`` empty)."""

    time: datetime
    message: str
    job: Optional[Job]


@dataclass(frozen=True)
class BestConfig:
    """The best config of one task of a finished job."""

    task_key: str
    template: str
    target_key: str
    config_index: int
    config_json: str
    median_cost: float
    gflops: float


@dataclass(frozen=True)
class JobResult:
    """A job's result. Without an output folder: ``job``, ``best`` and ``records_jsonl`` (every
    record as ``loom records export`` writes them). With one (:meth:`Client.result`), also where
    the files went: ``records_db``, ``best_json``, ``model`` (what was compiled: ``"zoo:NAME"``
    or the uploaded ONNX file) and ``artifact`` (the compiled model's folder, ``None`` when not
    compiled); when compiled, ``target`` (what it was compiled for: the CPU class the job was
    tuned on unless asked otherwise), ``target_key`` (the artifact's target) and ``tuned``
    (``"3 of 3 kernels tuned"``, with whose records when they came from another CPU of the
    class)."""

    job: Job
    best: Tuple[BestConfig, ...]
    records_jsonl: str
    records_db: Optional[str] = None
    records_written: int = 0
    best_json: Optional[str] = None
    model: Optional[str] = None
    artifact: Optional[str] = None
    target: Optional[str] = None
    target_key: Optional[str] = None
    tuned: Optional[str] = None


class Client:
    """A connection to ``loom serve``. ``server`` is ``HOST:PORT``, ``token`` the bearer token
    of your user, ``tls_ca`` a PEM CA certificate to connect with TLS; each defaults as the
    ``loom`` command does (module docstring). ``timeout`` is the deadline of each call in seconds
    (submitting and downloading results get at least five minutes). Connecting makes no call: an
    unreachable server raises :class:`loom.UnavailableError` at the first call. Methods may be
    called from several threads."""

    def __init__(
        self,
        server: Optional[str] = None,
        *,
        token: Optional[str] = None,
        tls_ca: Optional[PathLike] = None,
        timeout: float = 30.0,
    ) -> None:
        self._impl = _loom.JobClient.connect(
            server or "", token or "", "" if tls_ca is None else os.fspath(tls_ca), float(timeout)
        )

    def __repr__(self) -> str:
        return f"loom.Client({self.server!r})"

    @property
    def server(self) -> str:
        """The ``HOST:PORT`` this client talks to."""
        return self._impl.server

    def submit(
        self,
        model: Optional[PathLike] = None,
        *,
        name: Optional[str] = None,
        target: str = "cpu",
        trials: int = 32,
        priority: int = 0,
        latency_goal_ms: float = 0.0,
        tuner: str = _loom.DEFAULT_TUNER,
        batch_size: int = _loom.DEFAULT_BATCH_SIZE,
        max_tasks: int = 0,
        tasks: Optional[Sequence[int]] = None,
        seed: int = 0,
        prior: bool = True,
        input_shapes: Optional[Mapping[str, Sequence[int]]] = None,
        min_repeat_ms: int = 0,
        repeat: int = 0,
        run_timeout: float = 0.0,
        simulated: Optional[Mapping[str, float]] = None,
    ) -> Job:
        """Submits a tuning job and returns it as queued.

        ``model``: ``"zoo:NAME"``, a bare zoo name, or an ONNX file (uploaded). ``target``:
        ``"cpu"`` or ``"cuda"``. Each task gets ``trials`` candidates from ``tuner`` (seeded by
        ``seed``) in rounds of ``batch_size``; ``priority``: higher runs first;
        ``latency_goal_ms``: the job ends at once when known records already meet it.
        ``tasks``: indices of the tasks to tune (as :meth:`loom.Model.tasks` lists them), or
        ``max_tasks``: the first N. ``prior=False`` starts the cost model without the agents'
        built-in prior. ``input_shapes`` pins dynamic input dimensions by name.
        ``min_repeat_ms``, ``repeat``, ``run_timeout`` (seconds): how candidates are measured
        (0: the agents' defaults). ``simulated``: a load-test job instead of a model, e.g.
        ``{"tasks": 2, "rounds": 3, "measure": 0.1}``.

        Raises :class:`loom.InvalidArgumentError` for bad arguments (checked here first),
        :class:`loom.NotFoundError` for an unreadable model file; the service's refusals keep
        their code (e.g. :class:`loom.UnauthenticatedError`)."""
        d = self._impl.submit(
            "" if model is None else os.fspath(model),
            name or "",
            target,
            int(trials),
            int(priority),
            float(latency_goal_ms),
            tuner,
            int(batch_size),
            int(max_tasks),
            [int(t) for t in (tasks or [])],
            int(seed),
            bool(prior),
            {str(k): [int(x) for x in v] for k, v in (input_shapes or {}).items()},
            int(min_repeat_ms),
            int(repeat),
            float(run_timeout),
            None if simulated is None else {str(k): float(v) for k, v in simulated.items()},
        )
        return Job._from(d)

    def jobs(self, *, all_users: bool = False, include_ended: bool = False) -> List[Job]:
        """Your queued and running jobs (``include_ended``: finished ones too; ``all_users``:
        every user's, with an admin token)."""
        jobs, _ = self._impl.list(bool(all_users), bool(include_ended))
        return [Job._from(j) for j in jobs]

    def agents(self) -> List[Agent]:
        """The agents registered with the service and what their resources are doing now."""
        _, resources = self._impl.list(False, False)
        return [Agent(**r) for r in resources]

    def status(self, job_id: str) -> Job:
        """The job's current state and progress. :class:`loom.NotFoundError` for an unknown
        job (or another user's)."""
        return Job._from(self._impl.get(job_id))

    def cancel(self, job_id: str) -> Job:
        """Cancels the job (its running stages are stopped) and returns it."""
        return Job._from(self._impl.cancel(job_id))

    def logs(self, job_id: str, *, tail: int = 0) -> List[str]:
        """The job's log lines (the last ``tail`` when positive)."""
        return list(self._impl.logs(job_id, int(tail)))

    def watch(self, job_id: str, *, poll_seconds: float = 0.2) -> Iterator[Event]:
        """Iterates over the job's events until it ends: first its current state, then progress
        messages and state changes as they happen. The iterator ends when the job has ended
        (check the last event's ``job.state``); an error of the call (an unknown job, a lost
        server) is raised by the iteration.

        Events are read on a helper thread, so Ctrl-C interrupts the loop within
        ``poll_seconds``; breaking out of the loop, or closing the iterator, cancels the
        watch."""
        watch = self._impl.watch(job_id)
        events: "queue.Queue[Tuple[str, Any]]" = queue.Queue()

        def read() -> None:
            try:
                while True:
                    ev = watch.next()
                    events.put(("event", ev))
                    if ev is None:
                        return
            except LoomError as e:
                events.put(("error", e))

        reader = threading.Thread(target=read, name=f"loom-watch-{job_id}", daemon=True)
        reader.start()
        return self._events(watch, events, reader, poll_seconds)

    @staticmethod
    def _events(
        watch: Any,
        events: "queue.Queue[Tuple[str, Any]]",
        reader: threading.Thread,
        poll_seconds: float,
    ) -> Iterator[Event]:
        try:
            while True:
                try:
                    kind, value = events.get(timeout=poll_seconds)
                except queue.Empty:
                    continue
                if kind == "error":
                    raise value
                if value is None:
                    return
                yield Event(
                    time=_time(value["time_us"]) or datetime.fromtimestamp(0, tz=timezone.utc),
                    message=value["message"],
                    job=None if value["job"] is None else Job._from(value["job"]),
                )
        finally:
            watch.cancel()
            reader.join(timeout=10)

    def result(
        self,
        job_id: str,
        output: Optional[PathLike] = None,
        *,
        compile: bool = True,
        target: Optional[str] = None,
    ) -> JobResult:
        """The job's result: its best config per task and every record.

        With ``output``, also writes what ``loom result JOB -o DIR`` writes there:
        ``records.db`` (the job's records), ``best.json``, ``model.onnx`` (an uploaded model)
        and, with ``compile``, the model compiled from those records as an artifact folder
        ``DIR/model`` (load it with :func:`loom.load_artifact`). ``target``: compile for
        ``"cpu"`` (this machine) or a CPU class (``"cpu:avx2"``); default: the class the job
        was tuned on, whose records then apply here (``JobResult.tuned`` says how many).
        A compile this CPU cannot run raises :class:`loom.FailedPreconditionError`."""
        d = self._impl.result(
            job_id, None if output is None else os.fspath(output), bool(compile), target or ""
        )
        best = tuple(BestConfig(**b) for b in d["best"])
        if output is None:
            return JobResult(job=Job._from(d["job"]), best=best, records_jsonl=d["records_jsonl"])
        return JobResult(
            job=Job._from(d["job"]),
            best=best,
            records_jsonl=d["records_jsonl"],
            records_db=d["records_db"],
            records_written=d["records_written"],
            best_json=d["best_json"],
            model=d["model"] or None,
            artifact=d["artifact"] or None,
            target=d["target"] or None,
            target_key=d["target_key"] or None,
            tuned=d["tuned"] or None,
        )
