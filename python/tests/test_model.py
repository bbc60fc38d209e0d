"""loom.Model, loom.CompiledModel and loom.load_artifact: the chain, runs against the reference
executor (`loom run`), NumPy in and out, threads, and every error path."""

from __future__ import annotations

import json
import pydoc
import re
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import reference, run_from_threads, run_loom, tiny_input

import loom


def test_load_describes_inputs_outputs_and_tasks(loom_bin: str) -> None:
    model = loom.Model.load("zoo:tiny_cnn")
    assert model.name == "zoo:tiny_cnn"
    assert model.inputs == [loom.TensorSpec("input", "float32", (1, 3, 32, 32))]
    assert [o.shape for o in model.outputs] == [(1, 10)]
    tasks = model.tasks()
    listed = json.loads(run_loom(loom_bin, "tasks", "zoo:tiny_cnn", "--json").stdout)
    assert [t.key for t in tasks] == [t["key"] for t in listed]
    assert [t.index for t in tasks] == list(range(len(listed)))
    assert [t.hash for t in tasks] == [t["hash"] for t in listed]
    assert [list(t.nodes) for t in tasks] == [t["nodes"] for t in listed]
    assert [t.count for t in tasks] == [t["count"] for t in listed]
    assert tasks[0].kind == "conv2d" and tasks[0].flops > 0 and tasks[0].count >= 1
    assert model.tuned_tasks == 0
    assert model.compile_stats == {}
    assert repr(model) == "loom.Model('zoo:tiny_cnn')"


def test_load_errors_are_typed(tmp_path: Path) -> None:
    with pytest.raises(loom.NotFoundError, match="no_such_model"):
        loom.Model.load("zoo:no_such_model")
    with pytest.raises(loom.NotFoundError) as e:
        loom.Model.load(tmp_path / "missing.onnx")
    assert e.value.code == "NOT_FOUND" and e.value.code_value == 5
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf")
    with pytest.raises(loom.InvalidArgumentError) as e:
        loom.Model.load(bad)
    assert "bad.onnx" in e.value.message
    assert isinstance(e.value, ValueError)


def test_compiled_run_matches_the_reference(loom_bin: str, tmp_path: Path) -> None:
    x = tiny_input()
    want = reference(loom_bin, x, tmp_path)
    model = loom.Model.load("zoo:tiny_cnn").compile(threads=2)
    assert model.compile_stats["threads"] == 2
    assert model.compile_stats["kernel_steps"] > 0
    (got,) = model.run(x)
    assert got.dtype == np.float32 and got.shape == (1, 10)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * np.abs(want).max())
    # The same inputs by name, as a mapping, and as a non-contiguous view give the same output.
    np.testing.assert_array_equal(model.run(input=x)[0], got)
    np.testing.assert_array_equal(model.run({"input": x})[0], got)
    strided = np.ascontiguousarray(np.swapaxes(x, 2, 3)).swapaxes(2, 3)
    assert not strided.flags.c_contiguous
    np.testing.assert_array_equal(model.run(strided)[0], got)


def test_outputs_are_numpy_arrays_over_loom_buffers() -> None:
    model = loom.Model.load("zoo:tiny_cnn")
    (a,) = model.run(tiny_input(1))  # the first run compiles with the defaults
    (b,) = model.run(tiny_input(1))
    assert not a.flags.owndata and a.base is not None  # Loom's buffer, not a copy
    assert a.flags.writeable and a.flags.c_contiguous
    np.testing.assert_array_equal(a, b)
    a[0, 0] = 1e9  # each run has buffers of its own
    assert b[0, 0] != 1e9
    assert model.compile_stats["threads"] == 1


