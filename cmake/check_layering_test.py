#!/usr/bin/env python3
"""Tests of check_layering.py on small made-up trees: each rule fails with its message, and a tree
that keeps the table passes. The CTest loom_layering_selftest runs it (tests/CMakeLists.txt)."""

import os
import sys
import tempfile
import textwrap
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_layering  # noqa: E402

TABLE = """\
# a comment
base:
graph: base
service: graph base
agent: base   # never the service
api: service graph base
python: api base
tests: graph base
allow loom/graph/exception.cc loom/service/daemon.h
"""


class CheckLayeringTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.root = self.dir.name
        self.Write("cmake/layering.txt", TABLE)
        self.Write("loom/base/status.h", "#pragma once\n")
        self.Write("loom/graph/graph.h", '#pragma once\n#include "loom/base/status.h"\n')
        self.Write("loom/graph/exception.cc", '#include "loom/service/daemon.h"\n')
        self.Write("loom/service/daemon.h", '#pragma once\n#include "loom/graph/graph.h"\n')
        self.Write("include/loom/loom.h", '#pragma once\n#include "loom/graph/graph.h"\n')
        self.Write("python/src/module.cc", '#include "loom/loom.h"\n')

    def tearDown(self):
        self.dir.cleanup()

    def Write(self, rel, text):
        path = os.path.join(self.root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)

    def Check(self):
        return check_layering.Check(self.root, os.path.join(self.root, "cmake", "layering.txt"))

    def testTreeThatKeepsTheTablePasses(self):
        self.assertEqual(self.Check(), [])
        self.assertEqual(check_layering.main(["--root", self.root]), 0)

    def testForbiddenIncludeNamesFileLineAndBothModules(self):
        self.Write("loom/agent/agent.cc", '#include <string>\n\n#include "loom/service/daemon.h"\n')
        self.assertEqual(
            self.Check(),
            [
                'loom/agent/agent.cc:3: agent may not include service ("loom/service/daemon.h"); '
                "agent may include: base (cmake/layering.txt)"
            ],
        )
        self.assertEqual(check_layering.main(["--root", self.root]), 1)

    def testProtoHeadersBelongToProto(self):
        self.Write("loom/agent/agent.cc", '#include "loom/v1/agent.pb.h"\n')
        self.assertEqual(
            self.Check(),
            [
                'loom/agent/agent.cc:1: agent includes "loom/v1/agent.pb.h" of unknown module '
                "proto (not in cmake/layering.txt)"
            ],
        )
        self.Write("cmake/layering.txt", TABLE.replace("agent: base", "proto:\nagent: base"))
        self.assertEqual(
            self.Check(),
            [
                'loom/agent/agent.cc:1: agent may not include proto ("loom/v1/agent.pb.h"); '
                "agent may include: base (cmake/layering.txt)"
            ],
        )

    def testApiHeadersInIncludeBelongToApi(self):
        self.Write("loom/graph/bad.cc", '#include "loom/loom.h"\n')
        errors = self.Check()
        self.assertEqual(len(errors), 1)
        self.assertIn("loom/graph/bad.cc:1: graph may not include api", errors[0])

    def testProductCodeMayNotIncludeTheTestFramework(self):
        self.Write("loom/graph/util.h", "#pragma once\n#include \"gtest/gtest.h\"\n")
        self.assertEqual(
            self.Check(),
            [
                "loom/graph/util.h:2: product code of graph includes the test framework "
                "<gtest/gtest.h>; move it to a *_test.cc or a testing/ library"
            ],
        )

    def testProductCodeMayNotIncludeTestingHeaders(self):
        self.Write("loom/graph/testing/fake.h", '#pragma once\n#include "gmock/gmock.h"\n')
        self.Write("loom/graph/graph_test.cc", '#include "loom/graph/testing/fake.h"\n')
        self.Write("tests/cli_test.cc", '#include "loom/graph/testing/fake.h"\n')
        self.assertEqual(self.Check(), [])
        self.Write("loom/service/service.cc", '#include "loom/graph/testing/fake.h"\n')
        self.assertEqual(
            self.Check(),
            [
                "loom/service/service.cc:1: product code of service includes the test-only "
                'header "loom/graph/testing/fake.h"'
            ],
        )

    def testInternalHeadersStayInsideTheirModule(self):
        self.Write("loom/graph/graph_internal.h", "#pragma once\n")
        self.Write("loom/graph/internal/rules.h", "#pragma once\n")
        self.Write("loom/graph/shapes.cc", '#include "loom/graph/graph_internal.h"\n')
        self.assertEqual(self.Check(), [])
        self.Write(
            "loom/service/service.cc",
            '#include "loom/graph/graph_internal.h"\n#include "loom/graph/internal/rules.h"\n',
        )
        self.assertEqual(
            self.Check(),
            [
                'loom/service/service.cc:1: service includes "loom/graph/graph_internal.h", an '
                "internal header of graph; only graph's own sources may include it",
                'loom/service/service.cc:2: service includes "loom/graph/internal/rules.h", an '
                "internal header of graph; only graph's own sources may include it",
            ],
        )

    def testTestsFollowTheGraphToo(self):
        self.Write("loom/agent/agent_test.cc", '#include "loom/service/daemon.h"\n')
        errors = self.Check()
        self.assertEqual(len(errors), 1)
        self.assertIn("loom/agent/agent_test.cc:1: agent may not include service", errors[0])

    def testStaleExceptionFails(self):
        self.Write("loom/graph/exception.cc", '#include "loom/graph/graph.h"\n')
        self.assertEqual(
            self.Check(),
            [
                "cmake/layering.txt:9: the exception 'allow loom/graph/exception.cc "
                "loom/service/daemon.h' matches no include that needs it any more; remove it"
            ],
        )

    def testModuleWithoutALineFails(self):
        self.Write("loom/newmod/x.cc", '#include "loom/base/status.h"\n')
        self.assertEqual(
            self.Check(), ["loom/newmod/x.cc: module newmod has no line in cmake/layering.txt"]
        )

    def testIncludesInRawStringsAndCommentsAreNotIncludes(self):
        self.Write(
            "loom/base/printer.cc",
            textwrap.dedent(
                '''\
                const char* kPrelude = R"(
                #include "loom/service/daemon.h"
                )";
                /*
                #include "loom/service/daemon.h"
                */
                '''
            ),
        )
        self.assertEqual(self.Check(), [])

    def testMalformedTableFails(self):
        self.Write("cmake/layering.txt", TABLE + "agent: base\nlost line\nx: nowhere\n")
        self.assertEqual(
            self.Check(),
            [
                f"{self.root}/cmake/layering.txt:10: module agent has a second line",
                f"{self.root}/cmake/layering.txt:11: expected '<module>: <modules>', "
                "got 'lost line'",
                f"{self.root}/cmake/layering.txt: module x may include nowhere, which has no line",
            ],
        )


if __name__ == "__main__":
    unittest.main()
