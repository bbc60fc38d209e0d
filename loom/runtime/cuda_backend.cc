#include "loom/runtime/cuda_backend.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "loom/base/status_macros.h"
#include "loom/codegen/kernel_abi.h"
#include "loom/runtime/artifact.h"
#include "loom/toolchain/cuda_driver.h"
#include "loom/toolchain/nvrtc_builder.h"

namespace loom::runtime {
namespace {

constexpr char kCubin[] = "cubin";
constexpr char kHostEmulation[] = "host-emulation";

// BuildSource through `builder`, as a status: a kernel the model needs must build.
absl::StatusOr<tune::BuildResult> BuildOrError(tune::Builder& builder,
                                               const ops::KernelSource& source) {
  tune::BuildResult r = builder.BuildSource(source, ops::Config{0});
  if (r.error != tune::ErrorKind::kNone) {
    return absl::InternalError(
        absl::StrCat("cannot build a kernel (", tune::ErrorKindName(r.error), "): ", r.error_msg));
  }
  return r;
}

absl::StatusOr<std::string> ReadImage(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::stringstream image;
  image << file.rdbuf();
  if (!file || image.str().empty()) {
    return absl::InternalError(absl::StrCat("cannot read the kernel image '", path, "'"));
  }
  return image.str();
}

class DeviceBackend : public CudaBackend {
 public:
  ~DeviceBackend() override {
    (void)driver_->Synchronize();
    for (tune::CudaDriver::GraphExec g : graphs_) (void)driver_->DestroyGraphExec(g);
    if (stream_ != nullptr) (void)driver_->DestroyStream(stream_);
    for (Buffer b : buffers_) (void)driver_->Free(b);
    for (tune::CudaDriver::Module m : modules_) (void)driver_->UnloadModule(m);
    (void)driver_->ReleasePrimaryContext(ordinal_);
  }

  static absl::StatusOr<std::unique_ptr<CudaBackend>> Make(const CudaDeviceOptions& o) {
    LOOM_ASSIGN_OR_RETURN(std::unique_ptr<tune::CudaDriver> driver,
                          tune::CudaDriver::Load(o.driver_library));
    LOOM_ASSIGN_OR_RETURN(tune::CudaDeviceInfo info, driver->DeviceInfo(o.ordinal));
    ops::CudaDeviceLimits limits;
    limits.max_threads_per_block = info.max_threads_per_block;
    limits.max_shared_bytes_per_block = info.max_shared_bytes_per_block;
    limits.max_regs_per_block = info.max_regs_per_block;
    limits.num_sms = info.num_sms;
    limits.warp_size = info.warp_size;
    ops::Target target = ops::CudaTarget(info.Arch(), limits);
    target.device_name = info.name;
    std::unique_ptr<tune::Builder> builder;
    if (o.host_emulation_kernels) {
      LOOM_ASSIGN_OR_RETURN(builder, tune::MakeLocalBuilder(o.build));
    } else {
      LOOM_ASSIGN_OR_RETURN(builder, tune::MakeNvrtcBuilder(o.build, info.Arch()));
    }
    LOOM_RETURN_IF_ERROR(driver->RetainPrimaryContext(o.ordinal).status());
    auto b = std::unique_ptr<DeviceBackend>(new DeviceBackend());
    b->driver_ = std::move(driver);
    b->builder_ = std::move(builder);
    b->target_ = std::move(target);
    b->ordinal_ = o.ordinal;
    b->emulated_kernels_ = o.host_emulation_kernels;
    LOOM_ASSIGN_OR_RETURN(b->stream_, b->driver_->CreateStream());
    return std::unique_ptr<CudaBackend>(std::move(b));
  }

  const ops::Target& target() const override { return target_; }
  bool host_emulation() const override { return emulated_kernels_; }
  std::string image_kind() const override { return emulated_kernels_ ? kHostEmulation : kCubin; }

  absl::StatusOr<Buffer> Alloc(size_t bytes) override {
    LOOM_ASSIGN_OR_RETURN(Buffer b, driver_->Alloc(bytes == 0 ? 4 : bytes));
    buffers_.push_back(b);
    return b;
  }
  absl::Status Upload(Buffer dst, const void* src, size_t bytes) override {
    return driver_->CopyToDevice(dst, src, bytes);
  }
  absl::Status Download(void* dst, Buffer src, size_t bytes) override {
    return driver_->CopyToHost(dst, src, bytes);
  }

  absl::StatusOr<KernelId> Load(const ops::KernelSource& source) override {
    LOOM_ASSIGN_OR_RETURN(tune::BuildResult built, BuildOrError(*builder_, source));
    ++built_;
    if (built.cache_hit) ++cache_hits_;
    LOOM_ASSIGN_OR_RETURN(std::string image, ReadImage(built.artifact_path));
    return LoadImage(image, source.cuda_launch);
  }

  absl::StatusOr<std::string> Image(KernelId kernel) const override {
    if (kernel < 0 || kernel >= static_cast<KernelId>(kernels_.size())) {
      return absl::InvalidArgumentError(absl::StrCat("no kernel ", kernel));
    }
    return kernels_[static_cast<size_t>(kernel)].image;
  }

