"""Model-level helpers shared by bench/ort_compare.py (Loom vs ONNX Runtime latency) and
bench/model_status.py (does each model load, run and match): finding the models and their inputs,
ONNX Runtime's reference outputs, running `loom` commands, comparing outputs, and describing the
machine a figure was taken on.

A model is named on the command line as one of:
  - a folder with model.onnx and info.json (scripts/export-models.py's layout: info.json names
    the input files), or with model.onnx alone (inputs are generated, see below);
  - a folder of such folders (e.g. /work/models-extra): every subfolder that has model.onnx;
  - an .onnx file; inputs are its siblings STEM.<input name>.npy, or STEM.input.npy for a
    single-input model (the layout of ../shared's archives);
  - a .tar.xz archive of ../shared (unpacked once into WORK/models), or the bare name of one
    (resnet18, bert_small, ...), or `shared` for every archive of ../shared/models and
    ../shared/transformers.
Inputs without a file are generated, seeded: float N(0,1); integer inputs whose name contains
"mask" ones, other integers zeros (token id 0 is always in range); bool true.
"""
import dataclasses
import glob
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tarfile
import time

import numpy as np

import ort_time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_FOLDERS = ("models", "transformers")


def shared_dir():
    return os.environ.get("LOOM_SHARED_DIR", os.path.join(ROOT, "..", "shared"))


@dataclasses.dataclass
class Model:
    name: str
    path: str  # the .onnx file
    input_files: dict  # input name -> .npy path (filled by prepare_inputs)
    info: dict = None  # info.json of an exported model, if any
    # More input sets beside an .onnx file (STEM.SET.<input>.npy for every input, e.g.
    # bert_small.mask2.*): set name -> {input name: path}. Checked by model_status.py, not timed.
    extra_sets: dict = dataclasses.field(default_factory=dict)


class ModelError(Exception):
    """A model argument that names nothing usable (one line for the user)."""


