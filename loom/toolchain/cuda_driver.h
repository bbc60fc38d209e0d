// The CUDA driver API, loaded at run time with dlopen("libcuda.so.1") and never linked, so the
// `loom` binary starts (and every CPU path works) on hosts without an NVIDIA driver. Used by the
// CUDA measure worker (cuda_measure_worker.h) and by `Probe`-style device queries; the few CUDA
// types and enum values it needs are declared here, so Loom builds without the CUDA toolkit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace loom::tune {

// What the measurer and the templates need to know about one GPU.
struct CudaDeviceInfo {
  int ordinal = 0;
  std::string name;  // "NVIDIA H100 80GB HBM3"
  int cc_major = 0;  // compute capability
  int cc_minor = 0;
  int max_threads_per_block = 0;
  int max_shared_bytes_per_block = 0;        // without opt-in
  int max_shared_bytes_per_block_optin = 0;  // with cuFuncSetAttribute opt-in
  int max_regs_per_block = 0;
  int num_sms = 0;
  int warp_size = 0;
  int64_t total_memory_bytes = 0;
  int driver_version = 0;  // 13000 for CUDA 13.0

  std::string Arch() const;  // "sm_90"
};

// A CUDA error: the raw code plus the driver's name and text. Sticky errors (illegal address,
// launch failure, ...) leave the context unusable: the process must exit to recover the GPU.
bool IsStickyCudaError(int code);

// One dlopen'ed driver library. After RetainPrimaryContext, every call acts on that context,
// made current on the calling thread first (BindContext): a model may run from any thread, one
// call at a time (thread-compatible, not thread-safe).
class CudaDriver {
 public:
  using Device = int;
  using DevicePtr = uint64_t;
  struct Opaque;  // CUctx_st, CUmod_st, CUfunc_st, CUevent_st: only handled as pointers
  using Context = Opaque*;
  using Module = Opaque*;
  using Function = Opaque*;
  using Event = Opaque*;
  using Stream = Opaque*;     // nullptr: the legacy default stream
  using Graph = Opaque*;      // CUgraph: captured work
  using GraphExec = Opaque*;  // CUgraphExec: an instantiated graph

  // Loads `library` (empty: "libcuda.so.1", found through the usual dynamic-linker search) and
  // calls cuInit(0). kUnavailable when the library is missing ("libcuda.so.1 not found: no
  // NVIDIA driver on this host") or cuInit fails (no device, driver/kernel-module mismatch),
  // kInternal when the library lacks an entry point Loom needs.
  static absl::StatusOr<std::unique_ptr<CudaDriver>> Load(const std::string& library = "");
  ~CudaDriver();
  CudaDriver(const CudaDriver&) = delete;
  CudaDriver& operator=(const CudaDriver&) = delete;

  absl::StatusOr<int> DeviceCount();
  // kInvalidArgument when `ordinal` is not below DeviceCount().
  absl::StatusOr<CudaDeviceInfo> DeviceInfo(int ordinal);

  // Retains the device's primary context and makes it current on this thread (and, through
  // BindContext, on any other thread that later calls this driver).
  absl::StatusOr<Context> RetainPrimaryContext(int ordinal);
  absl::Status ReleasePrimaryContext(int ordinal);
  absl::Status Synchronize();  // cuCtxSynchronize: reports errors of earlier launches

  // `image`: a cubin (or PTX, which the driver JIT-compiles).
  absl::StatusOr<Module> LoadModule(const std::string& image);
  absl::Status UnloadModule(Module module);
  absl::StatusOr<Function> GetFunction(Module module, const std::string& name);
  // Allows `bytes` of dynamic shared memory (needed above 48 KiB).
  absl::Status SetMaxDynamicShared(Function function, int bytes);
  absl::StatusOr<int> FunctionRegisters(Function function);  // registers per thread

  // Launches `function` on `stream` with one pointer argument per entry of `args` (the kernels'
  // ABI: one pointer per buffer).
  absl::Status Launch(Function function, const uint32_t grid[3], const uint32_t block[3],
                      uint32_t dynamic_shared_bytes, const std::vector<DevicePtr>& args,
                      Stream stream = nullptr);

  // Streams (blocking with respect to the legacy default stream, so synchronous copies order
  // with their work).
  absl::StatusOr<Stream> CreateStream();
  absl::Status DestroyStream(Stream stream);
  absl::Status SynchronizeStream(Stream stream);

  // CUDA graphs by stream capture: between BeginCapture and EndCapture, launches on `stream` are
  // recorded (thread-local capture mode), not run; the graph, instantiated, replays them all with
  // one LaunchGraph. kUnimplemented when the driver lacks the graph API (it is optional: a model
  // then launches its kernels one by one).
  bool has_graphs() const;
  absl::Status BeginCapture(Stream stream);
  absl::StatusOr<Graph> EndCapture(Stream stream);
  absl::StatusOr<GraphExec> InstantiateGraph(Graph graph);
  absl::Status LaunchGraph(GraphExec exec, Stream stream);
  absl::Status DestroyGraph(Graph graph);
  absl::Status DestroyGraphExec(GraphExec exec);

  absl::StatusOr<DevicePtr> Alloc(size_t bytes);
  absl::Status Free(DevicePtr ptr);
  absl::Status CopyToDevice(DevicePtr dst, const void* src, size_t bytes);
  absl::Status CopyToHost(void* dst, DevicePtr src, size_t bytes);
  absl::Status Fill32(DevicePtr dst, uint32_t value, size_t count);  // cuMemsetD32

  absl::StatusOr<Event> CreateEvent();
  absl::Status DestroyEvent(Event event);
  absl::Status RecordEvent(Event event);  // on the default stream
  absl::Status SynchronizeEvent(Event event);
  absl::StatusOr<float> ElapsedMs(Event start, Event end);

  // The error of the last failed call (0 if none): callers test IsStickyCudaError on it.
  int last_error() const { return last_error_; }
  const std::string& library() const { return library_; }

 private:
  struct Api;
  CudaDriver() = default;
  // OK for CUDA_SUCCESS; otherwise an error naming `what`, the code's name and text, with a
  // status code from the error class (kUnavailable for device/driver state, kInvalidArgument for
  // bad values or images, kInternal for the rest).
  absl::Status Check(int code, const char* what);
  // Makes the retained context current on the calling thread when it is not already (a no-op
  // before RetainPrimaryContext). Every call that acts on a context starts with it, so a driver
  // may be used from any thread, one at a time (the calls are not synchronized).
  absl::Status BindContext();

  void* handle_ = nullptr;
  Context context_ = nullptr;  // the retained primary context; nullptr before RetainPrimaryContext
  std::unique_ptr<Api> api_;
  std::string library_;
  int last_error_ = 0;
};

}  // namespace loom::tune
