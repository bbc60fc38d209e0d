#include "loom/graph/op_versions.h"

#include <algorithm>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/graph/shape_inference.h"

namespace loom::graph {
namespace {

using ::testing::HasSubstr;

Node MakeNode(const std::string& op, const std::string& name) {
  Node n;
  n.op_type = op;
  n.name = name;
  return n;
}

TEST(OpVersionsTest, SelectsTheLargestSinceVersionAtOrBelowTheOpset) {
  EXPECT_EQ(OpSchemaVersion("Pad", 11), 11);
  EXPECT_EQ(OpSchemaVersion("Pad", 17), 13);
  EXPECT_EQ(OpSchemaVersion("Pad", 18), 18);
  EXPECT_EQ(OpSchemaVersion("Pad", 20), 19);
  EXPECT_EQ(OpSchemaVersion("Pad", 28), 25);
  EXPECT_EQ(OpSchemaVersion("Relu", 11), 6);
  EXPECT_EQ(OpSchemaVersion("Trilu", 13), 0);
  EXPECT_EQ(OpSchemaVersion("NoSuchOp", 17), 0);
}

TEST(OpVersionsTest, AcceptsEveryOpsetOfTypesOnlyAndImplementedVersions) {
  for (const std::string& op : VersionedOps()) {
    const int64_t first = std::max<int64_t>(kMinOnnxOpset, [&] {
      for (int64_t opset = 1; opset <= kMaxOnnxOpset; ++opset) {
        if (OpSchemaVersion(op, opset) != 0) return opset;
      }
      return kMaxOnnxOpset + 1;
    }());
    for (int64_t opset = first; opset <= kMaxOnnxOpset; ++opset) {
      EXPECT_TRUE(CheckOpVersion(MakeNode(op, "n"), opset).ok()) << op << " at opset " << opset;
    }
  }
}

TEST(OpVersionsTest, AnOperatorNewerThanTheOpsetIsRefusedNamingTheNode) {
  absl::Status st = CheckOpVersion(MakeNode("Trilu", "tri"), 13);
  EXPECT_EQ(st.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(st.message(), HasSubstr("operator Trilu does not exist in opset 13 (it was added in "
                                      "opset 14), in node 'tri'"));
  EXPECT_EQ(CheckOpVersion(MakeNode("Gelu", "g"), 19).code(), absl::StatusCode::kUnimplemented);
  EXPECT_TRUE(CheckOpVersion(MakeNode("Gelu", "g"), 20).ok());
}

// Every operator with a shape rule is in the version table, so no operator escapes the check.
TEST(OpVersionsTest, EveryOperatorWithAShapeRuleHasVersions) {
  const std::vector<std::string> versioned = VersionedOps();
  for (const std::string& op : SupportedOps()) {
    EXPECT_TRUE(std::binary_search(versioned.begin(), versioned.end(), op))
        << op << " has a shape rule but no entry in op_versions.cc";
  }
}

}  // namespace
}  // namespace loom::graph
