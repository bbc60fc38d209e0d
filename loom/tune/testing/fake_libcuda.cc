// A fake CUDA driver (libcuda.so.1) for tests on hosts without a GPU: the CUDA measurer's worker
// dlopens it in place of the real driver, so every error path (cuInit failing, a module that does
// not load, a launch error, a sticky illegal-address error, a crash, a hang) and the success path
// can be driven without hardware. Test-only; never installed.
//
// Device memory is host memory; "kernels" run on the CPU at launch. A module image is text:
//   "loom-fake-kernel conv2d N C H W K R S STRIDE PAD"  direct NCHW/KCRS convolution of
//                                                        buffers 0 (data), 1 (weight) into 2
//   "loom-fake-kernel zero"             writes zeros to buffer 2 (a wrong answer)
//   "loom-fake-kernel launch_error"     cuLaunchKernel returns LAUNCH_OUT_OF_RESOURCES (701)
//   "loom-fake-kernel illegal_address"  the launch succeeds, the next sync returns 700, sticky
//   "loom-fake-kernel crash"            the launch raises SIGSEGV
//   "loom-fake-kernel hang"             the launch never returns
// anything else makes cuModuleLoadData return INVALID_IMAGE (200). Faults of the whole driver come
// from the environment variable LOOM_FAKE_CUDA: "init_fail" (cuInit returns NO_DEVICE) or
// "no_device" (cuInit succeeds, zero devices).
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

namespace {

struct FakeModule {
  std::string op;
  std::vector<int64_t> args;
};

struct FakeEvent {
  std::chrono::steady_clock::time_point at;
};

int sticky_error = 0;   // once set, every call returns it
int pending_error = 0;  // reported by the next synchronizing call, then sticky
bool initialized = false;

const char* Mode() {
  const char* m = std::getenv("LOOM_FAKE_CUDA");
  return m ? m : "";
}

int Status() {
  if (!initialized) return 3;  // NOT_INITIALIZED
  return sticky_error;
}

int SyncStatus() {
  if (pending_error != 0) {
    sticky_error = pending_error;
    pending_error = 0;
  }
  return Status();
}

void Conv2d(const FakeModule& m, float* const* buf) {
  const int64_t n = m.args[0], c = m.args[1], h = m.args[2], w = m.args[3], k = m.args[4],
                r = m.args[5], s = m.args[6], stride = m.args[7], pad = m.args[8];
  const int64_t oh = (h + 2 * pad - r) / stride + 1, ow = (w + 2 * pad - s) / stride + 1;
  const float* x = buf[0];
  const float* wt = buf[1];
  float* y = buf[2];
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t ko = 0; ko < k; ++ko) {
      for (int64_t i = 0; i < oh; ++i) {
        for (int64_t j = 0; j < ow; ++j) {
          float acc = 0;
          for (int64_t ci = 0; ci < c; ++ci) {
            for (int64_t ri = 0; ri < r; ++ri) {
              for (int64_t si = 0; si < s; ++si) {
                const int64_t yi = i * stride - pad + ri, xj = j * stride - pad + si;
                if (yi < 0 || yi >= h || xj < 0 || xj >= w) continue;
                acc += x[((b * c + ci) * h + yi) * w + xj] * wt[((ko * c + ci) * r + ri) * s + si];
              }
            }
          }
          y[((b * k + ko) * oh + i) * ow + j] = acc;
        }
      }
    }
  }
}

}  // namespace