def file_key(name):
    """An input or output name as a file-name part (the same rule as scripts/export-models.py)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)


def _unpack(archive, work):
    dest = os.path.join(work, "models")
    stem = os.path.basename(archive)[: -len(".tar.xz")]
    onnx_path = os.path.join(dest, f"{stem}.onnx")
    if not os.path.exists(onnx_path):
        os.makedirs(dest, exist_ok=True)
        tmp = os.path.join(dest, f".{stem}.partial")
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        for f in os.listdir(tmp):
            os.replace(os.path.join(tmp, f), os.path.join(dest, f))
        os.rmdir(tmp)
    if not os.path.exists(onnx_path):
        raise ModelError(f"{archive} holds no {stem}.onnx")
    return onnx_path


def _from_folder(folder):
    info_path = os.path.join(folder, "info.json")
    onnx_path = os.path.join(folder, "model.onnx")
    name = os.path.basename(os.path.normpath(folder))
    if not os.path.exists(info_path):
        return Model(name, onnx_path, {})
    with open(info_path) as f:
        info = json.load(f)
    onnx_path = os.path.join(folder, info.get("file", "model.onnx"))
    files = {i["name"]: os.path.join(folder, i["file"]) for i in info.get("inputs", [])
             if "file" in i}
    return Model(info.get("name", name), onnx_path, files, info)


def resolve(specs, work):
    """Command-line model arguments -> [Model], in the order given, without duplicates."""
    models = []
    for spec in specs:
        shared_archives = {os.path.basename(a)[: -len(".tar.xz")]: a
                           for d in SHARED_FOLDERS
                           for a in sorted(glob.glob(os.path.join(shared_dir(), d, "*.tar.xz")))}
        if spec == "shared":
            if not shared_archives:
                raise ModelError(f"no archives under {shared_dir()}/{{models,transformers}}")
            found = [a for a in shared_archives.values()]
        elif spec in shared_archives and not os.path.exists(spec):
            found = [shared_archives[spec]]
        else:
            found = [spec]
        for item in found:
            if item.endswith(".tar.xz"):
                item = _unpack(item, work)
            if os.path.isdir(item):
                if os.path.exists(os.path.join(item, "model.onnx")):
                    models.append(_from_folder(item))
                    continue
                subs = sorted(d for d in glob.glob(os.path.join(item, "*"))
                              if os.path.exists(os.path.join(d, "model.onnx")))
                if not subs:
                    raise ModelError(f"{item}: no model.onnx in it or in its subfolders")
                models.extend(_from_folder(d) for d in subs)
            elif item.endswith(".onnx") and os.path.isfile(item):
                stem = os.path.basename(item)[: -len(".onnx")]
                models.append(Model(stem, item, {}))
            else:
                raise ModelError(f"{item}: not a model file, model folder, shared archive or "
                                 "shared model name")
    seen, unique = set(), []
    for m in models:
        if os.path.abspath(m.path) not in seen:
            seen.add(os.path.abspath(m.path))
            unique.append(m)
    return unique


def prepare_inputs(model, sess, work):
    """Fills model.input_files for every graph input of the ORT session (found or generated)."""
    stem = model.path[: -len(".onnx")]
    inputs = sess.get_inputs()
    for i in inputs:
        if i.name in model.input_files:
            continue
        for cand in (f"{stem}.{i.name}.npy", f"{stem}.{file_key(i.name)}.npy"):
            if os.path.exists(cand):
                model.input_files[i.name] = cand
                break
        else:
            if len(inputs) == 1 and os.path.exists(f"{stem}.input.npy"):
                model.input_files[i.name] = f"{stem}.input.npy"
                continue
            if not all(isinstance(d, int) and d >= 0 for d in i.shape):
                raise ModelError(f"input {i.name!r} has a dynamic shape {i.shape} and no .npy file")
            dtype = ort_time.ORT_TYPES.get(i.type)
            if dtype is None:
                raise ModelError(f"input {i.name!r} has type {i.type}, which this tool cannot "
                                 "generate: give a .npy file")
            if dtype in (np.float32, np.float64, np.float16):
                x = np.random.default_rng(1).standard_normal(i.shape).astype(dtype)
            elif dtype == np.bool_ or "mask" in i.name.lower():
                x = np.ones(i.shape, dtype=dtype)
            else:
                x = np.zeros(i.shape, dtype=dtype)
            folder = os.path.join(work, "inputs", model.name)
            os.makedirs(folder, exist_ok=True)
            path = os.path.join(folder, f"{file_key(i.name)}.npy")
            np.save(path, x)
            model.input_files[i.name] = path
    first = file_key(inputs[0].name) if inputs else None
    for path in sorted(glob.glob(f"{glob.escape(stem)}.*.{first}.npy")) if first else []:
        name = path[len(stem) + 1: -len(f".{first}.npy")]
        files = {i.name: f"{stem}.{name}.{file_key(i.name)}.npy" for i in inputs}
        if name and all(os.path.exists(f) for f in files.values()):
            model.extra_sets[name] = files


def ort_reference(model, work, input_files=None):
    """ONNX Runtime's outputs for the model's inputs (or the given input set): [(name, array)]
    (1 thread, ORT defaults)."""
    sess = ort_time.make_session(model.path, 1)
    prepare_inputs(model, sess, work)
    files = input_files or model.input_files
    feeds = ort_time.read_feeds(sess, [f"{k}={v}" for k, v in files.items()])
    outs = sess.run(None, feeds)
    return [(o.name, y) for o, y in zip(sess.get_outputs(), outs)]


def compare(ref, got):
    """Loom's outputs against ORT's: every output within 1e-3 * max|ref| (floats), exactly equal
    (integers, bool). Returns (ok, worst max|a-b|/max|ref| over the float outputs, a message)."""
    worst = 0.0
    for name, r in ref:
        g = got.get(name)
        if g is None:
            return False, None, f"output {name!r} missing"
        if tuple(g.shape) != tuple(r.shape):
            return False, None, f"output {name!r} has shape {list(g.shape)}, ORT {list(r.shape)}"
        if np.issubdtype(r.dtype, np.floating):
            r64, g64 = r.astype(np.float64), g.astype(np.float64)
            if np.isnan(g64).any() and not np.isnan(r64).any():
                return False, float("nan"), f"output {name!r} has NaN"
            scale = float(np.max(np.abs(r64))) if r.size else 0.0
            err = float(np.max(np.abs(r64 - g64))) if r.size else 0.0
            rel = err / scale if scale > 0 else err
            worst = max(worst, rel)
            if err > 1e-3 * scale and err > 1e-6:
                return False, rel, (f"output {name!r}: max|a-b|/max|ref| = {rel:.2e} "
                                    "(limit 1e-3)")
        elif not np.array_equal(r, g):
            return False, None, f"output {name!r}: {int(np.sum(r != g))} elements differ"
    return True, worst, f"max|a-b|/max|ref| = {worst:.1e}"


@dataclasses.dataclass
class Result:
    argv: list
    rc: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self):
        return self.rc == 0

    def error_line(self):
        """The one line that says why the command failed."""
        if self.rc == 124 and self.stderr.startswith("timed out"):
            return self.stderr
        for line in self.stderr.splitlines():
            if "error:" in line:
                return line.split("error:", 1)[1].strip()
        if self.rc < 0:
            return f"crashed ({signal.Signals(-self.rc).name})"
        lines = [l for l in self.stderr.splitlines() if l.strip()]
        return lines[-1].strip() if lines else f"exit status {self.rc}"


def run(argv, cores=None, timeout=1800):
    """Runs a command (pinned to `cores`, a list of CPU ids, with taskset) and captures it."""
    full = (["taskset", "-c", ",".join(map(str, cores))] if cores else []) + list(argv)
    t0 = time.time()
    try:
        p = subprocess.run(full, capture_output=True, text=True, timeout=timeout)
        return Result(full, p.returncode, p.stdout, p.stderr, time.time() - t0)
    except subprocess.TimeoutExpired:
        return Result(full, 124, "", f"timed out after {timeout} s", time.time() - t0)


def loom_writes_every_output(loom):
    """Whether this loom's `run` takes --output NAME=FILE (repeatable) and --output-dir."""
    return "--output-dir" in run([loom, "run", "--help"], timeout=60).stdout


