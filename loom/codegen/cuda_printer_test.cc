// Tests of the CUDA printer: the printed source and launch geometry, the malformed nests it
// rejects, and the host emulation (compiled with g++ and run here), whose barriers and shared
// memory must behave as a GPU's.
#include "loom/codegen/cuda_printer.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/codegen/cpp_printer.h"
#include "loom/codegen/kernel_abi.h"
#include "loom/codegen/loop_nest.h"

namespace loom::codegen {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// out[b*64 + t] = in[b*64 + 63 - t], through a shared tile: each thread writes its own element
// and reads another thread's, so it is only right when the barrier holds every thread back until
// the whole tile is written. Also a virtual-thread loop and an unroll hint.
Kernel ReverseKernel(int64_t blocks) {
  Kernel k;
  k.vector_lanes = 1;
  k.params = {{"in", false}, {"out", true}};
  k.shared = {{"tile", 64}};
  k.comment = "reverse";
  k.body = {Loop(
      "b", blocks, LoopKind::kBlockX,
      {Loop("t", 32, LoopKind::kThreadX,
            {Loop("v", 2, LoopKind::kVThread,
                  {Raw("tile[${v} * 32 + ${t}] = in[${b} * 64 + ${v} * 32 + ${t}];")}),
             Barrier(),
             Loop("v", 2, LoopKind::kUnrollHint,
                  {Raw("out[${b} * 64 + ${v} * 32 + ${t}] = tile[63 - (${v} * 32 + ${t})];")})})})};
  return k;
}

TEST(PrintCudaTest, PrintsBindingsSharedMemoryAndGeometry) {
  auto src = PrintCuda(ReverseKernel(3));
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_THAT(src->code,
              HasSubstr("extern \"C\" __global__ void __launch_bounds__(32) loom_kernel(const "
                        "float* __restrict__ in, float* __restrict__ out) {"));
  EXPECT_THAT(src->code, HasSubstr("__shared__ float tile[64];"));
  EXPECT_THAT(src->code, HasSubstr("const int b = (int)blockIdx.x;"));
  EXPECT_THAT(src->code, HasSubstr("const int t = (int)threadIdx.x;"));
  // The virtual thread is unrolled with constants; the hinted loop stays a loop.
  EXPECT_THAT(src->code, HasSubstr("tile[1 * 32 + t] = in[b * 64 + 1 * 32 + t];"));
  EXPECT_THAT(src->code, HasSubstr("#pragma unroll\n"));
  EXPECT_THAT(src->code, HasSubstr("for (int v = 0; v < 2; ++v) {"));
  EXPECT_THAT(src->code, HasSubstr("__syncthreads();"));
  EXPECT_THAT(src->code, Not(HasSubstr("${")));
  EXPECT_THAT(src->code, Not(HasSubstr("#include")));  // NVRTC has no standard headers
  EXPECT_EQ(src->grid, (std::array<uint32_t, 3>{3, 1, 1}));
  EXPECT_EQ(src->block, (std::array<uint32_t, 3>{32, 1, 1}));
  EXPECT_EQ(src->shared_bytes, 256);
  EXPECT_EQ(src->ThreadsPerBlock(), 32);
}

TEST(PrintCudaTest, RejectsMalformedNests) {
  Kernel twice;
  twice.body = {Loop("a", 2, LoopKind::kBlockX, {Loop("b", 2, LoopKind::kBlockX, {})})};
  auto a = PrintCuda(twice);
  EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(a.status().message(), HasSubstr("blockIdx.x is bound twice"));

  // A thread dimension may be bound again with the same extent, not with another one.
  Kernel same;
  same.body = {Loop("t", 8, LoopKind::kThreadY, {}), Loop("u", 8, LoopKind::kThreadY, {})};
  EXPECT_TRUE(PrintCuda(same).ok());
  Kernel other;
  other.body = {Loop("t", 8, LoopKind::kThreadY, {}), Loop("u", 4, LoopKind::kThreadY, {})};
  auto b = PrintCuda(other);
  EXPECT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(b.status().message(), HasSubstr("threadIdx.y is bound with extent 8"));

  Kernel expr;
  expr.body = {LoopExpr("t", "n", LoopKind::kThreadZ, {})};
  auto c = PrintCuda(expr);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("constant extent"));

