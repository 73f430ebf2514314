// CPU reference of the training ops: forward and backward of every op of the Mamba LM, written once
// as templates over the scalar type. The float instantiation is the CPU TrainBackend; the double
// instantiation lets the gradient tests compare against finite differences in double precision.
//
// Views are raw row-major [rows, cols] with a row stride ld, as Tensor views are.
#pragma once
#include <cstdint>
#include <memory>

#include "backend/cpu/cpu_backend.h"
#include "train/train_backend.h"

namespace dnamba::train {

namespace ref {

template <class T>
struct View {
  T* p = nullptr;
  int64_t rows = 0, cols = 0, ld = 0;
  T& operator()(int64_t r, int64_t c) const { return p[r * ld + c]; }
  T* row(int64_t r) const { return p + r * ld; }
  explicit operator bool() const { return p != nullptr; }
};
template <class T>
View<T> view(T* p, int64_t rows, int64_t cols, int64_t ld = -1) {
  return View<T>{p, rows, cols, ld < 0 ? cols : ld};
}

// Scan inputs for the reference (shapes as in SelectiveScanArgs; A is -exp(A_log)).
template <class T>
struct ScanIn {
  View<const T> u, delta, A, B, C, D, z, dt_bias;  // D, z, dt_bias may be empty
  bool delta_softplus = true;
  int64_t batch = 1, len = 0;
};
template <class T>
struct ScanOut {
  View<T> du, ddelta, dA_log, dB, dC, dD, dz, ddt_bias;  // any may be empty
};

// ---- forward (the double instantiation is the finite-difference reference)
template <class T>
void embedding_fwd(const int32_t* ids, int64_t n, View<const T> table, View<T> out);
// r = first ? x : x + r; out = r * rstd(r) * w
template <class T>
void add_rmsnorm_fwd(View<const T> x, View<T> r, bool first, const T* w, T eps, View<T> out);
// out = x . W^T (+ bias)
template <class T>
void linear_fwd(View<const T> x, View<const T> W, const T* bias, View<T> out);
// state_in [batch, C*(K-1)] as in Backend::conv1d_silu, or empty for zeros
template <class T>
void conv1d_silu_fwd(View<const T> x, View<const T> w, const T* bias, View<const T> state_in, int64_t batch,
                     int64_t len, View<T> out);
// state [batch, C*N] in/out (zeros when empty is not allowed: pass a zeroed buffer);
// chunk_states [batch*nchunks, C*N] written when non-empty.
template <class T>
void scan_fwd(const ScanIn<T>& in, View<T> state, View<T> out, int64_t chunk, View<T> chunk_states);
// Sum over targets >= 0 of -log softmax(hidden . lm_w^T)[target]; dhidden written and dlm_w
// added to (scaled by `scale`) when non-empty.
template <class T>
double cross_entropy(View<const T> hidden, View<const T> lm_w, const int32_t* targets, T scale,
                     View<T> dhidden, View<T> dlm_w);

// ---- backward
template <class T>
void embedding_bwd(const int32_t* ids, int64_t n, View<const T> dout, View<T> dtable);
template <class T>
void add_rmsnorm_bwd(View<const T> r, const T* w, T eps, View<const T> dout, View<T> dr, T* dw);
template <class T>
void linear_bwd(View<const T> x, View<const T> W, View<const T> dout, View<T> dx, bool accumulate_dx,
                View<T> dW, T* dbias);
template <class T>
void conv1d_silu_bwd(View<const T> x, View<const T> w, const T* bias, View<const T> state_in,
                     int64_t batch, int64_t len, View<const T> dout, View<T> dx, View<T> dw, T* dbias);
template <class T>
void scan_bwd(const ScanIn<T>& in, int64_t chunk, View<const T> chunk_states, View<const T> dout,
              const ScanOut<T>& g);

}  // namespace ref

// The CPU TrainBackend: fp32, OpenMP, BLAS for the matrix products. Deterministic for a given
// thread count (no atomics; every reduction has a fixed order), so a resumed run repeats exactly.
class CpuTrainBackend : public TrainBackend {
 public:
  explicit CpuTrainBackend(int threads) : be_(threads) {}
  Backend& fwd() override { return be_; }

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

 private:
  CpuBackend be_;
};

}  // namespace dnamba::train
