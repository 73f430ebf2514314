// Deterministic reductions of training: column sums (linear's dbias), the embedding backward, sums
// of squares (gradient norm) and the loss sum. See train_colsum.cuh for the scheme.
//
// Launch limits: column sums as train_colsum.cuh; sums: <= 1024 blocks of 256 threads, each block a
// fixed contiguous range of elements, partials in double summed on the host in order.
#include "kernels/train_colsum.cuh"

namespace dnamba::kernels::train {

RowParts row_parts(int64_t rows) {
  RowParts rp;
  // About 256 rows a part, at most 1024 parts: enough blocks to fill the GPU for long inputs.
  rp.parts = rows <= 0 ? 1 : (rows + 255) / 256;
  if (rp.parts > 1024) rp.parts = 1024;
  rp.rows_per_part = rows <= 0 ? 1 : (rows + rp.parts - 1) / rp.parts;
  return rp;
}

namespace {

struct ReadCol {
  const float* x;
  int64_t ld;
  __device__ float operator()(int64_t r, int64_t c) const { return x[r * ld + c]; }
};

// Column (v*D + d) of the virtual [T, V*D] matrix: dout[t, d] where ids[t] == v.
struct EmbCol {
  const int32_t* ids;
  int64_t ld_ids;
  const float* dout;
  int64_t ld_dout, D;
  __device__ float operator()(int64_t t, int64_t col) const {
    const int64_t v = col / D;
    return ids[t * ld_ids] == v ? dout[t * ld_dout + col % D] : 0.0f;
  }
};

__device__ __forceinline__ double warp_sum_d(double v) {
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
  return v;
}

// Block b sums elements [b*per, (b+1)*per) of the row-major [rows, cols] view (squares or values).
template <bool kSquare>
__global__ void __launch_bounds__(256)
sum_kernel(const float* __restrict__ x, int64_t ld, int64_t rows, int64_t cols, int64_t per, double* __restrict__ partial) {
  __shared__ double sm[8];
  const int64_t n = rows * cols;
  const int64_t e0 = int64_t(blockIdx.x) * per;
  const int64_t e1 = e0 + per < n ? e0 + per : n;
  double acc = 0.0;
  for (int64_t e = e0 + threadIdx.x; e < e1; e += 256) {
    const double v = x[(e / cols) * ld + e % cols];
    acc += kSquare ? v * v : v;
  }
  acc = warp_sum_d(acc);
  if (threadIdx.x % 32 == 0) sm[threadIdx.x / 32] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    double s = sm[0];
    for (int i = 1; i < 8; ++i) s += sm[i];
    partial[blockIdx.x] = s;
  }
}

int64_t sum_blocks(int64_t n) {
  int64_t b = (n + 4095) / 4096;
  if (b < 1) b = 1;
  if (b > 1024) b = 1024;
  return b;
}

template <bool kSquare>
double sum_run(const float* x, int64_t ld, int64_t rows, int64_t cols, double* partial, double* host_partial,
               cudaStream_t s) {
  const int64_t n = rows * cols;
  if (n <= 0) return 0.0;
  const int64_t nb = sum_blocks(n), per = (n + nb - 1) / nb;
  sum_kernel<kSquare><<<unsigned(nb), 256, 0, s>>>(x, ld, rows, cols, per, partial);
  CUDA_CHECK_LAUNCH();
  CUDA_CHECK(cudaMemcpyAsync(host_partial, partial, size_t(nb) * sizeof(double), cudaMemcpyDeviceToHost, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
  double t = 0.0;
  for (int64_t i = 0; i < nb; ++i) t += host_partial[i];
  return t;
}

}  // namespace

void colsum(const float* x, int64_t ld_x, int64_t T, int64_t C, float* out, bool accumulate, float* partial,
            cudaStream_t s) {
  if (accumulate) detail::colsum_run(ReadCol{x, ld_x}, detail::SinkAdd{out}, T, C, partial, s);
  else detail::colsum_run(ReadCol{x, ld_x}, detail::SinkSet{out}, T, C, partial, s);
}

void embedding_backward(const int32_t* ids, int64_t ld_ids, const float* dout, int64_t ld_dout, int64_t T,
                        int64_t V, int64_t D, float* dtable, int64_t ld_table, float* partial, cudaStream_t s) {
  detail::colsum_run(EmbCol{ids, ld_ids, dout, ld_dout, D}, detail::SinkAdd2D{dtable, D, ld_table}, T, V * D,
                     partial, s);
}

int64_t sum_squares_partials(int64_t rows, int64_t cols) { return sum_blocks(rows * cols); }

double sum_squares(const float* x, int64_t ld, int64_t rows, int64_t cols, double* partial, double* host_partial,
                   cudaStream_t s) {
  return sum_run<true>(x, ld, rows, cols, partial, host_partial, s);
}

double sum_f32(const float* x, int64_t n, double* partial, double* host_partial, cudaStream_t s) {
  return sum_run<false>(x, n, n > 0 ? 1 : 0, n, partial, host_partial, s);
}

}  // namespace dnamba::kernels::train
