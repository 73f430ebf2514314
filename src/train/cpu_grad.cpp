#include "train/cpu_grad.h"

#include <cblas.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

namespace dnamba::train {

namespace ref {

namespace {

// Below this many inner iterations an op runs on one thread: forking costs more than it saves.
constexpr int64_t kParallelMin = 1 << 15;

template <class T>
inline T sigmoid(T x) { return T(1) / (T(1) + std::exp(-x)); }
template <class T>
inline T silu(T x) { return x * sigmoid(x); }
template <class T>
inline T dsilu(T x) {
  const T s = sigmoid(x);
  return s * (T(1) + x * (T(1) - s));
}
// exp that the compiler can vectorise (no libm call): Cephes' expf for float (relative error
// ~2e-7 on [-87, 88], clamped outside), std::exp for double. The scan is exp-bound.
template <class T>
inline T vexp(T x) {
  if constexpr (std::is_same_v<T, float>) {
    x = std::min(88.3762626647949f, std::max(-87.3365447504f, x));
    const float fx = x * 1.44269504088896341f;
    const int32_t ni = int32_t(fx + (fx >= 0.0f ? 0.5f : -0.5f));
    const float n = float(ni);
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500E-4f;
    p = p * r + 1.3981999507E-3f;
    p = p * r + 8.3334519073E-3f;
    p = p * r + 4.1665795894E-2f;
    p = p * r + 1.6666665459E-1f;
    p = p * r + 5.0000001201E-1f;
    p = p * r * r + r + 1.0f;
    return p * std::bit_cast<float>((ni + 127) << 23);
  } else {
    return std::exp(x);
  }
}

// PyTorch's softplus (beta 1, threshold 20), as the forward uses it.
template <class T>
inline T softplus(T x) { return x > T(20) ? x : std::log1p(std::exp(x)); }
template <class T>
inline T dsoftplus(T x) { return x > T(20) ? T(1) : sigmoid(x); }

// C[M,N] = alpha * op(A) . op(B) + beta * C, row-major, BLAS of the scalar type.
template <class T>
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
          int64_t ldb, T beta, T* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  const auto opa = ta ? CblasTrans : CblasNoTrans, opb = tb ? CblasTrans : CblasNoTrans;
  if constexpr (std::is_same_v<T, float>)
    cblas_sgemm(CblasRowMajor, opa, opb, int(M), int(N), int(K), 1.0f, A, int(lda), B, int(ldb), beta, C, int(ldc));
  else
    cblas_dgemm(CblasRowMajor, opa, opb, int(M), int(N), int(K), 1.0, A, int(lda), B, int(ldb), beta, C, int(ldc));
}

// Inputs of scan position `row`, channel c: dt after bias (and softplus), and the pre-softplus value.
template <class T>
inline void scan_dt(const ScanIn<T>& in, int64_t row, int64_t c, T& pre, T& dt) {
  pre = in.delta(row, c) + (in.dt_bias ? in.dt_bias(0, c) : T(0));
  dt = in.delta_softplus ? softplus(pre) : pre;
}

}  // namespace

template <class T>
void embedding_fwd(const int32_t* ids, int64_t n, View<const T> table, View<T> out) {
  for (int64_t t = 0; t < n; ++t) {
    DNAMBA_CHECK(ids[t] >= 0 && ids[t] < table.rows, "embedding: token id outside the vocabulary");
    std::copy_n(table.row(ids[t]), table.cols, out.row(t));
  }
}

template <class T>
void add_rmsnorm_fwd(View<const T> x, View<T> r, bool first, const T* w, T eps, View<T> out) {
  const int64_t D = x.cols;
  for (int64_t t = 0; t < x.rows; ++t) {
    T ss = 0;
    for (int64_t d = 0; d < D; ++d) {
      r(t, d) = first ? x(t, d) : x(t, d) + r(t, d);
      ss += r(t, d) * r(t, d);
    }
    const T rstd = T(1) / std::sqrt(ss / T(D) + eps);
    for (int64_t d = 0; d < D; ++d) out(t, d) = r(t, d) * rstd * w[d];
  }
}

template <class T>
void linear_fwd(View<const T> x, View<const T> W, const T* bias, View<T> out) {
  DNAMBA_CHECK(x.cols == W.cols && out.rows == x.rows && out.cols == W.rows, "linear_fwd: shapes");
  gemm<T>(false, true, x.rows, W.rows, x.cols, x.p, x.ld, W.p, W.ld, T(0), out.p, out.ld);
  if (bias)
    for (int64_t t = 0; t < out.rows; ++t)
      for (int64_t n = 0; n < out.cols; ++n) out(t, n) += bias[n];
}

template <class T>
void conv1d_silu_fwd(View<const T> x, View<const T> w, const T* bias, View<const T> state_in, int64_t batch,
                     int64_t len, View<T> out) {
  const int64_t C = x.cols, K = w.cols, S = K - 1;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < len; ++t)
      for (int64_t c = 0; c < C; ++c) {
        T pre = bias ? bias[c] : T(0);
        for (int64_t k = 0; k < K; ++k) {
          const int64_t src = t - S + k;
          if (src >= 0) pre += w(c, k) * x(b * len + src, c);
          else if (state_in) pre += w(c, k) * state_in(b, c * S + (S + src));
        }
        out(b * len + t, c) = silu(pre);
      }
}

