// Test support for the measurers' tests (toolchain/measurer_test.cc, confine_test.cc,
// cuda_measurer_test.cc): the worker command of a test binary that hosts the workers
// (worker_host.h), a measurer from its factory, and the small workloads they measure.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "loom/graph/tasks.h"
#include "loom/graph/testing/workloads.h"
#include "loom/toolchain/measurer.h"

namespace loom::tune::testing {

// This test binary's path: its main() runs RunHostedWorker, so it is its own worker command.
inline std::string SelfExe() { return std::filesystem::read_symlink("/proc/self/exe").string(); }

// The measurer a factory made (MakeLocalMeasurer, MakeCudaMeasurer), or null after a test failure
// that names why it refused the options.
inline std::unique_ptr<Measurer> MeasurerOrNull(absl::StatusOr<std::unique_ptr<Measurer>> made) {
  EXPECT_TRUE(made.ok()) << made.status();
  return made.ok() ? std::move(*made) : nullptr;
}

// The CPU measurer tests' workload: an 8 x 64 activation times a 32 x 64 weight (transposed).
inline graph::Workload SmallDense() { return graph::testing::DenseWorkload(8, 32, 64, true); }

// The CUDA measurer tests' workload: a 3x3 convolution of 1 x 4 x 8 x 8 to 8 channels, padding 1.
inline graph::Workload SmallConv() { return graph::testing::ConvWorkload(4, 8, 8, 8, 3, 1, 1); }

}  // namespace loom::tune::testing
