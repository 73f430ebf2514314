// The CUDA TrainBackend: every backward op, the checkpointing scan forward, the fused loss, the
// gradient norm and AdamW on the GPU (kernels/train_*.cu), matrix products through cuBLAS. Its
// forward ops (fwd()) are a CudaBackend sharing its stream, so everything runs in stream order.
//
// Precision: fp32 master weights, gradients, moments and activations always. F32 mode: cuBLAS in
// pedantic fp32 math (no TF32), checked against CpuTrainBackend within 1e-4 relative
// (tests/gpu/test_cuda_train.cpp). BF16 mode: the layers' matrix products in bf16 (see below).
// Determinism: no float atomics; every reduction has a fixed order (see kernels/train_kernels.h),
// and cuBLAS is deterministic on one stream: two identical runs give bit-identical weights.
#pragma once
#include <memory>

#include "backend/cuda/cuda_backend.h"
#include "train/train_backend.h"

namespace dnamba::train {

class CudaTrainBackend : public TrainBackend {
 public:
  // compute: F32 (everything fp32), or BF16: the matrix products of the layers (forward and
  // backward) take bf16 operands with fp32 accumulation and output, from bf16 copies of the fp32
  // master weights refreshed after each AdamW step; all else (activations, scan, norms, loss,
  // gradients, optimizer) stays fp32.
  CudaTrainBackend(int device, DType compute);
  ~CudaTrainBackend() override;
  Backend& fwd() override { return *be_; }
  CudaBackend& cuda() { return *be_; }

  void neg_exp(const Tensor& A_log, Tensor& A) override;
  void embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dtable) override;
  void add_rmsnorm_backward(const Tensor& residual, const Tensor& w, float eps, const Tensor& dout,
                            Tensor& dresidual, Tensor& dw) override;
  void linear_backward(const Tensor& x, const Tensor& W, const Tensor& dout, Tensor* dx,
                       bool accumulate_dx, Tensor* dW, Tensor* dbias) override;
  void conv1d_silu_backward(const Tensor& x, const Tensor& weight, const Tensor* bias,
                            const Tensor* state_in, int64_t batch, int64_t len, const Tensor& dout,
                            Tensor& dx, Tensor& dweight, Tensor* dbias) override;
  void selective_scan_forward_ckpt(const SelectiveScanArgs& a, int64_t chunk,
                                   Tensor& chunk_states) override;
  void selective_scan_backward(const SelectiveScanArgs& a, int64_t chunk, const Tensor& chunk_states,
                               const Tensor& dout, const ScanGrads& g) override;
  double cross_entropy(const Tensor& hidden, const Tensor& lm_w, const Tensor& targets, float scale,
                       Tensor& dhidden, Tensor& dlm_w) override;
  double sum_squares(const Tensor& t) override;
  void adamw(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWStep& s) override;

  // Bytes of working memory this backend holds (its scratch slots), for the benchmark.
  size_t scratch_bytes() const;

 private:
  // Device scratch of slot `slot`, at least `bytes` (grows; never shrinks). Slots are used within
  // one op at a time, on the one stream, so reuse across ops is ordered.
  void* scratch(int slot, size_t bytes);

  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::unique_ptr<CudaBackend> be_;
  bool bf16_products_ = true;  // false while the loss's products run (kept fp32)
};

// "cuda:N" training backend; compute F32 or BF16.
std::unique_ptr<TrainBackend> make_cuda_train_backend(int index, DType compute);

}  // namespace dnamba::train