template <class T>
void scan_fwd(const ScanIn<T>& in, View<T> state, View<T> out, int64_t chunk, View<T> chunk_states) {
  const int64_t batch = in.batch, len = in.len, C = in.u.cols, N = in.A.cols;
  const int64_t nch = chunk > 0 ? (len + chunk - 1) / chunk : 0;
  if (chunk_states) DNAMBA_CHECK(chunk > 0 && chunk_states.rows == batch * nch && chunk_states.cols == C * N, "scan_fwd: chunk_states shape");
#pragma omp parallel for collapse(2) schedule(static) if (batch * C * len * N > kParallelMin)
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t c = 0; c < C; ++c) {
      T* h = state.row(b) + c * N;
      const T* A = in.A.row(c);
      for (int64_t t = 0; t < len; ++t) {
        if (chunk_states && t % chunk == 0) std::copy_n(h, N, chunk_states.row(b * nch + t / chunk) + c * N);
        const int64_t row = b * len + t;
        T pre, dt;
        scan_dt(in, row, c, pre, dt);
        const T u = in.u(row, c);
        const T* Bt = in.B.row(row);
        const T* Ct = in.C.row(row);
        T y = 0;
#pragma omp simd reduction(+ : y)
        for (int64_t n = 0; n < N; ++n) {
          h[n] = vexp(dt * A[n]) * h[n] + dt * Bt[n] * u;
          y += h[n] * Ct[n];
        }
        if (in.D) y += in.D(0, c) * u;
        if (in.z) y *= silu(in.z(row, c));
        out(row, c) = y;
      }
    }
}

template <class T>
double cross_entropy(View<const T> hidden, View<const T> lm_w, const int32_t* targets, T scale,
                     View<T> dhidden, View<T> dlm_w) {
  const int64_t Tn = hidden.rows, V = lm_w.rows;
  std::vector<T> logits(size_t(Tn * V));
  std::vector<double> loss(size_t(Tn), 0.0);
  auto L = view(logits.data(), Tn, V);
  linear_fwd<T>(hidden, View<const T>{lm_w.p, lm_w.rows, lm_w.cols, lm_w.ld}, nullptr, L);
#pragma omp parallel for schedule(static) if (Tn * V > kParallelMin)
  for (int64_t t = 0; t < Tn; ++t) {
    T* l = L.row(t);
    const int32_t tg = targets[t];
    if (tg >= V) continue;  // checked below, outside the parallel region
    T mx = l[0];
    for (int64_t v = 1; v < V; ++v) mx = std::max(mx, l[v]);
    double s = 0;
    for (int64_t v = 0; v < V; ++v) s += std::exp(double(l[v] - mx));
    const double lse = double(mx) + std::log(s);
    if (tg >= 0) loss[size_t(t)] = lse - double(l[tg]);
    for (int64_t v = 0; v < V; ++v)
      l[v] = tg < 0 ? T(0) : scale * (T(std::exp(double(l[v]) - lse)) - (v == tg ? T(1) : T(0)));
  }
  double sum = 0;
  for (int64_t t = 0; t < Tn; ++t) {
    DNAMBA_CHECK(targets[t] < V, "cross_entropy: target id " + std::to_string(targets[t]) + " outside the vocabulary");
    sum += loss[size_t(t)];
  }
  if (dhidden)
    linear_bwd<T>(hidden, View<const T>{lm_w.p, lm_w.rows, lm_w.cols, lm_w.ld},
                  View<const T>{L.p, L.rows, L.cols, L.ld}, dhidden, false, dlm_w, nullptr);
  return sum;
}

