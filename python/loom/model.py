"""Models: load, tune, compile, benchmark, export and run, as one chainable object.

::

    import loom, numpy as np

    model = (loom.Model.load("zoo:resnet18")
                 .tune(trials=16, db="r18.db")
                 .compile(threads=2))
    print(model.benchmark())                 # BenchmarkResult(median_ms=..., ...)
    model.export("r18_artifact")

    compiled = loom.load_artifact("r18_artifact")
    (logits,) = compiled.run(np.zeros((1, 3, 224, 224), np.float32))

Each step raises a :class:`loom.LoomError` subclass on failure and leaves the model as it was
before that step. Runs release the GIL and are serialized per model, so a model may be shared
by several Python threads.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import _loom
from ._binary import loom_binary
from .errors import InvalidArgumentError, NotFoundError

__all__ = ["Model", "CompiledModel", "load_artifact", "TensorSpec", "Task", "BenchmarkResult"]

PathLike = Union[str, "os.PathLike[str]"]
Progress = Union[bool, None, Callable[[str], None]]


@dataclass(frozen=True)
class TensorSpec:
    """An input or output of a model: its name, NumPy dtype name and static shape."""

    name: str
    dtype: str
    shape: Tuple[int, ...]


@dataclass(frozen=True)
class Task:
    """A unique tunable workload of a model (what :meth:`Model.tune` searches).

    ``index`` is its position as ``loom tasks`` lists it (what ``tune(tasks=[...])`` takes),
    ``kind`` e.g. ``"conv2d"``, ``key`` the canonical workload key records are stored under,
    ``count`` how many nodes run it, ``flops`` of one run, ``nodes`` their names."""

    index: int
    kind: str
    key: str
    hash: int
    count: int
    flops: float
    nodes: Tuple[str, ...]


@dataclass(frozen=True)
class BenchmarkResult:
    """Latency of a compiled model on seeded random inputs, in milliseconds, over ``runs`` runs."""

    median_ms: float
    p90_ms: float
    min_ms: float
    mean_ms: float
    runs: int


def _specs(values: Sequence[Tuple[str, str, Sequence[int]]]) -> List[TensorSpec]:
    return [TensorSpec(name, dtype, tuple(shape)) for name, dtype, shape in values]


def _path(p: Optional[PathLike]) -> str:
    return "" if p is None else os.fspath(p)


class _Runnable:
    """What compiled models and models share: inputs, outputs, run and benchmark."""

    _impl: _loom.Model

    @property
    def name(self) -> str:
        """Where the model came from: ``"zoo:resnet18"``, a file or an artifact folder."""
        return self._impl.name

    @property
    def inputs(self) -> List[TensorSpec]:
        """The model's inputs, in order."""
        return _specs(self._impl.inputs)

    @property
    def outputs(self) -> List[TensorSpec]:
        """The model's outputs, in the order :meth:`run` returns them."""
        return _specs(self._impl.outputs)

    def run(self, *args: np.ndarray, **named: np.ndarray) -> List[np.ndarray]:
        """Runs the model and returns its outputs as NumPy arrays, in the model's output order.

        Inputs are given positionally in the model's input order (``run(x)`` for a model with one
        input), by name (``run(input=x)``), or as one mapping (``run({"input": x})``). Each must
        have the input's dtype and shape (no implicit casts). Inputs are copied once into Loom's
        aligned buffers; the outputs are Loom's own buffers, handed to NumPy without a copy. The
        first run of a model that was not compiled compiles it with the defaults.

        The GIL is released while the model runs; runs of one model from several threads are
        serialized (each gets the outputs of its own inputs)."""
        declared = [spec.name for spec in self.inputs]
        if len(args) == 1 and isinstance(args[0], Mapping) and not named:
            feeds: Dict[str, object] = dict(args[0])
        else:
            if len(args) > len(declared):
                raise InvalidArgumentError(
                    f"run() got {len(args)} inputs, the model has {len(declared)}"
                )
            feeds = dict(zip(declared, args))
            for name, value in named.items():
                if name in feeds:
                    raise InvalidArgumentError(f"input '{name}' is given twice")
                feeds[name] = value
        missing = [name for name in declared if name not in feeds]
        if missing:
            raise InvalidArgumentError(
                f"missing input {', '.join(repr(m) for m in missing)} "
                f"(the model's inputs: {', '.join(declared)})"
            )
        return self._impl.run(feeds)

    def benchmark(self, *, min_seconds: float = 1.0, min_runs: int = 10) -> BenchmarkResult:
        """Times the model on seeded random inputs (one warm-up run first): runs for at least
        ``min_seconds`` and at least ``min_runs`` times, and returns the latency statistics.
        Compiles the model with the defaults first if :meth:`Model.compile` was not called."""
        return BenchmarkResult(**self._impl.benchmark(min_seconds, min_runs))

    @property
    def compile_stats(self) -> Dict[str, object]:
        """What the last compile produced: ``threads``, ``target`` (the target key records
        apply by), ``kernel_steps``, ``tuned_kernels`` (of them, with a tuned config), ``tuned``
        (the same in words, ``"3 of 3 kernels tuned"``, naming another CPU of the class when its
        records were used, or why none applied; empty for a loaded artifact), ``fused_ops``,
        ``reference_steps``, ``arena_bytes``, ``cache_hits``, ``compile_seconds``. Empty before
        the model is compiled. For a GPU artifact: ``threads`` (0), ``target``, ``device`` (the
        GPU's name), ``launches`` (kernel launches of one run), ``host_steps``, ``arena_bytes``
        and ``graph_replay`` (whether its runs replay one captured CUDA graph)."""
        return dict(self._impl.compile_stats())


