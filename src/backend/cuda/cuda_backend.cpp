#include "backend/cuda/cuda_backend.h"

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "io/safetensors.h"
#include "kernels/kernels.h"

namespace dnamba {

namespace {

// Times one op on the backend's stream when profiling is on.
class OpTimer {
 public:
  OpTimer(bool on, cudaStream_t s, const char* op, std::vector<std::pair<const char*, std::pair<cudaEvent_t, cudaEvent_t>>>* out)
      : on_(on), s_(s), op_(op), out_(out) {
    if (!on_) return;
    cudaEventCreate(&a_);
    cudaEventCreate(&b_);
    cudaEventRecord(a_, s_);
  }
  ~OpTimer() {
    if (!on_) return;
    cudaEventRecord(b_, s_);
    out_->push_back({op_, {a_, b_}});
  }

 private:
  bool on_;
  cudaStream_t s_;
  const char* op_;
  std::vector<std::pair<const char*, std::pair<cudaEvent_t, cudaEvent_t>>>* out_;
  cudaEvent_t a_{}, b_{};
};

std::string shape_str(int64_t r, int64_t c) { return "[" + std::to_string(r) + "," + std::to_string(c) + "]"; }

void check_dtype(const Tensor& t, DType dt, const char* what) {
  DNAMBA_CHECK(t.defined(), std::string(what) + ": undefined tensor");
  DNAMBA_CHECK(t.dtype == dt, std::string(what) + ": expected " + dtype_name(dt) + ", got " + dtype_name(t.dtype));
}

// An activation: fp32, or bf16 (the bf16 mode's activation_dtype()).
void check_act(const Tensor& t, const char* what) {
  DNAMBA_CHECK(t.defined(), std::string(what) + ": undefined tensor");
  DNAMBA_CHECK(t.dtype == DType::F32 || t.dtype == DType::BF16,
               std::string(what) + ": expected f32 or bf16, got " + dtype_name(t.dtype));
}

void check_shape(const Tensor& t, int64_t rows, int64_t cols, const char* what) {
  DNAMBA_CHECK(t.rows == rows && t.cols == cols,
               std::string(what) + ": expected " + shape_str(rows, cols) + ", got " + shape_str(t.rows, t.cols));
}

// A Tensor over memory the backend owns elsewhere (scratch): no ownership.
Tensor borrowed(void* p, int64_t rows, int64_t cols, DType dt) {
  Tensor t;
  t.storage = std::shared_ptr<void>(std::shared_ptr<void>(), p);
  t.rows = rows;
  t.cols = cols;
  t.ld = cols;
  t.dtype = dt;
  return t;
}

// The first element of a view, whatever its dtype.
const void* raw(const Tensor& t) {
  return static_cast<const char*>(t.storage.get()) + t.offset * int64_t(dtype_size(t.dtype));
}

std::string mib(size_t bytes) { return std::to_string((bytes + (1 << 20) - 1) >> 20) + " MiB"; }

}  // namespace

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

std::unique_ptr<Backend> make_cuda_backend(int index, DType compute, int /*threads*/) {
  if (compute != DType::F32 && compute != DType::BF16)
    throw Error(std::string("--dtype ") + dtype_name(compute) + " is not supported on CUDA (use bf16 or fp32)");
  return std::make_unique<CudaBackend>(index, compute);
}

struct CudaBackend::Impl {
  // DNAMBA_CUDA_PROFILE=1: events around every op, summed per op when the backend goes away.
  bool profile = false;
  std::vector<std::pair<const char*, std::pair<cudaEvent_t, cudaEvent_t>>> spans;
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  int* bad_id = nullptr;  // device flag set by the embedding kernel
  struct Slot {
    void* p = nullptr;
    size_t bytes = 0;
  };
  Slot slots[4];
  // Fences: a ring of events, each with a page-locked copy of bad_id taken just before it.
  static constexpr int kFences = 8;
  cudaEvent_t fence_ev[kFences] = {};
  int* fence_bad = nullptr;
  int64_t fences = 0;
};

CudaBackend::CudaBackend(int device, DType compute) : impl_(std::make_unique<Impl>()), device_(device), compute_(compute) {
  CUDA_CHECK(cudaSetDevice(device_));
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, device_));
  sm_count_ = prop.multiProcessorCount;
  CUDA_CHECK(cudaStreamCreateWithFlags(&impl_->stream, cudaStreamNonBlocking));
  CUBLAS_CHECK(cublasCreate(&impl_->blas));
  CUBLAS_CHECK(cublasSetStream(impl_->blas, impl_->stream));
  // F32 mode is the checking mode: no TF32 or other reduced-precision shortcuts.
  CUBLAS_CHECK(cublasSetMathMode(impl_->blas, compute_ == DType::F32 ? CUBLAS_PEDANTIC_MATH : CUBLAS_DEFAULT_MATH));
  CUDA_CHECK(cudaMalloc(&impl_->bad_id, sizeof(int)));
  CUDA_CHECK(cudaMemsetAsync(impl_->bad_id, 0, sizeof(int), impl_->stream));
  if (const char* e = std::getenv("DNAMBA_SCAN_CHUNK")) scan_chunk_ = std::atoll(e);
  if (const char* e = std::getenv("DNAMBA_SCAN_GENERAL")) scan_general_ = std::atoi(e) != 0;
  // DNAMBA_SCAN=chunked|single|auto forces the scan design (benchmarks compare both in one run);
  // DNAMBA_SCAN_TPC=1|2|4 and DNAMBA_SCAN_FMAEXP=0|1 pin the single-pass kernel's variant.
  if (const char* e = std::getenv("DNAMBA_SCAN")) {
    const std::string m = e;
    DNAMBA_CHECK(m == "auto" || m == "chunked" || m == "single", "DNAMBA_SCAN must be auto, chunked or single, not '" + m + "'");
    scan_mode_ = m == "chunked" ? 1 : m == "single" ? 2 : 0;
  }
  if (const char* e = std::getenv("DNAMBA_SCAN_TPC")) scan_single_tpc_ = std::atoi(e);
  if (const char* e = std::getenv("DNAMBA_SCAN_FMAEXP")) scan_fma_exp_ = std::atoi(e);
  if (const char* e = std::getenv("DNAMBA_CUDA_SMALLK")) small_k_ = *e && *e != '0';
  if (const char* e = std::getenv("DNAMBA_CUDA_PROFILE")) impl_->profile = *e && *e != '0';
  // bf16 mode keeps the big per-token intermediates in bf16 (DNAMBA_CUDA_F32_ACTIVATIONS=1: fp32).
  act_ = compute_;
  if (const char* e = std::getenv("DNAMBA_CUDA_F32_ACTIVATIONS"); e && *e && *e != '0') act_ = DType::F32;
}

