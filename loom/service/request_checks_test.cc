#include "loom/service/request_checks.h"

#include <onnx/onnx_pb.h>

#include <cmath>
#include <limits>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loom::service {
namespace {

using ::testing::HasSubstr;

// A one-node model (Reshape) whose shape input is an initializer; `external` puts that
// initializer's data in an external file.
std::string ReshapeModel(bool external) {
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.add_opset_import()->set_version(13);
  onnx::GraphProto* g = m.mutable_graph();
  onnx::TensorProto* shape = g->add_initializer();
  shape->set_name("shape");
  shape->set_data_type(onnx::TensorProto::INT64);
  shape->add_dims(2);
  if (external) {
    shape->set_data_location(onnx::TensorProto::EXTERNAL);
    auto* loc = shape->add_external_data();
    loc->set_key("location");
    loc->set_value("secret.bin");
  } else {
    shape->add_int64_data(1);
    shape->add_int64_data(6);
  }
  onnx::NodeProto* n = g->add_node();
  n->set_name("r");
  n->set_op_type("Reshape");
  n->add_input("x");
  n->add_input("shape");
  n->add_output("y");
  return m.SerializeAsString();
}

TEST(UploadCheckTest, ExternalDataAnywhereIsRefusedNamingTheTensor) {
  EXPECT_TRUE(CheckUploadedModel(ReshapeModel(false)).ok());
  absl::Status st = CheckUploadedModel(ReshapeModel(true));
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("model: initializer 'shape' uses external data"));
  EXPECT_THAT(st.message(), ::testing::Not(HasSubstr("secret.bin")));

  // In a Constant node's tensor attribute, inside a subgraph.
  onnx::ModelProto m;
  m.add_opset_import()->set_version(13);
  onnx::NodeProto* loop = m.mutable_graph()->add_node();
  loop->set_name("loop");
  loop->set_op_type("Loop");
  onnx::AttributeProto* body = loop->add_attribute();
  body->set_name("body");
  onnx::NodeProto* c = body->mutable_g()->add_node();
  c->set_name("c");
  c->set_op_type("Constant");
  onnx::AttributeProto* value = c->add_attribute();
  value->set_name("value");
  value->mutable_t()->set_data_location(onnx::TensorProto::EXTERNAL);
  st = CheckUploadedModel(m.SerializeAsString());
  EXPECT_THAT(st.message(), HasSubstr("attribute 'value' of node 'c' (Constant) uses external"));

  EXPECT_THAT(CheckUploadedModel("not a model").message(), HasSubstr("not a valid ONNX model"));
}

TEST(PublicModelErrorTest, HidesServerPathsAndTensorValuesButKeepsNodesAndTypes) {
  EXPECT_EQ(PublicModelError("Reshape 'r': cannot reshape f32[2,3] (6 elements) to [9,8,7,6,5]",
                             "/tmp/loom-upload-abc"),
            "Reshape 'r': cannot reshape f32[2,3] (6 elements) to [...]");
  EXPECT_EQ(PublicModelError("ONNX model '/tmp/loom-upload-abc/model.onnx' is broken",
                             "/tmp/loom-upload-abc"),
            "ONNX model 'the uploaded model' is broken");
  EXPECT_EQ(PublicModelError("w: external data file '/etc/shadow' not found", ""),
            "w: external data file '<path>' not found");
  EXPECT_EQ(PublicModelError("Pad 'p': pads [0, 268435455] are too large\nsecond line", ""),
            "Pad 'p': pads [...] are too large second line");
  EXPECT_EQ(PublicModelError(std::string(1000, 'x'), "").size(), 300u);
}