def test_run_errors_name_the_input() -> None:
    model = loom.Model.load("zoo:tiny_cnn")
    with pytest.raises(loom.InvalidArgumentError, match=r"is float64, the model takes float32"):
        model.run(np.zeros((1, 3, 32, 32)))
    with pytest.raises(loom.InvalidArgumentError, match=r"compiled for float32\[1,3,32,32\]"):
        model.run(np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(loom.InvalidArgumentError, match=r"missing input 'input'"):
        model.run()
    with pytest.raises(loom.InvalidArgumentError, match=r"no input 'image'"):
        model.run({"input": tiny_input(), "image": tiny_input()})
    with pytest.raises(loom.InvalidArgumentError, match=r"got 2 inputs, the model has 1"):
        model.run(tiny_input(), tiny_input())
    with pytest.raises(loom.InvalidArgumentError, match=r"given twice"):
        model.run(tiny_input(), input=tiny_input())
    with pytest.raises(loom.InvalidArgumentError, match=r"NumPy dtype <U"):
        model.run("a string")
    # The model still runs after the errors.
    assert model.run(tiny_input())[0].shape == (1, 10)


def test_four_threads_at_once_give_the_same_outputs_as_one(tiny_artifact: Path) -> None:
    compiled = loom.load_artifact(tiny_artifact)
    inputs = [tiny_input(seed) for seed in range(8)]
    want = [compiled.run(x)[0] for x in inputs]
    got = run_from_threads(compiled, inputs, repeats=5)
    assert len(got) == 4 * 5 * 2
    for (_, _, i), out in got.items():
        np.testing.assert_array_equal(out, want[i])


def test_runs_release_the_gil(tiny_artifact: Path) -> None:
    compiled = loom.load_artifact(tiny_artifact, threads=1)
    done = threading.Event()

    def bench() -> None:
        compiled.benchmark(min_seconds=1.0, min_runs=1)
        done.set()

    t = threading.Thread(target=bench)
    ticks = 0
    t.start()
    deadline = time.monotonic() + 60
    while not done.is_set() and time.monotonic() < deadline:
        ticks += 1  # runs only while the benchmark's thread does not hold the GIL
    t.join(timeout=60)
    assert done.is_set()
    assert ticks > 10000


def test_export_load_artifact_and_benchmark(tiny_artifact: Path, tmp_path: Path) -> None:
    compiled = loom.load_artifact(tiny_artifact)
    assert compiled.threads == 2  # as compiled
    assert repr(compiled).startswith("loom.CompiledModel(")
    one = loom.load_artifact(tiny_artifact, threads=1)
    assert one.threads == 1
    x = tiny_input(3)
    np.testing.assert_allclose(one.run(x)[0], compiled.run(x)[0], rtol=1e-5, atol=1e-6)
    r = one.benchmark(min_seconds=0.0, min_runs=3)
    assert r.runs >= 3
    assert 0 < r.min_ms <= r.median_ms <= r.p90_ms
    assert r.mean_ms > 0
    # A model loaded from the artifact folder through Model.load is compiled already.
    model = loom.Model.load(tiny_artifact)
    with pytest.raises(loom.FailedPreconditionError, match="compiled artifact"):
        model.tune(trials=1)
    with pytest.raises(loom.FailedPreconditionError, match="compiled artifact"):
        model.tasks()
    with pytest.raises(loom.InvalidArgumentError, match="min_runs"):
        one.benchmark(min_runs=0)


def test_load_artifact_errors(tiny_artifact: Path, tmp_path: Path) -> None:
    with pytest.raises(loom.NotFoundError, match="no plan.json"):
        loom.load_artifact(tmp_path)
    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_artifact, damaged)
    with open(damaged / "weights.bin", "ab") as f:
        f.write(b"x")
    with pytest.raises(loom.DataLossError, match="weights.bin"):
        loom.load_artifact(damaged)


def test_compile_errors_leave_the_model_usable() -> None:
    model = loom.Model.load("zoo:tiny_cnn")
    with pytest.raises(loom.InvalidArgumentError, match="unknown target 'cuda'"):
        model.compile(target="cuda")
    with pytest.raises(loom.InvalidArgumentError, match="cpu:avx9"):
        model.compile(target="cpu:avx9")
    with pytest.raises(loom.InvalidArgumentError, match="num_threads"):
        model.compile(threads=0)
    with pytest.raises(loom.NotFoundError, match="nope.db"):
        model.compile(db="/nonexistent/nope.db")
    model.compile(target="cpu:generic")
    assert "cpu:generic:" in model.compile_stats["target"]
    assert model.compile_stats["tuned"] == "0 of 3 kernels tuned (no record database)"
    assert model.run(tiny_input())[0].shape == (1, 10)


