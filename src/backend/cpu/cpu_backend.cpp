#include "backend/cpu/cpu_backend.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace dnamba {

namespace {

inline float silu(float x) { return x / (1.0f + std::exp(-x)); }
// PyTorch's softplus (beta 1, threshold 20).
inline float softplus(float x) { return x > 20.0f ? x : std::log1p(std::exp(x)); }

// First byte of a tensor view (Tensor::offset counts elements of its dtype, not bytes).
char* bytes_of(const Tensor& t) {
  return static_cast<char*>(t.storage.get()) + t.offset * int64_t(dtype_size(t.dtype));
}

void check_f32(const Tensor& t, const char* what) {
  DNAMBA_CHECK(t.defined(), std::string(what) + ": undefined tensor");
  DNAMBA_CHECK(t.dtype == DType::F32, std::string(what) + ": expected fp32, got " + dtype_name(t.dtype));
}

void check_shape(const Tensor& t, int64_t rows, int64_t cols, const char* what) {
  DNAMBA_CHECK(t.rows == rows && t.cols == cols,
               std::string(what) + ": expected [" + std::to_string(rows) + "," + std::to_string(cols) +
                   "], got [" + std::to_string(t.rows) + "," + std::to_string(t.cols) + "]");
}

// Row-wise log-softmax of logits = hidden . lm_w^T into a caller buffer of V floats.
void row_log_softmax(const float* logits, int64_t V, float* out) {
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t v = 0; v < V; ++v) mx = std::max(mx, logits[v]);
  double s = 0;
  for (int64_t v = 0; v < V; ++v) s += std::exp(double(logits[v] - mx));
  float lse = mx + float(std::log(s));
  for (int64_t v = 0; v < V; ++v) out[v] = logits[v] - lse;
}

}  // namespace

CpuBackend::CpuBackend(int threads) : threads_(threads > 0 ? threads : omp_get_max_threads()) {
  omp_set_num_threads(threads_);
  openblas_set_num_threads(1);  // parallelism comes from our own fixed row blocks (see linear)
}

Tensor CpuBackend::alloc(int64_t rows, int64_t cols, DType dt) {
  DNAMBA_CHECK(rows >= 0 && cols >= 0, "alloc: negative shape");
  Tensor t;
  size_t bytes = size_t(std::max<int64_t>(rows * cols, 1)) * dtype_size(dt);
  void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
  if (!p) throw Error("out of host memory allocating " + std::to_string(bytes) + " bytes");
  t.storage = std::shared_ptr<void>(p, [](void* q) { std::free(q); });
  t.rows = rows;
  t.cols = cols;
  t.ld = cols;
  t.dtype = dt;
  return t;
}

void CpuBackend::to_device(Tensor& dst, const void* host) {
  DNAMBA_CHECK(dst.contiguous(), "to_device: destination must be contiguous");
  std::memcpy(bytes_of(dst), host, size_t(dst.numel()) * dtype_size(dst.dtype));
}

void CpuBackend::to_host(const Tensor& src, void* host) {
  size_t es = dtype_size(src.dtype);
  size_t row_bytes = size_t(src.cols) * es;
  for (int64_t r = 0; r < src.rows; ++r)
    std::memcpy(static_cast<char*>(host) + r * row_bytes, bytes_of(src) + r * src.ld * es, row_bytes);
}

void CpuBackend::copy(Tensor& dst, const Tensor& src) {
  DNAMBA_CHECK(dst.dtype == src.dtype, "copy: dtype mismatch");
  check_shape(dst, src.rows, src.cols, "copy");
  size_t es = dtype_size(src.dtype);
  for (int64_t r = 0; r < src.rows; ++r)
    std::memmove(bytes_of(dst) + r * dst.ld * es, bytes_of(src) + r * src.ld * es, size_t(src.cols) * es);
}

void CpuBackend::zero(Tensor& t) {
  size_t es = dtype_size(t.dtype);
  for (int64_t r = 0; r < t.rows; ++r) std::memset(bytes_of(t) + r * t.ld * es, 0, size_t(t.cols) * es);
}

void CpuBackend::flip_rows(const Tensor& in, int64_t batch, int64_t len, Tensor& out) {
  DNAMBA_CHECK(in.dtype == out.dtype, "flip_rows: dtype mismatch");
  DNAMBA_CHECK(batch >= 0 && len >= 0 && in.rows == batch * len, "flip_rows: in rows != batch*len");
  check_shape(out, in.rows, in.cols, "flip_rows out");
  const size_t es = dtype_size(in.dtype), rb = size_t(in.cols) * es;
  if (rb == 0) return;
  // Pairs (t, len-1-t) swapped through a row buffer, so in == out (in place) works too.
  std::vector<char> tmp(rb);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < (len + 1) / 2; ++t) {
      const int64_t r0 = b * len + t, r1 = b * len + len - 1 - t;
      std::memcpy(tmp.data(), bytes_of(in) + r0 * in.ld * es, rb);
      std::memmove(bytes_of(out) + r0 * out.ld * es, bytes_of(in) + r1 * in.ld * es, rb);
      std::memcpy(bytes_of(out) + r1 * out.ld * es, tmp.data(), rb);
    }
}