TEST(PeakFlopsTest, BoundsGrowWithCoresAndVectorWidth) {
  v1::DeviceInfo one;
  one.set_name("cpu:3");
  one.set_kind("cpu");
  one.set_isa("avx2");
  EXPECT_DOUBLE_EQ(PeakFlopsBound(one), 32 * 6.5e9 * 1.5);
  v1::DeviceInfo four = one;
  four.set_name("cpu:2-5");
  four.set_isa("avx512");
  EXPECT_DOUBLE_EQ(PeakFlopsBound(four), 4 * 64 * 6.5e9 * 1.5);
  v1::DeviceInfo gpu;
  gpu.set_name("cuda:0");
  gpu.set_kind("cuda");
  EXPECT_DOUBLE_EQ(PeakFlopsBound(gpu), 5e15);
}

v1::BuildOutput Built(std::initializer_list<std::pair<int64_t, bool>> configs) {
  v1::BuildOutput b;
  for (auto [index, ok] : configs) {
    v1::Artifact* a = b.add_artifacts();
    a->set_config_index(index);
    if (ok) {
      a->set_content_hash(std::string(64, 'a'));
    } else {
      a->set_error(v1::ERROR_KIND_COMPILE);
    }
  }
  return b;
}

v1::MeasureResult Ok(int64_t config, double cost, bool checked = true) {
  v1::MeasureResult r;
  r.set_config_index(config);
  r.add_costs(cost);
  r.set_checked(checked);
  return r;
}