CudaBackend::~CudaBackend() {
  cudaSetDevice(device_);
  if (impl_->stream) cudaStreamSynchronize(impl_->stream);
  if (!impl_->spans.empty()) {
    std::vector<std::pair<std::string, std::pair<double, long>>> sum;
    double total = 0;
    for (auto& [op, ev] : impl_->spans) {
      float ms = 0;
      cudaEventElapsedTime(&ms, ev.first, ev.second);
      cudaEventDestroy(ev.first);
      cudaEventDestroy(ev.second);
      total += ms;
      auto it = std::find_if(sum.begin(), sum.end(), [&](auto& x) { return x.first == op; });
      if (it == sum.end()) sum.push_back({op, {ms, 1}});
      else it->second.first += ms, it->second.second += 1;
    }
    std::fprintf(stderr, "CUDA op time on %s (DNAMBA_CUDA_PROFILE):\n", name().c_str());
    for (auto& [op, v] : sum)
      std::fprintf(stderr, "  %-20s %10.1f ms %5.1f%% %8ld calls\n", op.c_str(), v.first, 100 * v.first / total, v.second);
  }
  for (auto& s : impl_->slots)
    if (s.p) cudaFree(s.p);
  for (auto& e : impl_->fence_ev)
    if (e) cudaEventDestroy(e);
  if (impl_->fence_bad) cudaFreeHost(impl_->fence_bad);
  if (impl_->bad_id) cudaFree(impl_->bad_id);
  if (impl_->blas) cublasDestroy(impl_->blas);
  if (impl_->stream) cudaStreamDestroy(impl_->stream);
}

