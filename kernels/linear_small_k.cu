// out[t, n] = sum_k x[t, k] * W[n, k] for a thin inner dimension K <= 32: Mamba's dt_proj
// (K = dt_rank, 16 for d_model 256). The whole cost is writing out ([T, N]); a GEMM library tiles
// such a product for a long K and wastes most of its work. Here every thread keeps two columns of W
// (2 x K floats) in registers and streams over the rows; x rows pass through shared memory.
//
// Launch limits:
//   K: 1..32 (K <= 16 and K <= 32 instantiations, padded with zeros); any T >= 0, any N >= 0.
//   x and W bf16 (x may be a strided view: ld_x >= K); out bf16 or fp32, row stride ld_out.
//   blocks of 256 threads = 512 columns x a range of rows; grid (row ranges, column tiles),
//   row ranges < 2^31 (rows per block grow with T), column tiles < 65,536 (N < 2^25).
//   64-bit offsets. Accumulation in fp32, in the order k = 0..K-1 (like the CPU reference).
#include <algorithm>

#include "backend/cuda/cuda_check.h"
#include "kernels/kernels.h"

namespace dnamba::kernels {

namespace {

constexpr int kThreads = 256;
constexpr int kRowsTile = 64;

template <class TO> __device__ __forceinline__ void store_f(TO* p, float v);
template <> __device__ __forceinline__ void store_f<float>(float* p, float v) { *p = v; }
template <> __device__ __forceinline__ void store_f<__nv_bfloat16>(__nv_bfloat16* p, float v) {
  *p = __float2bfloat16_rn(v);
}

template <class TO, int KP>
__global__ void __launch_bounds__(kThreads)
linear_small_k_kernel(const __nv_bfloat16* __restrict__ x, int64_t ld_x, const __nv_bfloat16* __restrict__ W,
                      int64_t ld_w, TO* __restrict__ out, int64_t ld_out, int64_t T, int64_t N, int K,
                      int64_t rows_per_block) {
  __shared__ __align__(16) float xs[kRowsTile][KP];
  const int64_t n0 = (int64_t(blockIdx.y) * kThreads + threadIdx.x) * 2;
  const bool ok0 = n0 < N, ok1 = n0 + 1 < N;
  float w0[KP], w1[KP];
#pragma unroll
  for (int k = 0; k < KP; ++k) {
    w0[k] = (ok0 && k < K) ? __bfloat162float(W[n0 * ld_w + k]) : 0.0f;
    w1[k] = (ok1 && k < K) ? __bfloat162float(W[(n0 + 1) * ld_w + k]) : 0.0f;
  }
  const int64_t r_begin = int64_t(blockIdx.x) * rows_per_block;
  const int64_t r_end = min(T, r_begin + rows_per_block);
  for (int64_t r0 = r_begin; r0 < r_end; r0 += kRowsTile) {
    const int nr = int(min(int64_t(kRowsTile), r_end - r0));
    __syncthreads();  // the previous tile has been read
    for (int i = threadIdx.x; i < kRowsTile * KP; i += kThreads) {
      const int r = i / KP, k = i % KP;
      xs[r][k] = (r < nr && k < K) ? __bfloat162float(x[(r0 + r) * ld_x + k]) : 0.0f;
    }
    __syncthreads();
    if (!ok0) continue;
    for (int r = 0; r < nr; ++r) {
      float a0 = 0.0f, a1 = 0.0f;
#pragma unroll
      for (int k = 0; k < KP; ++k) {
        const float xv = xs[r][k];
        a0 = fmaf(xv, w0[k], a0);
        a1 = fmaf(xv, w1[k], a1);
      }
      TO* o = out + (r0 + r) * ld_out + n0;
      store_f<TO>(o, a0);
      if (ok1) store_f<TO>(o + 1, a1);
    }
  }
}

}  // namespace

void linear_small_k(const __nv_bfloat16* x, int64_t ld_x, const __nv_bfloat16* W, int64_t ld_w, void* out,
                    bool out_bf16, int64_t ld_out, int64_t T, int64_t N, int64_t K, int sm_count, cudaStream_t s) {
  DNAMBA_CHECK(K >= 1 && K <= 32, "linear_small_k: K " + std::to_string(K) + " outside 1..32");
  if (T <= 0 || N <= 0) return;
  const int64_t col_tiles = (N + 2 * kThreads - 1) / (2 * kThreads);
  DNAMBA_CHECK(col_tiles < 65536, "linear_small_k: N too large");
  // About eight blocks an SM in all, whole row tiles each.
  const int64_t want = std::max<int64_t>(1, int64_t(std::max(sm_count, 1)) * 8 / col_tiles);
  int64_t rpb = (T + want - 1) / want;
  rpb = std::max<int64_t>(kRowsTile, (rpb + kRowsTile - 1) / kRowsTile * kRowsTile);
  const int64_t row_blocks = (T + rpb - 1) / rpb;
  DNAMBA_CHECK(row_blocks < (int64_t(1) << 31), "linear_small_k: too many rows");
  const dim3 grid{unsigned(row_blocks), unsigned(col_tiles), 1u};
  auto go = [&](auto kp_tag) {
    constexpr int KP = decltype(kp_tag)::value;
    if (out_bf16)
      linear_small_k_kernel<__nv_bfloat16, KP><<<grid, kThreads, 0, s>>>(
          x, ld_x, W, ld_w, static_cast<__nv_bfloat16*>(out), ld_out, T, N, int(K), rpb);
    else
      linear_small_k_kernel<float, KP><<<grid, kThreads, 0, s>>>(x, ld_x, W, ld_w, static_cast<float*>(out), ld_out,
                                                                  T, N, int(K), rpb);
    CUDA_CHECK_LAUNCH();
  };
  if (K <= 16) go(std::integral_constant<int, 16>{});
  else go(std::integral_constant<int, 32>{});
}

}  // namespace dnamba::kernels