  Kernel par;
  par.body = {Loop("i", 4, LoopKind::kParallel, {})};
  EXPECT_THAT(PrintCuda(par).status().message(), HasSubstr("no CUDA meaning"));

  Kernel vec;
  vec.vector_lanes = 8;
  vec.body = {VecZero("acc")};
  EXPECT_THAT(PrintCuda(vec).status().message(), HasSubstr("vector_lanes must be 1"));

  Kernel unbound;
  unbound.body = {Raw("x[${q}] = 0;")};
  EXPECT_THAT(PrintCuda(unbound).status().message(), HasSubstr("unbound loop variable 'q'"));
}

TEST(PrintCppTest, RejectsGpuConstructs) {
  Kernel k = ReverseKernel(1);
  k.shared.clear();
  EXPECT_THAT(PrintCpp(k).status().message(), HasSubstr("print it with PrintCuda"));
  Kernel shared = ReverseKernel(1);
  EXPECT_THAT(PrintCpp(shared).status().message(), HasSubstr("shared buffers"));
}

// Compiles `code` with g++ into a shared object and loads `loom_kernel`.
class HostKernel {
 public:
  explicit HostKernel(const std::string& code) {
    char dir[] = "/tmp/loom_cuda_emu_XXXXXX";
    if (mkdtemp(dir) == nullptr) return;
    dir_ = dir;
    std::ofstream(dir_ + "/k.cc") << code;
    const std::string cmd = "g++ -O1 -shared -fPIC -Wall -Wno-unknown-pragmas -Werror -o " + dir_ +
                            "/k.so " + dir_ + "/k.cc";
    if (std::system(cmd.c_str()) != 0) return;
    handle_ = dlopen((dir_ + "/k.so").c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle_ != nullptr) fn_ = reinterpret_cast<loom_kernel_fn>(dlsym(handle_, "loom_kernel"));
  }
  ~HostKernel() {
    if (handle_ != nullptr) dlclose(handle_);
    if (!dir_.empty()) std::system(("rm -rf " + dir_).c_str());
  }
  loom_kernel_fn fn() const { return fn_; }

 private:
  std::string dir_;
  void* handle_ = nullptr;
  loom_kernel_fn fn_ = nullptr;
};

TEST(PrintCudaEmulationTest, BarriersAndSharedMemoryBehaveAsOnAGpu) {
  auto src = PrintCuda(ReverseKernel(3), {.host_emulation = true});
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ(src->grid, (std::array<uint32_t, 3>{3, 1, 1}));
  HostKernel k(src->code);
  ASSERT_NE(k.fn(), nullptr) << src->code;
  std::vector<float> in(192), out(192, -1.0f);
  for (int i = 0; i < 192; ++i) in[i] = static_cast<float>(i);
  void* buffers[] = {in.data(), out.data()};
  k.fn()(buffers, nullptr);
  for (int b = 0; b < 3; ++b) {
    for (int i = 0; i < 64; ++i) {
      ASSERT_EQ(out[b * 64 + i], in[b * 64 + 63 - i]) << "block " << b << " element " << i;
    }
  }
}

TEST(PrintCudaEmulationTest, DivergentBarrierAborts) {
  Kernel k;
  k.vector_lanes = 1;
  k.params = {{"out", true}};
  k.body = {Loop("t", 4, LoopKind::kThreadX,
                 {If("${t} < 2", {Raw("return;")}), Barrier(), Raw("out[${t}] = 1.0f;")})};
  auto src = PrintCuda(k, {.host_emulation = true});
  ASSERT_TRUE(src.ok()) << src.status();
  HostKernel hk(src->code);
  ASSERT_NE(hk.fn(), nullptr);
  std::vector<float> out(4);
  void* buffers[] = {out.data()};
  EXPECT_DEATH(hk.fn()(buffers, nullptr), "divergent __syncthreads");
}

}  // namespace
}  // namespace loom::codegen
