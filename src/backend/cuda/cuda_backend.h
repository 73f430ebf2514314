// The CUDA backend: device memory through cudaMalloc (never managed memory), one stream per
// backend, matrix products through cuBLAS (BF16 mode: bf16 operands, fp32 accumulation; F32 mode:
// true fp32, no TF32), every other op a kernel of kernels/ (one op per file).
#pragma once
#include <memory>

#include "backend/backend.h"

struct CUstream_st;  // cudaStream_t, without the CUDA headers

namespace dnamba {

// Number of usable CUDA devices (0 when there is no driver or no GPU).
int cuda_device_count();
std::unique_ptr<Backend> make_cuda_backend(int index, DType compute, int threads);

class CudaBackend : public Backend {
 public:
  CudaBackend(int device, DType compute);
  ~CudaBackend() override;
  std::string name() const override { return "cuda:" + std::to_string(device_); }
  bool is_gpu() const override { return true; }
  DType compute_dtype() const override { return compute_; }
  // BF16 in bf16 mode: every op below takes fp32 or bf16 activations (see backend.h).
  DType activation_dtype() const override { return act_; }

  Tensor alloc(int64_t rows, int64_t cols, DType dt = DType::F32) override;
  void to_device(Tensor& dst, const void* host) override;
  void to_host(const Tensor& src, void* host) override;
  void copy(Tensor& dst, const Tensor& src) override;
  void zero(Tensor& t) override;
  void synchronize() override;
  void* host_alloc(size_t bytes) override;
  void host_free(void* p) override;
  void to_host_async(const Tensor& src, void* host) override;
  int64_t fence() override;  // the last 8 fences can be waited for
  void wait(int64_t fence) override;
  Tensor weight_matrix(const float* host, int64_t rows, int64_t cols) override;

  void embedding(const Tensor& ids, const Tensor& table, Tensor& out) override;
  void add_norm(const Tensor& x, Tensor& residual, bool first, const Tensor& w, const Tensor* b, float eps,
                Tensor& out) override;
  void linear(const Tensor& x, const Tensor& W, const Tensor* bias, Tensor& out) override;
  void linear_add(const Tensor& x, const Tensor& W, const Tensor* bias, Tensor& out) override;
  // linear and linear_add: out = x . W^T (+ out when accumulating) (+ bias).
  void gemm(const Tensor& x, const Tensor& W, const Tensor* bias, Tensor& out, bool accumulate);
  void conv1d_silu(const Tensor& x, const Tensor& weight, const Tensor* bias, Tensor& state, int64_t batch,
                   int64_t len, Tensor& out) override;
  void selective_scan(const SelectiveScanArgs& a) override;
  void token_logprobs(const Tensor& hidden, const Tensor& lm_w, const Tensor& targets, Tensor& out) override;
  void log_softmax_logits(const Tensor& hidden, const Tensor& lm_w, Tensor& out) override;
  void mul(const Tensor& a, const Tensor& b, Tensor& out) override;
  void flip_rows(const Tensor& in, int64_t batch, int64_t len, Tensor& out) override;

  // Sequence chunk of the parallel scan (0: chosen from the GPU size). For tests.
  void set_scan_chunk(int64_t chunk) { scan_chunk_ = chunk; }
  // States (of 16) whose exp the fast-path scan computes on the FMA pipe (-1: default). For tests.
  void set_scan_general(bool general) { scan_general_ = general; }  // the general scan kernel only
  // The scan design: 0 from the shape, 1 chunked, 2 single pass; its variant (tpc 0 = chosen,
  // fma_exp -1 = chosen). For tests and benchmarks (also DNAMBA_SCAN, DNAMBA_SCAN_TPC, DNAMBA_SCAN_FMAEXP).
  void set_scan_mode(int mode, int single_tpc = 0, int fma_exp = -1) {
    scan_mode_ = mode;
    scan_single_tpc_ = single_tpc;
    scan_fma_exp_ = fma_exp;
  }
  void set_small_k(bool on) { small_k_ = on; }  // For tests: see small_k_.
  int sm_count() const { return sm_count_; }
  int device() const { return device_; }
  // The backend's stream (a cudaStream_t): code that queues its own kernels in order with this
  // backend's ops (the CUDA training backend) uses it.
  CUstream_st* stream() const;

 private:
  void* scratch(int slot, size_t bytes);
  void check_device_errors();

  struct Impl;
  std::unique_ptr<Impl> impl_;
  int device_ = 0;
  DType compute_ = DType::BF16;
  DType act_ = DType::BF16;
  int sm_count_ = 1;
  int64_t scan_chunk_ = 0;
  bool scan_general_ = false;
  int scan_mode_ = 0, scan_single_tpc_ = 0, scan_fma_exp_ = -1;
  // DNAMBA_CUDA_SMALLK=1: K <= 32 products (dt_proj) through kernels/linear_small_k.cu instead of
  // cuBLAS. Off by default: on the H200 it took 0.62 ms a layer-Mbp against cuBLAS's 0.37.
  bool small_k_ = false;
};

}  // namespace dnamba
