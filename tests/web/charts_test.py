#!/usr/bin/env python3
"""Reports and simulator charts as a person sees them (issue 21).

1. A real `loom experiment` (two small zoo:tiny_cnn jobs, setups dedicated and interleaved): its
   trace.json is checked against a JSON Schema of the Chrome trace event format
   (tests/data/chrome_trace.schema.json, with Debian's python3-jsonschema: a check independent of
   base::ValidateChromeTrace), and its complete events must be exactly the stage traces of
   results.json. `loom simulate` on the thesis scaling study at 16 and 64 jobs and `loom records
   trace` over the experiment's record database: their trace.json against the same schema.
2. report.html and the simulator's 16- and 64-job Gantt charts opened in headless Chromium
   (chromium + chromium-driver + python3-selenium): every Gantt chart has a legend naming its jobs
   and stage kinds, time ticks at round numbers, no row without a bar, and the report's charts
   share one time axis; the report draws a tuning curve per job, task and setup and the
   final-latency chart. Screenshots go to $LOOM_BUILD_DIR/chart-screenshots/ (docs/images/ shows
   them).

Parts whose tools are absent are skipped, not failed.
Usage: charts_test.py LOOM_BINARY   (registered in CTest as loom_charts_test)
"""
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from browser import headless_chromium  # noqa: E402

LOOM = None
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SCHEMA = os.path.join(ROOT, "tests", "data", "chrome_trace.schema.json")
SCALING = os.path.join(ROOT, "examples", "sim", "thesis_scaling.yaml")
SETUPS = ["dedicated", "interleaved"]
JOBS = [("zoo:tiny_cnn", 0), ("zoo:tiny_cnn", 1)]  # (model, its one tuned task)
SIM_JOBS = [16, 64]

# What the browser reads of each Gantt chart (an <svg> made by base/chart.h's GanttSvg).
GANTT_JS = """
const svg = arguments[0];
const num = (e, a) => parseFloat(e.getAttribute(a));
const rows = [...svg.querySelectorAll('rect.row')].map(r => [num(r, 'y'), num(r, 'height')]);
const bars = [...svg.querySelectorAll('rect.bar')].map(r => num(r, 'y') + num(r, 'height') / 2);
return {
  rows: rows.length,
  empty_rows: rows.filter(([y, h]) => !bars.some(c => c >= y && c <= y + h)).length,
  bars: bars.length,
  ticks: [...svg.querySelectorAll('text.tick')].map(t => t.textContent),
  legend: [...svg.querySelectorAll('g.legend text')].map(t => t.textContent),
  lanes: [...svg.querySelectorAll('text.lane')].map(t => t.textContent),
  width: num(svg, 'width'),
  height: num(svg, 'height'),
};
"""


def run(args, timeout):
    p = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return p.stdout


def round_ticks(labels):
    """An error message when the tick labels are not 0-based steps of 1, 2 or 5 x 10^k, else ''."""
    values = [float(t) for t in labels]
    if len(values) < 2:
        return f"fewer than two ticks: {labels}"
    step = values[1] - values[0]
    mantissa = step / 10 ** math.floor(math.log10(step))
    if not any(abs(mantissa - m) < 1e-9 for m in (1, 2, 5)):
        return f"tick step {step} is not 1, 2 or 5 x 10^k: {labels}"
    for a, b in zip(values, values[1:]):
        if abs((b - a) - step) > 1e-9 * max(1, step):
            return f"ticks not evenly spaced: {labels}"
    for v in values:
        if abs(v / step - round(v / step)) > 1e-6:
            return f"tick {v} is not a multiple of {step}: {labels}"
    return ""


class ChartsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="loom_charts_test_")
        build = os.environ.get("LOOM_BUILD_DIR", cls.dir)
        cls.shots = os.path.join(build, "chart-screenshots")
        spec = os.path.join(cls.dir, "experiment.yaml")
        with open(spec, "w") as f:
            f.write(f"name: charts\nsetups: [{', '.join(SETUPS)}]\njobs:\n")
            for model, task in JOBS:
                f.write(f"  - {{model: \"{model}\", tasks: [{task}], trials: 4, batch_size: 2, "
                        "tuner: random}\n")
        cls.exp = os.path.join(cls.dir, "experiment")
        run([LOOM, "experiment", spec, "-o", cls.exp], timeout=480)
        # The thesis scaling study at 16 and 64 jobs only.
        with open(SCALING) as f:
            text = f.read()
        lines = [("sweep_jobs: [" + ", ".join(map(str, SIM_JOBS)) + "]")
                 if l.startswith("sweep_jobs:") else l for l in text.splitlines()]
        sim_spec = os.path.join(cls.dir, "scaling.yaml")
        with open(sim_spec, "w") as f:
            f.write("\n".join(lines) + "\n")
        cls.sim = os.path.join(cls.dir, "simulate")
        run([LOOM, "simulate", sim_spec, "-o", cls.sim], timeout=120)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def load(self, *path):
        with open(os.path.join(*path)) as f:
            return json.load(f)

    def schema_errors(self, trace):
        try:
            import jsonschema
        except ImportError:
            self.skipTest("python3-jsonschema is not installed")
        validator = jsonschema.Draft7Validator(self.load(SCHEMA))
        return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(trace)]

    def test_1_experiment_trace_is_a_chrome_trace_of_the_stages_in_results_json(self):
        trace = self.load(self.exp, "trace.json")
        results = self.load(self.exp, "results.json")
        self.assertEqual(self.schema_errors(trace), [])
        # The schema is not a formality: a negative duration and a nameless process fail it.
        broken = {"traceEvents": [dict(trace["traceEvents"][-1], dur=-1),
                                  {"ph": "M", "pid": 1, "tid": 0, "name": "process_name",
                                   "args": {}}]}
        self.assertEqual(len(self.schema_errors(broken)), 2)

        def key(setup, rep, job, kind, task_key, rnd, resource, start_us, end_us):
            return (setup, rep, job, kind, task_key, rnd, resource, round(start_us),
                    round(end_us))

        events = []
        processes = {}
        for e in trace["traceEvents"]:
            if e["ph"] == "M" and e["name"] == "process_name":
                processes[e["pid"]] = e["args"]["name"]
            if e["ph"] != "X":
                continue
            a = e["args"]
            self.assertEqual(e["cat"], a["kind"])
            events.append(key(a["setup"], a["repetition"], a["job"], a["kind"], a["task_key"],
                              a["round"], a["resource"], e["ts"], e["ts"] + e["dur"]))
        stages = []
        for s in results["setups"]:
            for st in s["stages"]:
                stages.append(key(s["setup"], s["repetition"], st["job"], st["kind"],
                                  st["task_key"], st["round"], st["resource"], st["start"] * 1e6,
                                  st["end"] * 1e6))
        # Every stage of every setup: at least propose, build, measure, update per job.
        self.assertGreaterEqual(len(stages), len(SETUPS) * len(JOBS) * 4)
        self.assertEqual(sorted(events), sorted(stages))
        self.assertEqual(sorted(processes.values()), sorted(SETUPS))

    def test_2_simulator_and_record_database_traces_are_chrome_traces(self):
        trace = self.load(self.sim, "trace.json")
        self.assertEqual(self.schema_errors(trace), [])
        names = {e["args"]["name"] for e in trace["traceEvents"]
                 if e["ph"] == "M" and e["name"] == "process_name"}
        for n in SIM_JOBS:
            self.assertIn(f"interleaved, {n} jobs", names)
        # `loom records trace` over the experiment's record database: a process per job and
        # setup, each with its stages.
        out = os.path.join(self.dir, "records-trace.json")
        run([LOOM, "records", "trace", "--db", os.path.join(self.exp, "records.db"), "-o", out],
            timeout=60)
        trace = self.load(out)
        self.assertEqual(self.schema_errors(trace), [])
        processes = [e["pid"] for e in trace["traceEvents"]
                     if e["ph"] == "M" and e["name"] == "process_name"]
        self.assertEqual(len(processes), len(SETUPS) * len(JOBS))
        for pid in processes:
            kinds = {e["cat"] for e in trace["traceEvents"] if e["ph"] == "X" and e["pid"] == pid}
            self.assertEqual(kinds, {"propose", "build", "measure", "update"})

    def browser(self):
        b = headless_chromium(self, self.dir)
        os.makedirs(self.shots, exist_ok=True)
        return b

    def viewport(self, b, width, height):
        """Makes the page's viewport (not the window, whose frame takes some of it) this size, so
        that a screenshot holds the whole chart."""
        b.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                          {"width": int(width), "height": int(height), "deviceScaleFactor": 1,
                           "mobile": False})

    def check_gantt(self, g, jobs, kinds, what):
        self.assertGreater(g["bars"], 0, what)
        self.assertEqual(g["empty_rows"], 0, f"{what}: rows without a bar")
        self.assertEqual(round_ticks(g["ticks"]), "", what)
        self.assertEqual(float(g["ticks"][0]), 0, what)
        legend = " | ".join(g["legend"])
        for j in jobs:
            self.assertIn(j, g["legend"], f"{what}: job {j} not in the legend: {legend}")
        for k in kinds:
            self.assertTrue(any(t.endswith(k) for t in g["legend"]),
                            f"{what}: stage kind {k} not in the legend: {legend}")

    def test_3_simulator_charts_in_chromium(self):
        from selenium.webdriver.common.by import By
        b = self.browser()
        for policy in ("uncontrolled", "interleaved"):
            for n in SIM_JOBS:
                name = f"gantt_{policy}_{n}jobs.svg"
                b.get("file://" + os.path.join(self.sim, name))
                g = b.execute_script(GANTT_JS, b.find_element(By.CSS_SELECTOR, "svg"))
                jobs = [f"resnet18-{i}" for i in range(n)]
                self.check_gantt(g, jobs, ["propose", "build", "measure", "update"], name)
                # One host lane and one GPU lane; the rows of each stay readable at 64 jobs.
                self.assertEqual(len(g["lanes"]), 2, g["lanes"])
                self.assertGreaterEqual(g["height"] / g["rows"], 6, name)
                self.viewport(b, g["width"] + 16, g["height"] + 16)
                b.save_screenshot(os.path.join(self.shots, f"sim-{policy}-{n}.png"))

    def test_4_report_in_chromium(self):
        from selenium.webdriver.common.by import By
        b = self.browser()
        b.get("file://" + os.path.join(self.exp, "report.html"))
        # The Gantt charts, one per setup, on one time axis.
        ticks = []
        for setup in SETUPS:
            svg = b.find_element(By.CSS_SELECTOR, f"figure#gantt-{setup} svg")
            g = b.execute_script(GANTT_JS, svg)
            self.check_gantt(g, ["zoo:tiny_cnn", "zoo:tiny_cnn#2"], ["build", "measure"], setup)
            ticks.append(g["ticks"])
        self.assertEqual(ticks[0], ticks[1], "the setups' charts share one time axis")

        # The final-latency chart: one group per job, one bar per setup against dedicated.
        bars = b.find_elements(By.CSS_SELECTOR, "figure.bars svg")
        self.assertTrue(bars, "no final-latency chart")
        title = bars[0].find_element(By.CSS_SELECTOR, "text").text
        self.assertIn("Final latency vs dedicated", title)
        groups = [t.text for t in bars[0].find_elements(By.CSS_SELECTOR, "text.group")]
        self.assertEqual(groups, ["zoo:tiny_cnn", "zoo:tiny_cnn#2"])

        # Tuning curves: per job and task, against trials and against time, one line per setup
        # with a dot per measured trial of each setup's job.
        heading = b.find_element(By.XPATH, "//h2[text()='Tuning curves']")
        curves = heading.find_elements(By.XPATH, "following-sibling::div[@class='charts']")
        self.assertEqual(len(curves), len(JOBS))
        results = self.load(self.exp, "results.json")
        for j, div in enumerate(curves):
            svgs = div.find_elements(By.CSS_SELECTOR, "svg")
            self.assertEqual(len(svgs), 2)
            for svg in svgs:
                self.assertEqual(len(svg.find_elements(By.CSS_SELECTOR, "path.series")),
                                 len(SETUPS))
            # A dot per successful trial, a cross per failed one (results.json: gflops 0).
            trials = sum(len(c["gflops"]) for s in results["setups"] if s["repetition"] == 0
                         for c in s["jobs"][j]["curves"])
            self.assertGreater(trials, 0)
            for svg in svgs:
                dots = svg.find_elements(By.CSS_SELECTOR, "circle.point")
                marks = svg.find_elements(By.CSS_SELECTOR, "path.marker")
                self.assertEqual(len(dots) + len(marks), trials)
        b.execute_script("arguments[0].scrollIntoView()", heading)
        curves[0].screenshot(os.path.join(self.shots, "report-curves.png"))
        bars[0].screenshot(os.path.join(self.shots, "report-final-latency.png"))
        b.find_element(By.CSS_SELECTOR, "figure#gantt-interleaved").screenshot(
            os.path.join(self.shots, "report-gantt.png"))
        height = b.execute_script("return document.documentElement.scrollHeight")
        self.viewport(b, 1280, min(height, 20000))
        b.save_screenshot(os.path.join(self.shots, "report.png"))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: charts_test.py LOOM_BINARY")
    LOOM = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
