#include "loom/runtime/cuda_backend.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "loom/base/status_macros.h"
#include "loom/codegen/kernel_abi.h"
#include "loom/tune/cuda_driver.h"
#include "loom/tune/nvrtc_builder.h"

namespace loom::runtime {
namespace {

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

class DeviceBackend : public CudaBackend {
 public:
  ~DeviceBackend() override {
    (void)driver_->Synchronize();
    for (Buffer b : buffers_) (void)driver_->Free(b);
    for (tune::CudaDriver::Module m : modules_) (void)driver_->UnloadModule(m);
    (void)driver_->ReleasePrimaryContext(ordinal_);
  }

  static absl::StatusOr<std::unique_ptr<CudaBackend>> Make(int ordinal,
                                                           const tune::BuildOptions& build) {
    LOOM_ASSIGN_OR_RETURN(std::unique_ptr<tune::CudaDriver> driver, tune::CudaDriver::Load());
    LOOM_ASSIGN_OR_RETURN(tune::CudaDeviceInfo info, driver->DeviceInfo(ordinal));
    ops::CudaDeviceLimits limits;
    limits.max_threads_per_block = info.max_threads_per_block;
    limits.max_shared_bytes_per_block = info.max_shared_bytes_per_block;
    limits.max_regs_per_block = info.max_regs_per_block;
    limits.num_sms = info.num_sms;
    limits.warp_size = info.warp_size;
    ops::Target target = ops::CudaTarget(info.Arch(), limits);
    target.device_name = info.name;
    LOOM_ASSIGN_OR_RETURN(std::unique_ptr<tune::Builder> builder,
                          tune::MakeNvrtcBuilder(build, info.Arch()));
    LOOM_RETURN_IF_ERROR(driver->RetainPrimaryContext(ordinal).status());
    auto b = std::unique_ptr<DeviceBackend>(new DeviceBackend());
    b->driver_ = std::move(driver);
    b->builder_ = std::move(builder);
    b->target_ = std::move(target);
    b->ordinal_ = ordinal;
    return std::unique_ptr<CudaBackend>(std::move(b));
  }

  const ops::Target& target() const override { return target_; }
  bool host_emulation() const override { return false; }

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
    std::ifstream file(built.artifact_path, std::ios::binary);
    std::stringstream image;
    image << file.rdbuf();
    if (!file || image.str().empty()) {
      return absl::InternalError(absl::StrCat("cannot read cubin '", built.artifact_path, "'"));
    }
    LOOM_ASSIGN_OR_RETURN(tune::CudaDriver::Module module, driver_->LoadModule(image.str()));
    modules_.push_back(module);
    LOOM_ASSIGN_OR_RETURN(tune::CudaDriver::Function fn,
                          driver_->GetFunction(module, source.cuda_launch.entry));
    if (source.cuda_launch.dynamic_shared_bytes > 48 * 1024) {
      LOOM_RETURN_IF_ERROR(driver_->SetMaxDynamicShared(
          fn, static_cast<int>(source.cuda_launch.dynamic_shared_bytes)));
    }
    kernels_.push_back({fn, source.cuda_launch});
    return static_cast<KernelId>(kernels_.size() - 1);
  }

  absl::Status Launch(KernelId kernel, const std::vector<Buffer>& args) override {
    if (kernel < 0 || kernel >= static_cast<KernelId>(kernels_.size())) {
      return absl::InvalidArgumentError(absl::StrCat("no kernel ", kernel));
    }
    const Loaded& k = kernels_[static_cast<size_t>(kernel)];
    return driver_->Launch(k.fn, k.launch.grid.data(), k.launch.block.data(),
                           k.launch.dynamic_shared_bytes, args);
  }
  absl::Status Synchronize() override { return driver_->Synchronize(); }

  int64_t kernels_loaded() const override { return built_; }
  int64_t cache_hits() const override { return cache_hits_; }

 private:
  struct Loaded {
    tune::CudaDriver::Function fn;
    ops::CudaLaunch launch;
  };
  DeviceBackend() = default;

  std::unique_ptr<tune::CudaDriver> driver_;
  std::unique_ptr<tune::Builder> builder_;
  ops::Target target_;
  int ordinal_ = 0;
  std::vector<Buffer> buffers_;
  std::vector<tune::CudaDriver::Module> modules_;
  std::vector<Loaded> kernels_;
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

  absl::StatusOr<Buffer> Alloc(size_t bytes) override {
    void* p = std::aligned_alloc(64, (std::max<size_t>(bytes, 4) + 63) / 64 * 64);
    if (p == nullptr) return absl::ResourceExhaustedError("out of host memory");
    buffers_.push_back(reinterpret_cast<Buffer>(p));
    return reinterpret_cast<Buffer>(p);
  }
  absl::Status Upload(Buffer dst, const void* src, size_t bytes) override {
    std::memcpy(reinterpret_cast<void*>(dst), src, bytes);
    return absl::OkStatus();
  }
  absl::Status Download(void* dst, Buffer src, size_t bytes) override {
    std::memcpy(dst, reinterpret_cast<const void*>(src), bytes);
    return absl::OkStatus();
  }

  absl::StatusOr<KernelId> Load(const ops::KernelSource& source) override {
    LOOM_ASSIGN_OR_RETURN(tune::BuildResult built, BuildOrError(*builder_, source));
    ++built_;
    if (built.cache_hit) ++cache_hits_;
    void* handle = dlopen(built.artifact_path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      return absl::InternalError(
          absl::StrCat("cannot load ", built.artifact_path, ": ", dlerror()));
    }
    handles_.push_back(handle);
    void* fn = dlsym(handle, codegen::kKernelEntry);
    if (fn == nullptr) {
      return absl::InternalError(
          absl::StrCat(built.artifact_path, " has no ", codegen::kKernelEntry));
    }
    kernels_.push_back(reinterpret_cast<loom_kernel_fn>(fn));
    return static_cast<KernelId>(kernels_.size() - 1);
  }

  absl::Status Launch(KernelId kernel, const std::vector<Buffer>& args) override {
    if (kernel < 0 || kernel >= static_cast<KernelId>(kernels_.size())) {
      return absl::InvalidArgumentError(absl::StrCat("no kernel ", kernel));
    }
    std::vector<void*> pointers;
    pointers.reserve(args.size());
    for (Buffer b : args) pointers.push_back(reinterpret_cast<void*>(b));
    kernels_[static_cast<size_t>(kernel)](pointers.data(), nullptr);
    return absl::OkStatus();
  }
  absl::Status Synchronize() override { return absl::OkStatus(); }

  int64_t kernels_loaded() const override { return built_; }
  int64_t cache_hits() const override { return cache_hits_; }

 private:
  EmulatedBackend() = default;

  std::unique_ptr<tune::Builder> builder_;
  ops::Target target_;
  std::vector<Buffer> buffers_;
  std::vector<void*> handles_;
  std::vector<loom_kernel_fn> kernels_;
  int64_t built_ = 0, cache_hits_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<CudaBackend>> MakeCudaDeviceBackend(
    int ordinal, const tune::BuildOptions& build) {
  return DeviceBackend::Make(ordinal, build);
}

absl::StatusOr<std::unique_ptr<CudaBackend>> MakeEmulatedCudaBackend(
    const ops::Target& target, const tune::BuildOptions& build) {
  return EmulatedBackend::Make(target, build);
}

}  // namespace loom::runtime
