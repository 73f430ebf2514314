// Backward of the residual add + RMSNorm (TrainBackend::add_rmsnorm_backward): with r the residual
// sum, rs = (mean(r^2) + eps)^-1/2 and out = r * rs * w,
//   dr[t, d] += rs * dout * w - rs^3 * (sum_d dout*w*r) / D * r[t, d];  dw[d] += sum_t dout*r*rs.
//
// Launch limits: one warp per row, 8 rows a block of 256 threads; any D (lanes stride 32); the
// row reductions are xor-shuffle trees (fixed order). dw through the deterministic column sum.
// r, dout and dr must not overlap.
#include "kernels/train_colsum.cuh"
#include "kernels/warp_reduce.cuh"

namespace dnamba::kernels::train {

namespace {

__global__ void __launch_bounds__(256)
rmsnorm_bwd_rows(const float* __restrict__ r, int64_t ld_r, const float* __restrict__ w, float eps,
                 const float* __restrict__ dout, int64_t ld_dout, float* __restrict__ dr, int64_t ld_dr, int64_t T,
                 int64_t D, float* __restrict__ rstd) {
  const int64_t t = int64_t(blockIdx.x) * 8 + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (t >= T) return;
  const float* rr = r + t * ld_r;
  const float* g = dout + t * ld_dout;
  float ss = 0.0f, s = 0.0f;
  for (int64_t d = lane; d < D; d += 32) {
    const float v = rr[d];
    ss = fmaf(v, v, ss);
    s = fmaf(g[d] * w[d], v, s);
  }
  ss = warp_sum(ss);
  s = warp_sum(s);
  const float rs = 1.0f / sqrtf(ss / float(D) + eps);
  if (lane == 0) rstd[t] = rs;
  const float k = rs * rs * rs * s / float(D);
  float* o = dr + t * ld_dr;
  for (int64_t d = lane; d < D; d += 32) o[d] += rs * g[d] * w[d] - k * rr[d];
}

struct NormDw {
  const float* r;
  int64_t ld_r;
  const float* dout;
  int64_t ld_dout;
  const float* rstd;
  __device__ float operator()(int64_t t, int64_t d) const { return dout[t * ld_dout + d] * r[t * ld_r + d] * rstd[t]; }
};

}  // namespace

void add_rmsnorm_backward(const float* r, int64_t ld_r, const float* w, float eps, const float* dout,
                          int64_t ld_dout, float* dr, int64_t ld_dr, float* dw, int64_t T, int64_t D, float* rstd,
                          float* partial, cudaStream_t s) {
  if (T > 0) {
    rmsnorm_bwd_rows<<<unsigned((T + 7) / 8), 256, 0, s>>>(r, ld_r, w, eps, dout, ld_dout, dr, ld_dr, T, D, rstd);
    CUDA_CHECK_LAUNCH();
  }
  detail::colsum_run(NormDw{r, ld_r, dout, ld_dout, rstd}, detail::SinkAdd{dw}, T, D, partial, s);
}

}  // namespace dnamba::kernels::train
