// Element-wise helpers of the linear op and of the tests/benchmarks: fp32 -> bf16 packing of an
// activation (strided in, contiguous out), bias add, and a deterministic random fill.
//
// Launch limits: conversion and bias: a block per row (grid-stride, at most 65,535 x 16 blocks),
// 32..256 threads over the columns; fill: grid-stride over elements, 256 threads, at most
// 65,535 x 4 blocks. Any size (64-bit indices).
#include <algorithm>

#include "backend/cuda/cuda_check.h"
#include "kernels/kernels.h"

namespace dnamba::kernels {

namespace {

unsigned grid_for(int64_t n) { return unsigned(std::min<int64_t>((n + 255) / 256, 65535 * 4)); }

// Rows over blocks (grid-stride), columns over threads: no 64-bit division per element.
__global__ void f32_to_bf16_kernel(const float* __restrict__ src, int64_t ld, __nv_bfloat16* __restrict__ dst,
                                   int64_t rows, int64_t cols) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* s = src + r * ld;
    __nv_bfloat16* d = dst + r * cols;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) d[c] = __float2bfloat16_rn(s[c]);
  }
}

__device__ __forceinline__ void add_to(float& o, float b) { o += b; }
__device__ __forceinline__ void add_to(__nv_bfloat16& o, float b) { o = __float2bfloat16_rn(__bfloat162float(o) + b); }

template <class T>
__global__ void add_bias_kernel(T* __restrict__ out, int64_t ld, const float* __restrict__ bias, int64_t rows,
                                int64_t cols) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    T* o = out + r * ld;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) add_to(o[c], bias[c]);
  }
}

unsigned row_grid(int64_t rows) { return unsigned(std::min<int64_t>(rows, 65535 * 16)); }
int row_threads(int64_t cols) { return cols >= 256 ? 256 : cols >= 128 ? 128 : cols >= 64 ? 64 : 32; }

__device__ __forceinline__ float hash_uniform(uint64_t seed, int64_t i) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + uint64_t(i) * 0xBF58476D1CE4E5B9ull + 0x94D049BB133111EBull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return float(z >> 40) * (1.0f / 16777216.0f);  // [0, 1)
}

template <class T>
__global__ void fill_kernel(T* p, int64_t n, uint64_t seed, float lo, float hi) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float v = lo + (hi - lo) * hash_uniform(seed, i);
    if constexpr (sizeof(T) == 4) p[i] = v;
    else p[i] = __float2bfloat16_rn(v);
  }
}

}  // namespace

void f32_to_bf16_2d(const float* src, int64_t ld_src, __nv_bfloat16* dst, int64_t rows, int64_t cols, cudaStream_t s) {
  if (rows * cols == 0) return;
  f32_to_bf16_kernel<<<row_grid(rows), row_threads(cols), 0, s>>>(src, ld_src, dst, rows, cols);
  CUDA_CHECK_LAUNCH();
}

void add_bias(float* out, int64_t ld_out, const float* bias, int64_t rows, int64_t cols, cudaStream_t s) {
  if (rows * cols == 0) return;
  add_bias_kernel<<<row_grid(rows), row_threads(cols), 0, s>>>(out, ld_out, bias, rows, cols);
  CUDA_CHECK_LAUNCH();
}

void add_bias(__nv_bfloat16* out, int64_t ld_out, const float* bias, int64_t rows, int64_t cols, cudaStream_t s) {
  if (rows * cols == 0) return;
  add_bias_kernel<<<row_grid(rows), row_threads(cols), 0, s>>>(out, ld_out, bias, rows, cols);
  CUDA_CHECK_LAUNCH();
}

void fill_uniform_f32(float* p, int64_t n, uint64_t seed, float lo, float hi, cudaStream_t s) {
  if (n == 0) return;
  fill_kernel<float><<<grid_for(n), 256, 0, s>>>(p, n, seed, lo, hi);
  CUDA_CHECK_LAUNCH();
}

void fill_uniform_bf16(__nv_bfloat16* p, int64_t n, uint64_t seed, float lo, float hi, cudaStream_t s) {
  if (n == 0) return;
  fill_kernel<__nv_bfloat16><<<grid_for(n), 256, 0, s>>>(p, n, seed, lo, hi);
  CUDA_CHECK_LAUNCH();
}

}  // namespace dnamba::kernels
