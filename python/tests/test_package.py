"""The package as installed: the error hierarchy, the stubs of the extension module, docstrings
on every public name, and the `loom` command pip puts on PATH."""

from __future__ import annotations

import ast
import inspect
import subprocess
from pathlib import Path

import pytest
from conftest import which_loom_script

import loom
from loom import _loom, errors


def test_errors_are_keyed_by_status_code() -> None:
    expected = {
        1: "CancelledError", 2: "UnknownError", 3: "InvalidArgumentError",
        4: "DeadlineExceededError", 5: "NotFoundError", 6: "AlreadyExistsError",
        7: "PermissionDeniedError", 8: "ResourceExhaustedError", 9: "FailedPreconditionError",
        10: "AbortedError", 11: "OutOfRangeError", 12: "UnimplementedError", 13: "InternalError",
        14: "UnavailableError", 15: "DataLossError", 16: "UnauthenticatedError",
    }  # fmt: skip
    for code, name in expected.items():
        e = errors.error_from_status(code, f"message {code}")
        assert type(e).__name__ == name and e.code_value == code
        assert isinstance(e, loom.LoomError) and str(e) == f"message {code}"
        assert getattr(loom, name) is type(e)
    assert type(errors.error_from_status(99, "x")) is loom.UnknownError
    assert issubclass(loom.InvalidArgumentError, ValueError)
    assert issubclass(loom.DeadlineExceededError, TimeoutError)
    assert issubclass(loom.UnimplementedError, NotImplementedError)
    assert issubclass(loom.UnavailableError, ConnectionError)
    assert repr(loom.NotFoundError("x")) == "NotFoundError('x')"
    assert loom.NotFoundError("x").code == "NOT_FOUND"


def test_the_stub_declares_every_name_of_the_extension() -> None:
    stub = ast.parse((Path(_loom.__file__).parent / "_loom.pyi").read_text())
    declared = {}
    for node in stub.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            members = {n.name for n in getattr(node, "body", []) if isinstance(n, ast.FunctionDef)}
            declared[node.name] = members
        elif isinstance(node, ast.AnnAssign):
            declared[node.target.id] = set()
    public = {n for n in dir(_loom) if not n.startswith("_")} | {"__version__"}
    assert public == set(declared)
    for name in public:
        obj = getattr(_loom, name)
        if inspect.isclass(obj):
            members = {n for n in dir(obj) if not n.startswith("_")}
            assert members == declared[name], name


def test_every_public_name_has_a_docstring() -> None:
    modules = [loom, loom.records, loom.experiment, loom.errors, loom.client, loom.model]
    for module in modules:
        assert module.__doc__, module.__name__
        for name in module.__all__:
            obj = getattr(module, name)
            if not (inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismodule(obj)):
                continue
            assert inspect.getdoc(obj), f"{module.__name__}.{name}"
            if inspect.isclass(obj):
                for member, value in vars(obj).items():
                    if member.startswith("_") or not (
                        inspect.isfunction(value) or isinstance(value, (property, classmethod))
                    ):
                        continue
                    assert inspect.getdoc(getattr(obj, member)), f"{name}.{member}"


def test_version_and_the_loom_command(tmp_path: Path) -> None:
    assert loom.__version__.count(".") == 2
    script = which_loom_script()
    if not script:
        pytest.skip("no `loom` script beside this interpreter (the package is not pip-installed)")
    proc = subprocess.run(
        [script, "cache", "info", "--cache-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "0 entries" in proc.stdout
    bad = subprocess.run([script, "frobnicate"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown subcommand 'frobnicate'" in bad.stderr