class Model(_Runnable):
    """A model to tune, compile, benchmark, export and run. Every step returns the model, so
    steps chain: ``Model.load(...).tune(...).compile(...)``. Create one with :meth:`load`."""

    def __init__(self, impl: _loom.Model) -> None:
        self._impl = impl

    def __repr__(self) -> str:
        return f"loom.Model({self.name!r})"

    @classmethod
    def load(
        cls,
        path: PathLike,
        *,
        input_shapes: Optional[Mapping[str, Sequence[int]]] = None,
        batch: int = 1,
        seed: int = 0,
        verify_key: Optional[PathLike] = None,
    ) -> "Model":
        """Loads a model: ``"zoo:NAME"`` (a built-in model, e.g. ``"zoo:resnet18"``; see ``loom
        zoo list``), an ONNX file, or an artifact folder written by :meth:`export` (then the
        model is already compiled: :meth:`tune` is refused and :meth:`compile` only changes the
        thread count).

        ``input_shapes`` pins the dynamic dimensions of an ONNX model's inputs by name, e.g.
        ``{"input": (1, 3, 224, 224)}``. ``batch`` and ``seed`` are the batch size and weight
        seed of zoo models. ``verify_key``: a PEM public key an artifact must be signed with.

        Raises :class:`loom.NotFoundError` for a missing file or zoo name,
        :class:`loom.InvalidArgumentError` for a malformed model, :class:`loom.UnimplementedError`
        for an unsupported operator."""
        shapes = {str(k): [int(d) for d in v] for k, v in (input_shapes or {}).items()}
        impl = _loom.Model.load(
            os.fspath(path), shapes, int(batch), int(seed), _path(verify_key), 0
        )
        return cls(impl)

    def tasks(self) -> List[Task]:
        """The model's unique tunable workloads (convolutions, dense and batched matrix
        products), in the order ``loom tasks`` lists them."""
        return [
            Task(
                index=t["index"],
                kind=t["kind"],
                key=t["key"],
                hash=t["hash"],
                count=t["count"],
                flops=t["flops"],
                nodes=tuple(t["nodes"]),
            )
            for t in self._impl.tasks()
        ]

    def tune(
        self,
        *,
        trials: int = 64,
        db: PathLike = "loom.db",
        tuner: str = _loom.DEFAULT_TUNER,
        prior: Union[None, bool, PathLike] = None,
        seed: int = 0,
        batch_size: int = _loom.DEFAULT_BATCH_SIZE,
        tasks: Optional[Sequence[int]] = None,
        device_cores: Optional[Sequence[int]] = None,
        build_threads: int = 0,
        transfer: bool = True,
        progress: Progress = True,
    ) -> "Model":
        """Tunes the model's operators on this machine and stores every measurement in ``db``.

        Each task gets ``trials`` measured candidates, proposed by ``tuner`` (``"xgb"``, ``"ga"``,
        ``"random"`` or ``"grid"``, seeded by ``seed``) in rounds of ``batch_size``. Candidates
        are compiled in parallel (``build_threads``; 0: the cores outside the device) and
        measured one at a time in a sandboxed worker process pinned to ``device_cores`` (default:
        the last core). A rerun with the same arguments resumes the same job from ``db``.

        ``prior``: the tuning prior of the xgb cost model; ``None`` is the one built into Loom
        for this CPU's class, a path a prior written by ``loom records prior``, ``False`` none.
        ``tasks``: indices of the tasks to tune (see :meth:`tasks`); ``None`` tunes all.
        ``transfer``: seed each task with other jobs' records of the same task in ``db``.
        ``progress``: ``True`` prints one line per round to stderr, a callable receives the
        lines, ``False`` or ``None`` is silent.

        :meth:`compile` afterwards uses the best records from ``db``. Ctrl-C (or an exception
        raised by the ``progress`` callable) stops tuning after the current round; the records so
        far stay in ``db``. Returns the model."""
        callback: Optional[Callable[[str], None]]
        if progress is True:

            def callback(line: str) -> None:
                print(f"[tune] {line}", file=sys.stderr, flush=True)

        elif progress is False or progress is None:
            callback = None
        elif callable(progress):
            callback = progress
        else:
            raise TypeError("progress must be True, False, None or a callable taking a line")
        use_prior = prior is not False
        prior_path = "" if prior is None or prior is False or prior is True else os.fspath(prior)
        self._impl.tune(
            int(trials),
            os.fspath(db),
            str(tuner),
            int(seed),
            int(batch_size),
            prior_path,
            use_prior,
            [int(t) for t in (tasks or [])],
            [int(c) for c in (device_cores or [])],
            int(build_threads),
            bool(transfer),
            [loom_binary(), "__measure-worker"],
            callback,
        )
        return self

    def compile(
        self,
        *,
        threads: int = 1,
        target: str = "cpu",
        db: Optional[PathLike] = None,
        fuse: bool = True,
        build_threads: int = 2,
        cache_dir: Optional[PathLike] = None,
    ) -> "Model":
        """Compiles the model for this CPU to run on ``threads`` threads (the calling thread is
        one of them), each tunable operator with its best config in ``db`` (default: the
        database of the last :meth:`tune`, if any; untuned operators get their template's
        default config).

        ``target``: ``"cpu"`` (this CPU) or ``"cpu:avx2"`` / ``"cpu:generic"`` / ... (this CPU
        restricted to a narrower ISA). ``fuse`` folds bias, residual adds and activations into
        the kernels. Kernels are compiled ``build_threads`` at a time into the kernel cache
        (``cache_dir``; default ``~/.cache/loom/kernels``, kept under 5 GiB, see ``loom cache``).
        For a model loaded from an artifact, only ``threads`` applies. Returns the model."""
        self._impl.compile(
            int(threads), str(target), _path(db), bool(fuse), int(build_threads), _path(cache_dir)
        )
        return self

    def export(self, dir: PathLike) -> "Model":
        """Writes the compiled model as a self-contained artifact folder (``plan.json``,
        ``weights.bin``, ``model.so``) that :func:`load_artifact`, ``loom run DIR`` and the C
        API load with no compiler and no database. Compiles with the defaults first if
        :meth:`compile` was not called. Returns the model."""
        self._impl.export(os.fspath(dir))
        return self

    @property
    def tuned_tasks(self) -> int:
        """Tasks the last :meth:`tune` tuned (tasks without a template are skipped); 0 before."""
        return self._impl.tuned_tasks


