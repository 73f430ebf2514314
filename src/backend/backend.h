// The Backend interface: memory and the ops of the Mamba forward. Model code (src/model/) is
// written against this interface only; backend/cpu is the fp32 reference and backend/cuda the
// GPU implementation. Every op states its shapes; every op checks them (DNAMBA_CHECK).
//
// Tensors are 2-D views [rows, cols] with a row stride `ld` (in elements) into a shared buffer
// owned by the backend that allocated it. Sequences are stacked along rows: a batch of `batch`
// sequences of `len` positions each is [batch*len, C], sequence b at rows b*len .. b*len+len-1.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/error.h"

namespace dnamba {

enum class DType : uint8_t { F32 = 0, BF16 = 1, F16 = 2, I32 = 3 };
size_t dtype_size(DType dt);
const char* dtype_name(DType dt);

struct Tensor {
  std::shared_ptr<void> storage;  // backend memory; null for an empty tensor
  int64_t offset = 0;             // in elements of dtype
  int64_t rows = 0, cols = 0, ld = 0;
  DType dtype = DType::F32;

  // The first element of the view; `offset` counts elements of `dtype` whatever T is (so
  // data<char>() is the view's first byte).
  template <class T>
  T* data() const {
    return reinterpret_cast<T*>(static_cast<char*>(storage.get()) + offset * int64_t(dtype_size(dtype)));
  }
  bool defined() const { return storage != nullptr; }
  bool contiguous() const { return ld == cols || rows <= 1; }
  int64_t numel() const { return rows * cols; }
  // Views sharing storage.
  Tensor cols_view(int64_t c0, int64_t n) const;
  Tensor rows_view(int64_t r0, int64_t n) const;
};

// Per-layer recurrent memory of one batch of sequences. Carried across chunks so that a long
// sequence processed in pieces gives the same numbers as one pass.
struct LayerState {
  Tensor conv;  // [batch, d_inner*(d_conv-1)] F32: the last d_conv-1 conv inputs, oldest first
  Tensor ssm;   // [batch, d_inner*d_state] F32
};

struct SelectiveScanArgs {
  const Tensor* u = nullptr;        // [batch*len, C]  conv output (input of the scan)
  const Tensor* delta = nullptr;    // [batch*len, C]  dt before bias and softplus
  const Tensor* A = nullptr;        // [C, N]          A = -exp(A_log)
  const Tensor* B = nullptr;        // [batch*len, N]  (may be a strided view)
  const Tensor* C = nullptr;        // [batch*len, N]  (may be a strided view)
  const Tensor* D = nullptr;        // [1, C] or null
  const Tensor* z = nullptr;        // [batch*len, C] gate (y *= silu(z)) or null
  const Tensor* dt_bias = nullptr;  // [1, C] or null
  bool delta_softplus = true;
  Tensor* state = nullptr;          // [batch, C*N] F32, in: state before the chunk, out: after it
  Tensor* out = nullptr;            // [batch*len, C]
  int64_t batch = 1, len = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;  // "cpu", "cuda:0"
  virtual bool is_gpu() const { return false; }
  // Compute type of matrix products: F32 (reference) or BF16 (GPU fast path).
  virtual DType compute_dtype() const { return DType::F32; }
  // Dtype of the model's large per-token intermediates (in_proj output, conv output, x_proj/dt_proj
  // outputs, scan output, block-input norm): F32 here (the CPU reference); a GPU in bf16 mode says
  // BF16, and its ops then accept those tensors in bf16. The residual stream, the recurrent states
  // and the final hidden states stay F32.
  virtual DType activation_dtype() const { return DType::F32; }

  // ---- memory
  virtual Tensor alloc(int64_t rows, int64_t cols, DType dt = DType::F32) = 0;
  // dst must be contiguous; host holds rows*cols elements of dst.dtype.
  virtual void to_device(Tensor& dst, const void* host) = 0;
  // host receives rows*cols elements (rows packed) of src.dtype.
  virtual void to_host(const Tensor& src, void* host) = 0;
  virtual void copy(Tensor& dst, const Tensor& src) = 0;  // same shape and dtype, strides may differ
  virtual void zero(Tensor& t) = 0;
  virtual void synchronize() {}
  // Overlapping the host with the device (streaming commands): host memory that the device copies
  // into without blocking (page-locked on a GPU), a copy queued behind the work already queued, and
  // fences: wait(fence()) returns when everything queued before the fence is done (and rethrows what
  // went wrong on the device). The CPU backend does each at once.
  virtual void* host_alloc(size_t bytes) { return ::operator new(bytes); }
  virtual void host_free(void* p) { ::operator delete(p); }
  virtual void to_host_async(const Tensor& src, void* host) { to_host(src, host); }
  virtual int64_t fence() { return 0; }
  virtual void wait(int64_t /*fence*/) {}
  // A weight matrix [rows, cols] used by linear(); the backend chooses how to store it.
  virtual Tensor weight_matrix(const float* host, int64_t rows, int64_t cols);
  // A small F32 parameter (norm weights, biases, A, D) stored as F32.
  Tensor upload_f32(const float* host, int64_t rows, int64_t cols);