template <class T>
void embedding_bwd(const int32_t* ids, int64_t n, View<const T> dout, View<T> dtable) {
  for (int64_t t = 0; t < n; ++t) {
    DNAMBA_CHECK(ids[t] >= 0 && ids[t] < dtable.rows, "embedding_bwd: token id outside the vocabulary");
    T* d = dtable.row(ids[t]);
    const T* g = dout.row(t);
    for (int64_t j = 0; j < dout.cols; ++j) d[j] += g[j];
  }
}

template <class T>
void add_rmsnorm_bwd(View<const T> r, const T* w, T eps, View<const T> dout, View<T> dr, T* dw) {
  const int64_t Tn = r.rows, D = r.cols;
  std::vector<T> rstd(static_cast<size_t>(Tn));
#pragma omp parallel for schedule(static) if (Tn * D > kParallelMin)
  for (int64_t t = 0; t < Tn; ++t) {
    const T* rr = r.row(t);
    const T* g = dout.row(t);
    T ss = 0, s = 0;
    for (int64_t d = 0; d < D; ++d) ss += rr[d] * rr[d];
    const T rs = T(1) / std::sqrt(ss / T(D) + eps);
    rstd[size_t(t)] = rs;
    for (int64_t d = 0; d < D; ++d) s += g[d] * w[d] * rr[d];
    // out_d = r_d * rs * w_d, rs = (mean(r^2) + eps)^-1/2, d rs / d r_j = -rs^3 r_j / D
    const T k = rs * rs * rs * s / T(D);
    T* o = dr.row(t);
    for (int64_t d = 0; d < D; ++d) o[d] += rs * g[d] * w[d] - k * rr[d];
  }
  // Parameter gradient by columns: a fixed summation order whatever the thread count.
#pragma omp parallel for schedule(static) if (Tn * D > kParallelMin)
  for (int64_t d = 0; d < D; ++d) {
    T acc = 0;
    for (int64_t t = 0; t < Tn; ++t) acc += dout(t, d) * r(t, d) * rstd[size_t(t)];
    dw[d] += acc;
  }
}

template <class T>
void linear_bwd(View<const T> x, View<const T> W, View<const T> dout, View<T> dx, bool accumulate_dx,
                View<T> dW, T* dbias) {
  const int64_t Tn = x.rows, K = x.cols, N = W.rows;
  DNAMBA_CHECK(W.cols == K && dout.rows == Tn && dout.cols == N, "linear_bwd: shapes");
  if (dx) {
    DNAMBA_CHECK(dx.rows == Tn && dx.cols == K, "linear_bwd: dx shape");
    if (N == 0 && !accumulate_dx)
      for (int64_t t = 0; t < Tn; ++t) std::fill_n(dx.row(t), K, T(0));
    gemm<T>(false, false, Tn, K, N, dout.p, dout.ld, W.p, W.ld, accumulate_dx ? T(1) : T(0), dx.p, dx.ld);
  }
  if (dW) {
    DNAMBA_CHECK(dW.rows == N && dW.cols == K, "linear_bwd: dW shape");
    if (Tn > 0) gemm<T>(true, false, N, K, Tn, dout.p, dout.ld, x.p, x.ld, T(1), dW.p, dW.ld);
  }
  if (dbias) {
#pragma omp parallel for schedule(static) if (Tn * N > kParallelMin)
    for (int64_t n = 0; n < N; ++n) {
      T acc = 0;
      for (int64_t t = 0; t < Tn; ++t) acc += dout(t, n);
      dbias[n] += acc;
    }
  }
}

