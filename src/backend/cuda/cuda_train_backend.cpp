#include "backend/cuda/cuda_train_backend.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <string>

#include <unordered_map>

#include "backend/cuda/cuda_check.h"
#include "kernels/kernels.h"
#include "kernels/train_kernels.h"

namespace dnamba::train {

namespace kt = ::dnamba::kernels::train;

namespace {

std::string shape_str(int64_t r, int64_t c) { return "[" + std::to_string(r) + "," + std::to_string(c) + "]"; }

void check_f32(const Tensor& t, const std::string& what) {
  DNAMBA_CHECK(t.defined(), what + ": undefined tensor");
  DNAMBA_CHECK(t.dtype == DType::F32, what + ": expected f32, got " + dtype_name(t.dtype));
}
void check_shape(const Tensor& t, int64_t rows, int64_t cols, const std::string& what) {
  DNAMBA_CHECK(t.rows == rows && t.cols == cols,
               what + ": expected " + shape_str(rows, cols) + ", got " + shape_str(t.rows, t.cols));
}
void check(const Tensor& t, int64_t rows, int64_t cols, const std::string& what) {
  check_f32(t, what);
  check_shape(t, rows, cols, what);
}
// A [1, n] parameter vector (stride 1 along columns always holds).
float* vec(Tensor* t) { return t ? t->data<float>() : nullptr; }
const float* vec(const Tensor* t) { return t ? t->data<float>() : nullptr; }

enum Slot { kPartial = 0, kRows = 1, kWide = 2, kScan = 3, kDouble = 4, kSlots = 5 };
constexpr int64_t kMaxDoublePartials = 1024;

}  // namespace

// Grow-only device buffer.
struct DevBuf {
  void* p = nullptr;
  size_t bytes = 0;
  void* get(size_t n, cudaStream_t s) {
    if (bytes >= n && p) return p;
    if (p) {
      CUDA_CHECK(cudaStreamSynchronize(s));
      CUDA_CHECK(cudaFree(p));
      p = nullptr;
      bytes = 0;
    }
    n = std::max<size_t>(n, size_t(1) << 16);
    if (cudaMalloc(&p, n) != cudaSuccess) {
      (void)cudaGetLastError();
      throw Error("CUDA out of memory: training asked for " + std::to_string(n >> 20) +
                  " MiB of working memory; try a smaller --batch or --seq-len");
    }
    bytes = n;
    return p;
  }
  void release() {
    if (p) cudaFree(p);
    p = nullptr;
    bytes = 0;
  }
};

// bf16 compute for training: the forward backend of a BF16 CudaTrainBackend. Activations, master
// weights and everything else stay fp32; only the matrix products change: linear() with fp32
// operands rounds x to bf16 and uses a bf16 copy of W (made on first use, refreshed after every
// AdamW step and every upload), with fp32 accumulation and fp32 output (cublasGemmEx).
class BF16TrainForward : public CudaBackend {
 public:
  explicit BF16TrainForward(int device) : CudaBackend(device, DType::F32) {
    CUBLAS_CHECK(cublasCreate(&blas_));
    CUBLAS_CHECK(cublasSetStream(blas_, stream()));
  }
  ~BF16TrainForward() override {
    cudaStreamSynchronize(stream());
    for (auto& [k, w] : cache_) w.buf.release();
    x_.release();
    if (blas_) cublasDestroy(blas_);
  }
  DType compute_dtype() const override { return DType::BF16; }

