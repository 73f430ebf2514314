// Deterministic column reductions of the training kernels: out[c] (+)= sum_t f(t, c) over a
// virtual [rows, cols] matrix given by a functor. Pass 1: block (32 columns x 8 row lanes) per
// (column tile, row part) sums its rows in a fixed order, reduces the 8 lanes in a fixed order and
// writes partial[part, col]; pass 2 sums the parts in order and hands each column to a sink
// functor. The partition (row_parts) depends only on rows: same shapes, same bits.
//
// Launch limits: grid (ceil(cols/32), parts <= 1024); blocks of 256 threads; rows, cols < 2^62.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/cuda_check.h"
#include "kernels/train_kernels.h"

namespace dnamba::kernels::train::detail {

template <class F>
__global__ void __launch_bounds__(256)
colsum_partial_kernel(F f, int64_t rows, int64_t cols, int64_t rows_per_part, float* __restrict__ partial) {
  __shared__ float sm[8][33];
  const int tx = threadIdx.x % 32, ty = threadIdx.x / 32;
  const int64_t col = int64_t(blockIdx.x) * 32 + tx;
  const int64_t part = blockIdx.y;
  const int64_t r0 = part * rows_per_part;
  const int64_t r1 = r0 + rows_per_part < rows ? r0 + rows_per_part : rows;
  float acc = 0.0f;
  if (col < cols)
    for (int64_t r = r0 + ty; r < r1; r += 8) acc += f(r, col);
  sm[ty][tx] = acc;
  __syncthreads();
  if (ty == 0 && col < cols) {
    float s = sm[0][tx];
#pragma unroll
    for (int i = 1; i < 8; ++i) s += sm[i][tx];
    partial[part * cols + col] = s;
  }
}

template <class G>
__global__ void __launch_bounds__(256)
colsum_finish_kernel(const float* __restrict__ partial, int64_t parts, int64_t cols, G g) {
  const int64_t col = int64_t(blockIdx.x) * 256 + threadIdx.x;
  if (col >= cols) return;
  float s = 0.0f;
  for (int64_t p = 0; p < parts; ++p) s += partial[p * cols + col];
  g(col, s);
}

// Runs both passes. partial: colsum_partial_floats(rows, cols) floats.
template <class F, class G>
void colsum_run(F f, G g, int64_t rows, int64_t cols, float* partial, cudaStream_t s) {
  if (cols <= 0) return;
  const RowParts rp = row_parts(rows);
  if (rows > 0) {
    dim3 grid(unsigned((cols + 31) / 32), unsigned(rp.parts));
    colsum_partial_kernel<F><<<grid, 256, 0, s>>>(f, rows, cols, rp.rows_per_part, partial);
    CUDA_CHECK_LAUNCH();
  }
  colsum_finish_kernel<G><<<unsigned((cols + 255) / 256), 256, 0, s>>>(partial, rows > 0 ? rp.parts : 0, cols, g);
  CUDA_CHECK_LAUNCH();
}

// Sinks: out[col] += v (or =).
struct SinkAdd {
  float* out;
  __device__ void operator()(int64_t col, float v) const { out[col] += v; }
};
struct SinkSet {
  float* out;
  __device__ void operator()(int64_t col, float v) const { out[col] = v; }
};
// A [rows, w] strided destination: col = r*w + c.
struct SinkAdd2D {
  float* out;
  int64_t w, ld;
  __device__ void operator()(int64_t col, float v) const { out[(col / w) * ld + col % w] += v; }
};

}  // namespace dnamba::kernels::train::detail