CUstream_st* CudaBackend::stream() const { return impl_->stream; }

void* CudaBackend::scratch(int slot, size_t bytes) {
  auto& s = impl_->slots[slot];
  if (s.bytes >= bytes) return s.p;
  if (s.p) {
    CUDA_CHECK(cudaStreamSynchronize(impl_->stream));  // work in flight may still read it
    CUDA_CHECK(cudaFree(s.p));
    s.p = nullptr;
    s.bytes = 0;
  }
  bytes = std::max<size_t>(bytes, 1 << 20);
  if (cudaMalloc(&s.p, bytes) != cudaSuccess) {
    (void)cudaGetLastError();
    size_t fr = 0, tot = 0;
    cudaMemGetInfo(&fr, &tot);
    throw Error("CUDA out of memory on " + name() + ": asked for " + mib(bytes) + " of working memory (" + mib(fr) +
                " free of " + mib(tot) + "); try a smaller --chunk");
  }
  s.bytes = bytes;
  return s.p;
}

void CudaBackend::check_device_errors() {
  int bad = 0;
  CUDA_CHECK(cudaMemcpyAsync(&bad, impl_->bad_id, sizeof(int), cudaMemcpyDeviceToHost, impl_->stream));
  CUDA_CHECK(cudaStreamSynchronize(impl_->stream));
  if (bad) {
    CUDA_CHECK(cudaMemsetAsync(impl_->bad_id, 0, sizeof(int), impl_->stream));
    throw Error("embedding: a token id outside the vocabulary reached the GPU");
  }
}

// ---- memory

Tensor CudaBackend::alloc(int64_t rows, int64_t cols, DType dt) {
  DNAMBA_CHECK(rows >= 0 && cols >= 0, "alloc: negative shape");
  CUDA_CHECK(cudaSetDevice(device_));
  const size_t bytes = size_t(std::max<int64_t>(rows * cols, 1)) * dtype_size(dt);
  void* p = nullptr;
  if (cudaMalloc(&p, bytes) != cudaSuccess) {
    (void)cudaGetLastError();
    size_t fr = 0, tot = 0;
    cudaMemGetInfo(&fr, &tot);
    throw Error("CUDA out of memory on " + name() + ": asked for " + mib(bytes) + " (a " + shape_str(rows, cols) + " " +
                dtype_name(dt) + " tensor; " + mib(fr) + " free of " + mib(tot) + "); try a smaller --chunk");
  }
  const int dev = device_;
  Tensor t;
  t.storage = std::shared_ptr<void>(p, [dev](void* q) {
    cudaSetDevice(dev);
    cudaFree(q);
  });
  t.rows = rows;
  t.cols = cols;
  t.ld = cols;
  t.dtype = dt;
  return t;
}

void CudaBackend::to_device(Tensor& dst, const void* host) {
  OpTimer timer_(impl_->profile, impl_->stream, "to_device", &impl_->spans);
  DNAMBA_CHECK(dst.contiguous(), "to_device: destination must be contiguous");
  const size_t bytes = size_t(dst.numel()) * dtype_size(dst.dtype);
  if (bytes == 0) return;
  // From pageable memory: returns once the host buffer has been staged, so it may be reused.
  CUDA_CHECK(cudaMemcpyAsync(dst.data<char>(), host, bytes, cudaMemcpyHostToDevice, impl_->stream));
}

void CudaBackend::to_host(const Tensor& src, void* host) {
  to_host_async(src, host);
  check_device_errors();  // synchronises the stream
}

