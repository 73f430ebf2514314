// Fused next-base cross-entropy rows (TrainBackend::cross_entropy): logits of a row over the small
// vocabulary, log-sum-exp, the row's loss and the scaled gradient of the logits. The two matrix
// products of the backward (dhidden = dlogits . W, dW += dlogits^T . hidden) run in cuBLAS after it.
//
// Launch limits: one warp per row, 8 rows a block of 256 threads; V <= 1024 (the row's logits in
// shared memory, 8*V floats a block); any D. Reductions are xor-shuffle trees (fixed order).
#include "backend/cuda/cuda_check.h"
#include "kernels/train_kernels.h"
#include "kernels/warp_reduce.cuh"

namespace dnamba::kernels::train {

namespace {

__global__ void __launch_bounds__(256)
ce_rows_kernel(const float* __restrict__ hidden, int64_t ld_h, const float* __restrict__ W, int64_t ld_w,
               const int32_t* __restrict__ targets, int64_t ld_tg, float scale, int64_t T, int64_t V, int64_t D,
               float* __restrict__ dlogits, float* __restrict__ loss, int* bad) {
  extern __shared__ float sl[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t t = int64_t(blockIdx.x) * 8 + warp;
  if (t >= T) return;
  float* l = sl + warp * V;
  const float* h = hidden + t * ld_h;
  for (int64_t v = 0; v < V; ++v) {
    const float* wr = W + v * ld_w;
    float acc = 0.0f;
    for (int64_t d = lane; d < D; d += 32) acc = fmaf(h[d], wr[d], acc);
    acc = warp_sum(acc);
    if (lane == 0) l[v] = acc;
  }
  __syncwarp();
  float mx = -INFINITY;
  for (int64_t v = lane; v < V; v += 32) mx = fmaxf(mx, l[v]);
  mx = warp_max(mx);
  float s = 0.0f;
  for (int64_t v = lane; v < V; v += 32) s += expf(l[v] - mx);
  s = warp_sum(s);
  const float lse = mx + logf(s);
  const int32_t tg = targets[t * ld_tg];
  const bool counted = tg >= 0 && tg < V;
  if (tg >= V && lane == 0) *bad = 1;
  float* dl = dlogits + t * V;
  for (int64_t v = lane; v < V; v += 32)
    dl[v] = counted ? scale * (expf(l[v] - lse) - (v == tg ? 1.0f : 0.0f)) : 0.0f;
  if (lane == 0) loss[t] = counted ? lse - l[tg] : 0.0f;
}

}  // namespace

void cross_entropy_rows(const float* hidden, int64_t ld_h, const float* W, int64_t ld_w, const int32_t* targets,
                        int64_t ld_tg, float scale, int64_t T, int64_t V, int64_t D, float* dlogits, float* loss,
                        int* bad, cudaStream_t s) {
  DNAMBA_CHECK(V >= 1 && V <= 1024, "cross_entropy: vocabulary of " + std::to_string(V) + " (the fused loss takes <= 1024)");
  if (T <= 0) return;
  ce_rows_kernel<<<unsigned((T + 7) / 8), 256, size_t(8 * V) * sizeof(float), s>>>(hidden, ld_h, W, ld_w, targets, ld_tg,
                                                                                  scale, T, V, D, dlogits, loss, bad);
  CUDA_CHECK_LAUNCH();
}

}  // namespace dnamba::kernels::train
