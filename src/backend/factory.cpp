// Backend selection. Compiled into the dnamba_backends library, which links the CUDA backend
// when it was built (DNAMBA_HAVE_CUDA).
#include <cstdlib>

#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#include "train/train_backend.h"
#ifdef DNAMBA_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_train_backend.h"
#endif

namespace dnamba {

#ifdef DNAMBA_HAVE_CUDA
namespace {
// Registers the CUDA training backend with train::make_train_backend (which lives in dnamba_core).
const bool kCudaTrainRegistered = [] {
  auto& h = train::cuda_train_hooks();
  h.make = &train::make_cuda_train_backend;
  h.device_count = &cuda_device_count;
  return true;
}();
}  // namespace
#endif

bool cuda_available() {
#ifdef DNAMBA_HAVE_CUDA
  return cuda_device_count() > 0;
#else
  return false;
#endif
}

int cuda_device_total() {
#ifdef DNAMBA_HAVE_CUDA
  return cuda_device_count();
#else
  return 0;
#endif
}

std::string default_device() { return cuda_available() ? "cuda" : "cpu"; }

std::unique_ptr<Backend> make_backend(const std::string& device, DType compute, int threads) {
  if (device == "cpu") {
    if (compute != DType::F32) throw Error("--dtype " + std::string(dtype_name(compute)) + " is not supported on the CPU (use fp32)");
    return std::make_unique<CpuBackend>(threads);
  }
  if (device == "cuda" || device.rfind("cuda:", 0) == 0) {
#ifdef DNAMBA_HAVE_CUDA
    int index = 0;
    if (device.size() > 5) {
      char* end = nullptr;
      long v = std::strtol(device.c_str() + 5, &end, 10);
      if (*end != '\0' || v < 0) throw Error("bad --device '" + device + "' (expected cuda or cuda:N)");
      index = int(v);
    }
    int n = cuda_device_count();
    if (n == 0) throw Error("--device " + device + ": no CUDA GPU is available on this machine (use --device cpu)");
    if (index >= n) throw Error("--device " + device + ": only " + std::to_string(n) + " CUDA device(s) present");
    return make_cuda_backend(index, compute, threads);
#else
    throw Error("--device " + device + ": this dnamba was built without CUDA support (use --device cpu)");
#endif
  }
  throw Error("unknown --device '" + device + "' (expected cpu, cuda or cuda:N)");
}

}  // namespace dnamba
