// Element-wise product of fp32 activations: out[r, c] = a[r, c] * b[r, c] (Caduceus
// bidirectional_strategy ew_multiply). out may alias a or b exactly.
//
// Launch limits: a block of 32..256 threads per row (grid-stride over rows, at most 65,535 x 16
// blocks), threads striding over the columns; 64-bit offsets. Bandwidth-bound.
#include <algorithm>

#include "backend/cuda/cuda_check.h"
#include "kernels/kernels.h"

namespace dnamba::kernels {

namespace {

__global__ void mul_kernel(const float* a, int64_t ld_a, const float* b, int64_t ld_b, float* out, int64_t ld_out,
                           int64_t rows, int64_t cols) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x)
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) out[r * ld_out + c] = a[r * ld_a + c] * b[r * ld_b + c];
}

}  // namespace

void mul_f32(const float* a, int64_t ld_a, const float* b, int64_t ld_b, float* out, int64_t ld_out, int64_t rows,
             int64_t cols, cudaStream_t s) {
  if (rows == 0 || cols == 0) return;
  const int threads = cols >= 256 ? 256 : cols >= 128 ? 128 : cols >= 64 ? 64 : 32;
  mul_kernel<<<unsigned(std::min<int64_t>(rows, 65535 * 16)), threads, 0, s>>>(a, ld_a, b, ld_b, out, ld_out, rows, cols);
  CUDA_CHECK_LAUNCH();
}

}  // namespace dnamba::kernels
