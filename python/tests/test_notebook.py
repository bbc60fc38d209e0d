"""examples/thesis.ipynb executed headless (nbclient) on the smoke experiment's results: every
cell runs and every plot is written."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbformat
from conftest import REPO
from nbclient import NotebookClient


def test_the_thesis_notebook_writes_its_plots(smoke_results, tmp_path: Path) -> None:
    plots = tmp_path / "plots"
    nb = nbformat.read(REPO / "examples" / "thesis.ipynb", as_version=4)
    # A kernel of this interpreter (the one the package is installed in), under a name of its
    # own: a system-wide "python3" kernel spec may name another Python.
    spec = tmp_path / "jupyter" / "kernels" / "loom-test-python"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "loom tests", "language": "python"})
    )
    env = {
        "LOOM_RESULTS": smoke_results.path,
        "LOOM_PLOTS": str(plots),
        "MPLBACKEND": "Agg",
        "JUPYTER_PATH": str(tmp_path / "jupyter"),
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        NotebookClient(nb, timeout=300, kernel_name="loom-test-python", resources={
            "metadata": {"path": str(tmp_path)}}).execute()  # fmt: skip
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    written = {p.name: p.stat().st_size for p in plots.glob("*.png")}
    assert set(written) == {
        "makespan.png", "utilization.png", "distortion.png", "tuning_curves.png",
        "final_latency.png",
    }  # fmt: skip
    assert all(size > 5000 for size in written.values()), written
    last = nb.cells[-1].outputs[0]["text"]
    assert "tuning_curves.png" in last
    # Keep the plots where CI keeps its artifacts (scripts/test.sh sets LOOM_PLOTS_OUT).
    keep = os.environ.get("LOOM_PLOTS_OUT")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for p in plots.glob("*.png"):
            (Path(keep) / p.name).write_bytes(p.read_bytes())
