// CUDA and cuBLAS call checks: a failed call becomes a dnamba::Error naming the call, the file
// and the line (llm.c's cudaCheck, as an exception so the CLI prints one line and exits non-zero).
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>

#include "common/error.h"

namespace dnamba::cuda_detail {

[[noreturn]] inline void cuda_fail(cudaError_t e, const char* what, const char* file, int line) {
  throw ::dnamba::Error(std::string("CUDA error at ") + file + ":" + std::to_string(line) + ": " + what +
                        ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}
[[noreturn]] inline void cublas_fail(cublasStatus_t s, const char* what, const char* file, int line) {
  throw ::dnamba::Error(std::string("cuBLAS error at ") + file + ":" + std::to_string(line) + ": " + what +
                        ": status " + std::to_string(int(s)));
}

}  // namespace dnamba::cuda_detail

#define CUDA_CHECK(call)                                                                    \
  do {                                                                                      \
    cudaError_t e_ = (call);                                                                \
    if (e_ != cudaSuccess) ::dnamba::cuda_detail::cuda_fail(e_, #call, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: catches bad launch configurations at once.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

#define CUBLAS_CHECK(call)                                                                         \
  do {                                                                                             \
    cublasStatus_t s_ = (call);                                                                    \
    if (s_ != CUBLAS_STATUS_SUCCESS) ::dnamba::cuda_detail::cublas_fail(s_, #call, __FILE__, __LINE__); \
  } while (0)