void CpuBackend::embedding(const Tensor& ids, const Tensor& table, Tensor& out) {
  DNAMBA_CHECK(ids.dtype == DType::I32 && ids.cols == 1, "embedding: ids must be [T,1] int32");
  check_f32(table, "embedding table");
  check_f32(out, "embedding out");
  check_shape(out, ids.rows, table.cols, "embedding out");
  const int32_t* id = ids.data<int32_t>();
  for (int64_t t = 0; t < ids.rows; ++t) {
    int32_t v = id[t * ids.ld];
    DNAMBA_CHECK(v >= 0 && v < table.rows, "embedding: token id " + std::to_string(v) + " outside the vocabulary");
    std::memcpy(out.data<float>() + t * out.ld, table.data<float>() + int64_t(v) * table.ld,
                sizeof(float) * size_t(table.cols));
  }
}

void CpuBackend::add_norm(const Tensor& x, Tensor& residual, bool first, const Tensor& w,
                          const Tensor* b, float eps, Tensor& out) {
  const bool add = x.defined();  // else residual already holds the sum
  const int64_t T = residual.rows, D = residual.cols;
  if (add) check_shape(x, T, D, "add_norm x");
  check_shape(residual, T, D, "add_norm residual");
  check_shape(out, T, D, "add_norm out");
  check_shape(w, 1, D, "add_norm weight");
  if (b) check_shape(*b, 1, D, "add_norm bias");
  const float* wp = w.data<float>();
  const float* bp = b ? b->data<float>() : nullptr;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < T; ++t) {
    float* rr = residual.data<float>() + t * residual.ld;
    float* orow = out.data<float>() + t * out.ld;
    if (add) {
      const float* xr = x.data<float>() + t * x.ld;
      for (int64_t d = 0; d < D; ++d) rr[d] = first ? xr[d] : xr[d] + rr[d];
    }
    if (!bp) {
      double ss = 0;
      for (int64_t d = 0; d < D; ++d) ss += double(rr[d]) * rr[d];
      float inv = 1.0f / std::sqrt(float(ss / D) + eps);
      for (int64_t d = 0; d < D; ++d) orow[d] = rr[d] * inv * wp[d];
    } else {
      double mean = 0;
      for (int64_t d = 0; d < D; ++d) mean += rr[d];
      mean /= D;
      double var = 0;
      for (int64_t d = 0; d < D; ++d) var += (rr[d] - mean) * (rr[d] - mean);
      var /= D;
      float inv = 1.0f / std::sqrt(float(var) + eps);
      for (int64_t d = 0; d < D; ++d) orow[d] = float(rr[d] - mean) * inv * wp[d] + bp[d];
    }
  }
}

void CpuBackend::linear(const Tensor& x, const Tensor& W, const Tensor* bias, Tensor& out) {
  gemm(x, W, bias, out, 0.0f);
}

void CpuBackend::linear_add(const Tensor& x, const Tensor& W, const Tensor* bias, Tensor& out) {
  gemm(x, W, bias, out, 1.0f);
}

void CpuBackend::gemm(const Tensor& x, const Tensor& W, const Tensor* bias, Tensor& out, float beta) {
  check_f32(x, "linear x");
  check_f32(W, "linear W");
  check_f32(out, "linear out");
  const int64_t T = x.rows, K = x.cols, N = W.rows;
  DNAMBA_CHECK(W.cols == K, "linear: W has " + std::to_string(W.cols) + " columns, x has " + std::to_string(K));
  check_shape(out, T, N, "linear out");
  if (T == 0) return;
  // out[T,N] = x[T,K] . W[N,K]^T. Threads take fixed blocks of rows and BLAS runs single-threaded
  // inside each, so every output element is summed in the same order whatever --threads is:
  // results do not depend on the thread count (sharded runs reproduce one run exactly).
  constexpr int64_t kRowBlock = 128;
  const int64_t nblk = (T + kRowBlock - 1) / kRowBlock;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t blk = 0; blk < nblk; ++blk) {
    const int64_t r0 = blk * kRowBlock, nr = std::min(kRowBlock, T - r0);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(nr), int(N), int(K), 1.0f,
                x.data<float>() + r0 * x.ld, int(x.ld), W.data<float>(), int(W.ld), beta,
                out.data<float>() + r0 * out.ld, int(out.ld));
  }
  if (bias) {
    check_shape(*bias, 1, N, "linear bias");
    const float* bp = bias->data<float>();
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < T; ++t) {
      float* o = out.data<float>() + t * out.ld;
      for (int64_t n = 0; n < N; ++n) o[n] += bp[n];
    }
  }
}