class CompiledModel(_Runnable):
    """A compiled model loaded from an artifact folder (:func:`load_artifact`): run it with
    :meth:`run`, time it with :meth:`benchmark`. Needs no compiler and no database."""

    def __init__(self, impl: _loom.Model) -> None:
        self._impl = impl

    def __repr__(self) -> str:
        return f"loom.CompiledModel({self.name!r})"

    @property
    def threads(self) -> int:
        """The threads each run uses; 0 for a GPU artifact."""
        return int(self._impl.compile_stats()["threads"])

    @property
    def target(self) -> str:
        """The target key the artifact was compiled for (``cpu:avx2:...``, ``cuda:sm_90:...``)."""
        return str(self._impl.compile_stats()["target"])


def load_artifact(
    dir: PathLike, *, threads: int = 0, verify_key: Optional[PathLike] = None, device: int = 0
) -> CompiledModel:
    """Loads a compiled-model artifact (written by :meth:`Model.export` or ``loom compile -o
    DIR``) to run on ``threads`` threads (0: as many as it was compiled for), or a GPU artifact
    (``loom compile --target cuda -o DIR``) to run on GPU ``device`` (``threads`` must be 0: its
    kernels run on the GPU), through the loader of the C API and ``loom run DIR``.

    ``verify_key``: a PEM Ed25519 public key the artifact must be signed with (``loom compile
    --sign``). Raises :class:`loom.NotFoundError` when ``dir`` holds no artifact,
    :class:`loom.DataLossError` for a damaged one (kernels, weights or plan),
    :class:`loom.FailedPreconditionError` for one built for an ISA this CPU lacks, for another GPU
    architecture than ``device``'s, or for another format version, and
    :class:`loom.UnavailableError` for a GPU artifact where there is no CUDA driver or device."""
    path = os.fspath(dir)
    if not os.path.isfile(os.path.join(path, "plan.json")):
        raise NotFoundError(f"no compiled-model artifact in '{path}' (no plan.json)")
    impl = _loom.Model.load(path, {}, 1, 0, _path(verify_key), int(device))
    if threads:
        impl.compile(int(threads), "cpu", "", True, 1, "")
    return CompiledModel(impl)
