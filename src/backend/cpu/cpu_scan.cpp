// CPU selective scan, in its own file because it is compiled with -ffast-math: glibc vectorises
// expf (libmvec) only then. The scan is exp-bound: d_inner * d_state exponentials per position.
#include <algorithm>
#include <cmath>

#include "backend/cpu/cpu_backend.h"

namespace dnamba {

namespace {

inline float silu_f(float x) { return x / (1.0f + std::exp(-x)); }
inline float softplus_f(float x) { return x > 20.0f ? x : std::log1p(std::exp(x)); }

void check_shape2(const Tensor& t, int64_t rows, int64_t cols, const char* what) {
  DNAMBA_CHECK(t.rows == rows && t.cols == cols,
               std::string(what) + ": expected [" + std::to_string(rows) + "," + std::to_string(cols) +
                   "], got [" + std::to_string(t.rows) + "," + std::to_string(t.cols) + "]");
}

}  // namespace

void CpuBackend::selective_scan(const SelectiveScanArgs& a) {
  const int64_t batch = a.batch, len = a.len;
  const int64_t C = a.u->cols, N = a.A->cols;
  check_shape2(*a.u, batch * len, C, "scan u");
  check_shape2(*a.delta, batch * len, C, "scan delta");
  check_shape2(*a.A, C, N, "scan A");
  check_shape2(*a.B, batch * len, N, "scan B");
  check_shape2(*a.C, batch * len, N, "scan C");
  if (a.D) check_shape2(*a.D, 1, C, "scan D");
  if (a.z) check_shape2(*a.z, batch * len, C, "scan z");
  if (a.dt_bias) check_shape2(*a.dt_bias, 1, C, "scan dt_bias");
  check_shape2(*a.state, batch, C * N, "scan state");
  check_shape2(*a.out, batch * len, C, "scan out");
  DNAMBA_CHECK(a.state->contiguous() && a.A->contiguous(), "scan: state and A must be contiguous");
  // Channels are independent: parallel over (batch, block of channels); time runs in order.
  // Per position the block's CB x N decay factors are computed in one flat, vectorised loop.
  constexpr int64_t CB = 16;
  const int64_t nblk = (C + CB - 1) / CB;
  const float* Ap = a.A->data<float>();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t blk = 0; blk < nblk; ++blk) {
      const int64_t c0 = blk * CB, c1 = std::min(C, c0 + CB), nc = c1 - c0;
      float* h = a.state->data<float>() + b * a.state->ld + c0 * N;  // [nc, N]
      const float* A = Ap + c0 * N;                                   // [nc, N]
      std::vector<float> dA(static_cast<size_t>(nc * N)), dtv(static_cast<size_t>(nc)), uv(static_cast<size_t>(nc));
      for (int64_t t = 0; t < len; ++t) {
        const int64_t row = b * len + t;
        const float* Bt = a.B->data<float>() + row * a.B->ld;
        const float* Ct = a.C->data<float>() + row * a.C->ld;
        const float* ur = a.u->data<float>() + row * a.u->ld + c0;
        const float* dr = a.delta->data<float>() + row * a.delta->ld + c0;
        for (int64_t i = 0; i < nc; ++i) {
          float dt = dr[i] + (a.dt_bias ? a.dt_bias->data<float>()[c0 + i] : 0.0f);
          dtv[i] = a.delta_softplus ? softplus_f(dt) : dt;
          uv[i] = ur[i];
        }
        float* dAp = dA.data();
        for (int64_t i = 0; i < nc; ++i) {
          const float dt = dtv[i];
#pragma omp simd
          for (int64_t n = 0; n < N; ++n) dAp[i * N + n] = dt * A[i * N + n];
        }
#pragma omp simd
        for (int64_t k = 0; k < nc * N; ++k) dAp[k] = expf(dAp[k]);
        float* o = a.out->data<float>() + row * a.out->ld + c0;
        for (int64_t i = 0; i < nc; ++i) {
          const float dtu = dtv[i] * uv[i];
          float* hi = h + i * N;
          const float* dai = dAp + i * N;
          float y = 0;
#pragma omp simd reduction(+ : y)
          for (int64_t n = 0; n < N; ++n) {
            hi[n] = dai[n] * hi[n] + dtu * Bt[n];
            y += hi[n] * Ct[n];
          }
          if (a.D) y += a.D->data<float>()[c0 + i] * uv[i];
          if (a.z) y *= silu_f(a.z->data<float>()[row * a.z->ld + c0 + i]);
          o[i] = y;
        }
      }
    }
  }
}

}  // namespace dnamba
