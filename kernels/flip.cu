// Time flip of stacked sequences: out[b*len + t, :] = in[b*len + len-1-t, :] for each of `batch`
// sequences of `len` rows (the bidirectional models' reverse direction), any element type; in place
// when in == out (same pointer and stride).
//
// Launch limits: one thread owns one vector unit (16, 8, 4 or 2 bytes, the widest that the row
// width, both base pointers and both strides allow) of the row pair (t, len-1-t): it reads both then
// writes both, which is what makes the in-place case correct. Blocks of 256 threads = (units of a
// row, up to 256) x (pairs); grid-stride over pairs, at most 65,535 x 16 blocks; 64-bit offsets.
// Bandwidth-bound: one read and one write of every element.
#include <algorithm>

#include "backend/cuda/cuda_check.h"
#include "kernels/kernels.h"

namespace dnamba::kernels {

namespace {

template <class V>
__global__ void __launch_bounds__(256)
flip_rows_kernel(const char* in, int64_t ld_in, char* out, int64_t ld_out, int64_t len, int64_t half,
                 int64_t npairs, int units) {
  for (int64_t p = int64_t(blockIdx.x) * blockDim.y + threadIdx.y; p < npairs; p += int64_t(gridDim.x) * blockDim.y) {
    const int64_t b = p / half, t = p - b * half;
    const int64_t r0 = b * len + t, r1 = b * len + (len - 1 - t);
    const V* a = reinterpret_cast<const V*>(in + r0 * ld_in);
    const V* c = reinterpret_cast<const V*>(in + r1 * ld_in);
    V* oa = reinterpret_cast<V*>(out + r0 * ld_out);
    V* oc = reinterpret_cast<V*>(out + r1 * ld_out);
    for (int u = threadIdx.x; u < units; u += blockDim.x) {
      const V x = a[u], y = c[u];
      oa[u] = y;
      oc[u] = x;
    }
  }
}

template <class V>
void launch(const char* in, int64_t ld_in, char* out, int64_t ld_out, int64_t batch, int64_t len, int64_t row_bytes,
            cudaStream_t s) {
  const int units = int(row_bytes / int64_t(sizeof(V)));
  const int64_t half = (len + 1) / 2, npairs = batch * half;
  int bx = 32;
  while (bx < units && bx < 256) bx *= 2;
  const int by = 256 / bx;
  const int64_t blocks = std::min<int64_t>((npairs + by - 1) / by, 65535 * 16);
  flip_rows_kernel<V><<<unsigned(blocks), dim3(unsigned(bx), unsigned(by)), 0, s>>>(in, ld_in, out, ld_out, len, half,
                                                                                     npairs, units);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void flip_rows(const void* in, int64_t ld_in_bytes, void* out, int64_t ld_out_bytes, int64_t batch, int64_t len,
               int64_t row_bytes, cudaStream_t s) {
  if (batch == 0 || len == 0 || row_bytes == 0) return;
  DNAMBA_CHECK(row_bytes % 2 == 0, "flip_rows: rows must be a whole number of 2-byte units");
  DNAMBA_CHECK(row_bytes / 2 < (int64_t(1) << 31), "flip_rows: rows too wide");
  const auto* i = static_cast<const char*>(in);
  auto* o = static_cast<char*>(out);
  // The widest unit that divides the row width, both pointers and both strides.
  const uint64_t al = uint64_t(row_bytes) | uint64_t(ld_in_bytes) | uint64_t(ld_out_bytes) |
                      reinterpret_cast<uintptr_t>(in) | reinterpret_cast<uintptr_t>(out);
  if (al % 16 == 0) launch<uint4>(i, ld_in_bytes, o, ld_out_bytes, batch, len, row_bytes, s);
  else if (al % 8 == 0) launch<uint2>(i, ld_in_bytes, o, ld_out_bytes, batch, len, row_bytes, s);
  else if (al % 4 == 0) launch<uint32_t>(i, ld_in_bytes, o, ld_out_bytes, batch, len, row_bytes, s);
  else launch<uint16_t>(i, ld_in_bytes, o, ld_out_bytes, batch, len, row_bytes, s);
}

}  // namespace dnamba::kernels
