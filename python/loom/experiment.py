"""Experiments: the same tuning jobs under each setup (each job alone, then all at once under
the scheduler's policies), and their results as objects.

::

    results = loom.experiment.run("experiments/smoke.yaml", "out/smoke")
    # or, for an experiment run before:  results = loom.experiment.load("out/smoke")
    for setup in results.setups:
        print(setup.setup, setup.makespan_s, setup.device_utilization, setup.distortion_median)
    for curve in results.tuning_curves():
        print(curve.setup, curve.job, curve.task_key, curve.best_gflops[-1])

:func:`run` runs ``loom experiment SPEC -o OUT`` (the experiment runner of the ``loom`` program
installed with the package, in its own process: it pins the measure worker to the device cores
and runs for minutes) after checking the spec here; :func:`load` reads ``OUT/results.json`` and
``OUT/records.db``. Fields the runner adds after this version are kept too: every result object
answers any key of its JSON object as an attribute, and ``raw`` is the whole object.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Union

from . import _loom
from . import records as _records
from ._binary import loom_binary
from .errors import FailedPreconditionError, InvalidArgumentError, NotFoundError, UnknownError

__all__ = [
    "run",
    "load",
    "check_spec",
    "Results",
    "Setup",
    "SetupJob",
    "StageTrace",
    "DistortionSample",
    "SimulationRow",
    "TuningCurve",
]

PathLike = Union[str, "os.PathLike[str]"]


class _FromJson:
    """A result object read from results.json: the fields it declares, and ``raw``, the whole
    JSON object; other keys (added by later versions of the runner) read as attributes too."""

    raw: Dict[str, Any]

    def __getattr__(self, name: str) -> Any:
        raw = self.__dict__.get("raw", {})
        if name in raw:
            return raw[name]
        raise AttributeError(f"{type(self).__name__} has no field '{name}'")


def _num(v: Any) -> float:
    """A number of results.json; null (a value that was not measured) becomes NaN."""
    return float("nan") if v is None else float(v)


@dataclass
class StageTrace(_FromJson):
    """One stage of a setup's run: ``kind`` (``"propose"``, ``"build"``, ``"measure"``,
    ``"update"``) of ``job`` (its index in the spec) in tuning ``round`` (from 0; -1 for the
    build and measure of the task's default config) on ``resource``, ``start`` and ``end`` in
    seconds from the setup's start."""

    job: int
    kind: str
    task_key: str
    round: int
    resource: str
    start: float
    end: float
    raw: Dict[str, Any] = field(repr=False, default_factory=dict)


@dataclass
class DistortionSample(_FromJson):
    """A candidate re-measured alone after the setup: its time in the run and alone (seconds)
    and ``distortion`` = |in_run / alone - 1| (NaN when one of them failed: see ``error``)."""

    task_key: str
    config_index: int
    in_run_s: float
    alone_s: float
    distortion: float
    error: str
    raw: Dict[str, Any] = field(repr=False, default_factory=dict)


@dataclass
class SetupJob(_FromJson):
    """One job in one setup: its time (``seconds``), its tuned kernels' estimated latency, its
    model's ``final_latency_ms`` (compiled from this setup's records, timed alone; NaN when not
    measured), measurement distortion and records; ``error`` empty when it succeeded."""

    name: str
    job_id: str
    seconds: float
    tuned_latency_ms: float
    final_latency_ms: float
    latency_error: str
    distortion_median: float
    distortion: List[DistortionSample]
    records: int
    error: str
    raw: Dict[str, Any] = field(repr=False, default_factory=dict)


@dataclass
class Setup(_FromJson):
    """One setup (``"dedicated"``, ``"uncontrolled"``, ``"interleaved"``, ``"predictive"``, ...):
    its makespan and the bound no schedule of its work can beat (seconds), device and CPU
    utilization (0..1), device-hours used, the median measurement distortion, its jobs and the
    stage traces of its run."""

    setup: str
    makespan_s: float
    lower_bound_s: float
    device_busy_s: float
    device_utilization: float
    cpu_utilization: float
    device_hours: float
    distortion_median: float
    jobs: List[SetupJob]
    stages: List[StageTrace]
    raw: Dict[str, Any] = field(repr=False, default_factory=dict)


@dataclass
class SimulationRow(_FromJson):
    """The simulator's makespan of one setup beside the measured one (``ratio`` =
    simulated / measured)."""

    setup: str
    policy: str
    measured_s: float
    simulated_s: float
    ratio: float
    raw: Dict[str, Any] = field(repr=False, default_factory=dict)


@dataclass
class TuningCurve:
    """The tuning curve of one task of one job in one setup: after each of its records, in the
    order measured, the trial number (from 1), the seconds since the job's first record and the
    best GFLOPS so far (0 until a candidate succeeds)."""

    setup: str
    job: str
    job_id: str
    task_key: str
    trials: List[int]
    seconds: List[float]
    best_gflops: List[float]


@dataclass
class Results(_FromJson):
    """An experiment's results (``OUT/results.json``): its setups in the order run, the simulator
    check (``simulation``, ``simulation_error``) and, when run through the service, ``service``
    (the raw rows). ``path`` is the output folder."""

    name: str
    path: str
    setups: List[Setup]
    simulation: List[SimulationRow]
    simulation_source: str
    simulation_error: str
    raw: Dict[str, Any] = field(repr=False, default_factory=dict)

    def setup(self, name: str) -> Setup:
        """The setup called ``name``; ``KeyError`` listing the setups otherwise."""
        for s in self.setups:
            if s.setup == name:
                return s
        raise KeyError(f"no setup '{name}' (setups: {', '.join(s.setup for s in self.setups)})")

    def records(self) -> "_records.RecordDB":
        """The experiment's record database (``OUT/records.db``): every setup's records, job
        ids suffixed with ``@<setup>``. Raises :class:`loom.NotFoundError` when it is not there
        (an experiment run with ``db=`` elsewhere)."""
        return _records.open(os.path.join(self.path, "records.db"))

    def tuning_curves(self) -> List[TuningCurve]:
        """A :class:`TuningCurve` per (setup, job, task), from the records database, in the
        order of the setups and their jobs."""
        curves: List[TuningCurve] = []
        with self.records() as db:
            for s in self.setups:
                for j in s.jobs:
                    recs = db.records(job=j.job_id)
                    if not recs:
                        continue
                    start = min(r.timestamp for r in recs)
                    by_task: Dict[str, TuningCurve] = {}
                    best: Dict[str, float] = {}
                    for r in recs:
                        c = by_task.setdefault(
                            r.task_key, TuningCurve(s.setup, j.name, j.job_id, r.task_key, [], [], [])
                        )
                        best[r.task_key] = max(best.get(r.task_key, 0.0), r.gflops)
                        c.trials.append(len(c.trials) + 1)
                        c.seconds.append((r.timestamp - start).total_seconds())
                        c.best_gflops.append(best[r.task_key])
                    curves.extend(by_task.values())
        return curves


def _setup(d: Dict[str, Any]) -> Setup:
    jobs = [
        SetupJob(
            name=j["name"],
            job_id=j["job_id"],
            seconds=_num(j["seconds"]),
            tuned_latency_ms=_num(j["tuned_latency_ms"]),
            final_latency_ms=_num(j["final_latency_ms"]),
            latency_error=j.get("latency_error", ""),
            distortion_median=_num(j["distortion_median"]),
            distortion=[
                DistortionSample(
                    task_key=x["task_key"],
                    config_index=int(x["config_index"]),
                    in_run_s=_num(x["in_run_s"]),
                    alone_s=_num(x["alone_s"]),
                    distortion=_num(x["distortion"]),
                    error=x.get("error", ""),
                    raw=x,
                )
                for x in j.get("distortion", [])
            ],
            records=int(j["records"]),
            error=j.get("error", ""),
            raw=j,
        )
        for j in d["jobs"]
    ]
    stages = [
        StageTrace(
            job=int(t["job"]),
            kind=t["kind"],
            task_key=t["task_key"],
            round=int(t["round"]),
            resource=t["resource"],
            start=_num(t["start"]),
            end=_num(t["end"]),
            raw=t,
        )
        for t in d.get("stages", [])
    ]
    return Setup(
        setup=d["setup"],
        makespan_s=_num(d["makespan_s"]),
        lower_bound_s=_num(d["lower_bound_s"]),
        device_busy_s=_num(d["device_busy_s"]),
        device_utilization=_num(d["device_utilization"]),
        cpu_utilization=_num(d["cpu_utilization"]),
        device_hours=_num(d["device_hours"]),
        distortion_median=_num(d["distortion_median"]),
        jobs=jobs,
        stages=stages,
        raw=d,
    )


def load(out: PathLike) -> Results:
    """Reads the results of an experiment from its output folder (``OUT/results.json``).

    Raises :class:`loom.NotFoundError` when there is no results.json and
    :class:`loom.DataLossError` when it is not the runner's JSON (a field missing or
    mistyped, named)."""
    from .errors import DataLossError

    path = os.fspath(out)
    file = os.path.join(path, "results.json")
    try:
        with open(file, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise NotFoundError(f"no experiment results in '{path}' (no results.json)") from None
    except (OSError, ValueError) as e:
        raise DataLossError(f"{file}: {e}") from None
    try:
        sim = doc.get("simulation") or {}
        return Results(
            name=doc["name"],
            path=path,
            setups=[_setup(s) for s in doc["setups"]],
            simulation=[
                SimulationRow(
                    setup=r["setup"],
                    policy=r["policy"],
                    measured_s=_num(r["measured_s"]),
                    simulated_s=_num(r["simulated_s"]),
                    ratio=_num(r["ratio"]),
                    raw=r,
                )
                for r in sim.get("rows", [])
            ],
            simulation_source=sim.get("source", ""),
            simulation_error=sim.get("error", ""),
            raw=doc,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise DataLossError(f"{file} is not an experiment's results: bad or missing {e}") from None


def check_spec(spec: PathLike) -> Dict[str, Any]:
    """Parses an experiment spec (YAML) the way ``loom experiment`` does and returns its main
    fields (``name``, ``jobs``, ``setups``, ...). Raises :class:`loom.NotFoundError` for a
    missing file and :class:`loom.InvalidArgumentError` naming the key path of a bad value or
    an unknown key."""
    return dict(_loom.load_experiment_spec(os.fspath(spec)))


def run(
    spec: Union[PathLike, Mapping[str, Any]],
    out: PathLike,
    *,
    db: Optional[PathLike] = None,
    through_service: bool = False,
    progress: bool = True,
    timeout: Optional[float] = None,
) -> Results:
    """Runs an experiment and returns its results (:func:`load` of ``out``).

    ``spec``: a spec file (YAML, see ``experiments/``) or the same as a mapping (written to
    ``OUT/spec.yaml``). ``out``: the output folder (results.csv/json, Gantt charts, report.html,
    records.db). ``db``: the record database (default ``OUT/records.db``). ``through_service``:
    also run the setups through ``loom serve`` + ``loom agent`` (OUT/service.csv).
    ``progress``: pass the runner's progress lines through to stderr. ``timeout``: seconds
    before the run is stopped (:class:`loom.DeadlineExceededError`).

    The spec is checked first (:func:`check_spec` errors). A failed run raises
    :class:`loom.UnknownError` (:class:`loom.InvalidArgumentError` for a usage error) with the
    runner's error line."""
    from .errors import DeadlineExceededError

    out_path = os.fspath(out)
    os.makedirs(out_path, exist_ok=True)
    if isinstance(spec, Mapping):
        spec_path = os.path.join(out_path, "spec.yaml")
        with open(spec_path, "w", encoding="utf-8") as f:
            json.dump(dict(spec), f, indent=2)  # JSON is YAML
    else:
        spec_path = os.fspath(spec)
    check_spec(spec_path)
    argv = [loom_binary(), "experiment", spec_path, "-o", out_path]
    if db is not None:
        argv += ["--db", os.fspath(db)]
    if through_service:
        argv.append("--through-service")
    # The runner's progress lines go to stderr (read here), its final table to stdout.
    proc = subprocess.Popen(
        argv,
        stdout=None if progress else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
    )
    lines: List[str] = []

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))
            if progress:
                print(line, end="", file=sys.stderr, flush=True)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise DeadlineExceededError(
            f"the experiment {spec_path} ran past its timeout of {timeout} s"
        ) from None
    except BaseException:  # KeyboardInterrupt: stop the runner, then re-raise
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    finally:
        reader.join(timeout=10)
    if proc.returncode != 0:
        errors = [ln for ln in lines if ln.startswith("loom: ")]
        message = errors[-1] if errors else (lines[-1] if lines else "no output")
        message = message.split(": error: ", 1)[-1]
        cls = InvalidArgumentError if proc.returncode == 2 else UnknownError
        raise cls(f"loom experiment {spec_path} failed (exit {proc.returncode}): {message}")
    results = load(out_path)
    if not results.setups:
        raise FailedPreconditionError(f"the experiment {spec_path} wrote no setups")
    return results
