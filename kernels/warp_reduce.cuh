// Warp-wide reductions shared by the row kernels (add_norm, logprobs, the training kernels): an
// xor-shuffle tree over the 32 lanes, in a fixed order, so the same inputs give the same bits; every
// lane gets the result.
#pragma once
#include <cuda_runtime.h>

namespace dnamba::kernels {

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, m));
  return v;
}

}  // namespace dnamba::kernels
