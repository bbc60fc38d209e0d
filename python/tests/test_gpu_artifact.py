"""GPU artifacts (``loom compile --target cuda -o DIR``) through loom.load_artifact, without a GPU.

The artifact is zoo:tiny_cnn compiled on the fake CUDA driver of the C++ tests, with host-emulation
kernel images, by the build tree's test tool ``loom_write_fake_gpu_artifact``. This process then
loads that driver (as libcuda.so.1, for the rest of the session) so that the package's loader,
runtime::LoadCudaArtifact as in the C API and ``loom run DIR``, opens it as the GPU: an sm_90
device, whose faults the driver takes from ``LOOM_FAKE_CUDA``.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from conftest import REPO, reference, run_from_threads, tiny_input

import loom


def writer_tool() -> Path:
    """The build tree's loom_write_fake_gpu_artifact (built with the C++ tests)."""
    build = Path(os.environ.get("LOOM_BUILD_DIR", REPO / "build" / "default"))
    return build / "loom" / "runtime" / "loom_write_fake_gpu_artifact"


@pytest.fixture(scope="module")
def gpu_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tool = writer_tool()
    if not os.access(tool, os.X_OK):
        pytest.skip(f"no build tree with the C++ tests' tools here ({tool} is absent)")
    root = tmp_path_factory.mktemp("gpu")
    out = root / "tiny_cnn"
    proc = subprocess.run(
        [str(tool), "zoo:tiny_cnn", str(out), str(root / "kernels")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"{tool.name} exited {proc.returncode}: {proc.stderr}")
    # Loaded by path first, the fake is what dlopen("libcuda.so.1") finds from now on.
    ctypes.CDLL(json.loads(proc.stdout)["libcuda"], mode=ctypes.RTLD_GLOBAL)
    return out


def test_a_gpu_artifact_runs_like_the_reference_and_replays_its_graph(
    gpu_artifact: Path, loom_bin: str, tmp_path: Path
) -> None:
    gpu = loom.load_artifact(gpu_artifact)
    assert gpu.threads == 0
    assert gpu.target.startswith("cuda:sm_90")
    assert [s.shape for s in gpu.inputs] == [(1, 3, 32, 32)]
    assert [s.shape for s in gpu.outputs] == [(1, 10)]
    x = tiny_input(4)
    first = gpu.run(x)[0]
    want = reference(loom_bin, x, tmp_path)
    np.testing.assert_allclose(first, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
    np.testing.assert_array_equal(gpu.run(x)[0], first)  # the replayed graph, the same outputs
    stats = gpu.compile_stats
    assert stats["graph_replay"] is True
    assert stats["host_steps"] == 0
    assert stats["launches"] > 0
    assert gpu.benchmark(min_seconds=0.0, min_runs=2).runs >= 2


def test_four_threads_at_once_give_the_same_outputs_as_one(gpu_artifact: Path) -> None:
    gpu = loom.load_artifact(gpu_artifact)
    inputs = [tiny_input(seed) for seed in range(8)]
    want = [gpu.run(x)[0] for x in inputs]
    got = run_from_threads(gpu, inputs, repeats=2)
    assert len(got) == 4 * 2 * 2
    for (_, _, i), out in got.items():
        np.testing.assert_array_equal(out, want[i])


def flip_byte(offset: int, name: str) -> Callable[[Path], None]:
    def damage(art: Path) -> None:
        with open(art / name, "r+b") as f:
            f.seek(offset)
            byte = f.read(1)
            f.seek(offset)
            f.write(bytes([byte[0] ^ 0x5A]))

    return damage


def append_to(name: str) -> Callable[[Path], None]:
    def damage(art: Path) -> None:
        with open(art / name, "ab") as f:
            f.write(b"x")

    return damage


def remove(name: str) -> Callable[[Path], None]:
    return lambda art: (art / name).unlink()


@pytest.mark.parametrize(
    "damage, kwargs, fake_mode, error, message",
    [
        (None, {}, "sm_80", loom.FailedPreconditionError,
         "was compiled for sm_90 but the GPU is sm_80"),
        (flip_byte(100, "kernels/k0.so"), {}, "", loom.DataLossError, "k0.so is corrupt"),
        (remove("kernels/k0.so"), {}, "", loom.NotFoundError, "k0.so"),
        (flip_byte(8, "weights.bin"), {}, "", loom.DataLossError, "weights.bin"),
        (append_to("plan.json"), {}, "", loom.DataLossError, "plan.json"),
        (None, {"threads": 2}, "", loom.FailedPreconditionError,
         "is a GPU artifact: it runs on its GPU as compiled"),
        (None, {"device": 1}, "", loom.InvalidArgumentError, "CUDA device 1 does not exist"),
        (None, {}, "init_fail", loom.UnavailableError, "cuInit"),
    ],
    ids=["other-sm", "corrupt-kernel", "missing-kernel", "corrupt-weights", "corrupt-plan",
         "threads", "other-device", "no-driver"],
)  # fmt: skip
def test_each_refusal_is_one_line(
    gpu_artifact: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    damage,
    kwargs: dict,
    fake_mode: str,
    error: type,
    message: str,
) -> None:
    art = tmp_path / "artifact"
    shutil.copytree(gpu_artifact, art)
    if damage is not None:
        damage(art)
    if fake_mode:
        monkeypatch.setenv("LOOM_FAKE_CUDA", fake_mode)
    with pytest.raises(error) as e:
        loom.load_artifact(art, **kwargs)
    assert message in str(e.value)
    assert "\n" not in str(e.value)