template <class T>
void conv1d_silu_bwd(View<const T> x, View<const T> w, const T* bias, View<const T> state_in, int64_t batch,
                     int64_t len, View<const T> dout, View<T> dx, View<T> dw, T* dbias) {
  const int64_t C = x.cols, K = w.cols, S = K - 1;
  // Channels are independent: each thread owns whole channels, so every sum has a fixed order.
#pragma omp parallel for schedule(static) if (batch * len * C * K > kParallelMin)
  for (int64_t c = 0; c < C; ++c) {
    T dbc = 0;
    for (int64_t b = 0; b < batch; ++b) {
      auto xin = [&](int64_t src) -> T {  // input at time src of sequence b (state before 0)
        if (src >= 0) return x(b * len + src, c);
        return state_in ? state_in(b, c * S + (S + src)) : T(0);
      };
      for (int64_t t = 0; t < len; ++t) dx(b * len + t, c) = 0;
      for (int64_t t = 0; t < len; ++t) {
        T pre = bias ? bias[c] : T(0);
        for (int64_t k = 0; k < K; ++k) pre += w(c, k) * xin(t - S + k);
        const T g = dout(b * len + t, c) * dsilu(pre);
        dbc += g;
        for (int64_t k = 0; k < K; ++k) {
          const int64_t src = t - S + k;
          dw(c, k) += g * xin(src);
          if (src >= 0) dx(b * len + src, c) += g * w(c, k);
        }
      }
    }
    if (dbias) dbias[c] += dbc;
  }
}

template <class T>
void scan_bwd(const ScanIn<T>& in, int64_t chunk, View<const T> chunk_states, View<const T> dout,
              const ScanOut<T>& g) {
  const int64_t batch = in.batch, len = in.len, C = in.u.cols, N = in.A.cols;
  DNAMBA_CHECK(chunk > 0, "scan_bwd: chunk must be positive");
  const int64_t nch = (len + chunk - 1) / chunk;
  DNAMBA_CHECK(chunk_states.rows == batch * nch && chunk_states.cols == C * N, "scan_bwd: chunk_states shape");
  const int64_t Tn = batch * len;
  // Work is split into (sequence, channel group) tasks. dB and dC are sums over channels, so each
  // group writes its own partial sums, added in group order afterwards; parameter gradients get
  // one partial per sequence, added in sequence order. Fixed orders: the result does not depend on
  // the number of threads.
  const int64_t G = std::min<int64_t>(C, 8);
  std::vector<T> dBp(static_cast<size_t>(G * Tn * N), T(0)), dCp(static_cast<size_t>(G * Tn * N), T(0));
  std::vector<T> dAp(static_cast<size_t>(batch * C * N), T(0)), dDp(static_cast<size_t>(batch * C), T(0)),
      dbp(static_cast<size_t>(batch * C), T(0));
#pragma omp parallel for collapse(2) schedule(dynamic) if (Tn * C * N > kParallelMin)
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t grp = 0; grp < G; ++grp) {
      std::vector<T> H(static_cast<size_t>(chunk * N)), DA(static_cast<size_t>(chunk * N));
      std::vector<T> PRE(static_cast<size_t>(chunk)), DT(static_cast<size_t>(chunk));
      std::vector<T> h0(static_cast<size_t>(N)), dh(static_cast<size_t>(N)), dAacc(static_cast<size_t>(N));
      T* dBg = dBp.data() + grp * Tn * N;
      T* dCg = dCp.data() + grp * Tn * N;
      for (int64_t c = grp; c < C; c += G) {
        const T* A = in.A.row(c);
        std::fill(dh.begin(), dh.end(), T(0));
        std::fill(dAacc.begin(), dAacc.end(), T(0));
        T dDacc = 0, dbacc = 0;
        for (int64_t k = nch - 1; k >= 0; --k) {
          const int64_t t0 = k * chunk, m = std::min(len, t0 + chunk) - t0;
          std::copy_n(chunk_states.row(b * nch + k) + c * N, N, h0.data());
          // Recompute the chunk's states from its boundary state.
          const T* prev = h0.data();
          for (int64_t j = 0; j < m; ++j) {
            const int64_t row = b * len + t0 + j;
            T pre, dt;
            scan_dt(in, row, c, pre, dt);
            PRE[size_t(j)] = pre;
            DT[size_t(j)] = dt;
            const T u = in.u(row, c);
            const T* Bt = in.B.row(row);
            T* hj = H.data() + j * N;
            T* aj = DA.data() + j * N;
#pragma omp simd
            for (int64_t n = 0; n < N; ++n) {
              aj[n] = vexp(dt * A[n]);
              hj[n] = aj[n] * prev[n] + dt * Bt[n] * u;
            }
            prev = hj;
          }
          // Reverse through the chunk.
          for (int64_t j = m - 1; j >= 0; --j) {
            const int64_t row = b * len + t0 + j;
            const T pre = PRE[size_t(j)], dt = DT[size_t(j)];
            const T u = in.u(row, c);
            const T* Bt = in.B.row(row);
            const T* Ct = in.C.row(row);
            const T* hj = H.data() + j * N;
            const T* aj = DA.data() + j * N;
            const T* hp = j > 0 ? H.data() + (j - 1) * N : h0.data();
            T y = 0;
#pragma omp simd reduction(+ : y)
            for (int64_t n = 0; n < N; ++n) y += hj[n] * Ct[n];
            if (in.D) y += in.D(0, c) * u;
            const T go = dout(row, c);
            T dy = go;
            if (in.z) {
              const T zz = in.z(row, c);
              if (g.dz) g.dz(row, c) = go * y * dsilu(zz);
              dy = go * silu(zz);
            }
            T du = 0, ddt = 0;
            if (in.D) {
              dDacc += dy * u;
              du += dy * in.D(0, c);
            }
            T* dBr = dBg + row * N;
            T* dCr = dCg + row * N;
            T* dhp = dh.data();
            T* dAa = dAacc.data();
#pragma omp simd reduction(+ : ddt, du)
            for (int64_t n = 0; n < N; ++n) {
              // y += h_n C_n;  h_n = a_n * hprev_n + dt * B_n * u;  a_n = exp(dt * A_n)
              const T dhn = dhp[n] + dy * Ct[n];
              dCr[n] += dy * hj[n];
              const T da = dhn * hp[n] * aj[n];  // gradient of dt*A_n through a_n
              ddt += da * A[n] + dhn * Bt[n] * u;
              dAa[n] += da * dt;
              dBr[n] += dhn * dt * u;
              du += dhn * dt * Bt[n];
              dhp[n] = dhn * aj[n];  // on to h_{t-1}
            }
            const T dpre = in.delta_softplus ? ddt * dsoftplus(pre) : ddt;
            if (g.du) g.du(row, c) = du;
            if (g.ddelta) g.ddelta(row, c) = dpre;
            dbacc += dpre;
          }
        }
        for (int64_t n = 0; n < N; ++n) dAp[size_t((b * C + c) * N + n)] = dAacc[n] * A[n];  // dA/dA_log = A
        dDp[size_t(b * C + c)] = dDacc;
        dbp[size_t(b * C + c)] = dbacc;
      }
    }
