#include "loom/tune/local_machine.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loom::tune {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

int Cpus() { return static_cast<int>(std::max(1u, std::thread::hardware_concurrency())); }

void ExpectInvalid(const LocalMachineOptions& o, const std::string& fragment) {
  absl::StatusOr<LocalMachine> m = LocalMachine::Create(o);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(m.status().message(), HasSubstr(fragment));
}

TEST(LocalMachineTest, DefaultLayoutMeasuresOnTheLastCoreAndBuildsOnTheOthers) {
  absl::StatusOr<LocalMachine> m = LocalMachine::Create({});
  ASSERT_TRUE(m.ok()) << m.status();
  const int n = Cpus();
  EXPECT_EQ(m->num_cpus(), n);
  EXPECT_THAT(m->device_cores(), ElementsAre(n - 1));
  EXPECT_EQ(static_cast<int>(m->cpu_cores().size()), n - 1);
  EXPECT_EQ(m->build_threads(), std::max(1, n - 1));
  EXPECT_EQ(m->DeviceResource(), absl::StrCat("device:cpu:", n - 1));
  EXPECT_EQ(m->target().kind, "cpu");
  EXPECT_FALSE(m->cuda());
}

TEST(LocalMachineTest, ExplicitOptionsAreKept) {
  LocalMachineOptions o;
  o.isa = "generic";
  o.device_cores = {0};
  o.build_threads = 7;
  absl::StatusOr<LocalMachine> m = LocalMachine::Create(o);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->target().isa, ops::Isa::kGeneric);
  EXPECT_EQ(m->build_threads(), 7);
  EXPECT_EQ(m->DeviceResource(), "device:cpu:0");
  EXPECT_EQ(m->JobId({}, {}, "mine"), "mine");
  EXPECT_FALSE(m->JobId({}, {}).empty());

  o = {};
  o.target = "cuda:sm_80";
  o.device = "cuda:3";
  m = LocalMachine::Create(o);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_TRUE(m->cuda());
  EXPECT_EQ(m->target().cuda_arch, "sm_80");
  EXPECT_EQ(m->DeviceResource(), "device:cuda:3");
}

TEST(LocalMachineTest, BadOptionsNameTheOption) {
  LocalMachineOptions o;
  o.device_cores = {Cpus()};
  ExpectInvalid(o, absl::StrCat("--device-cores: core ", Cpus(), " does not exist"));
  o.device_cores = {0, 0};
  ExpectInvalid(o, "--device-cores: core 0 is given twice");
  o = {};
  o.target = "tpu";
  ExpectInvalid(o, "--target: unknown target 'tpu'");
  o = {};
  o.isa = "sse9";
  ExpectInvalid(o, "--isa:");
  o = {};
  o.device = "cuda:0";
  ExpectInvalid(o, "--device applies to --target cuda only");
  o = {};
  o.target = "cuda";
  o.isa = "avx2";
  ExpectInvalid(o, "--isa applies to --target cpu only");
  o.isa.clear();
  o.device = "gpu0";
  ExpectInvalid(o, "bad --device 'gpu0': expected cuda:N");
  o = {};
  o.option_prefix = "TuneOptions.";
  o.device_cores = {-1};
  ExpectInvalid(o, "TuneOptions.device_cores: core -1 does not exist");
  o = {};
  o.build_threads = -2;
  ExpectInvalid(o, "--build-threads must be 0 (automatic) or more, got -2");
}

TEST(LocalMachineTest, ReadPriorChecksTheFileAndItsClass) {
  absl::StatusOr<LocalMachine> m = LocalMachine::Create({});
  ASSERT_TRUE(m.ok()) << m.status();
  absl::StatusOr<std::shared_ptr<const search::TuningPrior>> none = m->ReadPrior("");
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(*none, nullptr);
  absl::StatusOr<std::shared_ptr<const search::TuningPrior>> missing =
      m->ReadPrior("/nonexistent/p.json");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("--prior"));

  const std::string path =
      (std::filesystem::temp_directory_path() / "local_machine_test_prior.json").string();
  {
    std::ofstream f(path);
    f << R"({"format": "loom-tuning-prior", "version": 1, "target_class": "cuda:sm_90",
             "source": "test", "tasks": []})";
  }
  absl::StatusOr<std::shared_ptr<const search::TuningPrior>> other = m->ReadPrior(path);
  EXPECT_EQ(other.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(other.status().message(), HasSubstr("a cuda:sm_90 prior does not apply to cpu:"));
  std::remove(path.c_str());
}

TEST(ParseIndexListTest, ParsesAndRejects) {
  absl::StatusOr<std::vector<int64_t>> v = ParseIndexList("0,3,5", "--tasks");
  ASSERT_TRUE(v.ok());
  EXPECT_THAT(*v, ElementsAre(0, 3, 5));
  EXPECT_THAT(ParseIndexList("1,-2", "--tasks").status().message(),
              HasSubstr("bad --tasks '1,-2': expected comma-separated non-negative integers"));
  EXPECT_THAT(ParseIndexList(",", "--tasks").status().message(), HasSubstr("empty --tasks"));
}

}  // namespace
}  // namespace loom::tune