void CudaBackend::copy(Tensor& dst, const Tensor& src) {
  DNAMBA_CHECK(dst.dtype == src.dtype, "copy: dtype mismatch");
  check_shape(dst, src.rows, src.cols, "copy");
  const size_t es = dtype_size(src.dtype);
  if (src.rows == 0 || src.cols == 0) return;
  if (src.contiguous() && dst.contiguous()) {
    CUDA_CHECK(cudaMemcpyAsync(dst.data<char>(), src.data<char>(), size_t(src.numel()) * es,
                               cudaMemcpyDeviceToDevice, impl_->stream));
    return;
  }
  CUDA_CHECK(cudaMemcpy2DAsync(dst.data<char>(), size_t(dst.ld) * es, src.data<char>(), size_t(src.ld) * es,
                               size_t(src.cols) * es, size_t(src.rows), cudaMemcpyDeviceToDevice, impl_->stream));
}

void CudaBackend::zero(Tensor& t) {
  const size_t es = dtype_size(t.dtype);
  if (t.rows == 0 || t.cols == 0) return;
  if (t.contiguous()) {
    CUDA_CHECK(cudaMemsetAsync(t.data<char>(), 0, size_t(t.numel()) * es, impl_->stream));
    return;
  }
  CUDA_CHECK(cudaMemset2DAsync(t.data<char>(), size_t(t.ld) * es, 0, size_t(t.cols) * es, size_t(t.rows),
                               impl_->stream));
}

void CudaBackend::synchronize() { check_device_errors(); }

void* CudaBackend::host_alloc(size_t bytes) {
  void* p = nullptr;
  if (cudaHostAlloc(&p, std::max<size_t>(bytes, 1), cudaHostAllocDefault) != cudaSuccess) {
    (void)cudaGetLastError();
    throw Error("out of page-locked host memory on " + name() + ": asked for " + mib(bytes) + "; try a smaller --chunk");
  }
  return p;
}

void CudaBackend::host_free(void* p) {
  if (p) cudaFreeHost(p);
}

void CudaBackend::to_host_async(const Tensor& src, void* host) {
  OpTimer timer_(impl_->profile, impl_->stream, "to_host", &impl_->spans);
  const size_t es = dtype_size(src.dtype);
  if (src.rows <= 0 || src.cols <= 0) return;
  // Contiguous views go as one block: a 2-D copy of narrow rows (e.g. [T, 5]) runs row by row.
  if (src.contiguous())
    CUDA_CHECK(cudaMemcpyAsync(host, src.data<char>(), size_t(src.numel()) * es, cudaMemcpyDeviceToHost, impl_->stream));
  else
    CUDA_CHECK(cudaMemcpy2DAsync(host, size_t(src.cols) * es, src.data<char>(), size_t(src.ld) * es,
                                 size_t(src.cols) * es, size_t(src.rows), cudaMemcpyDeviceToHost, impl_->stream));
}

int64_t CudaBackend::fence() {
  auto& im = *impl_;
  if (!im.fence_bad) {
    CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&im.fence_bad), sizeof(int) * Impl::kFences, cudaHostAllocDefault));
    for (auto& e : im.fence_ev) CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  }
  const int i = int(im.fences % Impl::kFences);
  CUDA_CHECK(cudaMemcpyAsync(&im.fence_bad[i], im.bad_id, sizeof(int), cudaMemcpyDeviceToHost, im.stream));
  CUDA_CHECK(cudaEventRecord(im.fence_ev[i], im.stream));
  return im.fences++;
}

void CudaBackend::wait(int64_t f) {
  auto& im = *impl_;
  DNAMBA_CHECK(f >= 0 && f < im.fences && f >= im.fences - Impl::kFences, "wait: fence " + std::to_string(f) +
                                                                            " is not one of the last 8");
  const int i = int(f % Impl::kFences);
  CUDA_CHECK(cudaEventSynchronize(im.fence_ev[i]));
  if (im.fence_bad[i]) {
    CUDA_CHECK(cudaMemsetAsync(im.bad_id, 0, sizeof(int), im.stream));
    throw Error("embedding: a token id outside the vocabulary reached the GPU");
  }
}

