// Host launchers of the CUDA kernels, one op per kernels/*.cu file (kernel and launcher together,
// llm.c style). Every launcher checks its launch (CUDA_CHECK_LAUNCH) and runs on the given stream;
// none holds global state. Pointers are device pointers; row strides (ld*) are in elements and all
// offsets are computed in 64 bits.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace dnamba::kernels {

// ---- embedding.cu: out[t, :] = table[ids[t], :]; an id outside [0, V) writes NaN and sets *bad_id.
void embedding(const int32_t* ids, int64_t ld_ids, const void* table, bool table_bf16, int64_t ld_table,
               int64_t V, int64_t D, float* out, int64_t ld_out, int64_t T, int* bad_id, cudaStream_t s);

// ---- add_norm.cu: residual = first ? x : x + residual; out = norm(residual) * w (+ b).
// RMSNorm when b is null, LayerNorm otherwise.
// out is fp32, or bf16 when out_bf16 (the GPU's bf16 activations); x and residual are fp32.
void add_norm(const float* x, int64_t ld_x, float* residual, int64_t ld_res, bool first, const float* w,
              const float* b, float eps, void* out, bool out_bf16, int64_t ld_out, int64_t T, int64_t D,
              cudaStream_t s);

// ---- convert.cu
// dst[r, c] (bf16, contiguous [rows, cols]) = src[r*ld + c] (fp32)
void f32_to_bf16_2d(const float* src, int64_t ld_src, __nv_bfloat16* dst, int64_t rows, int64_t cols,
                    cudaStream_t s);
// out[r, c] += bias[c]
void add_bias(float* out, int64_t ld_out, const float* bias, int64_t rows, int64_t cols, cudaStream_t s);
void add_bias(__nv_bfloat16* out, int64_t ld_out, const float* bias, int64_t rows, int64_t cols, cudaStream_t s);
// Deterministic pseudo-random fill (benchmarks and tests): uniform in [lo, hi).
void fill_uniform_f32(float* p, int64_t n, uint64_t seed, float lo, float hi, cudaStream_t s);
void fill_uniform_bf16(__nv_bfloat16* p, int64_t n, uint64_t seed, float lo, float hi, cudaStream_t s);

// ---- linear_small_k.cu: out[t, n] = sum_k x[t, k] W[n, k] for K <= 32 (dt_proj), x and W bf16,
// out bf16 (out_bf16) or fp32. No bias (add_bias after).
void linear_small_k(const __nv_bfloat16* x, int64_t ld_x, const __nv_bfloat16* W, int64_t ld_w, void* out,
                    bool out_bf16, int64_t ld_out, int64_t T, int64_t N, int64_t K, int sm_count, cudaStream_t s);

// ---- causal_conv1d.cu: depthwise causal conv1d + bias + SiLU with state in/out (see backend.h).
// K (kernel width) up to 16. x and out: fp32, or both bf16 when bf16 (state and weights stay fp32).
void conv1d_silu(const void* x, int64_t ld_x, const float* w, int64_t ld_w, const float* bias,
                 float* state, int64_t ld_state, void* out, int64_t ld_out, int64_t batch, int64_t len,
                 int64_t C, int64_t K, bool bf16, cudaStream_t s);