  // The bf16 copy of the fp32 matrix W (contiguous [rows, cols]), refreshed if stale.
  const __nv_bfloat16* weight_bf16(const Tensor& W) {
    auto& e = cache_[W.data<float>()];
    const size_t bytes = size_t(W.rows * W.cols) * 2;
    if (!e.valid || e.rows != W.rows || e.cols != W.cols) {
      e.buf.get(bytes, stream());
      kernels::f32_to_bf16_2d(W.data<float>(), W.ld, static_cast<__nv_bfloat16*>(e.buf.p), W.rows, W.cols, stream());
      e.valid = true;
      e.rows = W.rows;
      e.cols = W.cols;
    }
    return static_cast<const __nv_bfloat16*>(e.buf.p);
  }
  // After `param` changed on the device: its bf16 copy (if any) is made again at the next use.
  void invalidate(const void* p) {
    auto it = cache_.find(p);
    if (it != cache_.end()) it->second.valid = false;
  }
  // Packs an fp32 view into bf16 scratch `slot` (0: x, 1: dout) and returns it (leading dim cols).
  const __nv_bfloat16* pack(const Tensor& x, int slot) {
    DevBuf& b = slot == 0 ? x_ : d_;
    auto* p = static_cast<__nv_bfloat16*>(b.get(size_t(x.rows * x.cols) * 2, stream()));
    kernels::f32_to_bf16_2d(x.data<float>(), x.ld, p, x.rows, x.cols, stream());
    return p;
  }
  cublasHandle_t blas() const { return blas_; }

  void to_device(Tensor& dst, const void* host) override {
    CudaBackend::to_device(dst, host);
    invalidate(dst.data<char>());
  }
  void copy(Tensor& dst, const Tensor& src) override {
    CudaBackend::copy(dst, src);
    invalidate(dst.data<char>());
  }
  void zero(Tensor& t) override {
    CudaBackend::zero(t);
    invalidate(t.data<char>());
  }