Tensor CudaBackend::weight_matrix(const float* host, int64_t rows, int64_t cols) {
  if (compute_ != DType::BF16) return upload_f32(host, rows, cols);
  std::vector<uint16_t> h(size_t(rows * cols));
  for (size_t i = 0; i < h.size(); ++i) h[i] = io::f32_to_bf16(host[i]);
  Tensor t = alloc(rows, cols, DType::BF16);
  to_device(t, h.data());
  CUDA_CHECK(cudaStreamSynchronize(impl_->stream));  // h goes out of scope
  return t;
}

// ---- ops

void CudaBackend::embedding(const Tensor& ids, const Tensor& table, Tensor& out) {
  OpTimer timer_(impl_->profile, impl_->stream, "embedding", &impl_->spans);
  DNAMBA_CHECK(ids.dtype == DType::I32 && ids.cols == 1, "embedding: ids must be [T,1] int32");
  DNAMBA_CHECK(table.dtype == DType::F32 || table.dtype == DType::BF16, "embedding: table must be fp32 or bf16");
  check_dtype(out, DType::F32, "embedding out");
  check_shape(out, ids.rows, table.cols, "embedding out");
  kernels::embedding(ids.data<int32_t>(), ids.ld, raw(table), table.dtype == DType::BF16, table.ld, table.rows, table.cols, out.data<float>(), out.ld, ids.rows,
                     impl_->bad_id, impl_->stream);
}

void CudaBackend::add_norm(const Tensor& x, Tensor& residual, bool first, const Tensor& w, const Tensor* b, float eps,
                           Tensor& out) {
  OpTimer timer_(impl_->profile, impl_->stream, "add_norm", &impl_->spans);
  const bool add = x.defined();  // else residual already holds the sum
  const int64_t T = residual.rows, D = residual.cols;
  if (add) {
    check_dtype(x, DType::F32, "add_norm x");
    check_shape(x, T, D, "add_norm x");
  }
  check_dtype(residual, DType::F32, "add_norm residual");
  check_act(out, "add_norm out");
  check_dtype(w, DType::F32, "add_norm weight");
  check_shape(residual, T, D, "add_norm residual");
  check_shape(out, T, D, "add_norm out");
  check_shape(w, 1, D, "add_norm weight");
  if (b) {
    check_dtype(*b, DType::F32, "add_norm bias");
    check_shape(*b, 1, D, "add_norm bias");
  }
  kernels::add_norm(add ? x.data<float>() : nullptr, x.ld, residual.data<float>(), residual.ld, first, w.data<float>(),
                    b ? b->data<float>() : nullptr, eps, out.data<char>(), out.dtype == DType::BF16, out.ld, T, D,
                    impl_->stream);
}

void CudaBackend::linear(const Tensor& x, const Tensor& W, const Tensor* bias, Tensor& out) {
  gemm(x, W, bias, out, false);
}

void CudaBackend::linear_add(const Tensor& x, const Tensor& W, const Tensor* bias, Tensor& out) {
  check_dtype(out, DType::F32, "linear_add out");
  gemm(x, W, bias, out, true);
}