// ---- selective_scan.cu
struct ScanParams {
  const void* u = nullptr;      int64_t ld_u = 0;      // [batch*len, C]  T
  const void* delta = nullptr;  int64_t ld_delta = 0;  // [batch*len, C]  T
  const void* z = nullptr;      int64_t ld_z = 0;      // [batch*len, C]  T, or null
  const void* B = nullptr;      int64_t ld_B = 0;      // [batch*len, N]  T
  const void* C = nullptr;      int64_t ld_C = 0;      // [batch*len, N]  T
  void* out = nullptr;          int64_t ld_out = 0;    // [batch*len, C]  T
  const float* A = nullptr;     int64_t ld_A = 0;      // [C, N]
  const float* D = nullptr;                            // [C] or null
  const float* dt_bias = nullptr;                      // [C] or null
  float* state = nullptr;       int64_t ld_state = 0;  // [batch, C*N] in: before, out: after
  int64_t batch = 1, len = 0, channels = 0, dstate = 0;
  bool softplus = true;
  int64_t chunk = 0;  // sequence chunk per thread block; 0 chooses from the GPU size
  bool general = false;  // true: the general kernel even where the fast one applies (tests, benchmarks)
  // Which design: 0 chooses from the shape; 1 the chunked three-pass scan; 2 the single pass (every
  // update once, parallel over batch x channels x states only; selective_scan_single.cu for d_state 16).
  int mode = 0;
  int single_tpc = 0;    // single pass, d_state 16: threads a channel (1, 2 or 4); 0 chooses
  int single_fma_exp = -1;  // single pass: some exps on the FMA pipe (1) or none (0); -1 chooses
};
struct ScanPlan {
  int tpc = 1;            // threads per channel (16 states each)
  int64_t chunk = 0;      // time steps per chunk
  int64_t nchunks = 0;
  size_t workspace_bytes = 0;
  bool fast = false;      // d_state 16: the fast kernel (where B and C rows are 16-byte aligned)
  bool single = false;    // one pass (nchunks 1); d_state 16 with aligned B/C: scan_single_kernel
  int single_tpc = 1;
  bool single_fma_exp = false;
};
ScanPlan selective_scan_plan(const ScanParams& p, int sm_count);
// T = float or __nv_bfloat16 (u, delta, z, B, C and out). workspace: plan.workspace_bytes.
template <class T>
void selective_scan(const ScanParams& p, const ScanPlan& plan, void* workspace, cudaStream_t s);
// ---- selective_scan_single.cu: the single-pass kernel alone (d_state 16, B and C rows 16-byte
// aligned, ld * 80 < 2^31); tpc 1, 2 or 4. selective_scan() calls it when the plan says single.
template <class T>
void selective_scan_single(const ScanParams& p, int tpc, bool fma_exp, cudaStream_t s);

// ---- logprobs.cu
// out[t, 0] = log p(targets[t]) (NaN if target < 0 or >= V), out[t, 1..4] = log p(ids 7..10),
// logits = hidden[t] . W[v]; W fp32 or bf16 [V, D]. Fused path: V <= 32 and V*D*4 <= 48 KiB.
bool token_logprobs_fusable(int64_t V, int64_t D);
void token_logprobs_fused(const float* hidden, int64_t ld_h, const void* W, bool w_bf16, int64_t ld_w,
                          const int32_t* targets, int64_t ld_tg, float* out, int64_t ld_out, int64_t T,
                          int64_t V, int64_t D, cudaStream_t s);
// From precomputed logits [T, V]: the same 5 outputs.
void token_logprobs_from_logits(const float* logits, int64_t ld_l, const int32_t* targets, int64_t ld_tg,
                                float* out, int64_t ld_out, int64_t T, int64_t V, cudaStream_t s);
// In place: x[t, :] = log_softmax(x[t, :]).
void log_softmax_rows(float* x, int64_t ld, int64_t T, int64_t V, cudaStream_t s);

// ---- flip.cu: out[b*len + t] = in[b*len + len-1-t] (rows of row_bytes bytes; strides in bytes) for
// `batch` sequences of `len` rows; in place when in == out with the same stride.
void flip_rows(const void* in, int64_t ld_in_bytes, void* out, int64_t ld_out_bytes, int64_t batch, int64_t len,
               int64_t row_bytes, cudaStream_t s);

// ---- mul.cu: out = a * b element-wise, fp32 [rows, cols].
void mul_f32(const float* a, int64_t ld_a, const float* b, int64_t ld_b, float* out, int64_t ld_out, int64_t rows,
             int64_t cols, cudaStream_t s);

}  // namespace dnamba::kernels