#pragma omp parallel for schedule(static) if (Tn * N * G > kParallelMin)
  for (int64_t row = 0; row < Tn; ++row)
    for (int64_t n = 0; n < N; ++n) {
      T sb = 0, sc = 0;
      for (int64_t grp = 0; grp < G; ++grp) {
        sb += dBp[size_t((grp * Tn + row) * N + n)];
        sc += dCp[size_t((grp * Tn + row) * N + n)];
      }
      if (g.dB) g.dB(row, n) = sb;
      if (g.dC) g.dC(row, n) = sc;
    }
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t c = 0; c < C; ++c) {
      if (g.dA_log)
        for (int64_t n = 0; n < N; ++n) g.dA_log(c, n) += dAp[size_t((b * C + c) * N + n)];
      if (g.dD) g.dD(0, c) += dDp[size_t(b * C + c)];
      if (g.ddt_bias) g.ddt_bias(0, c) += dbp[size_t(b * C + c)];
    }
}

#define DNAMBA_INSTANTIATE(T)                                                                                     \
  template void embedding_fwd<T>(const int32_t*, int64_t, View<const T>, View<T>);                                \
  template void add_rmsnorm_fwd<T>(View<const T>, View<T>, bool, const T*, T, View<T>);                           \
  template void linear_fwd<T>(View<const T>, View<const T>, const T*, View<T>);                                   \
  template void conv1d_silu_fwd<T>(View<const T>, View<const T>, const T*, View<const T>, int64_t, int64_t, View<T>); \
  template void scan_fwd<T>(const ScanIn<T>&, View<T>, View<T>, int64_t, View<T>);                                \
  template double cross_entropy<T>(View<const T>, View<const T>, const int32_t*, T, View<T>, View<T>);            \
  template void embedding_bwd<T>(const int32_t*, int64_t, View<const T>, View<T>);                                \
  template void add_rmsnorm_bwd<T>(View<const T>, const T*, T, View<const T>, View<T>, T*);                       \
  template void linear_bwd<T>(View<const T>, View<const T>, View<const T>, View<T>, bool, View<T>, T*);           \
  template void conv1d_silu_bwd<T>(View<const T>, View<const T>, const T*, View<const T>, int64_t, int64_t,       \
                                   View<const T>, View<T>, View<T>, T*);                                          \
  template void scan_bwd<T>(const ScanIn<T>&, int64_t, View<const T>, View<const T>, const ScanOut<T>&);
