#include "loom/ops/local_kernel.h"

#include <dlfcn.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "loom/base/check.h"
#include "loom/base/rng.h"

namespace loom::ops {

LocalKernel::~LocalKernel() {
  if (handle_ != nullptr) dlclose(handle_);
}

absl::StatusOr<std::unique_ptr<LocalKernel>> LocalKernel::Compile(const KernelSource& source,
                                                                  const std::string& work_dir,
                                                                  const std::string& extra_flags) {
  static std::atomic<int64_t> counter{0};
  const std::string stem = absl::StrCat(work_dir, "/kernel_", getpid(), "_", counter.fetch_add(1));
  const std::string src = stem + ".cc", so = stem + ".so", log = stem + ".log";
  {
    std::ofstream out(src);
    out << source.code;
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", src));
  }
  const std::string cmd = absl::StrCat("g++ -O2 -shared -fPIC ", source.compile_flags, " ",
                                       extra_flags, " -o ", so, " ", src, " > ", log, " 2>&1");
  if (std::system(cmd.c_str()) != 0) {
    std::ifstream in(log);
    std::string msg((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return absl::InternalError(absl::StrCat("compile failed: ", cmd, "\n", msg.substr(0, 4000)));
  }
  void* handle = dlopen(so.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) return absl::InternalError(absl::StrCat("dlopen: ", dlerror()));
  auto fn = reinterpret_cast<loom_kernel_fn>(dlsym(handle, codegen::kKernelEntry));
  if (fn == nullptr) {
    dlclose(handle);
    return absl::InternalError(absl::StrCat(so, " has no ", codegen::kKernelEntry));
  }
  std::remove(src.c_str());
  std::remove(so.c_str());  // the mapping stays valid after unlink
  std::remove(log.c_str());
  return std::unique_ptr<LocalKernel>(new LocalKernel(handle, fn));
}

std::vector<graph::Tensor> RandomNaturalInputs(const Template& tmpl, uint64_t seed) {
  base::Rng rng(seed);
  std::vector<graph::Tensor> out;
  for (const graph::Shape& shape : tmpl.NaturalInputShapes()) {
    graph::Tensor t(graph::DType::kFloat32, shape);
    for (float& v : t.values<float>()) v = static_cast<float>(rng.Uniform(-1.0, 1.0));
    out.push_back(t);
  }
  return out;
}

KernelBuffers PrepareBuffers(const Template& tmpl, const Config& config,
                             const std::vector<graph::Tensor>& natural) {
  KernelBuffers b;
  b.tensors = tmpl.PackInputs(config, natural);
  for (const BufferSpec& spec : tmpl.Buffers(config)) {
    if (spec.is_output) b.tensors.emplace_back(graph::DType::kFloat32, spec.shape);
  }
  for (graph::Tensor& t : b.tensors) b.pointers.push_back(t.raw_data());
  return b;
}

graph::Tensor RunOnce(const Template& tmpl, const Config& config, const LocalKernel& kernel,
                      const std::vector<graph::Tensor>& natural) {
  KernelBuffers b = PrepareBuffers(tmpl, config, natural);
  kernel.fn()(b.pointers.data(), nullptr);
  return tmpl.UnpackOutput(config, b.tensors.back());
}

ErrorStats CompareTensors(const graph::Tensor& got, const graph::Tensor& want) {
  LOOM_CHECK(got.num_elements() == want.num_elements());
  ErrorStats s;
  const float* g = got.data<float>();
  const float* w = want.data<float>();
  for (int64_t i = 0; i < got.num_elements(); ++i) {
    const double err = std::fabs(static_cast<double>(g[i]) - w[i]);
    s.max_abs_err = std::isnan(err) ? INFINITY : std::max(s.max_abs_err, err);
    s.max_abs_ref = std::max(s.max_abs_ref, std::fabs(static_cast<double>(w[i])));
  }
  return s;
}

}  // namespace loom::ops
