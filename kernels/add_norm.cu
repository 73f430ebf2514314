// Fused residual add + RMSNorm / LayerNorm: residual = first ? x : x + residual;
// out = norm(residual) * w (+ b); out fp32 or bf16. x null: residual is only normalised.
//
// Launch limits: one warp per row, 8 rows a block of 256 threads; any width D (a lane walks the
// row with stride 32; the row is read back from L1/L2 for the normalisation); rows < 2^34.
// x, residual and out must not overlap (the model never aliases them).
#include "backend/cuda/cuda_check.h"
#include "kernels/kernels.h"
#include "kernels/warp_reduce.cuh"

namespace dnamba::kernels {

namespace {

__device__ __forceinline__ void store_out(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_out(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

template <class TO>
__global__ void __launch_bounds__(256)
add_norm_kernel(const float* __restrict__ x, int64_t ld_x, float* __restrict__ res, int64_t ld_res, bool first,
                const float* __restrict__ w, const float* __restrict__ bias, float eps, TO* __restrict__ out,
                int64_t ld_out, int64_t T, int64_t D) {
  const int64_t t = int64_t(blockIdx.x) * 8 + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (t >= T) return;
  const float* xr = x ? x + t * ld_x : nullptr;
  float* rr = res + t * ld_res;
  TO* orow = out + t * ld_out;
  float s1 = 0.0f, s2 = 0.0f;
  for (int64_t d = lane; d < D; d += 32) {
    float v;
    if (!xr) v = rr[d];
    else {
      v = first ? xr[d] : xr[d] + rr[d];
      rr[d] = v;
    }
    s1 += v;
    s2 = fmaf(v, v, s2);
  }
  __syncwarp();
  if (!bias) {
    const float inv = rsqrtf(warp_sum(s2) / float(D) + eps);
    for (int64_t d = lane; d < D; d += 32) store_out(orow + d, rr[d] * inv * w[d]);
  } else {
    const float mean = warp_sum(s1) / float(D);
    float var = 0.0f;
    for (int64_t d = lane; d < D; d += 32) {
      const float q = rr[d] - mean;
      var = fmaf(q, q, var);
    }
    const float inv = rsqrtf(warp_sum(var) / float(D) + eps);
    for (int64_t d = lane; d < D; d += 32) store_out(orow + d, (rr[d] - mean) * inv * w[d] + bias[d]);
  }
}

}  // namespace

void add_norm(const float* x, int64_t ld_x, float* residual, int64_t ld_res, bool first, const float* w,
              const float* b, float eps, void* out, bool out_bf16, int64_t ld_out, int64_t T, int64_t D,
              cudaStream_t s) {
  if (T == 0 || D == 0) return;
  const int64_t blocks = (T + 7) / 8;
  DNAMBA_CHECK(blocks < (int64_t(1) << 31), "add_norm: too many rows");
  if (out_bf16)
    add_norm_kernel<<<unsigned(blocks), 256, 0, s>>>(x, ld_x, residual, ld_res, first, w, b, eps,
                                                     static_cast<__nv_bfloat16*>(out), ld_out, T, D);
  else
    add_norm_kernel<<<unsigned(blocks), 256, 0, s>>>(x, ld_x, residual, ld_res, first, w, b, eps,
                                                     static_cast<float*>(out), ld_out, T, D);
  CUDA_CHECK_LAUNCH();
}

}  // namespace dnamba::kernels