void CudaBackend::gemm(const Tensor& x, const Tensor& W, const Tensor* bias, Tensor& out, bool accumulate) {
  // The profile tells the skinny GEMMs apart (Mamba's dt_proj has K = dt_rank, x_proj N = dt_rank + 2N).
  OpTimer timer_(impl_->profile, impl_->stream,
                 x.cols <= 32 ? "linear_small_k" : W.rows <= 64 ? "linear_small_n" : "linear", &impl_->spans);
  check_act(x, "linear x");
  check_act(out, "linear out");
  DNAMBA_CHECK(W.dtype == DType::F32 || W.dtype == DType::BF16, "linear: W must be fp32 or bf16");
  DNAMBA_CHECK(W.dtype == DType::BF16 || (x.dtype == DType::F32 && out.dtype == DType::F32),
               "linear: bf16 activations need bf16 weights (--dtype bf16)");
  const int64_t T = x.rows, K = x.cols, N = W.rows;
  DNAMBA_CHECK(W.cols == K, "linear: W has " + std::to_string(W.cols) + " columns, x has " + std::to_string(K));
  check_shape(out, T, N, "linear out");
  if (bias) {
    check_dtype(*bias, DType::F32, "linear bias");
    check_shape(*bias, 1, N, "linear bias");
  }
  if (T == 0 || N == 0) return;
  DNAMBA_CHECK(T < (int64_t(1) << 31) && K < (int64_t(1) << 31), "linear: too many rows for one cuBLAS call");
  const float one = 1.0f, zero_f = 0.0f;
  const float* beta = accumulate ? &one : &zero_f;
  // Row-major out[T,N] = x[T,K] . W[N,K]^T is column-major out^T[N,T] = W^T(op T of [K,N]) . x^T([K,T]).
  if (K == 0) {
    Tensor o = out;
    if (!accumulate) zero(o);
  } else if (!accumulate && small_k_ && K <= 32 && W.dtype == DType::BF16 && x.dtype == DType::BF16) {
    // Thin inner dimension (dt_proj): a streaming kernel instead of a GEMM tiled for long K.
    kernels::linear_small_k(x.data<__nv_bfloat16>(), x.ld, W.data<__nv_bfloat16>(), W.ld, out.data<char>(),
                            out.dtype == DType::BF16, out.ld, T, N, K, sm_count_, impl_->stream);
  } else if (W.dtype == DType::F32) {
    CUBLAS_CHECK(cublasSgemm(impl_->blas, CUBLAS_OP_T, CUBLAS_OP_N, int(N), int(T), int(K), &one, W.data<float>(),
                             int(W.ld), x.data<float>(), int(x.ld), beta, out.data<float>(), int(out.ld)));
  } else {
    // bf16 activations go to cuBLAS as they are; fp32 ones are packed to bf16 first.
    const __nv_bfloat16* xb = x.data<__nv_bfloat16>();
    int64_t ldx = x.ld;
    if (x.dtype == DType::F32) {
      auto* p = static_cast<__nv_bfloat16*>(scratch(0, size_t(T * K) * sizeof(__nv_bfloat16)));
      kernels::f32_to_bf16_2d(x.data<float>(), x.ld, p, T, K, impl_->stream);
      xb = p;
      ldx = K;
    }
    const bool ob = out.dtype == DType::BF16;
    CUBLAS_CHECK(cublasGemmEx(impl_->blas, CUBLAS_OP_T, CUBLAS_OP_N, int(N), int(T), int(K), &one,
                              W.data<__nv_bfloat16>(), CUDA_R_16BF, int(W.ld), xb, CUDA_R_16BF, int(ldx), beta,
                              out.data<char>(), ob ? CUDA_R_16BF : CUDA_R_32F, int(out.ld), CUBLAS_COMPUTE_32F,
                              CUBLAS_GEMM_DEFAULT));
  }
  if (bias && out.dtype == DType::BF16)
    kernels::add_bias(out.data<__nv_bfloat16>(), out.ld, bias->data<float>(), T, N, impl_->stream);
  else if (bias)
    kernels::add_bias(out.data<float>(), out.ld, bias->data<float>(), T, N, impl_->stream);
}

void CudaBackend::conv1d_silu(const Tensor& x, const Tensor& weight, const Tensor* bias, Tensor& state, int64_t batch,
                              int64_t len, Tensor& out) {
  OpTimer timer_(impl_->profile, impl_->stream, "conv1d_silu", &impl_->spans);
  const int64_t C = x.cols, K = weight.cols, S = K - 1;
  check_act(x, "conv1d x");
  check_dtype(weight, DType::F32, "conv1d weight");
  check_dtype(state, DType::F32, "conv1d state");
  check_dtype(out, x.dtype, "conv1d out");
  DNAMBA_CHECK(x.rows == batch * len, "conv1d: x rows != batch*len");
  check_shape(weight, C, K, "conv1d weight");
  check_shape(state, batch, C * S, "conv1d state");
  check_shape(out, batch * len, C, "conv1d out");
  if (bias) {
    check_dtype(*bias, DType::F32, "conv1d bias");
    check_shape(*bias, 1, C, "conv1d bias");
  }
  kernels::conv1d_silu(x.data<char>(), x.ld, weight.data<float>(), weight.ld, bias ? bias->data<float>() : nullptr,
                       state.data<float>(), state.ld, out.data<char>(), out.ld, batch, len, C, K,
                       x.dtype == DType::BF16, impl_->stream);
}

