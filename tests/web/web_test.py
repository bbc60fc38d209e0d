#!/usr/bin/env python3
"""The web view end to end: `loom serve --http` with a real `loom agent` and a real small tuning
job (zoo:tiny_cnn, two tasks, 8 trials each).

1. /metrics is scraped while the job runs; once it ends its counters are checked against the job's
   records as `loom result` downloads them.
2. Each page is opened in headless Chromium (Debian's chromium + chromium-driver, driven by
   python3-selenium) and checked for what a person sees: the job listed with its progress, the
   tuning curve with one point per measured trial, the Gantt chart with the device's measure
   stages, a wrong token refused. Screenshots go to $LOOM_BUILD_DIR/web-screenshots/. Skipped
   (not failed) when Chromium, chromedriver or selenium is absent.

Usage: web_test.py LOOM_BINARY   (registered in CTest as loom_web_test)
"""
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from browser import headless_chromium  # noqa: E402

LOOM = None
JOB_TRIALS = 8
JOB_TASKS = 2


def wait_for(pred, timeout, what):
    """Polls pred() every 0.2 s until it returns a true value or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def http_get(url, token=None):
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


METRIC_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(rf"({METRIC_NAME})(\{{(?:{LABEL}(?:,{LABEL})*)?\}})? (\S+)")
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


def parse_metrics(text):
    """{'name{labels}': value} of a Prometheus text exposition (format 0.0.4), checked strictly
    (promtool is not in Debian): each family's HELP and TYPE once, before its samples; sample
    lines and label values (escapes) well formed; values numbers; a counter never negative;
    a histogram's buckets cumulative, ending in +Inf = _count. Raises AssertionError naming the
    line otherwise."""
    types, helps, out = {}, set(), {}

    def family(name):
        for suffix in ("_bucket", "_sum", "_count"):
            base = name[:-len(suffix)]
            if name.endswith(suffix) and types.get(base) == "histogram":
                return base
        return name

    for n, line in enumerate(text.split("\n"), 1):
        if not line:
            continue
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            parts = line.split(" ", 3)
            if len(parts) != 4 or not re.fullmatch(METRIC_NAME, parts[2]):
                raise AssertionError(f"line {n}: malformed {line!r}")
            if parts[1] == "HELP":
                if parts[2] in helps:
                    raise AssertionError(f"line {n}: second HELP for {parts[2]}")
                helps.add(parts[2])
            else:
                if parts[2] in types or parts[3] not in TYPES:
                    raise AssertionError(f"line {n}: bad or second TYPE {line!r}")
                types[parts[2]] = parts[3]
            continue
        if line.startswith("#"):
            continue
        m = SAMPLE.fullmatch(line)
        if not m:
            raise AssertionError(f"line {n}: malformed sample {line!r}")
        name = family(m.group(1))
        if name not in types or name not in helps:
            raise AssertionError(f"line {n}: sample of {name} before its HELP and TYPE")
        value = float(m.group(3))  # ValueError (a failure) for anything but a number
        if types[name] == "counter" and value < 0:
            raise AssertionError(f"line {n}: negative counter {line!r}")
        key = m.group(1) + (m.group(2) or "")
        if key in out:
            raise AssertionError(f"line {n}: {key} twice")
        out[key] = value
    for name, kind in types.items():
        if kind != "histogram":
            continue
        buckets = [(k, v) for k, v in out.items() if k.startswith(name + "_bucket{")]
        counts = [v for _, v in buckets]
        if counts != sorted(counts) or not buckets or 'le="+Inf"' not in buckets[-1][0] \
                or buckets[-1][1] != out.get(name + "_count"):
            raise AssertionError(f"histogram {name}: buckets not cumulative up to +Inf = _count")
    return out


class WebViewTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        build = os.environ.get("LOOM_BUILD_DIR", tempfile.gettempdir())
        cls.shots = os.path.join(build, "web-screenshots")
        cls.dir = tempfile.mkdtemp(prefix="loom_web_test_")
        with open(os.path.join(cls.dir, "tokens"), "w") as f:
            f.write("tok-root root admin\ntok-alice alice user\ntok-agent-h1 h1 agent\n")
        with open(os.path.join(cls.dir, "token-h1"), "w") as f:
            f.write("tok-agent-h1\n")
        cls.procs = []
        cls.logs = []
        serve_log = os.path.join(cls.dir, "serve.log")
        cls.logs.append(open(serve_log, "w"))
        cls.procs.append(subprocess.Popen(
            [LOOM, "serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--state",
             os.path.join(cls.dir, "state.db"), "--tokens", os.path.join(cls.dir, "tokens")],
            stdout=subprocess.DEVNULL, stderr=cls.logs[-1]))

        def ports():
            with open(serve_log) as f:
                m = re.search(r"event=serving .* port=(\d+) .* http_port=(\d+)", f.read())
            return m and (int(m.group(1)), int(m.group(2)))

        grpc_port, http_port = wait_for(ports, 30, "loom serve to listen")
        cls.server = f"127.0.0.1:{grpc_port}"
        cls.base = f"http://127.0.0.1:{http_port}"
        cls.logs.append(open(os.path.join(cls.dir, "agent.log"), "w"))
        cls.procs.append(subprocess.Popen(
            [LOOM, "agent", "--server", cls.server, "--token-file",
             os.path.join(cls.dir, "token-h1"), "--name", "h1", "--cpu-slots", "2",
             "--cache-dir", os.path.join(cls.dir, "cache")],
            stdout=subprocess.DEVNULL, stderr=cls.logs[-1]))
        out = cls.loom("submit", "zoo:tiny_cnn", "--trials", str(JOB_TRIALS), "--batch-size", "4",
                       "--max-tasks", str(JOB_TASKS), "--repeat", "2", "--min-repeat-ms", "1",
                       "--name", "tiny <cnn> & \"friends\"")
        cls.job = re.search(r"submitted (j\d+)", out).group(1)

    @classmethod
    def tearDownClass(cls):
        for p in reversed(cls.procs):
            p.send_signal(signal.SIGTERM)
        for p in reversed(cls.procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for f in cls.logs:
            f.close()
        shutil.rmtree(cls.dir, ignore_errors=True)

    @classmethod
    def loom(cls, *args, token="tok-alice"):
        env = dict(os.environ, LOOM_SERVER=cls.server, LOOM_TOKEN=token, HOME=cls.dir)
        r = subprocess.run([LOOM, *args], env=env, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise AssertionError(f"loom {' '.join(args)}: {r.stderr}")
        return r.stdout + r.stderr

    def job_state(self):
        code, body = http_get(f"{self.base}/api/jobs", "tok-alice")
        self.assertEqual(code, 200)
        jobs = {j["id"]: j for j in json.loads(body)["jobs"]}
        return jobs[self.job]

    def test_1_metrics_during_the_job_agree_with_its_records(self):
        code, body = http_get(f"{self.base}/metrics")
        self.assertEqual(code, 401)
        self.assertEqual(http_get(f"{self.base}/metrics", "tok-alice")[0], 403)
        self.assertEqual(http_get(f"{self.base}/healthz"), (200, "ok\n"))
        self.assertEqual(http_get(f"{self.base}/readyz"), (200, "ready\n"))

        scrapes = []

        def scrape_until_done():
            code, text = http_get(f"{self.base}/metrics", "tok-root")
            self.assertEqual(code, 200)
            scrapes.append(parse_metrics(text))
            return self.job_state()["state"] in ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED")

        wait_for(scrape_until_done, 120, "the tuning job to end")
        self.assertEqual(self.job_state()["state"], "JOB_STATE_SUCCEEDED")
        running = [m for m in scrapes if m['loom_jobs{state="running"}'] == 1]
        self.assertGreater(len(running), 0, "no scrape saw the job running")
        # Counters never go down between scrapes.
        for a, b in zip(scrapes, scrapes[1:]):
            self.assertLessEqual(a["loom_records_written_total"], b["loom_records_written_total"])
            self.assertLessEqual(a["loom_scheduler_grants_total"],
                                 b["loom_scheduler_grants_total"])

        result = os.path.join(self.dir, "result")
        self.loom("result", self.job, "-o", result, "--skip-compile")
        db = sqlite3.connect(os.path.join(result, "records.db"))
        records = db.execute("SELECT COUNT(*) FROM records").fetchone()[0]
        errors = dict(db.execute(
            "SELECT error, COUNT(*) FROM records WHERE error != 'none' GROUP BY error").fetchall())
        db.close()
        self.assertEqual(records, JOB_TASKS * JOB_TRIALS)
        # Every config the template accepted went through the agent's build cache once (its
        # measure stages run the objects its build stages made): a miss, or a hit when another
        # config generated the same kernel source.
        built = records - errors.get("instantiation", 0)
        baselines = self.baselines()
        built += baselines

        def cache(m, which):
            return [v for k, v in m.items() if k.startswith(f"loom_build_cache_{which}_total{{")]

        # /metrics is a snapshot at most a second old (10 s when nothing changes), and the agent's
        # build cache counters come with its heartbeat (every 2.5 s): wait for both.
        def final_scrape():
            code, text = http_get(f"{self.base}/metrics", "tok-root")
            self.assertEqual(code, 200)
            m = parse_metrics(text)
            counted = [h + n for h, n in zip(cache(m, "hits"), cache(m, "misses"))]
            return m if m['loom_jobs{state="succeeded"}'] == 1 and counted == [built] else None

        final = wait_for(final_scrape, 30, "/metrics to show the ended job and its builds")
        self.assertEqual(final["loom_records_written_total"], records)
        self.assertEqual(final["loom_measurement_errors_total"], sum(errors.values()))
        # Failed trials by kind, as the records say (every kind listed, 0 included).
        for kind in ("instantiation", "compile", "runtime", "wrong_answer", "build_timeout",
                     "run_timeout", "unknown"):
            self.assertEqual(final[f'loom_measurement_errors_by_kind_total{{kind="{kind}"}}'],
                             errors.get(kind, 0), kind)
        self.assertGreater(cache(final, "misses")[0], 0)  # a fresh cache compiles
        # Every round of every task measured once: 8 trials in batches of 4 = 2 rounds per task,
        # and the default configs' baseline measurements.
        measured = final['loom_stages_ended_total{kind="measure",outcome="reported"}']
        self.assertEqual(measured, JOB_TASKS * JOB_TRIALS / 4 + baselines)
        stages = sum(v for k, v in final.items() if k.startswith("loom_stages_ended_total"))
        self.assertEqual(final["loom_scheduler_grants_total"], stages)
        self.assertEqual(final["loom_dispatch_seconds_count"], stages)
        self.assertEqual(final['loom_agents{state="alive"}'], 1)

    def baselines(self):
        """The daemon's session measures each task's default config once its trials are done,
        unless a trial was that config (tune/task_session.h): one more build and measure stage per
        such task, its record stored as "<job>#default" in the daemon's own records."""
        db = sqlite3.connect(os.path.join(self.dir, "state.db.records"))
        n = db.execute("SELECT COUNT(*) FROM records WHERE job_id LIKE '%#default'").fetchone()[0]
        db.close()
        self.assertLessEqual(n, JOB_TASKS)
        return n

    def test_2_pages_in_headless_chromium(self):
        browser = headless_chromium(self, self.dir)
        from selenium.webdriver.common.by import By
        wait_for(lambda: self.job_state()["state"] != "JOB_STATE_RUNNING"
                 and self.job_state()["state"] != "JOB_STATE_QUEUED", 120, "the job to end")
        os.makedirs(self.shots, exist_ok=True)
        self.browse(browser, By)

    def browse(self, b, By):
        def login(token):
            b.get(f"{self.base}/login")
            b.find_element(By.ID, "token").send_keys(token)
            b.find_element(By.CSS_SELECTOR, "form.login button").click()

        # A wrong token: refused, the login page again with its error, no cookie.
        b.get(f"{self.base}/")
        self.assertTrue(b.find_elements(By.CSS_SELECTOR, "form.login"))
        login("tok-wrong")
        error = wait_for(lambda: b.find_elements(By.CSS_SELECTOR, "form.login .error"), 15,
                         "the login page to show its error")
        self.assertIn("invalid token", error[0].text)
        self.assertIsNone(b.get_cookie("loom_token"))
        b.save_screenshot(os.path.join(self.shots, "login-refused.png"))

        login("tok-root")
        # The form's POST answers 303 to / with the cookie; wait until the browser has followed.
        cookie = wait_for(lambda: b.get_cookie("loom_token"), 15, "the login cookie")
        wait_for(lambda: b.find_elements(By.ID, "jobs"), 15, "the jobs page after login")
        self.assertTrue(cookie["httpOnly"])
        self.assertEqual(cookie["sameSite"], "Strict")

        # Jobs: listed with its progress (all trials done) and its escaped name.
        b.get(f"{self.base}/")
        row = b.find_element(By.CSS_SELECTOR, f'tr.job[data-job="{self.job}"]')
        total = JOB_TASKS * JOB_TRIALS
        self.assertEqual(row.find_element(By.CSS_SELECTOR, ".progress").text, f"{total}/{total}")
        self.assertEqual(row.find_element(By.CSS_SELECTOR, ".name").text,
                         'tiny <cnn> & "friends"')
        self.assertIn("succeeded", row.text)
        b.save_screenshot(os.path.join(self.shots, "jobs.png"))

        # One job: as many points (and failure crosses) as trials measured.
        b.get(f"{self.base}/job/{self.job}")
        curve = b.find_element(By.ID, "curve-trials")
        points = len(curve.find_elements(By.CSS_SELECTOR, "circle.point"))
        crosses = len(curve.find_elements(By.CSS_SELECTOR, "path.marker"))
        self.assertEqual(points + crosses, total)
        self.assertEqual(len(b.find_elements(By.CSS_SELECTOR, "#curve-time circle.point")), points)
        self.assertIn("measure", b.find_element(By.ID, "stages").text)
        b.save_screenshot(os.path.join(self.shots, "job.png"))

        # Devices: the Gantt chart shows the device's measure stages (2 rounds per task and the
        # default configs' baselines); stages too short to see at the window's scale are drawn as
        # one bar counting them (data-stages).
        b.get(f"{self.base}/devices?minutes=1")
        measures = b.find_elements(By.CSS_SELECTOR, '#gantt g.item[data-kind="measure"]')
        self.assertEqual(sum(int(m.get_attribute("data-stages") or 1) for m in measures),
                         JOB_TASKS * JOB_TRIALS // 4 + self.baselines())
        self.assertIn("cpu:1", b.find_element(By.ID, "devices").text)
        b.save_screenshot(os.path.join(self.shots, "devices.png"))

        # Scheduler: the policy; the page keeps refreshing itself (the stamp appears).
        b.get(f"{self.base}/scheduler")
        self.assertEqual(b.find_element(By.ID, "policy").text, "interleaved")
        wait_for(lambda: b.find_element(By.ID, "updated").text.startswith("updated"), 15,
                 "the scheduler page to refresh")
        b.save_screenshot(os.path.join(self.shots, "scheduler.png"))

        # A phone-sized window still shows the jobs table without the wide columns.
        b.set_window_size(390, 844)
        b.get(f"{self.base}/")
        self.assertTrue(b.find_element(By.CSS_SELECTOR, f'tr.job[data-job="{self.job}"]')
                        .is_displayed())
        b.save_screenshot(os.path.join(self.shots, "jobs-phone.png"))


if __name__ == "__main__":
    LOOM = sys.argv.pop(1)
    unittest.main(verbosity=2)
