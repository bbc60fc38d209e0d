"""The tuning database: every measured candidate of every job, as plain Python objects.

::

    import loom

    with loom.records.open("r18.db") as db:
        for task in db.tasks():                      # one summary per task on this CPU
            print(task.task_key, task.trials, task.best_gflops)
        best = db.best()                             # {task key: its best Record}
        curve = db.history(task.task_key)            # every Record of the task, in order
        frame = db.dataframe()                       # all records (needs pandas)

Records are read as ``loom records export`` writes them (one JSON object per record), so a
DataFrame holds the same values as the exported file. Queries that take a ``target`` default to
this CPU's target key (:func:`host_target`), as ``loom records summary`` does.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

from . import _loom

__all__ = ["open", "RecordDB", "Record", "TaskSummary", "StageTiming", "host_target"]

PathLike = Union[str, "os.PathLike[str]"]


def host_target() -> str:
    """This CPU's target key (``"cpu:avx512:<model name>"``): the key its records are stored
    under and the default ``target`` of the queries."""
    return _loom.host_target()


def _time(text: str) -> datetime:
    # RFC 3339 in UTC with microseconds, as the store writes it ("2024-05-01T12:00:00.123456Z").
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


@dataclass(frozen=True)
class Record:
    """One measured (or failed) candidate config of a task.

    ``config`` is the config's knobs (a dict); ``costs`` the seconds of each timed repeat;
    ``median_cost`` their median, ``None`` for a failed record, whose ``error`` names the
    failure (``"compile"``, ``"runtime"``, ``"run_timeout"``, ...; ``"none"`` on success) and
    ``error_msg`` says why. ``flops`` is the work of one run, so ``gflops`` is derived."""

    task_key: str
    template: str
    target_key: str
    config_index: int
    config: Any
    costs: Tuple[float, ...]
    median_cost: Optional[float]
    flops: float
    error: str
    error_msg: str
    timestamp: datetime
    job_id: str
    build_seconds: float
    measure_seconds: float

    @property
    def ok(self) -> bool:
        """True for a successful measurement."""
        return self.error == "none"

    @property
    def gflops(self) -> float:
        """Throughput of the candidate: flops / median_cost / 1e9; 0 for a failed record."""
        if not self.ok or not self.median_cost:
            return 0.0
        return self.flops / self.median_cost / 1e9

    @classmethod
    def from_json(cls, obj: Dict[str, Any]) -> "Record":
        """A record from one object of ``loom records export``'s JSON lines (``json.loads`` of
        one line); ``KeyError`` naming a missing field."""
        return cls(
            task_key=obj["task_key"],
            template=obj["template"],
            target_key=obj["target_key"],
            config_index=int(obj["config_index"]),
            config=obj["config"],
            costs=tuple(float(c) for c in obj["costs"]),
            median_cost=None if obj["median_cost"] is None else float(obj["median_cost"]),
            flops=float(obj["flops"]),
            error=obj["error"],
            error_msg=obj["error_msg"],
            timestamp=_time(obj["timestamp"]),
            job_id=obj["job_id"],
            build_seconds=float(obj["build_seconds"]),
            measure_seconds=float(obj["measure_seconds"]),
        )


@dataclass(frozen=True)
class TaskSummary:
    """Per task on one target: records (``trials``, failed ones included), ``errors``, and the
    best successful record's cost in seconds (``None`` when none succeeded), GFLOPS, template
    and config index (-1 when none succeeded)."""

    task_key: str
    trials: int
    errors: int
    best_cost: Optional[float]
    best_gflops: float
    best_template: str
    best_config_index: int


@dataclass(frozen=True)
class StageTiming:
    """One stage (``"propose"``, ``"build"``, ``"measure"``, ``"update"``) of one tuning round of
    a task in a job: when it ran (UTC) and on which resource."""

    job_id: str
    task_key: str
    round: int
    stage: str
    start: datetime
    end: datetime
    resource: str

    @property
    def seconds(self) -> float:
        """How long the stage ran."""
        return (self.end - self.start).total_seconds()


def _us(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1e6, tz=timezone.utc)


def _parse(lines: List[str]) -> List[Record]:
    return [Record.from_json(json.loads(line)) for line in lines if line.strip()]


class RecordDB:
    """An open record database (:func:`open`). Safe to use from several threads; several
    processes (a tuning run among them) may use the same file at once. Close it with
    :meth:`close` or a ``with`` block."""

    def __init__(self, impl: _loom.RecordStore) -> None:
        self._impl = impl

    def __repr__(self) -> str:
        return f"loom.records.RecordDB({self.path!r})"

    @property
    def path(self) -> str:
        """The database file."""
        return self._impl.path

    def __enter__(self) -> "RecordDB":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the database; later queries raise :class:`loom.FailedPreconditionError`."""
        self._impl.close()

    def records(
        self, *, task: Optional[str] = None, target: Optional[str] = None, job: Optional[str] = None
    ) -> List[Record]:
        """Every record (of ``task``, ``target`` and ``job`` when given), failed ones included,
        in the order they were stored: what ``loom records export`` writes."""
        text = self._impl.export_jsonl(task, target, job)
        return _parse(text.splitlines())

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records())

    def __len__(self) -> int:
        return self.count()

    def count(
        self, *, task: Optional[str] = None, target: Optional[str] = None, job: Optional[str] = None
    ) -> int:
        """The number of records (of ``task``, ``target`` and ``job`` when given)."""
        return int(self._impl.count(task, target, job))

    def targets(self) -> List[str]:
        """The target keys the database has records for, sorted."""
        return sorted({r.target_key for r in self.records()})

    def tasks(self, *, target: Optional[str] = None) -> List[TaskSummary]:
        """One summary per task with records on ``target`` (default: this CPU), in the order of
        each task's first record: what ``loom records summary`` prints."""
        return [TaskSummary(**t) for t in self._impl.summary(target or host_target())]

    def best(
        self, task: Optional[str] = None, *, target: Optional[str] = None, k: int = 1
    ) -> Union[Dict[str, Record], List[Record]]:
        """The best successful records by median cost, one per distinct config.

        With ``task``: a list of that task's ``k`` best records (fewer when it has fewer), best
        first. Without: ``{task key: its best record}`` for every task on ``target`` (default:
        this CPU) with a successful record."""
        tgt = target or host_target()
        if task is not None:
            return _parse(self._impl.best(task, tgt, int(k)))
        out: Dict[str, Record] = {}
        for summary in self.tasks(target=tgt):
            top = _parse(self._impl.best(summary.task_key, tgt, 1))
            if top:
                out[summary.task_key] = top[0]
        return out

    def history(
        self, task: str, *, target: Optional[str] = None, job: Optional[str] = None
    ) -> List[Record]:
        """Every record of ``task`` on ``target`` (default: this CPU; of ``job`` only when
        given), failed ones included, in the order measured: a task's tuning curve."""
        return _parse(self._impl.history(task, target or host_target(), job))

    def stage_timings(self, job: str) -> List[StageTiming]:
        """The stage timings of ``job``'s tuning rounds, in the order stored (``loom records
        stages`` summarizes them)."""
        return [
            StageTiming(
                job_id=t["job_id"],
                task_key=t["task_key"],
                round=t["round"],
                stage=t["stage"],
                start=_us(t["start"]),
                end=_us(t["end"]),
                resource=t["resource"],
            )
            for t in self._impl.stage_timings(job)
        ]

    def dataframe(
        self, *, task: Optional[str] = None, target: Optional[str] = None, job: Optional[str] = None
    ) -> "Any":
        """The records (as :meth:`records` selects them) as a pandas DataFrame, one row per
        record in stored order, with the columns of ``loom records export`` (``median_cost`` NaN
        for failed records, ``timestamp`` as UTC datetimes) plus ``gflops``. Raises
        ``ImportError`` naming pandas when it is not installed."""
        try:
            import pandas as pd
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("RecordDB.dataframe() needs pandas (pip install pandas)") from e
        rows = [
            {
                "task_key": r.task_key,
                "template": r.template,
                "target_key": r.target_key,
                "config_index": r.config_index,
                "config": r.config,
                "costs": list(r.costs),
                "median_cost": math.nan if r.median_cost is None else r.median_cost,
                "flops": r.flops,
                "error": r.error,
                "error_msg": r.error_msg,
                "timestamp": r.timestamp,
                "job_id": r.job_id,
                "build_seconds": r.build_seconds,
                "measure_seconds": r.measure_seconds,
                "gflops": r.gflops,
            }
            for r in self.records(task=task, target=target, job=job)
        ]
        columns = [
            "task_key", "template", "target_key", "config_index", "config", "costs",
            "median_cost", "flops", "error", "error_msg", "timestamp", "job_id",
            "build_seconds", "measure_seconds", "gflops",
        ]  # fmt: skip
        frame = pd.DataFrame(rows, columns=columns)
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
        return frame


def open(db: PathLike, *, create: bool = False) -> RecordDB:  # noqa: A001 - the module's verb
    """Opens the record database ``db`` (an SQLite file written by ``loom tune``,
    :meth:`loom.Model.tune` or ``loom result``).

    Raises :class:`loom.NotFoundError` when it does not exist (unless ``create``),
    :class:`loom.InvalidArgumentError` when it is not an SQLite database and
    :class:`loom.FailedPreconditionError` when its schema is newer than this Loom's."""
    return RecordDB(_loom.RecordStore.open(os.fspath(db), bool(create)))