void CudaBackend::selective_scan(const SelectiveScanArgs& a) {
  OpTimer timer_(impl_->profile, impl_->stream, "selective_scan", &impl_->spans);
  const int64_t batch = a.batch, len = a.len;
  DNAMBA_CHECK(a.u && a.delta && a.A && a.B && a.C && a.state && a.out, "selective_scan: missing argument");
  const int64_t C = a.u->cols, N = a.A->cols;
  // u, delta, z, B, C and out: all fp32 or all bf16 (the GPU's bf16 activations); the rest fp32.
  check_act(*a.u, "scan u");
  const DType adt = a.u->dtype;
  check_dtype(*a.delta, adt, "scan delta");
  check_dtype(*a.A, DType::F32, "scan A");
  check_dtype(*a.B, adt, "scan B");
  check_dtype(*a.C, adt, "scan C");
  check_dtype(*a.state, DType::F32, "scan state");
  check_dtype(*a.out, adt, "scan out");
  check_shape(*a.u, batch * len, C, "scan u");
  check_shape(*a.delta, batch * len, C, "scan delta");
  check_shape(*a.A, C, N, "scan A");
  check_shape(*a.B, batch * len, N, "scan B");
  check_shape(*a.C, batch * len, N, "scan C");
  if (a.D) check_shape(*a.D, 1, C, "scan D");
  if (a.z) {
    check_dtype(*a.z, adt, "scan z");
    check_shape(*a.z, batch * len, C, "scan z");
  }
  if (a.dt_bias) check_shape(*a.dt_bias, 1, C, "scan dt_bias");
  check_shape(*a.state, batch, C * N, "scan state");
  check_shape(*a.out, batch * len, C, "scan out");
  kernels::ScanParams p;
  p.u = a.u->data<char>();
  p.ld_u = a.u->ld;
  p.delta = a.delta->data<char>();
  p.ld_delta = a.delta->ld;
  if (a.z) {
    p.z = a.z->data<char>();
    p.ld_z = a.z->ld;
  }
  p.B = a.B->data<char>();
  p.ld_B = a.B->ld;
  p.C = a.C->data<char>();
  p.ld_C = a.C->ld;
  p.out = a.out->data<char>();
  p.ld_out = a.out->ld;
  p.A = a.A->data<float>();
  p.ld_A = a.A->ld;
  p.D = a.D ? a.D->data<float>() : nullptr;
  p.dt_bias = a.dt_bias ? a.dt_bias->data<float>() : nullptr;
  p.state = a.state->data<float>();
  p.ld_state = a.state->ld;
  p.batch = batch;
  p.len = len;
  p.channels = C;
  p.dstate = N;
  p.softplus = a.delta_softplus;
  p.chunk = scan_chunk_;
  p.general = scan_general_;
  p.mode = scan_mode_;
  p.single_tpc = scan_single_tpc_;
  p.single_fma_exp = scan_fma_exp_;
  const auto plan = kernels::selective_scan_plan(p, sm_count_);
  void* ws = plan.workspace_bytes ? scratch(1, plan.workspace_bytes) : nullptr;
  if (adt == DType::BF16) kernels::selective_scan<__nv_bfloat16>(p, plan, ws, impl_->stream);
  else kernels::selective_scan<float>(p, plan, ws, impl_->stream);
}