  // ---- ops (activations F32)
  // out[T,D] = table[ids[t], :]; ids [T,1] I32, table [V,D] (from weight_matrix or F32)
  virtual void embedding(const Tensor& ids, const Tensor& table, Tensor& out) = 0;
  // residual[T,D] = first ? x : x + residual; out[T,D] = norm(residual) * w (+ b)
  // RMSNorm when b is null, LayerNorm when b is given (mamba_ssm rms_norm=false).
  // An undefined x (Tensor{}): residual already holds the sum (see linear_add) and is only normalised.
  virtual void add_norm(const Tensor& x, Tensor& residual, bool first, const Tensor& w,
                        const Tensor* b, float eps, Tensor& out) = 0;
  // out[T,N] = x[T,K] . W[N,K]^T (+ bias[1,N])
  virtual void linear(const Tensor& x, const Tensor& W, const Tensor* bias, Tensor& out) = 0;
  // out[T,N] += x[T,K] . W[N,K]^T (+ bias[1,N]); out F32 (the residual stream: the block's output is
  // added where the product is written, instead of being written and read back by add_norm).
  virtual void linear_add(const Tensor& x, const Tensor& W, const Tensor* bias, Tensor& out) = 0;
  // Depthwise causal conv1d over each of `batch` sequences of `len` rows, + bias, then SiLU.
  // x [batch*len, C], weight [C, K] F32, bias [1,C] or null, state [batch, C*(K-1)] in/out,
  // out [batch*len, C]. out[t,c] = silu(bias[c] + sum_k w[c,k] * x[t-(K-1)+k, c]) where inputs
  // before t=0 come from the state (state[b, c*(K-1) + j] is the input at time j-(K-1)).
  virtual void conv1d_silu(const Tensor& x, const Tensor& weight, const Tensor* bias,
                           Tensor& state, int64_t batch, int64_t len, Tensor& out) = 0;
  // Selective scan (Mamba-1): per channel c and state n, with dt = softplus(delta + dt_bias):
  //   h[n] = exp(dt*A[c,n]) * h[n] + dt * B[t,n] * u[t,c];  y = sum_n h[n]*C[t,n] + D[c]*u[t,c]
  //   out[t,c] = y * silu(z[t,c])
  virtual void selective_scan(const SelectiveScanArgs& a) = 0;
  // Language-model outputs without materialising logits for the caller:
  // out[T, 5]: col 0 = log p(targets[t]) (NaN where targets[t] < 0), cols 1..4 = log p(A,C,G,T),
  // all log-softmax over the whole vocabulary of logits = hidden[T,D] . lm_w[V,D]^T.
  virtual void token_logprobs(const Tensor& hidden, const Tensor& lm_w, const Tensor& targets,
                              Tensor& out) = 0;
  // Full log-softmax over the vocabulary: out[T, V] (for callers that need every token).
  virtual void log_softmax_logits(const Tensor& hidden, const Tensor& lm_w, Tensor& out) = 0;

  // ---- ops with a default implementation through host memory (any backend; override for speed)
  // out[T,C] = a[T,C] * b[T,C] elementwise, F32 (Caduceus bidirectional_strategy ew_multiply).
  virtual void mul(const Tensor& a, const Tensor& b, Tensor& out);
  // Time reversal within each of `batch` sequences of `len` rows: out[b*len + t, :] =
  // in[b*len + len-1-t, :] (bidirectional models). Any dtype; in and out of the same shape and dtype,
  // strides may differ. `out` may be the very view `in` (in place); other overlaps are not allowed.
  virtual void flip_rows(const Tensor& in, int64_t batch, int64_t len, Tensor& out);
};

// Creates a backend: "cpu", "cuda", "cuda:N". compute: F32 or BF16 (GPU only).
std::unique_ptr<Backend> make_backend(const std::string& device, DType compute, int threads);
// "cuda" when a GPU is usable, else "cpu".
std::string default_device();
bool cuda_available();
int cuda_device_total();  // CUDA devices present (0 without a GPU or without CUDA support)

}  // namespace dnamba
