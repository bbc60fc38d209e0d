"""Fixtures of the package's tests: a private kernel cache, a compiled and a tuned tiny model,
a real `loom serve` + `loom agent` on loopback, and the smoke experiment's results.

The tests run against the installed package (scripts/test.sh installs it into a virtual
environment under build/), so they exercise what users get: the extension module and the
`loom` program shipped beside it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


def wait_for(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    """Polls `predicate` until it holds; fails the test naming `what` after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    if not predicate():
        pytest.fail(f"timed out after {seconds} s waiting for {what}")


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every kernel the tests build goes to a cache of their own (XDG_CACHE_HOME is what the
    builder's default cache folder follows), never the user's."""
    cache = tmp_path_factory.mktemp("xdg-cache")
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(cache)
    yield cache / "loom" / "kernels"
    if old is None:
        del os.environ["XDG_CACHE_HOME"]
    else:
        os.environ["XDG_CACHE_HOME"] = old


@pytest.fixture(scope="session")
def loom_bin() -> str:
    from loom._binary import loom_binary

    return loom_binary()


def run_loom(loom_bin: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Runs the `loom` program; with `check`, fails the test (showing stderr) on a non-zero exit."""
    proc = subprocess.run(
        [loom_bin, *args], capture_output=True, text=True, timeout=600, check=False
    )
    if check and proc.returncode != 0:
        pytest.fail(f"loom {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


def tiny_input(seed: int = 0) -> np.ndarray:
    """A seeded standard-normal input of zoo:tiny_cnn."""
    return np.random.default_rng(seed).standard_normal((1, 3, 32, 32)).astype(np.float32)


def reference(loom_bin: str, x: np.ndarray, tmp_path: Path) -> np.ndarray:
    """zoo:tiny_cnn's output for `x` from the reference executor (`loom run` without compiling)."""
    np.save(tmp_path / "x.npy", x)
    run_loom(loom_bin, "run", "zoo:tiny_cnn", "--input", str(tmp_path / "x.npy"),
             "--output", str(tmp_path / "ref.npy"))  # fmt: skip
    return np.load(tmp_path / "ref.npy")


def run_from_threads(
    model: Any, inputs: List[np.ndarray], repeats: int = 1
) -> Dict[tuple, np.ndarray]:
    """Runs `model` from 4 Python threads at once (thread t takes inputs t, t + 4, ...), each input
    `repeats` times: (thread, repeat, input index) -> the first output. Fails the test on an error
    or a thread that does not finish."""
    got: Dict[tuple, np.ndarray] = {}
    errors: List[BaseException] = []
    start = threading.Barrier(4)

    def worker(t: int) -> None:
        try:
            start.wait(timeout=30)
            for rep in range(repeats):
                for i in range(t, len(inputs), 4):
                    got[(t, rep, i)] = model.run(inputs[i])[0]
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a run did not finish"
    assert errors == []
    return got


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """zoo:tiny_cnn compiled for 2 threads and exported."""
    import loom

    out = tmp_path_factory.mktemp("artifacts") / "tiny_cnn"
    loom.Model.load("zoo:tiny_cnn").compile(threads=2).export(out)
    return out


@pytest.fixture(scope="session")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, object]:
    """zoo:tiny_cnn's first two tasks tuned with 4 random candidates each: the model, its
    database and the progress lines."""
    import loom

    db = tmp_path_factory.mktemp("tuned") / "tiny.db"
    lines: List[str] = []
    model = loom.Model.load("zoo:tiny_cnn").tune(
        trials=4, db=db, tuner="random", batch_size=2, tasks=[0, 1], progress=lines.append
    )
    return {"model": model, "db": db, "progress": lines}


class Service:
    """A `loom serve` and a `loom agent` on loopback (plaintext, which loopback allows), with a
    tokens file of users and the agent's own token."""

    def __init__(self, loom_bin: str, root: Path) -> None:
        self.loom_bin = loom_bin
        self.root = root
        self.procs: List[subprocess.Popen] = []
        (root / "tokens").write_text(
            "tok-alice alice\ntok-bob bob user\ntok-root root admin\ntok-agent py-agent agent\n"
        )
        # The agent's own token (bound to its name), from a file: never in argv.
        (root / "agent-token").write_text("tok-agent\n")
        serve_log = root / "serve.log"
        self.procs.append(
            self._spawn(
                [
                    "serve",
                    "--listen",
                    "127.0.0.1:0",
                    "--state",
                    str(root / "state.db"),
                    "--tokens",
                    str(root / "tokens"),
                    "--heartbeat-timeout",
                    "2",
                ],
                serve_log,
            )
        )
        port: List[int] = []

        def listening() -> bool:
            m = re.search(r"event=serving .* port=(\d+)", serve_log.read_text())
            if m:
                port.append(int(m.group(1)))
            return bool(m) or self.procs[0].poll() is not None

        wait_for(listening, 30, "loom serve to listen")
        if not port:
            pytest.fail(f"loom serve did not start: {serve_log.read_text()}")
        self.server = f"127.0.0.1:{port[0]}"
        self.procs.append(
            self._spawn(
                [
                    "agent",
                    "--server",
                    self.server,
                    "--token-file",
                    str(root / "agent-token"),
                    "--name",
                    "py-agent",
                    "--cpu-slots",
                    "1",
                    "--no-lend-device-cores",  # its slots are exactly --cpu-slots
                    "--cache-dir",
                    str(root / "agent-cache"),
                ],
                root / "agent.log",
            )
        )

    def _spawn(self, args: List[str], log: Path) -> subprocess.Popen:
        with open(log, "ab") as f:
            return subprocess.Popen(
                [self.loom_bin, *args], stdout=f, stderr=subprocess.STDOUT, start_new_session=True
            )

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
            for p in sorted(self.root.glob("*.log"))
        )

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()


@pytest.fixture(scope="module")
def service(loom_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = Service(loom_bin, tmp_path_factory.mktemp("service"))
    try:
        import loom

        client = loom.Client(svc.server, token="tok-root")
        wait_for(lambda: any(a.alive for a in client.agents()), 30, "the agent to register")
        yield svc
    finally:
        svc.stop()


@pytest.fixture(scope="session")
def smoke_results(tmp_path_factory: pytest.TempPathFactory):
    """experiments/smoke.yaml run through loom.experiment.run (one to two minutes)."""
    import loom

    out = tmp_path_factory.mktemp("smoke") / "out"
    return loom.experiment.run(REPO / "experiments" / "smoke.yaml", out, progress=False)


def which_loom_script() -> str:
    """The `loom` console script pip installed beside this interpreter."""
    import sys

    script = Path(sys.executable).parent / "loom"
    return str(script) if script.exists() else (shutil.which("loom") or "")