  void linear(const Tensor& x, const Tensor& W, const Tensor* bias, Tensor& out) override {
    if (x.dtype != DType::F32 || W.dtype != DType::F32 || out.dtype != DType::F32 || x.cols == 0 || x.rows == 0 ||
        W.rows == 0) {
      CudaBackend::linear(x, W, bias, out);
      return;
    }
    const int64_t T = x.rows, K = x.cols, N = W.rows;
    DNAMBA_CHECK(W.cols == K, "linear: W has " + std::to_string(W.cols) + " columns, x has " + std::to_string(K));
    DNAMBA_CHECK(out.rows == T && out.cols == N, "linear out: shape");
    DNAMBA_CHECK(T < (int64_t(1) << 31), "linear: too many rows for one cuBLAS call");
    const __nv_bfloat16* wb = weight_bf16(W);
    const __nv_bfloat16* xb = pack(x, 0);
    const float one = 1.0f, zero_f = 0.0f;
    CUBLAS_CHECK(cublasGemmEx(blas_, CUBLAS_OP_T, CUBLAS_OP_N, int(N), int(T), int(K), &one, wb, CUDA_R_16BF, int(K), xb,
                              CUDA_R_16BF, int(K), &zero_f, out.data<float>(), CUDA_R_32F, int(out.ld),
                              CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    if (bias) {
      DNAMBA_CHECK(bias->dtype == DType::F32 && bias->rows == 1 && bias->cols == N, "linear bias: expected [1,N] f32");
      kernels::add_bias(out.data<float>(), out.ld, bias->data<float>(), T, N, stream());
    }
  }

 private:
  struct Entry {
    DevBuf buf;
    int64_t rows = 0, cols = 0;
    bool valid = false;
  };
  std::unordered_map<const void*, Entry> cache_;
  DevBuf x_, d_;
  cublasHandle_t blas_ = nullptr;
};

struct CudaTrainBackend::Impl {
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  int device = 0;
  struct Buf {
    void* p = nullptr;
    size_t bytes = 0;
  };
  Buf slots[kSlots];
  double* host_partial = nullptr;  // pinned, kMaxDoublePartials
  int* bad = nullptr;              // device flag: a target id >= V reached cross_entropy
  BF16TrainForward* bf16 = nullptr;  // be_, when computing in bf16
};

CudaTrainBackend::CudaTrainBackend(int device, DType compute) : impl_(std::make_unique<Impl>()) {
  if (compute != DType::F32 && compute != DType::BF16)
    throw Error(std::string("training on CUDA with --dtype ") + dtype_name(compute) + " is not supported (use fp32 or bf16)");
  if (compute == DType::BF16) {
    auto f = std::make_unique<BF16TrainForward>(device);
    impl_->bf16 = f.get();
    be_ = std::move(f);
  } else {
    be_ = std::make_unique<CudaBackend>(device, DType::F32);
  }
  impl_->device = device;
  impl_->stream = be_->stream();
  CUDA_CHECK(cudaSetDevice(device));
  CUBLAS_CHECK(cublasCreate(&impl_->blas));
  CUBLAS_CHECK(cublasSetStream(impl_->blas, impl_->stream));
  // fp32 products are true fp32 (no TF32): the CPU reference agreement relies on it.
  CUBLAS_CHECK(cublasSetMathMode(impl_->blas, CUBLAS_PEDANTIC_MATH));
  CUDA_CHECK(cudaMallocHost(&impl_->host_partial, size_t(kMaxDoublePartials) * sizeof(double)));
  CUDA_CHECK(cudaMalloc(&impl_->bad, sizeof(int)));
  CUDA_CHECK(cudaMemsetAsync(impl_->bad, 0, sizeof(int), impl_->stream));
}

CudaTrainBackend::~CudaTrainBackend() {
  cudaSetDevice(impl_->device);
  if (impl_->stream) cudaStreamSynchronize(impl_->stream);
  for (auto& s : impl_->slots)
    if (s.p) cudaFree(s.p);
  if (impl_->bad) cudaFree(impl_->bad);
  if (impl_->host_partial) cudaFreeHost(impl_->host_partial);
  if (impl_->blas) cublasDestroy(impl_->blas);
  // be_ (and its stream) goes after.
}

size_t CudaTrainBackend::scratch_bytes() const {
  size_t n = 0;
  for (auto& s : impl_->slots) n += s.bytes;
  return n;
}

void* CudaTrainBackend::scratch(int slot, size_t bytes) {
  auto& s = impl_->slots[slot];
  if (s.bytes >= bytes && s.p) return s.p;
  if (s.p) {
    CUDA_CHECK(cudaStreamSynchronize(impl_->stream));  // work in flight may still use it
    CUDA_CHECK(cudaFree(s.p));
    s.p = nullptr;
    s.bytes = 0;
  }
  bytes = std::max<size_t>(bytes, size_t(1) << 16);
  if (cudaMalloc(&s.p, bytes) != cudaSuccess) {
    (void)cudaGetLastError();
    size_t fr = 0, tot = 0;
    cudaMemGetInfo(&fr, &tot);
    throw Error("CUDA out of memory on " + be_->name() + ": training asked for " + std::to_string(bytes >> 20) +
                " MiB of working memory (" + std::to_string(fr >> 20) + " MiB free of " + std::to_string(tot >> 20) +
                "); try a smaller --batch or --seq-len");
  }
  s.bytes = bytes;
  return s.p;
}

void CudaTrainBackend::neg_exp(const Tensor& A_log, Tensor& A) {
  check_f32(A_log, "neg_exp A_log");
  check(A, A_log.rows, A_log.cols, "neg_exp A");
  kt::neg_exp(A_log.data<float>(), A_log.ld, A.data<float>(), A.ld, A.rows, A.cols, impl_->stream);
}

void CudaTrainBackend::embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dtable) {
  const int64_t T = dout.rows, D = dout.cols, V = dtable.rows;
  DNAMBA_CHECK(ids.dtype == DType::I32 && ids.cols == 1 && ids.rows == T,
               "embedding_backward: ids must be [" + std::to_string(T) + ",1] int32");
  check_f32(dout, "embedding_backward dout");
  check(dtable, V, D, "embedding_backward dtable");
  auto* part = static_cast<float*>(scratch(kPartial, size_t(kt::colsum_partial_floats(T, V * D)) * 4));
  kt::embedding_backward(ids.data<int32_t>(), ids.ld, dout.data<float>(), dout.ld, T, V, D, dtable.data<float>(),
                         dtable.ld, part, impl_->stream);
}

void CudaTrainBackend::add_rmsnorm_backward(const Tensor& residual, const Tensor& w, float eps, const Tensor& dout,
                                            Tensor& dresidual, Tensor& dw) {
  const int64_t T = residual.rows, D = residual.cols;
  check_f32(residual, "add_rmsnorm_backward residual");
  check(w, 1, D, "add_rmsnorm_backward w");
  check(dw, 1, D, "add_rmsnorm_backward dw");
  check(dout, T, D, "add_rmsnorm_backward dout");
  check(dresidual, T, D, "add_rmsnorm_backward dresidual");
  auto* part = static_cast<float*>(scratch(kPartial, size_t(kt::colsum_partial_floats(T, D)) * 4));
  auto* rstd = static_cast<float*>(scratch(kRows, size_t(std::max<int64_t>(T, 1)) * 4));
  kt::add_rmsnorm_backward(residual.data<float>(), residual.ld, w.data<float>(), eps, dout.data<float>(), dout.ld,
                           dresidual.data<float>(), dresidual.ld, dw.data<float>(), T, D, rstd, part, impl_->stream);
}

void CudaTrainBackend::linear_backward(const Tensor& x, const Tensor& W, const Tensor& dout, Tensor* dx,
                                       bool accumulate_dx, Tensor* dW, Tensor* dbias) {
  const int64_t T = x.rows, K = x.cols, N = W.rows;
  check_f32(x, "linear_backward x");
  check(W, N, K, "linear_backward W");
  check(dout, T, N, "linear_backward dout");
  DNAMBA_CHECK(T < (int64_t(1) << 31) && K < (int64_t(1) << 31) && N < (int64_t(1) << 31),
               "linear_backward: too large for one cuBLAS call");
  const float one = 1.0f, zero = 0.0f;
  if (impl_->bf16 && bf16_products_ && T > 0 && K > 0 && N > 0 && (dx || dW)) {
    // bf16 operands (dout, x rounded; W's bf16 copy), fp32 accumulation into fp32 dx / dW.
    BF16TrainForward& f = *impl_->bf16;
    const __nv_bfloat16* db = f.pack(dout, 1);
    if (dx) {
      check(*dx, T, K, "linear_backward dx");
      CUBLAS_CHECK(cublasGemmEx(impl_->blas, CUBLAS_OP_N, CUBLAS_OP_N, int(K), int(T), int(N), &one, f.weight_bf16(W),
                                CUDA_R_16BF, int(K), db, CUDA_R_16BF, int(N), accumulate_dx ? &one : &zero,
                                dx->data<float>(), CUDA_R_32F, int(dx->ld), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
    if (dW) {
      check(*dW, N, K, "linear_backward dW");
      const __nv_bfloat16* xb = f.pack(x, 0);
      CUBLAS_CHECK(cublasGemmEx(impl_->blas, CUBLAS_OP_N, CUBLAS_OP_T, int(K), int(N), int(T), &one, xb, CUDA_R_16BF,
                                int(K), db, CUDA_R_16BF, int(N), &one, dW->data<float>(), CUDA_R_32F, int(dW->ld),
                                CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
    if (dbias) {
      check(*dbias, 1, N, "linear_backward dbias");
      auto* part = static_cast<float*>(scratch(kPartial, size_t(kt::colsum_partial_floats(T, N)) * 4));
      kt::colsum(dout.data<float>(), dout.ld, T, N, dbias->data<float>(), true, part, impl_->stream);
    }
    return;
  }
  // Row-major M[r, c] with stride ld is the column-major matrix M^T with leading dimension ld.
  if (dx) {
    check(*dx, T, K, "linear_backward dx");
    if (T > 0 && K > 0) {
      if (N == 0) {
        if (!accumulate_dx) be_->zero(*dx);
      } else {
        // dx^T[K,T] = W^T[K,N] . dout^T[N,T]  (W^T is W row-major as stored)
        CUBLAS_CHECK(cublasSgemm(impl_->blas, CUBLAS_OP_N, CUBLAS_OP_N, int(K), int(T), int(N), &one,
                                 W.data<float>(), int(W.ld), dout.data<float>(), int(dout.ld),
                                 accumulate_dx ? &one : &zero, dx->data<float>(), int(dx->ld)));
      }
    }
  }
  if (dW) {
    check(*dW, N, K, "linear_backward dW");
    if (T > 0 && K > 0 && N > 0)
      // dW^T[K,N] += x^T[K,T] . dout[T,N]  (dout^T as stored, transposed)
      CUBLAS_CHECK(cublasSgemm(impl_->blas, CUBLAS_OP_N, CUBLAS_OP_T, int(K), int(N), int(T), &one, x.data<float>(),
                               int(x.ld), dout.data<float>(), int(dout.ld), &one, dW->data<float>(), int(dW->ld)));
  }
  if (dbias) {
    check(*dbias, 1, N, "linear_backward dbias");
    auto* part = static_cast<float*>(scratch(kPartial, size_t(kt::colsum_partial_floats(T, N)) * 4));
    kt::colsum(dout.data<float>(), dout.ld, T, N, dbias->data<float>(), true, part, impl_->stream);
  }
}

void CudaTrainBackend::conv1d_silu_backward(const Tensor& x, const Tensor& weight, const Tensor* bias,
                                            const Tensor* state_in, int64_t batch, int64_t len, const Tensor& dout,
                                            Tensor& dx, Tensor& dweight, Tensor* dbias) {
  const int64_t C = x.cols, K = weight.cols, T = batch * len;
  DNAMBA_CHECK(K >= 1 && K <= 16, "conv1d_backward: kernel width " + std::to_string(K) + " outside 1..16");
  check(x, T, C, "conv1d_backward x");
  check(weight, C, K, "conv1d_backward weight");
  check(dweight, C, K, "conv1d_backward dweight");
  check(dout, T, C, "conv1d_backward dout");
  check(dx, T, C, "conv1d_backward dx");
  if (bias) check(*bias, 1, C, "conv1d_backward bias");
  if (dbias) check(*dbias, 1, C, "conv1d_backward dbias");
  if (state_in) check(*state_in, batch, C * (K - 1), "conv1d_backward state");
  if (T == 0 || C == 0) return;
  auto* dpre = static_cast<float*>(scratch(kWide, size_t(T * C) * 4));
  auto* part = static_cast<float*>(scratch(kPartial, size_t(kt::colsum_partial_floats(T, (K + 1) * C)) * 4));
  kt::conv1d_silu_backward(x.data<float>(), x.ld, weight.data<float>(), weight.ld, vec(bias),
                           state_in ? state_in->data<float>() : nullptr, state_in ? state_in->ld : 0,
                           dout.data<float>(), dout.ld, dx.data<float>(), dx.ld, dweight.data<float>(), dweight.ld,
                           vec(dbias), batch, len, C, K, dpre, part, impl_->stream);
}

namespace {

kt::TrainScanParams scan_params(const SelectiveScanArgs& a, int64_t chunk) {
  DNAMBA_CHECK(a.u && a.delta && a.A && a.B && a.C, "training scan: missing argument");
  const int64_t Tn = a.batch * a.len, C = a.u->cols, N = a.A->cols;
  check(*a.u, Tn, C, "scan u");
  check(*a.delta, Tn, C, "scan delta");
  check(*a.A, C, N, "scan A");
  check(*a.B, Tn, N, "scan B");
  check(*a.C, Tn, N, "scan C");
  if (a.D) check(*a.D, 1, C, "scan D");
  if (a.z) check(*a.z, Tn, C, "scan z");
  if (a.dt_bias) check(*a.dt_bias, 1, C, "scan dt_bias");
  DNAMBA_CHECK(chunk > 0, "scan: recompute chunk must be positive");
  kt::TrainScanParams p;
  p.u = a.u->data<float>();
  p.ld_u = a.u->ld;
  p.delta = a.delta->data<float>();
  p.ld_delta = a.delta->ld;
  if (a.z) {
    p.z = a.z->data<float>();
    p.ld_z = a.z->ld;
  }
  p.B = a.B->data<float>();
  p.ld_B = a.B->ld;
  p.C = a.C->data<float>();
  p.ld_C = a.C->ld;
  p.A = a.A->data<float>();
  p.ld_A = a.A->ld;
  p.D = vec(a.D);
  p.dt_bias = vec(a.dt_bias);
  p.softplus = a.delta_softplus;
  p.batch = a.batch;
  p.len = a.len;
  p.channels = C;
  p.dstate = N;
  p.chunk = chunk;
  return p;
}

}  // namespace

void CudaTrainBackend::selective_scan_forward_ckpt(const SelectiveScanArgs& a, int64_t chunk, Tensor& chunk_states) {
  auto p = scan_params(a, chunk);
  DNAMBA_CHECK(a.state && a.out, "training scan: missing state or out");
  const int64_t C = p.channels, N = p.dstate;
  check(*a.state, a.batch, C * N, "scan state");
  check(*a.out, a.batch * a.len, C, "scan out");
  check(chunk_states, a.batch * ((a.len + chunk - 1) / chunk), C * N, "scan chunk_states");
  kt::scan_forward_ckpt(p, a.state->data<float>(), a.state->ld, a.out->data<float>(), a.out->ld,
                        chunk_states.data<float>(), chunk_states.ld, impl_->stream);
}

void CudaTrainBackend::selective_scan_backward(const SelectiveScanArgs& a, int64_t chunk, const Tensor& chunk_states,
                                               const Tensor& dout, const ScanGrads& g) {
  auto p = scan_params(a, chunk);
  const int64_t Tn = a.batch * a.len, C = p.channels, N = p.dstate;
  check(chunk_states, a.batch * ((a.len + chunk - 1) / chunk), C * N, "scan_backward chunk_states");
  check(dout, Tn, C, "scan_backward dout");
  kt::TrainScanGrads k;
  if (g.du) check(*g.du, Tn, C, "scan_backward du"), k.du = g.du->data<float>(), k.ld_du = g.du->ld;
  if (g.ddelta) check(*g.ddelta, Tn, C, "scan_backward ddelta"), k.ddelta = g.ddelta->data<float>(), k.ld_ddelta = g.ddelta->ld;
  if (g.dz) check(*g.dz, Tn, C, "scan_backward dz"), k.dz = g.dz->data<float>(), k.ld_dz = g.dz->ld;
  if (g.dB) check(*g.dB, Tn, N, "scan_backward dB"), k.dB = g.dB->data<float>(), k.ld_dB = g.dB->ld;
  if (g.dC) check(*g.dC, Tn, N, "scan_backward dC"), k.dC = g.dC->data<float>(), k.ld_dC = g.dC->ld;
  if (g.dA_log) check(*g.dA_log, C, N, "scan_backward dA_log"), k.dA_log = g.dA_log->data<float>(), k.ld_dA = g.dA_log->ld;
  if (g.dD) check(*g.dD, 1, C, "scan_backward dD"), k.dD = g.dD->data<float>();
  if (g.ddt_bias) check(*g.ddt_bias, 1, C, "scan_backward ddt_bias"), k.ddt_bias = g.ddt_bias->data<float>();
  const auto need = kt::scan_backward_scratch(p);
  auto* ws = static_cast<float*>(scratch(kScan, size_t(need.total()) * 4));
  kt::scan_backward(p, chunk_states.data<float>(), chunk_states.ld, dout.data<float>(), dout.ld, k, ws, impl_->stream);
}

double CudaTrainBackend::cross_entropy(const Tensor& hidden, const Tensor& lm_w, const Tensor& targets, float scale,
                                       Tensor& dhidden, Tensor& dlm_w) {
  const int64_t T = hidden.rows, D = hidden.cols, V = lm_w.rows;
  check_f32(hidden, "cross_entropy hidden");
  check(lm_w, V, D, "cross_entropy lm_w");
  check(dhidden, T, D, "cross_entropy dhidden");
  check(dlm_w, V, D, "cross_entropy dlm_w");
  DNAMBA_CHECK(targets.dtype == DType::I32 && targets.cols == 1 && targets.rows == T,
               "cross_entropy: targets must be [" + std::to_string(T) + ",1] int32");
  if (T == 0) return 0.0;
  auto* dl = static_cast<float*>(scratch(kWide, size_t(T * V) * 4));
  auto* loss = static_cast<float*>(scratch(kRows, size_t(T) * 4));
  kt::cross_entropy_rows(hidden.data<float>(), hidden.ld, lm_w.data<float>(), lm_w.ld, targets.data<int32_t>(),
                         targets.ld, scale, T, V, D, dl, loss, impl_->bad, impl_->stream);
  Tensor dlogits;  // [T, V] over the scratch slot (not owned)
  dlogits.storage = std::shared_ptr<void>(std::shared_ptr<void>(), dl);
  dlogits.rows = T;
  dlogits.cols = V;
  dlogits.ld = V;
  dlogits.dtype = DType::F32;
  bf16_products_ = false;  // the loss's two small products stay fp32
  linear_backward(hidden, lm_w, dlogits, &dhidden, false, &dlm_w, nullptr);
  bf16_products_ = true;
  DNAMBA_CHECK(kt::sum_squares_partials(1, T) <= kMaxDoublePartials, "cross_entropy: partial count");
  auto* dpart = static_cast<double*>(scratch(kDouble, size_t(kMaxDoublePartials) * sizeof(double)));
  const double sum = kt::sum_f32(loss, T, dpart, impl_->host_partial, impl_->stream);  // synchronises
  int bad = 0;
  CUDA_CHECK(cudaMemcpy(&bad, impl_->bad, sizeof(int), cudaMemcpyDeviceToHost));
  if (bad) {
    CUDA_CHECK(cudaMemset(impl_->bad, 0, sizeof(int)));
    throw Error("cross_entropy: a target id outside the vocabulary (" + std::to_string(V) + " tokens) reached the GPU");
  }
  return sum;
}

double CudaTrainBackend::sum_squares(const Tensor& t) {
  check_f32(t, "sum_squares");
  DNAMBA_CHECK(kt::sum_squares_partials(t.rows, t.cols) <= kMaxDoublePartials, "sum_squares: partial count");
  auto* dpart = static_cast<double*>(scratch(kDouble, size_t(kMaxDoublePartials) * sizeof(double)));
  return kt::sum_squares(t.data<float>(), t.ld, t.rows, t.cols, dpart, impl_->host_partial, impl_->stream);
}

void CudaTrainBackend::adamw(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWStep& s) {
  check_f32(param, "adamw param");
  check(grad, param.rows, param.cols, "adamw grad");
  check(m, param.rows, param.cols, "adamw m");
  check(v, param.rows, param.cols, "adamw v");
  // Bias corrections in double on the host, exactly as CpuTrainBackend::adamw.
  const double bc1 = 1.0 - std::pow(double(s.beta1), double(s.step));
  const double bc2 = 1.0 - std::pow(double(s.beta2), double(s.step));
  kt::AdamWArgs a;
  a.lr = s.lr;
  a.beta1 = s.beta1;
  a.beta2 = s.beta2;
  a.eps = s.eps;
  a.weight_decay = s.weight_decay;
  a.grad_scale = s.grad_scale;
  a.step_size = float(s.lr / bc1);
  a.inv_sqrt_bc2 = float(1.0 / std::sqrt(bc2));
  kt::adamw(param.data<float>(), param.ld, grad.data<float>(), grad.ld, m.data<float>(), m.ld, v.data<float>(), v.ld,
            param.rows, param.cols, a, impl_->stream);
  if (impl_->bf16) impl_->bf16->invalidate(param.data<char>());  // its bf16 copy is made again at the next use
}

std::unique_ptr<TrainBackend> make_cuda_train_backend(int index, DType compute) {
  return std::make_unique<CudaTrainBackend>(index, compute);
}

}  // namespace dnamba::train
