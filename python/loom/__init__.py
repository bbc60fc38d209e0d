"""Loom from Python: tune, compile and run neural networks, query tuning records, drive the
tuning service and read experiments.

::

    import loom

    model = loom.Model.load("zoo:resnet18").tune(trials=16, db="r18.db").compile(threads=2)
    model.export("r18_artifact")
    outputs = loom.load_artifact("r18_artifact").run(x)          # NumPy in, NumPy out

    db = loom.records.open("r18.db")                              # best records, histories
    client = loom.Client("127.0.0.1:7070", token="...")           # jobs on `loom serve`
    results = loom.experiment.load("out/smoke")                   # an experiment's results

Every failure raises a subclass of :class:`loom.LoomError` keyed by its status code
(:mod:`loom.errors`).
"""

from . import errors, experiment, records
from ._loom import __version__
from .client import Agent, BestConfig, Client, Event, Job, JobResult, TaskProgress
from .errors import *  # noqa: F401,F403  (LoomError and one class per status code)
from .model import BenchmarkResult, CompiledModel, Model, Task, TensorSpec, load_artifact

__all__ = [
    "__version__",
    "Model",
    "CompiledModel",
    "load_artifact",
    "TensorSpec",
    "Task",
    "BenchmarkResult",
    "Client",
    "Job",
    "TaskProgress",
    "Agent",
    "Event",
    "BestConfig",
    "JobResult",
    "records",
    "experiment",
    "errors",
]
__all__ += [name for name in errors.__all__ if name != "error_from_status"]
