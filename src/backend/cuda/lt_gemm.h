// Row-major products out[T,N] = x[T,K] . W[N,K]^T (+ beta * out) through cuBLASLt, with the plan
// (descriptors + algorithm) cached per shape. The algorithm is the first of cuBLASLt's heuristic
// for the shape (deterministic for a given GPU and cuBLAS), unless the caller passes another one
// (the GEMM benchmark times every candidate).
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

namespace dnamba::cuda {

struct GemmShape {
  int64_t T = 0, N = 0, K = 0;        // rows of x/out, rows of W (cols of out), inner dimension
  int64_t ldx = 0, ldw = 0, ldo = 0;  // row strides in elements
  cudaDataType xw_type = CUDA_R_16BF;  // x and W
  cudaDataType out_type = CUDA_R_16BF;
  bool operator<(const GemmShape& o) const {
    return std::tie(T, N, K, ldx, ldw, ldo, xw_type, out_type) <
           std::tie(o.T, o.N, o.K, o.ldx, o.ldw, o.ldo, o.xw_type, o.out_type);
  }
};

// One algorithm and a printable description of its configuration.
struct GemmAlgo {
  cublasLtMatmulAlgo_t algo{};
  size_t workspace = 0;
  std::string describe() const;
};

class LtGemm {
 public:
  // workspace_bytes: device scratch cuBLASLt may use (allocated once).
  explicit LtGemm(size_t workspace_bytes = size_t(32) << 20);
  ~LtGemm();
  LtGemm(const LtGemm&) = delete;
  LtGemm& operator=(const LtGemm&) = delete;

  // out = x . W^T + beta * out. The first heuristic algorithm unless `algo` is given.
  void run(const GemmShape& s, const void* x, const void* W, void* out, float beta, cudaStream_t stream,
           const GemmAlgo* algo = nullptr);
  // Up to `max` heuristic candidates for the shape, best first by cuBLASLt's estimate.
  std::vector<GemmAlgo> candidates(const GemmShape& s, int max);

 private:
  struct Plan;
  Plan& plan(const GemmShape& s);
  cublasLtHandle_t lt_ = nullptr;
  void* ws_ = nullptr;
  size_t ws_bytes_ = 0;
  std::map<GemmShape, std::unique_ptr<Plan>> plans_;
};

}  // namespace dnamba::cuda
