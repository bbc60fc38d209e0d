// ProtoJson (json_output.h), the one JSON writer of `--json`: numbers stay numbers (64-bit ones
// included, which protobuf's own JSON mapping writes as strings), job states and stage kinds are
// the tables' short names, bytes are summarized, unset optional fields are left out.
#include "loom/cli/json_output.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/v1/jobs.pb.h"

namespace loom::cli {
namespace {

TEST(ProtoJsonTest, NumbersAreNumbersAndStatesAreShortNames) {
  v1::Job job;
  job.set_id("j7");
  job.set_state(v1::JOB_STATE_SUCCEEDED);
  job.set_records(int64_t{5'000'000'000});
  job.set_cpu_seconds(1.5);
  job.set_best_gflops(12.25);
  v1::TaskProgress* t = job.add_tasks();
  t->set_task_key("conv2d:f32:x");
  t->set_trials_done(4);
  v1::BestPoint* b = job.add_best_history();
  b->set_trials(3);
  const nlohmann::json j = ProtoJson(job);
  EXPECT_EQ(j["id"], "j7");
  EXPECT_EQ(j["state"], "succeeded");
  ASSERT_TRUE(j["records"].is_number_integer());
  EXPECT_EQ(j["records"].get<int64_t>(), 5'000'000'000);
  EXPECT_EQ(j["cpu_seconds"], 1.5);
  EXPECT_EQ(j["best_gflops"], 12.25);
  // Scalars at their default are present; unset optional fields are not (unknown, not zero).
  EXPECT_EQ(j["queue_position"], 0);
  EXPECT_EQ(j["failure_reason"], "");
  EXPECT_FALSE(j.contains("eta_seconds"));
  EXPECT_FALSE(j.contains("trials_per_second"));
  ASSERT_EQ(j["tasks"].size(), 1u);
  EXPECT_EQ(j["tasks"][0]["trials_done"], 4);
  EXPECT_EQ(j["best_history"][0]["trials"], 3);
  EXPECT_FALSE(j["best_history"][0].contains("latency_ms"));
}

TEST(ProtoJsonTest, BytesAreSummarizedAndUnsetMessagesLeftOut) {
  v1::SubmitJobRequest req;
  req.set_onnx_model(std::string(1234, '\0'));
  req.set_trials(8);
  req.add_input_shapes("input=1,3,32,32");
  const nlohmann::json j = ProtoJson(req);
  EXPECT_EQ(j["onnx_model"], "1234 bytes");
  EXPECT_FALSE(j.contains("zoo_model"));  // the oneof's other members
  EXPECT_FALSE(j.contains("simulated"));
  EXPECT_FALSE(j.contains("measure"));  // an unset message
  EXPECT_EQ(j["trials"], 8);
  EXPECT_EQ(j["input_shapes"], nlohmann::json::array({"input=1,3,32,32"}));
  EXPECT_EQ(j["task_indices"], nlohmann::json::array());
}

}  // namespace
}  // namespace loom::cli
