// Language-model outputs: lm_head + log-softmax + gather fused (small vocabularies), the same
// outputs from precomputed logits (large vocabularies, row tiles), and an in-place row log-softmax.
//
// Launch limits:
//   fused: one warp per row, 8 rows a block of 256 threads; V <= 32 and V*D*4 <= 48 KiB (the
//     lm_head weight is staged once per block in shared memory as fp32); rows < 2^34.
//   from_logits / log_softmax_rows: one warp per row, any V; rows < 2^34.
// Token ids of A, C, G, T are 7..10 (the Caduceus/HyenaDNA character vocabulary).
#include "backend/cuda/cuda_check.h"
#include "kernels/kernels.h"
#include "kernels/warp_reduce.cuh"

namespace dnamba::kernels {

namespace {

constexpr int kVMax = 32;
constexpr int64_t kSmemMax = 48 * 1024;


__global__ void __launch_bounds__(256)
token_logprobs_fused_kernel(const float* __restrict__ hidden, int64_t ld_h, const void* W, bool w_bf16, int64_t ld_w,
                            const int32_t* __restrict__ targets, int64_t ld_tg, float* __restrict__ out,
                            int64_t ld_out, int64_t T, int V, int D) {
  extern __shared__ float ws[];  // [V][D]
  for (int i = threadIdx.x; i < V * D; i += blockDim.x) {
    const int v = i / D, d = i % D;
    ws[i] = w_bf16 ? __bfloat162float(static_cast<const __nv_bfloat16*>(W)[int64_t(v) * ld_w + d])
                   : static_cast<const float*>(W)[int64_t(v) * ld_w + d];
  }
  __syncthreads();
  const int64_t t = int64_t(blockIdx.x) * 8 + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (t >= T) return;
  const float* h = hidden + t * ld_h;
  float acc[kVMax];
#pragma unroll
  for (int v = 0; v < kVMax; ++v) acc[v] = 0.0f;
  for (int d = lane; d < D; d += 32) {
    const float hv = h[d];
#pragma unroll
    for (int v = 0; v < kVMax; ++v)
      if (v < V) acc[v] = fmaf(hv, ws[v * D + d], acc[v]);
  }
  // Reduce: afterwards every lane holds every logit.
#pragma unroll
  for (int v = 0; v < kVMax; ++v)
    if (v < V) acc[v] = warp_sum(acc[v]);
  if (lane != 0) return;
  float mx = -INFINITY;
#pragma unroll
  for (int v = 0; v < kVMax; ++v)
    if (v < V) mx = fmaxf(mx, acc[v]);
  float s = 0.0f;
#pragma unroll
  for (int v = 0; v < kVMax; ++v)
    if (v < V) s += expf(acc[v] - mx);
  const float lse = mx + logf(s);
  const int32_t tg = targets[t * ld_tg];
  float* o = out + t * ld_out;
  float lt = __int_as_float(0x7fc00000);
#pragma unroll
  for (int v = 0; v < kVMax; ++v)
    if (v < V && v == tg) lt = acc[v] - lse;
  o[0] = lt;
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    float lk = 0.0f;
#pragma unroll
    for (int v = 7; v < 11; ++v)
      if (v == 7 + k) lk = acc[v] - lse;
    o[1 + k] = lk;
  }
}

// Warp per row: max, then sum of exp, over any V.
__device__ __forceinline__ float row_lse(const float* r, int64_t V, int lane) {
  float mx = -INFINITY;
  for (int64_t v = lane; v < V; v += 32) mx = fmaxf(mx, r[v]);
  mx = warp_max(mx);
  float s = 0.0f;
  for (int64_t v = lane; v < V; v += 32) s += expf(r[v] - mx);
  return mx + logf(warp_sum(s));
}

__global__ void __launch_bounds__(256)
from_logits_kernel(const float* __restrict__ logits, int64_t ld_l, const int32_t* __restrict__ targets, int64_t ld_tg,
                   float* __restrict__ out, int64_t ld_out, int64_t T, int64_t V) {
  const int64_t t = int64_t(blockIdx.x) * 8 + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (t >= T) return;
  const float* r = logits + t * ld_l;
  const float lse = row_lse(r, V, lane);
  if (lane != 0) return;
  const int32_t tg = targets[t * ld_tg];
  float* o = out + t * ld_out;
  o[0] = (tg >= 0 && tg < V) ? r[tg] - lse : __int_as_float(0x7fc00000);
  for (int k = 0; k < 4; ++k) o[1 + k] = r[7 + k] - lse;
}

__global__ void __launch_bounds__(256)
log_softmax_rows_kernel(float* __restrict__ x, int64_t ld, int64_t T, int64_t V) {
  const int64_t t = int64_t(blockIdx.x) * 8 + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (t >= T) return;
  float* r = x + t * ld;
  const float lse = row_lse(r, V, lane);
  __syncwarp();
  for (int64_t v = lane; v < V; v += 32) r[v] -= lse;
}

}  // namespace

bool token_logprobs_fusable(int64_t V, int64_t D) { return V <= kVMax && V * D * 4 <= kSmemMax; }

void token_logprobs_fused(const float* hidden, int64_t ld_h, const void* W, bool w_bf16, int64_t ld_w,
                          const int32_t* targets, int64_t ld_tg, float* out, int64_t ld_out, int64_t T, int64_t V,
                          int64_t D, cudaStream_t s) {
  DNAMBA_CHECK(token_logprobs_fusable(V, D), "token_logprobs_fused: vocabulary or width too large");
  DNAMBA_CHECK(V > 10, "token_logprobs: vocabulary too small for the DNA token ids");
  if (T == 0) return;
  const int64_t blocks = (T + 7) / 8;
  DNAMBA_CHECK(blocks < (int64_t(1) << 31), "token_logprobs: too many rows");
  token_logprobs_fused_kernel<<<unsigned(blocks), 256, size_t(V * D) * 4, s>>>(hidden, ld_h, W, w_bf16, ld_w, targets,
                                                                             ld_tg, out, ld_out, T, int(V), int(D));
  CUDA_CHECK_LAUNCH();
}

void token_logprobs_from_logits(const float* logits, int64_t ld_l, const int32_t* targets, int64_t ld_tg, float* out,
                                int64_t ld_out, int64_t T, int64_t V, cudaStream_t s) {
  DNAMBA_CHECK(V > 10, "token_logprobs: vocabulary too small for the DNA token ids");
  if (T == 0) return;
  from_logits_kernel<<<unsigned((T + 7) / 8), 256, 0, s>>>(logits, ld_l, targets, ld_tg, out, ld_out, T, V);
  CUDA_CHECK_LAUNCH();
}

void log_softmax_rows(float* x, int64_t ld, int64_t T, int64_t V, cudaStream_t s) {
  if (T == 0 || V == 0) return;
  log_softmax_rows_kernel<<<unsigned((T + 7) / 8), 256, 0, s>>>(x, ld, T, V);
  CUDA_CHECK_LAUNCH();
}

}  // namespace dnamba::kernels
