// The CPU backend: fp32 reference ops, multi-threaded with OpenMP, matrix products via BLAS.
#pragma once
#include "backend/backend.h"

namespace dnamba {

class CpuBackend : public Backend {
 public:
  explicit CpuBackend(int threads);
  std::string name() const override { return "cpu"; }

  Tensor alloc(int64_t rows, int64_t cols, DType dt = DType::F32) override;
  void to_device(Tensor& dst, const void* host) override;
  void to_host(const Tensor& src, void* host) override;
  void copy(Tensor& dst, const Tensor& src) override;
  void zero(Tensor& t) override;
  void flip_rows(const Tensor& in, int64_t batch, int64_t len, Tensor& out) override;

  void embedding(const Tensor& ids, const Tensor& table, Tensor& out) override;
  void add_norm(const Tensor& x, Tensor& residual, bool first, const Tensor& w, const Tensor* b,
                float eps, Tensor& out) override;
  void linear(const Tensor& x, const Tensor& W, const Tensor* bias, Tensor& out) override;
  void linear_add(const Tensor& x, const Tensor& W, const Tensor* bias, Tensor& out) override;
  void conv1d_silu(const Tensor& x, const Tensor& weight, const Tensor* bias, Tensor& state,
                   int64_t batch, int64_t len, Tensor& out) override;
  void selective_scan(const SelectiveScanArgs& a) override;
  void token_logprobs(const Tensor& hidden, const Tensor& lm_w, const Tensor& targets,
                      Tensor& out) override;
  void log_softmax_logits(const Tensor& hidden, const Tensor& lm_w, Tensor& out) override;

 private:
  void gemm(const Tensor& x, const Tensor& W, const Tensor* bias, Tensor& out, float beta);
  int threads_;
};

}  // namespace dnamba