  absl::StatusOr<KernelId> LoadImage(const std::string& image,
                                     const ops::CudaLaunch& launch) override {
    LOOM_ASSIGN_OR_RETURN(tune::CudaDriver::Module module, driver_->LoadModule(image));
    modules_.push_back(module);
    LOOM_ASSIGN_OR_RETURN(tune::CudaDriver::Function fn,
                          driver_->GetFunction(module, launch.entry));
    if (launch.dynamic_shared_bytes > 48 * 1024) {
      LOOM_RETURN_IF_ERROR(
          driver_->SetMaxDynamicShared(fn, static_cast<int>(launch.dynamic_shared_bytes)));
    }
    kernels_.push_back({fn, launch, image});
    return static_cast<KernelId>(kernels_.size() - 1);
  }

  absl::Status Launch(KernelId kernel, const std::vector<Buffer>& args) override {
    if (kernel < 0 || kernel >= static_cast<KernelId>(kernels_.size())) {
      return absl::InvalidArgumentError(absl::StrCat("no kernel ", kernel));
    }
    const Loaded& k = kernels_[static_cast<size_t>(kernel)];
    return driver_->Launch(k.fn, k.launch.grid.data(), k.launch.block.data(),
                           k.launch.dynamic_shared_bytes, args, stream_);
  }
  absl::Status Synchronize() override { return driver_->Synchronize(); }

  absl::Status BeginCapture() override { return driver_->BeginCapture(stream_); }
  absl::StatusOr<GraphId> EndCapture() override {
    LOOM_ASSIGN_OR_RETURN(tune::CudaDriver::Graph graph, driver_->EndCapture(stream_));
    absl::StatusOr<tune::CudaDriver::GraphExec> exec = driver_->InstantiateGraph(graph);
    (void)driver_->DestroyGraph(graph);  // the instantiated graph keeps what it needs
    if (!exec.ok()) return exec.status();
    graphs_.push_back(*exec);
    return static_cast<GraphId>(graphs_.size() - 1);
  }
  absl::Status LaunchGraph(GraphId graph) override {
    if (graph < 0 || graph >= static_cast<GraphId>(graphs_.size())) {
      return absl::InvalidArgumentError(absl::StrCat("no graph ", graph));
    }
    return driver_->LaunchGraph(graphs_[static_cast<size_t>(graph)], stream_);
  }

  int64_t kernels_loaded() const override { return built_; }
  int64_t cache_hits() const override { return cache_hits_; }

 private:
  struct Loaded {
    tune::CudaDriver::Function fn;
    ops::CudaLaunch launch;
    std::string image;
  };
  DeviceBackend() = default;

  std::unique_ptr<tune::CudaDriver> driver_;
  std::unique_ptr<tune::Builder> builder_;
  ops::Target target_;
  int ordinal_ = 0;
  bool emulated_kernels_ = false;
  tune::CudaDriver::Stream stream_ = nullptr;  // every launch; captured into graphs
  std::vector<Buffer> buffers_;
  std::vector<tune::CudaDriver::Module> modules_;
  std::vector<Loaded> kernels_;
  std::vector<tune::CudaDriver::GraphExec> graphs_;
  int64_t built_ = 0, cache_hits_ = 0;
};

class EmulatedBackend : public CudaBackend {
 public:
  ~EmulatedBackend() override {
    for (Buffer b : buffers_) std::free(reinterpret_cast<void*>(b));
    for (void* h : handles_) dlclose(h);
  }

  static absl::StatusOr<std::unique_ptr<CudaBackend>> Make(const ops::Target& target,
                                                           const tune::BuildOptions& build) {
    if (target.kind != "cuda") {
      return absl::InvalidArgumentError(
          absl::StrCat("the emulated CUDA backend needs a cuda target, got ", target.Key()));
    }
    LOOM_ASSIGN_OR_RETURN(std::unique_ptr<tune::Builder> builder, tune::MakeLocalBuilder(build));
    auto b = std::unique_ptr<EmulatedBackend>(new EmulatedBackend());
    b->builder_ = std::move(builder);
    b->target_ = target;
    return std::unique_ptr<CudaBackend>(std::move(b));
  }

  const ops::Target& target() const override { return target_; }
  bool host_emulation() const override { return true; }
  std::string image_kind() const override { return kHostEmulation; }

  absl::StatusOr<Buffer> Alloc(size_t bytes) override {
    void* p = std::aligned_alloc(256, (std::max<size_t>(bytes, 4) + 255) / 256 * 256);
    if (p == nullptr) return absl::ResourceExhaustedError("out of host memory");
    buffers_.push_back(reinterpret_cast<Buffer>(p));
    return reinterpret_cast<Buffer>(p);
  }
  absl::Status Upload(Buffer dst, const void* src, size_t bytes) override {
    if (capturing_) return absl::FailedPreconditionError("a copy during a graph capture");
    std::memcpy(reinterpret_cast<void*>(dst), src, bytes);
    return absl::OkStatus();
  }
  absl::Status Download(void* dst, Buffer src, size_t bytes) override {
    if (capturing_) return absl::FailedPreconditionError("a copy during a graph capture");
    std::memcpy(dst, reinterpret_cast<const void*>(src), bytes);
    return absl::OkStatus();
  }