DNAMBA_INSTANTIATE(float)
DNAMBA_INSTANTIATE(double)
#undef DNAMBA_INSTANTIATE

}  // namespace ref

// ---------------------------------------------------------------- CpuTrainBackend

namespace {

void check_f32(const Tensor& t, const char* what) {
  DNAMBA_CHECK(t.defined() && t.dtype == DType::F32, std::string(what) + ": expected a defined fp32 tensor");
}
void check_shape(const Tensor& t, int64_t rows, int64_t cols, const char* what) {
  DNAMBA_CHECK(t.rows == rows && t.cols == cols,
               std::string(what) + ": expected [" + std::to_string(rows) + "," + std::to_string(cols) + "], got [" +
                   std::to_string(t.rows) + "," + std::to_string(t.cols) + "]");
}
ref::View<float> mv(const Tensor& t) {
  check_f32(t, "tensor");
  return ref::View<float>{t.data<float>(), t.rows, t.cols, t.ld};
}
ref::View<const float> cv(const Tensor& t) {
  check_f32(t, "tensor");
  return ref::View<const float>{t.data<float>(), t.rows, t.cols, t.ld};
}
ref::View<float> mv(const Tensor* t) { return t ? mv(*t) : ref::View<float>{}; }
ref::View<const float> cv(const Tensor* t) { return t ? cv(*t) : ref::View<const float>{}; }
const int32_t* ids_ptr(const Tensor& t, int64_t rows, const char* what) {
  DNAMBA_CHECK(t.dtype == DType::I32 && t.cols == 1 && t.rows == rows && t.contiguous(),
               std::string(what) + ": expected contiguous [" + std::to_string(rows) + ",1] int32");
  return t.data<int32_t>();
}

ref::ScanIn<float> scan_in(const SelectiveScanArgs& a) {
  const int64_t Tn = a.batch * a.len, C = a.u->cols, N = a.A->cols;
  check_shape(*a.u, Tn, C, "scan u");
  check_shape(*a.delta, Tn, C, "scan delta");
  check_shape(*a.A, C, N, "scan A");
  check_shape(*a.B, Tn, N, "scan B");
  check_shape(*a.C, Tn, N, "scan C");
  if (a.D) check_shape(*a.D, 1, C, "scan D");
  if (a.z) check_shape(*a.z, Tn, C, "scan z");
  if (a.dt_bias) check_shape(*a.dt_bias, 1, C, "scan dt_bias");
  ref::ScanIn<float> in;
  in.u = cv(a.u);
  in.delta = cv(a.delta);
  in.A = cv(a.A);
  in.B = cv(a.B);
  in.C = cv(a.C);
  in.D = cv(a.D);
  in.z = cv(a.z);
  in.dt_bias = cv(a.dt_bias);
  in.delta_softplus = a.delta_softplus;
  in.batch = a.batch;
  in.len = a.len;
  return in;
}

}  // namespace

void CpuTrainBackend::neg_exp(const Tensor& A_log, Tensor& A) {
  check_shape(A, A_log.rows, A_log.cols, "neg_exp");
  auto s = cv(A_log);
  auto d = mv(A);
  for (int64_t r = 0; r < s.rows; ++r)
    for (int64_t c = 0; c < s.cols; ++c) d(r, c) = -std::exp(s(r, c));
}

void CpuTrainBackend::embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dtable) {
  DNAMBA_CHECK(dout.cols == dtable.cols, "embedding_backward: dout and dtable widths differ");
  ref::embedding_bwd<float>(ids_ptr(ids, dout.rows, "embedding_backward ids"), dout.rows, cv(dout), mv(dtable));
}