extern "C" {

int cuInit(unsigned) {
  if (std::strcmp(Mode(), "init_fail") == 0) return 100;  // NO_DEVICE
  initialized = true;
  return 0;
}
int cuDriverGetVersion(int* v) {
  *v = 13000;
  return 0;
}
int cuGetErrorName(int code, const char** name) {
  switch (code) {
    case 100:
      *name = "CUDA_ERROR_NO_DEVICE";
      return 0;
    case 200:
      *name = "CUDA_ERROR_INVALID_IMAGE";
      return 0;
    case 700:
      *name = "CUDA_ERROR_ILLEGAL_ADDRESS";
      return 0;
    case 701:
      *name = "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES";
      return 0;
    default:
      *name = "CUDA_ERROR_FAKE";
      return 0;
  }
}
int cuGetErrorString(int code, const char** text) {
  switch (code) {
    case 100:
      *text = "no CUDA-capable device is detected";
      return 0;
    case 200:
      *text = "device kernel image is invalid";
      return 0;
    case 700:
      *text = "an illegal memory access was encountered";
      return 0;
    case 701:
      *text = "too many resources requested for launch";
      return 0;
    default:
      *text = "fake error";
      return 0;
  }
}
int cuDeviceGetCount(int* n) {
  if (!initialized) return 3;
  *n = std::strcmp(Mode(), "no_device") == 0 ? 0 : 1;
  return 0;
}
int cuDeviceGet(int* dev, int ordinal) {
  if (!initialized) return 3;
  if (ordinal != 0 || std::strcmp(Mode(), "no_device") == 0) return 101;  // INVALID_DEVICE
  *dev = 0;
  return 0;
}
int cuDeviceGetName(char* name, int len, int) {
  std::strncpy(name, "Fake GPU", static_cast<size_t>(len));
  return Status();
}
int cuDeviceGetAttribute(int* value, int attribute, int) {
  switch (attribute) {
    case 1:
      *value = 1024;
      break;  // max threads per block
    case 8:
      *value = 49152;
      break;  // shared memory per block
    case 10:
      *value = 32;
      break;  // warp size
    case 12:
      *value = 65536;
      break;  // registers per block
    case 16:
      *value = 4;
      break;  // SMs
    case 75:
      *value = 9;
      break;  // cc major
    case 76:
      *value = 0;
      break;  // cc minor
    case 97:
      *value = 232448;
      break;  // opt-in shared memory
    default:
      return 1;  // INVALID_VALUE
  }
  return Status();
}
int cuDeviceTotalMem_v2(size_t* bytes, int) {
  *bytes = size_t{1} << 30;
  return Status();
}
int cuDevicePrimaryCtxRetain(void** ctx, int) {
  static int dummy;
  *ctx = &dummy;
  return Status();
}
int cuDevicePrimaryCtxRelease_v2(int) { return 0; }
int cuCtxSetCurrent(void*) { return Status(); }
int cuCtxSynchronize() { return SyncStatus(); }

int cuModuleLoadData(void** module, const void* image) {
  if (int s = Status(); s != 0) return s;
  std::istringstream in(static_cast<const char*>(image));
  std::string magic;
  auto* m = new FakeModule;
  in >> magic >> m->op;
  for (int64_t v; in >> v;) m->args.push_back(v);
  static const char* const kOps[] = {"conv2d",          "zero",  "launch_error",
                                     "illegal_address", "crash", "hang"};
  bool known = false;
  for (const char* op : kOps) known |= m->op == op;
  if (magic != "loom-fake-kernel" || !known || (m->op == "conv2d" && m->args.size() != 9)) {
    delete m;
    return 200;  // INVALID_IMAGE
  }
  *module = m;
  return 0;
}
int cuModuleUnload(void* module) {
  delete static_cast<FakeModule*>(module);
  return 0;
}
int cuModuleGetFunction(void** function, void* module, const char* name) {
  if (std::strcmp(name, "loom_kernel") != 0) return 500;  // NOT_FOUND
  *function = module;
  return Status();
}
int cuFuncSetAttribute(void*, int, int) { return Status(); }
int cuFuncGetAttribute(int* value, int, void*) {
  *value = 32;
  return Status();
}
int cuLaunchKernel(void* function, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                   unsigned, void*, void** params, void**) {
  if (int s = Status(); s != 0) return s;
  const FakeModule& m = *static_cast<FakeModule*>(function);
  float* buf[3];
  for (int i = 0; i < 3; ++i) buf[i] = reinterpret_cast<float*>(*static_cast<uint64_t*>(params[i]));
  if (m.op == "conv2d") {
    Conv2d(m, buf);
  } else if (m.op == "zero") {
    buf[2][0] = 0;
  } else if (m.op == "launch_error") {
    return 701;
  } else if (m.op == "illegal_address") {
    pending_error = 700;
  } else if (m.op == "crash") {
    std::raise(SIGSEGV);
  } else if (m.op == "hang") {
    while (true) pause();
  }
  return 0;
}
int cuMemAlloc_v2(uint64_t* ptr, size_t bytes) {
  if (int s = Status(); s != 0) return s;
  *ptr = reinterpret_cast<uint64_t>(std::calloc(bytes, 1));
  return *ptr == 0 ? 2 : 0;
}
int cuMemFree_v2(uint64_t ptr) {
  std::free(reinterpret_cast<void*>(ptr));
  return Status();
}
int cuMemcpyHtoD_v2(uint64_t dst, const void* src, size_t bytes) {
  if (int s = SyncStatus(); s != 0) return s;
  std::memcpy(reinterpret_cast<void*>(dst), src, bytes);
  return 0;
}
int cuMemcpyDtoH_v2(void* dst, uint64_t src, size_t bytes) {
  if (int s = SyncStatus(); s != 0) return s;
  std::memcpy(dst, reinterpret_cast<const void*>(src), bytes);
  return 0;
}
int cuMemsetD32_v2(uint64_t dst, unsigned value, size_t count) {
  if (int s = Status(); s != 0) return s;
  auto* p = reinterpret_cast<uint32_t*>(dst);
  for (size_t i = 0; i < count; ++i) p[i] = value;
  return 0;
}
int cuEventCreate(void** event, unsigned) {
  *event = new FakeEvent;
  return Status();
}
int cuEventDestroy_v2(void* event) {
  delete static_cast<FakeEvent*>(event);
  return 0;
}
int cuEventRecord(void* event, void*) {
  static_cast<FakeEvent*>(event)->at = std::chrono::steady_clock::now();
  return Status();
}
int cuEventSynchronize(void*) { return SyncStatus(); }
int cuEventElapsedTime_v2(float* ms, void* start, void* end) {
  *ms = std::chrono::duration<float, std::milli>(static_cast<FakeEvent*>(end)->at -
                                                 static_cast<FakeEvent*>(start)->at)
            .count();
  return Status();
}

}  // extern "C"
