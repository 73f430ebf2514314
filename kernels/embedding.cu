// Embedding lookup: out[t, :] = table[ids[t], :] (table fp32 or bf16).
//
// Launch limits: one row per block of 64..256 threads striding over D; rows < 2^31. An id outside [0, V) writes NaN into its
// row and sets *bad_id (checked by the backend at the next synchronisation).
#include "backend/cuda/cuda_check.h"
#include "kernels/kernels.h"

namespace dnamba::kernels {

namespace {

__global__ void embedding_kernel(const int32_t* __restrict__ ids, int64_t ld_ids, const void* table,
                                 bool table_bf16, int64_t ld_table, int64_t V, int64_t D, float* __restrict__ out,
                                 int64_t ld_out, int* bad_id) {
  const int64_t t = blockIdx.x;
  const int32_t v = ids[t * ld_ids];
  float* o = out + t * ld_out;
  if (v < 0 || v >= V) {
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) o[d] = __int_as_float(0x7fc00000);
    if (threadIdx.x == 0) atomicExch(bad_id, 1);
    return;
  }
  if (table_bf16) {
    const __nv_bfloat16* r = static_cast<const __nv_bfloat16*>(table) + int64_t(v) * ld_table;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) o[d] = __bfloat162float(r[d]);
  } else {
    const float* r = static_cast<const float*>(table) + int64_t(v) * ld_table;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) o[d] = r[d];
  }
}

}  // namespace

void embedding(const int32_t* ids, int64_t ld_ids, const void* table, bool table_bf16, int64_t ld_table, int64_t V,
               int64_t D, float* out, int64_t ld_out, int64_t T, int* bad_id, cudaStream_t s) {
  if (T == 0) return;
  DNAMBA_CHECK(T < (int64_t(1) << 31), "embedding: too many rows");
  const int threads = D >= 256 ? 256 : D >= 128 ? 128 : 64;
  embedding_kernel<<<unsigned(T), threads, 0, s>>>(ids, ld_ids, table, table_bf16, ld_table, V, D, out, ld_out, bad_id);
  CUDA_CHECK_LAUNCH();
}

}  // namespace dnamba::kernels