void CpuBackend::conv1d_silu(const Tensor& x, const Tensor& weight, const Tensor* bias, Tensor& state,
                             int64_t batch, int64_t len, Tensor& out) {
  const int64_t C = x.cols, K = weight.cols, S = K - 1;
  DNAMBA_CHECK(x.rows == batch * len, "conv1d: x rows != batch*len");
  check_shape(weight, C, K, "conv1d weight");
  check_shape(state, batch, C * S, "conv1d state");
  check_shape(out, batch * len, C, "conv1d out");
  if (bias) check_shape(*bias, 1, C, "conv1d bias");
  DNAMBA_CHECK(K <= 64, "conv1d: kernel longer than 64");
  const float* w = weight.data<float>();
  const float* bp = bias ? bias->data<float>() : nullptr;
  // Time-major loops so that rows are read contiguously; channels are blocked for threads.
  constexpr int64_t CB = 64;
  const int64_t nblk = (C + CB - 1) / CB;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t blk = 0; blk < nblk; ++blk) {
      const int64_t c0 = blk * CB, c1 = std::min(C, c0 + CB);
      float* st = state.data<float>() + b * state.ld;
      const float* xb = x.data<float>() + b * len * x.ld;
      float* ob = out.data<float>() + b * len * out.ld;
      // The block's taps transposed ([k][c]), so that the inner loops run over contiguous channels.
      float wt[64 * CB];
      for (int64_t k = 0; k < K; ++k)
        for (int64_t c = c0; c < c1; ++c) wt[k * CB + (c - c0)] = w[c * weight.ld + k];
      for (int64_t t = 0; t < len; ++t) {
        float* o = ob + t * out.ld;
        for (int64_t c = c0; c < c1; ++c) o[c] = bp ? bp[c] : 0.0f;
        for (int64_t k = 0; k < K; ++k) {
          const int64_t src = t - S + k;  // input time of tap k
          const float* wk = wt + k * CB;
          if (src >= 0) {
            const float* xr = xb + src * x.ld + c0;
            float* oc = o + c0;
            for (int64_t i = 0; i < c1 - c0; ++i) oc[i] += wk[i] * xr[i];
          } else {
            for (int64_t c = c0; c < c1; ++c) o[c] += wk[c - c0] * st[c * S + (S + src)];
          }
        }
        for (int64_t c = c0; c < c1; ++c) o[c] = silu(o[c]);
      }
      // New state: the last S inputs (from this chunk, or older state when len < S).
      for (int64_t c = c0; c < c1; ++c) {
        float tmp[64];
        for (int64_t j = 0; j < S; ++j) {
          const int64_t src = len - S + j;
          tmp[j] = src >= 0 ? xb[src * x.ld + c] : st[c * S + (S + src)];
        }
        for (int64_t j = 0; j < S; ++j) st[c * S + j] = tmp[j];
      }
    }
  }
}

void CpuBackend::log_softmax_logits(const Tensor& hidden, const Tensor& lm_w, Tensor& out) {
  check_shape(out, hidden.rows, lm_w.rows, "log_softmax out");
  linear(hidden, lm_w, nullptr, out);
  const int64_t V = lm_w.rows;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < out.rows; ++t) {
    float* r = out.data<float>() + t * out.ld;
    std::vector<float> tmp(r, r + V);
    row_log_softmax(tmp.data(), V, r);
  }
}

void CpuBackend::token_logprobs(const Tensor& hidden, const Tensor& lm_w, const Tensor& targets,
                                Tensor& out) {
  const int64_t T = hidden.rows, V = lm_w.rows;
  DNAMBA_CHECK(targets.dtype == DType::I32 && targets.rows == T, "token_logprobs: targets must be [T,1] int32");
  check_shape(out, T, 5, "token_logprobs out");
  DNAMBA_CHECK(V > 10, "token_logprobs: vocabulary too small for the DNA token ids");
  Tensor lp = alloc(T, V, DType::F32);
  log_softmax_logits(hidden, lm_w, lp);
  for (int64_t t = 0; t < T; ++t) {
    const float* r = lp.data<float>() + t * lp.ld;
    float* o = out.data<float>() + t * out.ld;
    int32_t tg = targets.data<int32_t>()[t * targets.ld];
    o[0] = (tg >= 0 && tg < V) ? r[tg] : std::numeric_limits<float>::quiet_NaN();
    for (int k = 0; k < 4; ++k) o[1 + k] = r[7 + k];
  }
}

}  // namespace dnamba