def test_tune_then_compile_uses_the_records(tuned: dict, tmp_path: Path) -> None:
    model = tuned["model"]
    assert model.tuned_tasks == 2
    lines = tuned["progress"]
    assert any("task 0 (1/2)" in line and "trials 4/4" in line for line in lines), lines
    assert any("task 1 (2/2)" in line and "trials 4/4" in line for line in lines), lines
    model.compile(threads=1)  # the records of the last tune
    assert model.compile_stats["tuned_kernels"] >= 2
    assert model.compile_stats["tuned"] == f"{model.compile_stats['tuned_kernels']} of 3 kernels tuned"
    model.compile(threads=1, db=tuned["db"])
    assert model.compile_stats["tuned_kernels"] >= 2
    out = model.run(tiny_input())[0]
    untuned = loom.Model.load("zoo:tiny_cnn").run(tiny_input())[0]
    np.testing.assert_allclose(out, untuned, rtol=1e-3, atol=1e-4 * np.abs(untuned).max())
    model.export(tmp_path / "tuned")
    assert loom.load_artifact(tmp_path / "tuned").run(tiny_input())[0].shape == (1, 10)


def test_tune_errors_and_interruptions(tmp_path: Path) -> None:
    model = loom.Model.load("zoo:tiny_cnn")
    with pytest.raises(loom.InvalidArgumentError, match="trials must be at least 1"):
        model.tune(trials=0, db=tmp_path / "a.db")
    with pytest.raises(loom.InvalidArgumentError, match="index 7 is out of range"):
        model.tune(trials=1, db=tmp_path / "a.db", tasks=[7])
    with pytest.raises(loom.NotFoundError, match="TuneOptions.prior"):
        model.tune(trials=1, db=tmp_path / "a.db", prior=tmp_path / "no-prior.json")
    with pytest.raises(TypeError, match="progress must be"):
        model.tune(trials=1, db=tmp_path / "a.db", progress=42)  # type: ignore[arg-type]

    class Stop(Exception):
        pass

    calls = []

    def stop_after_first_round(line: str) -> None:
        calls.append(line)
        if len(calls) == 2:  # the line before the first round, then the first round's
            raise Stop(line)

    db = tmp_path / "stopped.db"
    with pytest.raises(Stop):
        model.tune(trials=8, db=db, tuner="random", batch_size=2, tasks=[0],
                   progress=stop_after_first_round)  # fmt: skip
    with loom.records.open(db) as records:
        assert records.count() == 2  # the one round that ran
    # The model is as before the failed steps: it still tunes and compiles.
    model.tune(trials=2, db=db, tuner="random", batch_size=2, tasks=[0], prior=False, progress=False)
    assert model.tuned_tasks == 1
    assert model.compile().compile_stats["tuned_kernels"] >= 1


def test_help_reads_well() -> None:
    text = pydoc.render_doc(loom.Model.tune, renderer=pydoc.plaintext)
    # Annotations read as written ("int", or "'int'" where they are postponed strings).
    assert re.search(r"trials: '?int'? = 64", text), text
    assert re.search(r"tuner: '?str'? = 'xgb'", text) and "progress:" in text
    flat = " ".join(text.split())  # the docstring's own line breaks
    assert "Ctrl-C" in flat and "the records so far stay in ``db``" in flat
    for name in loom.__all__:
        obj = getattr(loom, name)
        if callable(obj) or isinstance(obj, type):
            assert obj.__doc__ and obj.__doc__.strip(), f"loom.{name} has no docstring"


def test_tuning_defaults_come_from_the_library():
    # One owner (search/tuner_defaults.h): the signatures show the C++ library's defaults, the
    # ones `loom tune` and the daemon use for a job that names none.
    import inspect
    from loom import _loom
    from loom.client import Client

    for fn in (loom.Model.tune, Client.submit):
        params = inspect.signature(fn).parameters
        assert params["tuner"].default == _loom.DEFAULT_TUNER, fn
        assert params["batch_size"].default == _loom.DEFAULT_BATCH_SIZE, fn
    assert _loom.DEFAULT_TUNER in ("random", "grid", "ga", "xgb")
    assert isinstance(_loom.DEFAULT_BATCH_SIZE, int) and _loom.DEFAULT_BATCH_SIZE > 0