void CpuTrainBackend::add_rmsnorm_backward(const Tensor& residual, const Tensor& w, float eps, const Tensor& dout,
                                           Tensor& dresidual, Tensor& dw) {
  const int64_t Tn = residual.rows, D = residual.cols;
  check_shape(w, 1, D, "add_rmsnorm_backward w");
  check_shape(dw, 1, D, "add_rmsnorm_backward dw");
  check_shape(dout, Tn, D, "add_rmsnorm_backward dout");
  check_shape(dresidual, Tn, D, "add_rmsnorm_backward dresidual");
  ref::add_rmsnorm_bwd<float>(cv(residual), w.data<float>(), eps, cv(dout), mv(dresidual), dw.data<float>());
}

void CpuTrainBackend::linear_backward(const Tensor& x, const Tensor& W, const Tensor& dout, Tensor* dx,
                                      bool accumulate_dx, Tensor* dW, Tensor* dbias) {
  if (dbias) check_shape(*dbias, 1, W.rows, "linear_backward dbias");
  ref::linear_bwd<float>(cv(x), cv(W), cv(dout), mv(dx), accumulate_dx, mv(dW), dbias ? dbias->data<float>() : nullptr);
}

void CpuTrainBackend::conv1d_silu_backward(const Tensor& x, const Tensor& weight, const Tensor* bias,
                                           const Tensor* state_in, int64_t batch, int64_t len, const Tensor& dout,
                                           Tensor& dx, Tensor& dweight, Tensor* dbias) {
  const int64_t C = x.cols, K = weight.cols;
  check_shape(x, batch * len, C, "conv1d_backward x");
  check_shape(weight, C, K, "conv1d_backward weight");
  check_shape(dweight, C, K, "conv1d_backward dweight");
  check_shape(dout, batch * len, C, "conv1d_backward dout");
  check_shape(dx, batch * len, C, "conv1d_backward dx");
  if (bias) check_shape(*bias, 1, C, "conv1d_backward bias");
  if (dbias) check_shape(*dbias, 1, C, "conv1d_backward dbias");
  if (state_in) check_shape(*state_in, batch, C * (K - 1), "conv1d_backward state");
  ref::conv1d_silu_bwd<float>(cv(x), cv(weight), bias ? bias->data<float>() : nullptr, cv(state_in), batch, len,
                              cv(dout), mv(dx), mv(dweight), dbias ? dbias->data<float>() : nullptr);
}

void CpuTrainBackend::selective_scan_forward_ckpt(const SelectiveScanArgs& a, int64_t chunk, Tensor& chunk_states) {
  DNAMBA_CHECK(chunk > 0, "scan: recompute chunk must be positive");
  auto in = scan_in(a);
  const int64_t C = a.u->cols, N = a.A->cols;
  check_shape(*a.state, a.batch, C * N, "scan state");
  check_shape(*a.out, a.batch * a.len, C, "scan out");
  check_shape(chunk_states, a.batch * ((a.len + chunk - 1) / chunk), C * N, "scan chunk_states");
  ref::scan_fwd<float>(in, mv(a.state), mv(a.out), chunk, mv(chunk_states));
}

void CpuTrainBackend::selective_scan_backward(const SelectiveScanArgs& a, int64_t chunk, const Tensor& chunk_states,
                                              const Tensor& dout, const ScanGrads& g) {
  auto in = scan_in(a);
  const int64_t Tn = a.batch * a.len, C = a.u->cols, N = a.A->cols;
  check_shape(dout, Tn, C, "scan_backward dout");
  if (g.du) check_shape(*g.du, Tn, C, "scan_backward du");
  if (g.ddelta) check_shape(*g.ddelta, Tn, C, "scan_backward ddelta");
  if (g.dA_log) check_shape(*g.dA_log, C, N, "scan_backward dA_log");
  if (g.dB) check_shape(*g.dB, Tn, N, "scan_backward dB");
  if (g.dC) check_shape(*g.dC, Tn, N, "scan_backward dC");
  if (g.dD) check_shape(*g.dD, 1, C, "scan_backward dD");
  if (g.dz) check_shape(*g.dz, Tn, C, "scan_backward dz");
  if (g.ddt_bias) check_shape(*g.ddt_bias, 1, C, "scan_backward ddt_bias");
  ref::ScanOut<float> o{mv(g.du), mv(g.ddelta), mv(g.dA_log), mv(g.dB), mv(g.dC), mv(g.dD), mv(g.dz), mv(g.ddt_bias)};
  ref::scan_bwd<float>(in, chunk, cv(chunk_states), cv(dout), o);
}

