// The TrainBackend interface: the backward of every op of the Mamba LM, the checkpointing scan
// forward, the fused loss and the optimizer update. The training loop (src/train/mamba_grad.*,
// trainer.*) is written against this interface only; train/cpu_grad.* is the fp32 reference,
// a CUDA implementation slots in beside it without touching the loop.
//
// Conventions (as in backend.h): tensors are [rows, cols] views with a row stride; a batch of
// `batch` sequences of `len` positions is stacked along rows. Gradients of activations are
// WRITTEN (overwritten) unless an argument says `accumulate`; gradients of parameters are always
// ADDED to (the loop zeroes them once per step), so tied weights and several uses just add up.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "backend/backend.h"

namespace dnamba::train {

// Gradient outputs of the selective scan. Per-position gradients are written; parameter gradients
// (dA_log, dD, ddt_bias) are accumulated. Any pointer may be null when the input had none.
struct ScanGrads {
  Tensor* du = nullptr;        // [batch*len, C]
  Tensor* ddelta = nullptr;    // [batch*len, C]   gradient of delta (dt before bias and softplus)
  Tensor* dA_log = nullptr;    // [C, N]           += ; A = -exp(A_log), so dA_log = dA * A
  Tensor* dB = nullptr;        // [batch*len, N]   (may be a strided view)
  Tensor* dC = nullptr;        // [batch*len, N]   (may be a strided view)
  Tensor* dD = nullptr;        // [1, C]           +=
  Tensor* dz = nullptr;        // [batch*len, C]   (may be a strided view)
  Tensor* ddt_bias = nullptr;  // [1, C]           +=
};

// One AdamW step (PyTorch semantics: decoupled weight decay p *= 1 - lr*wd before the update).
struct AdamWStep {
  float lr = 1e-3f;
  float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f;
  float weight_decay = 0.0f;
  float grad_scale = 1.0f;  // gradients are multiplied by this first (gradient clipping)
  int64_t step = 1;         // 1-based, for the bias corrections
};

class TrainBackend {
 public:
  virtual ~TrainBackend() = default;
  // The forward ops and memory of the same device.
  virtual Backend& fwd() = 0;
  std::string name() const { return const_cast<TrainBackend*>(this)->fwd().name(); }

  // A[C,N] = -exp(A_log[C,N])
  virtual void neg_exp(const Tensor& A_log, Tensor& A) = 0;

  // dtable[ids[t], :] += dout[t, :]. ids [T,1] I32, dout [T,D], dtable [V,D].
  virtual void embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dtable) = 0;

  // Backward of Backend::add_norm with RMSNorm: forward r = x (+ residual_in), out = r*rstd(r)*w.
  // residual: [T,D] the sum r as the forward left it. dout: [T,D] gradient of out.
  // dresidual: [T,D] in: gradient reaching r from its later use (the next add); out: the full
  // gradient of r, which is also the gradient of x and of residual_in. dw [1,D] +=.
  virtual void add_rmsnorm_backward(const Tensor& residual, const Tensor& w, float eps,
                                    const Tensor& dout, Tensor& dresidual, Tensor& dw) = 0;

  // Backward of out[T,N] = x[T,K] . W[N,K]^T (+ bias): dx = dout . W (written, or added when
  // accumulate_dx), dW += dout^T . x, dbias += column sums of dout. dx, dW, dbias may be null.
  virtual void linear_backward(const Tensor& x, const Tensor& W, const Tensor& dout, Tensor* dx,
                               bool accumulate_dx, Tensor* dW, Tensor* dbias) = 0;

  // Backward of Backend::conv1d_silu (which it recomputes from x). state_in [batch, C*(K-1)] is
  // the state the forward started from, or null for zeros (training); its gradient is not formed.
  // dx [batch*len, C] written; dweight [C,K] +=; dbias [1,C] += (may be null).
  virtual void conv1d_silu_backward(const Tensor& x, const Tensor& weight, const Tensor* bias,
                                    const Tensor* state_in, int64_t batch, int64_t len,
                                    const Tensor& dout, Tensor& dx, Tensor& dweight,
                                    Tensor* dbias) = 0;

  // Backend::selective_scan that also stores the state at every chunk boundary:
  // chunk_states [batch*nchunks, C*N] with nchunks = ceil(len/chunk); row b*nchunks+k is the state
  // of sequence b before position k*chunk (row k=0 is the initial state a.state held).
  virtual void selective_scan_forward_ckpt(const SelectiveScanArgs& a, int64_t chunk,
                                           Tensor& chunk_states) = 0;
  // Backward of the scan. Recomputes the states inside each chunk from the chunk_states of the
  // forward, one chunk at a time, in reverse (no per-position states are kept). a.state and
  // a.out are not used. dout [batch*len, C].
  virtual void selective_scan_backward(const SelectiveScanArgs& a, int64_t chunk,
                                       const Tensor& chunk_states, const Tensor& dout,
                                       const ScanGrads& g) = 0;

  // Next-base cross-entropy over the whole vocabulary of logits = hidden[T,D] . lm_w[V,D]^T.
  // targets [T,1] I32 (< 0: ignored). Returns the sum over counted positions of -log p(target)
  // in nats (unscaled). Gradients are those of `scale` * that sum: dhidden [T,D] written,
  // dlm_w [V,D] +=.
  virtual double cross_entropy(const Tensor& hidden, const Tensor& lm_w, const Tensor& targets,
                               float scale, Tensor& dhidden, Tensor& dlm_w) = 0;

  // Sum of squares of all elements (for the global gradient norm), in double.
  virtual double sum_squares(const Tensor& t) = 0;
  // AdamW update of param with grad; m and v are the moment buffers (same shape, F32).
  virtual void adamw(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWStep& s) = 0;
};

// "cpu" (the reference), "cuda"/"cuda:N" (the CUDA training backend, in builds with CUDA).
// compute: F32 (fp32 everywhere), or BF16 (GPU only; bf16 matrix products, fp32 master weights).
std::unique_ptr<TrainBackend> make_train_backend(const std::string& device, int threads,
                                                 DType compute = DType::F32);
// "cuda" when the CUDA training backend is built in and a GPU is present, else "cpu".
std::string default_train_device();

// The CUDA training backend lives in the CUDA library, which this library (dnamba_core) does not
// link: backend/factory.cpp (dnamba_backends) registers it here when built with CUDA.
struct CudaTrainHooks {
  std::unique_ptr<TrainBackend> (*make)(int index, DType compute) = nullptr;
  int (*device_count)() = nullptr;
};
CudaTrainHooks& cuda_train_hooks();

}  // namespace dnamba::train
