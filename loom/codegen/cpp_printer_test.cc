#include "loom/codegen/cpp_printer.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/codegen/loop_nest.h"

namespace loom::codegen {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(SubstituteVarsTest, ReplacesBoundNamesAndRejectsUnbound) {
  auto s = SubstituteVars("acc_${r}_${j} + x[${i}]", {{"r", "2"}, {"j", "0"}, {"i", "i"}});
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(*s, "acc_2_0 + x[i]");
  // Inner bindings shadow outer ones.
  EXPECT_EQ(*SubstituteVars("${i}", {{"i", "i"}, {"i", "3"}}), "3");
  auto unbound = SubstituteVars("x[${k}]", {{"i", "i"}});
  EXPECT_EQ(unbound.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(unbound.status().message(), HasSubstr("unbound loop variable 'k'"));
  EXPECT_EQ(SubstituteVars("x[${k", {}).status().code(), absl::StatusCode::kInvalidArgument);
}

Kernel AxpyKernel(LoopKind outer) {
  // out[i*16 + l] = sum over 2 unrolled rows: a[...] * b broadcast.
  Kernel k;
  k.vector_lanes = 16;
  k.params = {{"a", false}, {"out", true}};
  k.body = {Loop("i", 4, outer,
                 {Loop("r", 2, LoopKind::kUnrolled, {VecZero("acc_${r}")}),
                  Loop("r", 2, LoopKind::kUnrolled,
                       {VecLoad("x_${r}", "a + (${i} * 2 + ${r}) * 16"),
                        VecBroadcast("b_${r}", "a[${r}]"), VecFma("acc_${r}", "x_${r}", "b_${r}"),
                        VecStore("out + (${i} * 2 + ${r}) * 16", "acc_${r}")})})};
  return k;
}

TEST(PrintCppTest, UnrollsWithConstantsAndKeepsSerialLoops) {
  auto code = PrintCpp(AxpyKernel(LoopKind::kSerial));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_THAT(*code, HasSubstr("extern \"C\" void loom_kernel(void* const* buffers"));
  EXPECT_THAT(*code, HasSubstr("typedef float vf __attribute__((vector_size(64)))"));
  EXPECT_THAT(*code, HasSubstr("for (int64_t i = 0; i < 4; ++i) {"));
  EXPECT_THAT(*code, HasSubstr("vf acc_1 = {};"));
  EXPECT_THAT(*code, HasSubstr("vf x_1 = loom_load(a + (i * 2 + 1) * 16);"));
  EXPECT_THAT(*code, HasSubstr("acc_0 += x_0 * b_0;"));
  EXPECT_THAT(*code, Not(HasSubstr("${")));
  EXPECT_THAT(*code, Not(HasSubstr("par->parallel_for(")));
}

TEST(PrintCppTest, ParallelLoopBecomesARangeFunction) {
  auto code = PrintCpp(AxpyKernel(LoopKind::kParallel));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_THAT(*code, HasSubstr("loom_range_fn loom_body_i = [](int64_t loom_begin"));
  EXPECT_THAT(*code, HasSubstr("par->parallel_for(4, loom_body_i, (void*)buffers, par->pool);"));
  EXPECT_THAT(*code, HasSubstr("loom_body_i(0, 4, (void*)buffers);"));
}

TEST(PrintCppTest, RejectsMalformedNests) {
  Kernel nested;
  nested.params = {{"out", true}};
  nested.body = {Loop("i", 2, LoopKind::kSerial,
                      {Loop("j", 2, LoopKind::kParallel, {Raw("out[${i} * 2 + ${j}] = 0;")})})};
  auto a = PrintCpp(nested);
  EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(a.status().message(), HasSubstr("top level"));

  Kernel unroll_expr;
  unroll_expr.body = {LoopExpr("i", "n", LoopKind::kUnrolled, {})};
  auto b = PrintCpp(unroll_expr);
  EXPECT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(b.status().message(), HasSubstr("constant extent"));

  Kernel reg_not_unrolled;
  reg_not_unrolled.body = {Loop("r", 2, LoopKind::kSerial, {VecZero("acc[${r}]")})};
  auto c = PrintCpp(reg_not_unrolled);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("not an identifier"));

  Kernel lanes;
  lanes.vector_lanes = 5;
  EXPECT_EQ(PrintCpp(lanes).status().code(), absl::StatusCode::kInvalidArgument);
}

// The printed source must be valid C++ for every vector width (syntax check with g++).
TEST(PrintCppTest, OutputCompilesForEveryWidth) {
  for (int lanes : {1, 4, 8, 16}) {
    Kernel k = AxpyKernel(LoopKind::kParallel);
    k.vector_lanes = lanes;
    k.body.push_back(LoopExpr("t", "3", LoopKind::kVectorized, {Raw("out[t] += 1.0f;")}));
    auto code = PrintCpp(k);
    ASSERT_TRUE(code.ok()) << code.status();
    EXPECT_THAT(*code, HasSubstr("#pragma GCC ivdep"));
    char path[] = "/tmp/loom_codegen_test_XXXXXX.cc";
    int fd = mkstemps(path, 3);
    ASSERT_GE(fd, 0);
    close(fd);
    std::ofstream(path) << *code;
    const std::string isa = lanes == 16 ? "-mavx512f " : (lanes == 8 ? "-mavx2 -mfma " : "");
    const std::string cmd = "g++ -fsyntax-only -Wall -Werror -x c++ " + isa + path;
    EXPECT_EQ(std::system(cmd.c_str()), 0) << *code;
    std::remove(path);
  }
}

}  // namespace
}  // namespace loom::codegen