double CpuTrainBackend::cross_entropy(const Tensor& hidden, const Tensor& lm_w, const Tensor& targets, float scale,
                                      Tensor& dhidden, Tensor& dlm_w) {
  check_shape(dhidden, hidden.rows, hidden.cols, "cross_entropy dhidden");
  check_shape(dlm_w, lm_w.rows, lm_w.cols, "cross_entropy dlm_w");
  return ref::cross_entropy<float>(cv(hidden), cv(lm_w), ids_ptr(targets, hidden.rows, "cross_entropy targets"), scale,
                                   mv(dhidden), mv(dlm_w));
}

double CpuTrainBackend::sum_squares(const Tensor& t) {
  auto v = cv(t);
  double s = 0;
  for (int64_t r = 0; r < v.rows; ++r)
    for (int64_t c = 0; c < v.cols; ++c) s += double(v(r, c)) * v(r, c);
  return s;
}

void CpuTrainBackend::adamw(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWStep& s) {
  check_shape(grad, param.rows, param.cols, "adamw grad");
  check_shape(m, param.rows, param.cols, "adamw m");
  check_shape(v, param.rows, param.cols, "adamw v");
  auto P = mv(param), M = mv(m), Vv = mv(v);
  auto G = cv(grad);
  const double bc1 = 1.0 - std::pow(double(s.beta1), double(s.step));
  const double bc2 = 1.0 - std::pow(double(s.beta2), double(s.step));
  const float step_size = float(s.lr / bc1);
  const float inv_sqrt_bc2 = float(1.0 / std::sqrt(bc2));
  const float decay = 1.0f - s.lr * s.weight_decay;
  for (int64_t r = 0; r < P.rows; ++r) {
#pragma omp simd
    for (int64_t c = 0; c < P.cols; ++c) {
      const float g = G(r, c) * s.grad_scale;
      const float mm = s.beta1 * M(r, c) + (1.0f - s.beta1) * g;
      const float vv = s.beta2 * Vv(r, c) + (1.0f - s.beta2) * g * g;
      M(r, c) = mm;
      Vv(r, c) = vv;
      P(r, c) = P(r, c) * decay - step_size * mm / (std::sqrt(vv) * inv_sqrt_bc2 + s.eps);
    }
  }
}

CudaTrainHooks& cuda_train_hooks() {
  static CudaTrainHooks h;
  return h;
}

std::string default_train_device() {
  const auto& h = cuda_train_hooks();
  return h.make && h.device_count && h.device_count() > 0 ? "cuda" : "cpu";
}

std::unique_ptr<TrainBackend> make_train_backend(const std::string& device, int threads, DType compute) {
  if (device == "cpu") {
    if (compute != DType::F32)
      throw Error("--dtype " + std::string(dtype_name(compute)) + " is not supported for training on the CPU (use fp32)");
    return std::make_unique<CpuTrainBackend>(threads);
  }
  if (device == "cuda" || device.rfind("cuda:", 0) == 0) {
    const auto& h = cuda_train_hooks();
    if (!h.make || !h.device_count)
      throw Error("--device " + device + ": this dnamba was built without CUDA support (use --device cpu)");
    int index = 0;
    if (device.size() > 5) {
      char* end = nullptr;
      const long v = std::strtol(device.c_str() + 5, &end, 10);
      if (*end != '\0' || v < 0) throw Error("bad --device '" + device + "' (expected cuda or cuda:N)");
      index = int(v);
    }
    const int n = h.device_count();
    if (n == 0) throw Error("--device " + device + ": no CUDA GPU is available on this machine (use --device cpu)");
    if (index >= n) throw Error("--device " + device + ": only " + std::to_string(n) + " CUDA device(s) present");
    return h.make(index, compute);
  }
  throw Error("unknown --device '" + device + "' (expected cpu, cuda or cuda:N)");
}

}  // namespace dnamba::train
