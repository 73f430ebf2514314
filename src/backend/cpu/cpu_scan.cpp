// CPU selective scan, in its own file because it is compiled with -ffast-math: glibc vectorises
// expf (libmvec) only then. The scan is exp-bound: d_inner * d_state exponentials per position.
#include <algorithm>
#include <cmath>

#include "backend/cpu/cpu_backend.h"

namespace dnamba {

namespace {

void check_shape2(const Tensor& t, int64_t rows, int64_t cols, const char* what) {
  DNAMBA_CHECK(t.rows == rows && t.cols == cols,
               std::string(what) + ": expected [" + std::to_string(rows) + "," + std::to_string(cols) +
                   "], got [" + std::to_string(t.rows) + "," + std::to_string(t.cols) + "]");
}

// One block of channels of one sequence, every time step: the decay factors of a position come
// from one flat loop of expf, and softplus(dt) and SiLU(z) from loops over the block's channels, so
// that all three go through libmvec's vector functions. Compiled twice (target_clones): an AVX2 + FMA
// copy (8-wide vector exp/log1p) that the dynamic loader picks where the CPU has it, and a baseline
// (SSE2/SSE4) copy for any x86-64.
__attribute__((target_clones("arch=x86-64-v3", "default")))
void scan_block(const SelectiveScanArgs& a, int64_t b, int64_t c0, int64_t nc, float* __restrict__ dA,
                float* __restrict__ dtv, float* __restrict__ uv, float* __restrict__ zv) {
  const int64_t len = a.len, N = a.A->cols;
  float* h = a.state->data<float>() + b * a.state->ld + c0 * N;  // [nc, N]
  const float* A = a.A->data<float>() + c0 * N;                   // [nc, N]
  const float* bias = a.dt_bias ? a.dt_bias->data<float>() + c0 : nullptr;
  const float* Dp = a.D ? a.D->data<float>() + c0 : nullptr;
  for (int64_t t = 0; t < len; ++t) {
    const int64_t row = b * len + t;
    const float* Bt = a.B->data<float>() + row * a.B->ld;
    const float* Ct = a.C->data<float>() + row * a.C->ld;
    const float* ur = a.u->data<float>() + row * a.u->ld + c0;
    const float* dr = a.delta->data<float>() + row * a.delta->ld + c0;
    for (int64_t i = 0; i < nc; ++i) {
      dtv[i] = dr[i] + (bias ? bias[i] : 0.0f);
      uv[i] = ur[i];
    }
    if (a.delta_softplus) {
      // PyTorch's softplus (threshold 20): log1p(exp(x)), x itself above 20. log1p(e) is logf(1 + e)
      // (libmvec has no vector log1pf), or for e < 1/32, where 1 + e would lose digits, its series
      // (relative error < e^4/5 < 2e-7); the rounding of 1 + e costs at most ~2e-6 relative above.
#pragma omp simd
      for (int64_t i = 0; i < nc; ++i) zv[i] = expf(std::min(dtv[i], 20.0f));
#pragma omp simd
      for (int64_t i = 0; i < nc; ++i) {
        const float e = zv[i];
        const float series = e * (1.0f - e * (0.5f - e * (0.33333334f - e * 0.25f)));
        const float l = logf(1.0f + e);
        dtv[i] = dtv[i] > 20.0f ? dtv[i] : (e < 0.03125f ? series : l);
      }
    }
    for (int64_t i = 0; i < nc; ++i) {
      const float dt = dtv[i];
#pragma omp simd
      for (int64_t n = 0; n < N; ++n) dA[i * N + n] = dt * A[i * N + n];
    }
#pragma omp simd
    for (int64_t k = 0; k < nc * N; ++k) dA[k] = expf(dA[k]);
    float* o = a.out->data<float>() + row * a.out->ld + c0;
    for (int64_t i = 0; i < nc; ++i) {
      const float dtu = dtv[i] * uv[i];
      float* hi = h + i * N;
      const float* dai = dA + i * N;
      float y = 0;
#pragma omp simd reduction(+ : y)
      for (int64_t n = 0; n < N; ++n) {
        hi[n] = dai[n] * hi[n] + dtu * Bt[n];
        y += hi[n] * Ct[n];
      }
      if (Dp) y += Dp[i] * uv[i];
      o[i] = y;
    }
    if (a.z) {
      const float* zr = a.z->data<float>() + row * a.z->ld + c0;
#pragma omp simd
      for (int64_t i = 0; i < nc; ++i) o[i] *= zr[i] / (1.0f + expf(-zr[i]));
    }
  }
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
  constexpr int64_t CB = 16;
  const int64_t nblk = (C + CB - 1) / CB;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t blk = 0; blk < nblk; ++blk) {
      const int64_t c0 = blk * CB, nc = std::min(C, c0 + CB) - c0;
      std::vector<float> dA(static_cast<size_t>(nc * N)), v(static_cast<size_t>(3 * nc));
      scan_block(a, b, c0, nc, dA.data(), v.data(), v.data() + nc, v.data() + 2 * nc);
    }
  }
}

}  // namespace dnamba