  absl::StatusOr<KernelId> Load(const ops::KernelSource& source) override {
    LOOM_ASSIGN_OR_RETURN(tune::BuildResult built, BuildOrError(*builder_, source));
    ++built_;
    if (built.cache_hit) ++cache_hits_;
    LOOM_ASSIGN_OR_RETURN(std::string image, ReadImage(built.artifact_path));
    return LoadImage(image, source.cuda_launch);
  }

  absl::StatusOr<std::string> Image(KernelId kernel) const override {
    if (kernel < 0 || kernel >= static_cast<KernelId>(kernels_.size())) {
      return absl::InvalidArgumentError(absl::StrCat("no kernel ", kernel));
    }
    return images_[static_cast<size_t>(kernel)];
  }

  // The image is dlopen'ed from a private copy (removed once loaded).
  absl::StatusOr<KernelId> LoadImage(const std::string& image,
                                     const ops::CudaLaunch& launch) override {
    (void)launch;  // the emulation's geometry is compiled into the image
    LOOM_ASSIGN_OR_RETURN(std::string path, WritePrivateCopy(image));
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    const std::string error = handle == nullptr ? dlerror() : "";
    std::error_code ec;
    std::filesystem::remove(path, ec);
    if (handle == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("a kernel image is not a host-emulation object: ", error));
    }
    handles_.push_back(handle);
    void* fn = dlsym(handle, codegen::kKernelEntry);
    if (fn == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("a kernel image has no ", codegen::kKernelEntry));
    }
    kernels_.push_back(reinterpret_cast<loom_kernel_fn>(fn));
    images_.push_back(image);
    return static_cast<KernelId>(kernels_.size() - 1);
  }

  absl::Status Launch(KernelId kernel, const std::vector<Buffer>& args) override {
    if (kernel < 0 || kernel >= static_cast<KernelId>(kernels_.size())) {
      return absl::InvalidArgumentError(absl::StrCat("no kernel ", kernel));
    }
    if (capturing_) {
      captured_.push_back({kernel, args});
      return absl::OkStatus();
    }
    Run(kernel, args);
    return absl::OkStatus();
  }
  absl::Status Synchronize() override { return absl::OkStatus(); }

  absl::Status BeginCapture() override {
    if (capturing_) return absl::FailedPreconditionError("a capture is already under way");
    capturing_ = true;
    captured_.clear();
    return absl::OkStatus();
  }
  absl::StatusOr<GraphId> EndCapture() override {
    if (!capturing_) return absl::FailedPreconditionError("no capture is under way");
    capturing_ = false;
    graphs_.push_back(std::move(captured_));
    captured_.clear();
    return static_cast<GraphId>(graphs_.size() - 1);
  }
  absl::Status LaunchGraph(GraphId graph) override {
    if (graph < 0 || graph >= static_cast<GraphId>(graphs_.size())) {
      return absl::InvalidArgumentError(absl::StrCat("no graph ", graph));
    }
    for (const Recorded& r : graphs_[static_cast<size_t>(graph)]) Run(r.kernel, r.args);
    return absl::OkStatus();
  }

  int64_t kernels_loaded() const override { return built_; }
  int64_t cache_hits() const override { return cache_hits_; }

 private:
  struct Recorded {
    KernelId kernel;
    std::vector<Buffer> args;
  };
  EmulatedBackend() = default;

  void Run(KernelId kernel, const std::vector<Buffer>& args) {
    std::vector<void*> pointers;
    pointers.reserve(args.size());
    for (Buffer b : args) pointers.push_back(reinterpret_cast<void*>(b));
    kernels_[static_cast<size_t>(kernel)](pointers.data(), nullptr);
  }

  std::unique_ptr<tune::Builder> builder_;
  ops::Target target_;
  std::vector<Buffer> buffers_;
  std::vector<void*> handles_;
  std::vector<loom_kernel_fn> kernels_;
  std::vector<std::string> images_;
  bool capturing_ = false;
  std::vector<Recorded> captured_;
  std::vector<std::vector<Recorded>> graphs_;
  int64_t built_ = 0, cache_hits_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<CudaBackend>> MakeCudaDeviceBackend(
    const CudaDeviceOptions& options) {
  return DeviceBackend::Make(options);
}

absl::StatusOr<std::unique_ptr<CudaBackend>> MakeCudaDeviceBackend(
    int ordinal, const tune::BuildOptions& build) {
  return DeviceBackend::Make({.ordinal = ordinal, .build = build});
}

absl::StatusOr<std::unique_ptr<CudaBackend>> MakeEmulatedCudaBackend(
    const ops::Target& target, const tune::BuildOptions& build) {
  return EmulatedBackend::Make(target, build);
}

}  // namespace loom::runtime
