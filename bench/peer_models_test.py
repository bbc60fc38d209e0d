#!/usr/bin/env python3
"""Tests of bench/peer_models.py, the model-level benchmark's helpers: which models an argument
names, which input files they use, the output comparison that decides "matches ORT", and the
one error line taken from a failed command. Runs under CTest (loom_bench_peer_models_test) with
Debian's python3 and numpy; needs neither onnxruntime nor a loom binary."""
import json
import os
import sys
import tempfile
import types
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    import numpy as np
except ImportError:  # python3-numpy absent: skip (CTest SKIP_RETURN_CODE)
    print("numpy is not installed: skipping")
    sys.exit(77)

import peer_models as pm


class CompareTest(unittest.TestCase):
    def test_within_tolerance_passes_and_reports_the_worst_error(self):
        ref = [("y", np.array([10.0, -20.0], np.float32))]
        ok, worst, msg = pm.compare(ref, {"y": np.array([10.01, -20.0], np.float32)})
        self.assertTrue(ok)
        self.assertAlmostEqual(worst, 0.01 / 20, delta=1e-6)
        self.assertIn("max|a-b|/max|ref| = 5.0e-04", msg)

    def test_error_above_1e_3_of_the_output_scale_fails(self):
        ref = [("a", np.ones(4, np.float32)), ("b", np.array([100.0, 0.0], np.float32))]
        got = {"a": np.ones(4, np.float32), "b": np.array([100.0, 0.2], np.float32)}
        ok, worst, msg = pm.compare(ref, got)
        self.assertFalse(ok)
        self.assertAlmostEqual(worst, 0.002, delta=1e-6)
        self.assertEqual(msg, "output 'b': max|a-b|/max|ref| = 2.00e-03 (limit 1e-3)")

    def test_missing_output_shape_and_nan_fail(self):
        ref = [("y", np.zeros((1, 3), np.float32))]
        self.assertEqual(pm.compare(ref, {})[2], "output 'y' missing")
        self.assertEqual(pm.compare(ref, {"y": np.zeros(3, np.float32)})[2],
                         "output 'y' has shape [3], ORT [1, 3]")
        nan = np.array([[0.0, np.nan, 0.0]], np.float32)
        self.assertEqual(pm.compare(ref, {"y": nan})[2], "output 'y' has NaN")

    def test_integer_outputs_must_be_equal(self):
        ref = [("i", np.array([1, 2, 3], np.int64))]
        self.assertTrue(pm.compare(ref, {"i": np.array([1, 2, 3], np.int64)})[0])
        self.assertEqual(pm.compare(ref, {"i": np.array([1, 2, 4], np.int64)})[2],
                         "output 'i': 1 elements differ")


class ErrorLineTest(unittest.TestCase):
    def result(self, rc, stderr):
        return pm.Result(["loom"], rc, "", stderr, 0.0)

    def test_loom_error_line(self):
        r = self.result(1, "warning: x\nloom: error: unsupported operator 'Foo' (node n1)\n")
        self.assertEqual(r.error_line(), "unsupported operator 'Foo' (node n1)")

    def test_signal_and_timeout_and_other_exit(self):
        self.assertEqual(self.result(-11, "").error_line(), "crashed (SIGSEGV)")
        self.assertEqual(self.result(124, "timed out after 5 s").error_line(),
                         "timed out after 5 s")
        self.assertEqual(self.result(3, "").error_line(), "exit status 3")

    def test_run_captures_a_real_process(self):
        r = pm.run([sys.executable, "-c", "import sys; sys.exit('loom: error: bad')"])
        self.assertFalse(r.ok)
        self.assertEqual(r.error_line(), "bad")
        r = pm.run([sys.executable, "-c", "import time; time.sleep(10)"], timeout=1)
        self.assertEqual((r.rc, r.error_line()), (124, "timed out after 1 s"))


class ResolveTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def touch(self, *parts):
        path = os.path.join(self.dir, *parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "wb").close()
        return path

    def test_exported_folder_reads_info_json(self):
        self.touch("zoo", "bert", "model.onnx")
        with open(os.path.join(self.dir, "zoo", "bert", "info.json"), "w") as f:
            json.dump({"name": "bert", "inputs": [{"name": "input_ids", "file": "i.npy"}]}, f)
        self.touch("zoo", "cnn", "model.onnx")
        self.touch("zoo", "notes", "README")
        models = pm.resolve([os.path.join(self.dir, "zoo")], self.dir)
        self.assertEqual([m.name for m in models], ["bert", "cnn"])
        self.assertEqual(models[0].input_files,
                         {"input_ids": os.path.join(self.dir, "zoo", "bert", "i.npy")})
        self.assertEqual(models[1].input_files, {})
        # The same model twice is measured once.
        again = pm.resolve([os.path.join(self.dir, "zoo"), os.path.join(self.dir, "zoo", "cnn")],
                           self.dir)
        self.assertEqual(len(again), 2)

    def test_onnx_file_finds_sibling_inputs_or_generates_them(self):
        onnx_path = self.touch("m.onnx")
        np.save(os.path.join(self.dir, "m.tokens.npy"), np.arange(4))
        inputs = [types.SimpleNamespace(name="tokens", shape=[1, 4], type="tensor(int64)"),
                  types.SimpleNamespace(name="attention_mask", shape=[1, 4],
                                        type="tensor(int64)"),
                  types.SimpleNamespace(name="x:0", shape=[2, 3], type="tensor(float)")]
        sess = types.SimpleNamespace(get_inputs=lambda: inputs)
        (model,) = pm.resolve([onnx_path], self.dir)
        pm.prepare_inputs(model, sess, self.dir)
        self.assertEqual(model.input_files["tokens"], os.path.join(self.dir, "m.tokens.npy"))
        mask = np.load(model.input_files["attention_mask"])
        self.assertEqual((mask.dtype, mask.tolist()), (np.int64, [[1, 1, 1, 1]]))
        x = np.load(model.input_files["x:0"])
        self.assertTrue(model.input_files["x:0"].endswith("x_0.npy"))
        self.assertEqual((x.dtype, x.shape), (np.float32, (2, 3)))

    def test_more_input_sets_beside_an_onnx_file(self):
        onnx_path = self.touch("b.onnx")
        for f in ("b.ids.npy", "b.mask.npy", "b.mask2.ids.npy", "b.mask2.mask.npy",
                  "b.half.ids.npy", "b.mask2.ort_output.npy"):
            np.save(os.path.join(self.dir, f), np.zeros(2))
        inputs = [types.SimpleNamespace(name="ids", shape=[2], type="tensor(int64)"),
                  types.SimpleNamespace(name="mask", shape=[2], type="tensor(int64)")]
        (model,) = pm.resolve([onnx_path], self.dir)
        pm.prepare_inputs(model, types.SimpleNamespace(get_inputs=lambda: inputs), self.dir)
        self.assertEqual(model.input_files, {"ids": os.path.join(self.dir, "b.ids.npy"),
                                             "mask": os.path.join(self.dir, "b.mask.npy")})
        # "half" lacks its mask file: not a set.
        self.assertEqual(model.extra_sets, {"mask2": {
            "ids": os.path.join(self.dir, "b.mask2.ids.npy"),
            "mask": os.path.join(self.dir, "b.mask2.mask.npy")}})

    def test_dynamic_input_without_a_file_is_an_error(self):
        onnx_path = self.touch("d.onnx")
        inputs = [types.SimpleNamespace(name="x", shape=["batch", 3], type="tensor(float)")]
        (model,) = pm.resolve([onnx_path], self.dir)
        with self.assertRaisesRegex(pm.ModelError, "input 'x' has a dynamic shape"):
            pm.prepare_inputs(model, types.SimpleNamespace(get_inputs=lambda: inputs), self.dir)

    def test_unknown_argument_is_one_clear_error(self):
        with self.assertRaisesRegex(pm.ModelError, "nope: not a model file, model folder"):
            pm.resolve([os.path.join(self.dir, "nope")], self.dir)
        os.makedirs(os.path.join(self.dir, "empty"))
        with self.assertRaisesRegex(pm.ModelError, "no model.onnx in it or in its subfolders"):
            pm.resolve([os.path.join(self.dir, "empty")], self.dir)


if __name__ == "__main__":
    unittest.main()
