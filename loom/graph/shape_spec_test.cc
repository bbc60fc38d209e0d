#include "loom/graph/shape_spec.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loom::graph {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ShapeSpecTest, ParsesTheReadmeForm) {
  auto s = ParseInputShape("input=1,3,32,32");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->first, "input");
  EXPECT_THAT(s->second, ElementsAre(1, 3, 32, 32));
  // ONNX names may hold ':' and '='; the last '=' separates the dimensions.
  s = ParseInputShape("serving:0=8,128");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->first, "serving:0");
  EXPECT_THAT(s->second, ElementsAre(8, 128));
  EXPECT_EQ(FormatInputShape("x", {1, 0, 7}), "x=1,0,7");
  EXPECT_THAT(*ParseShape("0"), ElementsAre(0));
}

TEST(ShapeSpecTest, BadSpecsNameTheExpectedForm) {
  for (const char* bad :
       {"input:1x3x32x32", "input", "=1,2", "input=", "input=1,,2", "input=1,-3", "input=1x3"}) {
    auto s = ParseInputShape(bad);
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(s.status().message(),
                HasSubstr(std::string("bad input shape '") + bad +
                          "': expected NAME=D0,D1,... (e.g. input=1,3,224,224)"));
  }
}

TEST(ShapeSpecTest, UntrustedSizesAreBounded) {
  EXPECT_THAT(ParseShape("1,4294967297").status().message(), HasSubstr("larger than 2^32"));
  EXPECT_THAT(ParseShape("1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1").status().message(),
              HasSubstr("more than 16 dimensions"));
  EXPECT_THAT(ParseShape(std::string(2000, '1')).status().message(),
              HasSubstr("longer than 1024 bytes"));
  EXPECT_THAT(ParseInputShape(std::string(2000, 'a') + "=1").status().message(),
              HasSubstr("expected NAME=D0,D1,..."));
  EXPECT_THAT(ParseShape("").status().message(), HasSubstr("no dimensions"));
}

}  // namespace
}  // namespace loom::graph