TEST(MeasureCheckTest, ForgedResultsAreRefusedAsPermissionDenied) {
  const v1::BuildOutput built = Built({{4, true}, {9, false}});
  const MeasureBounds bounds{.flops = 1e9, .peak_flops = 1e12, .max_costs = 3};
  v1::MeasureOutput good;
  *good.add_results() = Ok(4, 0.01);
  v1::MeasureResult failed;
  failed.set_config_index(9);
  failed.set_error(v1::ERROR_KIND_COMPILE);
  *good.add_results() = failed;
  EXPECT_TRUE(CheckMeasureOutput(good, built, bounds).ok());

  auto refused = [&](v1::MeasureOutput out, const char* why) {
    absl::Status st = CheckMeasureOutput(out, built, bounds);
    EXPECT_EQ(st.code(), absl::StatusCode::kPermissionDenied) << why;
    EXPECT_THAT(st.message(), HasSubstr(why));
  };
  v1::MeasureOutput fast = good;
  *fast.mutable_results(0) = Ok(4, 1e-10);  // 1e9 FLOP in 0.1 ns
  refused(fast,
          "config 4: a cost of 1e-10 s is 1e+10 GFLOPS, above the device's physical bound "
          "of 1000 GFLOPS");
  v1::MeasureOutput unchecked = good;
  *unchecked.mutable_results(0) = Ok(4, 0.01, /*checked=*/false);
  refused(unchecked, "config 4 succeeded without the wrong-answer check");
  v1::MeasureOutput other = good;
  other.mutable_results(0)->set_config_index(5);
  refused(other, "result 0 names config 5 but config 4 was sent");
  v1::MeasureOutput unbuilt = good;
  *unbuilt.mutable_results(1) = Ok(9, 0.01);
  refused(unbuilt, "config 9 succeeded although its build failed");
  v1::MeasureOutput many = good;
  for (int i = 0; i < 5; ++i) many.mutable_results(0)->add_costs(0.01);
  refused(many, "config 4 has 6 costs for at most 3 repeats");

  v1::MeasureOutput short_output;
  *short_output.add_results() = Ok(4, 0.01);
  EXPECT_EQ(CheckMeasureOutput(short_output, built, bounds).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(BuildCheckTest, ArtifactsMustAnswerTheConfigsAskedWithHashes) {
  v1::BuildInput in;
  in.add_config_indices(4);
  in.add_config_indices(9);
  EXPECT_TRUE(CheckBuildOutput(Built({{4, true}, {9, false}}), in).ok());
  absl::Status st = CheckBuildOutput(Built({{4, true}, {8, true}}), in);
  EXPECT_EQ(st.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(st.message(), HasSubstr("artifact 1 names config 8 but config 9 was asked"));
  v1::BuildOutput no_hash = Built({{4, true}, {9, true}});
  no_hash.mutable_artifacts(1)->set_content_hash("not-hex");
  EXPECT_THAT(CheckBuildOutput(no_hash, in).message(),
              HasSubstr("artifact 1 has no SHA-256 content hash"));
  EXPECT_EQ(CheckBuildOutput(Built({{4, true}}), in).code(), absl::StatusCode::kInvalidArgument);
}

TEST(SubmitCheckTest, MeasureSettingsAboveTheCapsNameTheFlag) {
  v1::SubmitJobRequest r;
  r.set_zoo_model("tiny_cnn");
  r.set_trials(4);
  const MeasureCaps caps;
  EXPECT_TRUE(ValidateSubmit(r, caps).ok());
  v1::SubmitJobRequest repeat = r;
  repeat.mutable_measure()->set_repeat(1000);
  EXPECT_THAT(ValidateSubmit(repeat, caps).message(),
              HasSubstr("measure.repeat 1000 is above this daemon's limit of 20 "
                        "(--max-measure-repeat)"));
  v1::SubmitJobRequest ms = r;
  ms.mutable_measure()->set_min_repeat_ms(60000);
  EXPECT_THAT(ValidateSubmit(ms, caps).message(), HasSubstr("--max-measure-min-repeat-ms"));
  v1::SubmitJobRequest timeout = r;
  timeout.mutable_measure()->set_run_timeout_s(600);
  EXPECT_THAT(ValidateSubmit(timeout, caps).message(), HasSubstr("--max-measure-run-timeout"));
  v1::SubmitJobRequest batch = r;
  batch.set_batch_size(1024);
  EXPECT_THAT(
      ValidateSubmit(batch, caps).message(),
      HasSubstr("batch_size 1024 is above this daemon's limit of 64 (--max-measure-batch)"));
  v1::SubmitJobRequest negative = r;
  negative.mutable_measure()->set_repeat(-1);
  EXPECT_EQ(ValidateSubmit(negative, caps).code(), absl::StatusCode::kInvalidArgument);
}

TEST(SubmitCheckTest, HostileJobBudgetsAreRefused) {
  v1::SubmitJobRequest r;
  r.set_zoo_model("tiny_cnn");
  r.set_trials(4);
  r.set_total_trials(400);
  r.set_time_budget_seconds(1200);
  const MeasureCaps caps;
  EXPECT_TRUE(ValidateSubmit(r, caps).ok());
  for (double bad : {-1.0, std::nan(""), std::numeric_limits<double>::infinity(), 1e12}) {
    v1::SubmitJobRequest t = r;
    t.set_time_budget_seconds(bad);
    absl::Status st = ValidateSubmit(t, caps);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(st.message(), HasSubstr("time_budget_seconds must be in [0, 2592000]")) << bad;
  }
  for (int64_t bad : {int64_t{-1}, int64_t{1} << 40}) {
    v1::SubmitJobRequest t = r;
    t.set_total_trials(bad);
    absl::Status st = ValidateSubmit(t, caps);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(st.message(), HasSubstr("the total trials must be 1 to 100000000")) << bad;
  }
}

}  // namespace
}  // namespace loom::service

namespace loom::service {
namespace {

// Input shapes use the one syntax of graph/shape_spec.h, as `loom submit --input-shape` and the
// README write them.
TEST(SubmitCheckTest, InputShapesUseTheReadmeSyntax) {
  v1::SubmitJobRequest r;
  r.set_zoo_model("tiny_cnn");
  r.set_trials(2);
  r.add_input_shapes("input=1,3,32,32");
  EXPECT_TRUE(ValidateSubmit(r, MeasureCaps{}).ok()) << ValidateSubmit(r, MeasureCaps{});
  r.add_input_shapes("input:1x3x32x32");
  absl::Status st = ValidateSubmit(r, MeasureCaps{});
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(),
              HasSubstr("bad input shape 'input:1x3x32x32': expected NAME=D0,D1,... (e.g. "
                        "input=1,3,224,224)"));
}

}  // namespace
}  // namespace loom::service
