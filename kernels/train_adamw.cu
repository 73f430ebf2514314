// AdamW update (PyTorch semantics, as CpuTrainBackend::adamw) and A = -exp(A_log).
//
// Launch limits: one thread per element of a [rows, cols] strided view, grid-stride loop over at
// most 4096 blocks of 256 threads; offsets in 64 bits. Bias corrections are computed on the host
// in double (step_size = lr / bc1, inv_sqrt_bc2 = 1/sqrt(bc2)), as the CPU does.
#include "backend/cuda/cuda_check.h"
#include "kernels/train_kernels.h"

namespace dnamba::kernels::train {

namespace {

unsigned blocks_for(int64_t n) {
  int64_t b = (n + 255) / 256;
  if (b < 1) b = 1;
  if (b > 4096) b = 4096;
  return unsigned(b);
}

__global__ void __launch_bounds__(256)
adamw_kernel(float* __restrict__ p, int64_t ld_p, const float* __restrict__ g, int64_t ld_g, float* __restrict__ m,
             int64_t ld_m, float* __restrict__ v, int64_t ld_v, int64_t rows, int64_t cols, AdamWArgs a) {
  const int64_t n = rows * cols;
  const float decay = 1.0f - a.lr * a.weight_decay;
  for (int64_t e = int64_t(blockIdx.x) * 256 + threadIdx.x; e < n; e += int64_t(gridDim.x) * 256) {
    const int64_t r = e / cols, c = e % cols;
    const float gg = g[r * ld_g + c] * a.grad_scale;
    const float mm = a.beta1 * m[r * ld_m + c] + (1.0f - a.beta1) * gg;
    const float vv = a.beta2 * v[r * ld_v + c] + (1.0f - a.beta2) * gg * gg;
    m[r * ld_m + c] = mm;
    v[r * ld_v + c] = vv;
    float& pp = p[r * ld_p + c];
    pp = pp * decay - a.step_size * mm / (sqrtf(vv) * a.inv_sqrt_bc2 + a.eps);
  }
}

__global__ void __launch_bounds__(256)
neg_exp_kernel(const float* __restrict__ src, int64_t ld_src, float* __restrict__ dst, int64_t ld_dst, int64_t rows,
               int64_t cols) {
  const int64_t n = rows * cols;
  for (int64_t e = int64_t(blockIdx.x) * 256 + threadIdx.x; e < n; e += int64_t(gridDim.x) * 256) {
    const int64_t r = e / cols, c = e % cols;
    dst[r * ld_dst + c] = -expf(src[r * ld_src + c]);
  }
}

}  // namespace

void adamw(float* p, int64_t ld_p, const float* g, int64_t ld_g, float* m, int64_t ld_m, float* v, int64_t ld_v,
           int64_t rows, int64_t cols, const AdamWArgs& a, cudaStream_t s) {
  if (rows * cols <= 0) return;
  adamw_kernel<<<blocks_for(rows * cols), 256, 0, s>>>(p, ld_p, g, ld_g, m, ld_m, v, ld_v, rows, cols, a);
  CUDA_CHECK_LAUNCH();
}

void neg_exp(const float* src, int64_t ld_src, float* dst, int64_t ld_dst, int64_t rows, int64_t cols, cudaStream_t s) {
  if (rows * cols <= 0) return;
  neg_exp_kernel<<<blocks_for(rows * cols), 256, 0, s>>>(src, ld_src, dst, ld_dst, rows, cols);
  CUDA_CHECK_LAUNCH();
}

}  // namespace dnamba::kernels::train