void CudaBackend::token_logprobs(const Tensor& hidden, const Tensor& lm_w, const Tensor& targets, Tensor& out) {
  OpTimer timer_(impl_->profile, impl_->stream, "token_logprobs", &impl_->spans);
  const int64_t T = hidden.rows, V = lm_w.rows, D = hidden.cols;
  check_dtype(hidden, DType::F32, "token_logprobs hidden");
  check_dtype(out, DType::F32, "token_logprobs out");
  DNAMBA_CHECK(lm_w.dtype == DType::F32 || lm_w.dtype == DType::BF16, "token_logprobs: lm_w must be fp32 or bf16");
  DNAMBA_CHECK(lm_w.cols == D, "token_logprobs: lm_w width differs from hidden");
  DNAMBA_CHECK(targets.dtype == DType::I32 && targets.rows == T, "token_logprobs: targets must be [T,1] int32");
  check_shape(out, T, 5, "token_logprobs out");
  DNAMBA_CHECK(V > 10, "token_logprobs: vocabulary too small for the DNA token ids");
  if (T == 0) return;
  if (kernels::token_logprobs_fusable(V, D)) {
    kernels::token_logprobs_fused(hidden.data<float>(), hidden.ld,
                                  raw(lm_w),
                                  lm_w.dtype == DType::BF16, lm_w.ld, targets.data<int32_t>(), targets.ld,
                                  out.data<float>(), out.ld, T, V, D, impl_->stream);
    return;
  }
  // Large vocabulary: logits of a tile of rows in scratch (never handed to the caller).
  const int64_t tile = std::max<int64_t>(1, std::min<int64_t>(T, (int64_t(256) << 20) / (V * 4)));
  float* lg = static_cast<float*>(scratch(2, size_t(tile * V) * 4));
  for (int64_t r0 = 0; r0 < T; r0 += tile) {
    const int64_t n = std::min(tile, T - r0);
    Tensor l = borrowed(lg, n, V, DType::F32);
    linear(hidden.rows_view(r0, n), lm_w, nullptr, l);
    Tensor o = out.rows_view(r0, n);
    kernels::token_logprobs_from_logits(lg, V, targets.data<int32_t>() + r0 * targets.ld, targets.ld, o.data<float>(),
                                        o.ld, n, V, impl_->stream);
  }
}

void CudaBackend::log_softmax_logits(const Tensor& hidden, const Tensor& lm_w, Tensor& out) {
  check_shape(out, hidden.rows, lm_w.rows, "log_softmax out");
  linear(hidden, lm_w, nullptr, out);
  kernels::log_softmax_rows(out.data<float>(), out.ld, out.rows, out.cols, impl_->stream);
}

}  // namespace dnamba

namespace dnamba {

void CudaBackend::mul(const Tensor& a, const Tensor& b, Tensor& out) {
  OpTimer timer_(impl_->profile, impl_->stream, "mul", &impl_->spans);
  check_dtype(a, DType::F32, "mul a");
  check_dtype(b, DType::F32, "mul b");
  check_dtype(out, DType::F32, "mul out");
  check_shape(b, a.rows, a.cols, "mul b");
  check_shape(out, a.rows, a.cols, "mul out");
  if (a.rows == 0 || a.cols == 0) return;
  kernels::mul_f32(a.data<float>(), a.ld, b.data<float>(), b.ld, out.data<float>(), out.ld, a.rows, a.cols,
                   impl_->stream);
}

void CudaBackend::flip_rows(const Tensor& in, int64_t batch, int64_t len, Tensor& out) {
  OpTimer timer_(impl_->profile, impl_->stream, "flip_rows", &impl_->spans);
  DNAMBA_CHECK(in.dtype == out.dtype, "flip_rows: dtype mismatch");
  DNAMBA_CHECK(batch >= 0 && len >= 0 && in.rows == batch * len && out.rows == in.rows && out.cols == in.cols,
               "flip_rows: expected in and out [batch*len, C]");
  if (in.rows == 0 || in.cols == 0) return;
  const int64_t es = int64_t(dtype_size(in.dtype));
  kernels::flip_rows(in.data<char>(), in.ld * es, out.data<char>(), out.ld * es, batch, len, in.cols * es,
                     impl_->stream);
}

}  // namespace dnamba