def loom_run_outputs(loom, target, model, ref, out_dir, threads=None, cores=None, timeout=1800,
                     every_output=True, input_files=None):
    """`loom run TARGET` (a model file or an artifact folder) on the model's inputs (or the given
    input set); returns (Result, {output name: array} or None when the outputs could not be
    written)."""
    os.makedirs(out_dir, exist_ok=True)
    argv = [loom, "run", target]
    for name, path in (input_files or model.input_files).items():
        argv += ["--input", f"{name}={path}"]
    if threads:
        argv += ["--threads", str(threads)]
    files = {name: os.path.join(out_dir, f"{file_key(name)}.npy") for name, _ in ref}
    for f in files.values():
        if os.path.exists(f):
            os.remove(f)
    if len(ref) == 1:
        argv += ["--output", next(iter(files.values()))]
    elif every_output:
        for name, f in files.items():
            argv += ["--output", f"{name}={f}"]
    r = run(argv, cores=cores, timeout=timeout)
    if not r.ok or (len(ref) > 1 and not every_output):
        return r, None
    return r, {name: np.load(f, allow_pickle=False) for name, f in files.items()
               if os.path.exists(f)}


def loom_compile(loom, model, artifact, threads=1, db=None, build_threads=2, timeout=1800):
    """`loom compile MODEL -o ARTIFACT --threads N [--db FILE]`."""
    argv = [loom, "compile", model.path, "-o", artifact, "--threads", str(threads),
            "--build-threads", str(build_threads)]
    return run(argv + (["--db", db] if db else []), timeout=timeout)


def compile_and_check(loom, model, ref, artifact, out_dir, threads=1, cores=None, db=None,
                      build_threads=2, timeout=1800, every_output=True):
    """`loom compile MODEL -o ARTIFACT --threads N [--db]`, then `loom run ARTIFACT` on the
    model's inputs against ORT's outputs. Returns (status, note, worst relative error): status
    "ok", "unchecked" (ran; this loom cannot write every output) or "failed" (note: why)."""
    r = loom_compile(loom, model, artifact, threads, db, build_threads, timeout)
    if not r.ok:
        return "failed", f"compile: {r.error_line()}", None
    r, got = loom_run_outputs(loom, artifact, model, ref, out_dir, threads=threads, cores=cores,
                              timeout=timeout, every_output=every_output)
    if not r.ok:
        return "failed", f"run: {r.error_line()}", None
    if got is None:
        return "unchecked", "outputs not checked (loom run writes one output)", None
    ok, worst, msg = compare(ref, got)
    return ("ok", "", worst) if ok else ("failed", f"mismatch: {msg}", worst)


def git_rev(path):
    d = os.path.dirname(os.path.abspath(path))
    rev = subprocess.run(["git", "-C", d, "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True)
    if rev.returncode != 0:
        return "?"
    dirty = subprocess.run(["git", "-C", d, "status", "--porcelain", "-uno"], capture_output=True,
                           text=True).stdout.strip()
    return rev.stdout.strip() + (" + uncommitted changes" if dirty else "")


def cpu_model():
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "?"


def load_average():
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def command_line():
    return " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])
