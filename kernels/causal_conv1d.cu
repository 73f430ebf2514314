// Depthwise causal conv1d + bias + SiLU over `batch` sequences, with the conv state in and out.
//
// Launch limits:
//   kernel width K: 1..16 (a fast instantiation for K <= 4, the Mamba width, and one for K <= 16).
//   conv kernel: blocks of 128 threads = 128 consecutive channels (coalesced) x 64 time steps a
//     thread; grid 1-D over (batch, time tile, channel group), < 2^31 blocks.
//   state kernel: one thread per (batch, channel); runs after the conv kernel on the same stream,
//     so the conv reads the old state before it is replaced.
//   any length >= 0, any channel count; 64-bit offsets. x/out fp32, or bf16 (state fp32).
#include "backend/cuda/cuda_check.h"
#include "kernels/kernels.h"

namespace dnamba::kernels {

namespace {

constexpr int kThreads = 128;
constexpr int kSteps = 64;

__device__ __forceinline__ float ld_f(const float* p) { return *p; }
__device__ __forceinline__ float ld_f(const __nv_bfloat16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ void st_f(float* p, float v) { *p = v; }
__device__ __forceinline__ void st_f(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

template <int KMAX, class T>
__global__ void __launch_bounds__(kThreads)
conv1d_silu_kernel(const T* __restrict__ x, int64_t ld_x, const float* __restrict__ w, int64_t ld_w,
                   const float* __restrict__ bias, const float* __restrict__ state, int64_t ld_state,
                   T* __restrict__ out, int64_t ld_out, int64_t len, int64_t C, int K, int64_t ncg,
                   int64_t ntiles) {
  int64_t bid = blockIdx.x;
  const int64_t cg = bid % ncg;
  bid /= ncg;
  const int64_t tile = bid % ntiles, b = bid / ntiles;
  const int64_t c = cg * kThreads + threadIdx.x;
  if (c >= C) return;
  const int S = K - 1;
  // Newest input at window[KMAX-1]; wpad aligned with it, zero before the kernel's first tap.
  float wpad[KMAX], win[KMAX];
#pragma unroll
  for (int i = 0; i < KMAX; ++i) {
    const int k = i - (KMAX - K);
    wpad[i] = k >= 0 ? w[c * ld_w + k] : 0.0f;
  }
  const float bc = bias ? bias[c] : 0.0f;
  const int64_t t0 = tile * kSteps, t1 = min(len, t0 + kSteps);
  const T* xb = x + b * len * ld_x + c;
  // win[KMAX-1-j] = input at time t0-j for j = 1..KMAX-1 (zero where the kernel does not reach).
#pragma unroll
  for (int i = 0; i < KMAX - 1; ++i) {
    const int back = KMAX - 1 - i;  // win[i] holds time t0 - back
    float v = 0.0f;
    if (back <= S) {
      const int64_t t = t0 - back;
      v = t >= 0 ? ld_f(xb + t * ld_x) : state[b * ld_state + c * S + (t + S)];
    }
    win[i] = v;
  }
  // Eight steps at a time: their loads go out together (one at a time, the loop waited on each).
  for (int64_t tt = t0; tt < t1; tt += 8) {
    float xv[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) xv[j] = tt + j < t1 ? ld_f(xb + (tt + j) * ld_x) : 0.0f;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      if (tt + j >= t1) break;
      win[KMAX - 1] = xv[j];
      float acc = bc;
#pragma unroll
      for (int i = 0; i < KMAX; ++i) acc = fmaf(wpad[i], win[i], acc);
      // SiLU with MUFU ex2 and rcp (1 ulp each) instead of an IEEE division; acc < -88: -0.
      float e, r;
      asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(e) : "f"(-acc * 1.4426950408889634f));
      asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(1.0f + e));
      st_f(out + (b * len + tt + j) * ld_out + c, acc * r);
#pragma unroll
      for (int i = 0; i < KMAX - 1; ++i) win[i] = win[i + 1];
    }
  }
}

// state[j] = input at time len-S+j (from x, or from the old state when len < S).
template <class T>
__global__ void conv_state_kernel(const T* __restrict__ x, int64_t ld_x, float* __restrict__ state,
                                  int64_t ld_state, int64_t batch, int64_t len, int64_t C, int S) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= batch * C) return;
  const int64_t c = i % C, b = i / C;
  float* st = state + b * ld_state + c * S;
  // Increasing j reads old entries j+len > j before they are overwritten.
  for (int j = 0; j < S; ++j) {
    const int64_t t = len - S + j;
    st[j] = t >= 0 ? ld_f(x + (b * len + t) * ld_x + c) : st[j + len];
  }
}

template <class T>
void conv1d_silu_t(const T* x, int64_t ld_x, const float* w, int64_t ld_w, const float* bias, float* state,
                   int64_t ld_state, T* out, int64_t ld_out, int64_t batch, int64_t len, int64_t C, int64_t K,
                   cudaStream_t s) {
  if (batch == 0 || C == 0) return;
  if (len > 0) {
    const int64_t ncg = (C + kThreads - 1) / kThreads, ntiles = (len + kSteps - 1) / kSteps;
    const int64_t blocks = batch * ntiles * ncg;
    DNAMBA_CHECK(blocks < (int64_t(1) << 31), "conv1d: input too long for one call");
    if (K <= 4)
      conv1d_silu_kernel<4, T><<<unsigned(blocks), kThreads, 0, s>>>(x, ld_x, w, ld_w, bias, state, ld_state, out,
                                                                    ld_out, len, C, int(K), ncg, ntiles);
    else
      conv1d_silu_kernel<16, T><<<unsigned(blocks), kThreads, 0, s>>>(x, ld_x, w, ld_w, bias, state, ld_state, out,
                                                                     ld_out, len, C, int(K), ncg, ntiles);
    CUDA_CHECK_LAUNCH();
  }
  if (K > 1 && len > 0) {
    const int64_t n = batch * C;
    conv_state_kernel<T><<<unsigned((n + 255) / 256), 256, 0, s>>>(x, ld_x, state, ld_state, batch, len, C, int(K - 1));
    CUDA_CHECK_LAUNCH();
  }
}

}  // namespace

void conv1d_silu(const void* x, int64_t ld_x, const float* w, int64_t ld_w, const float* bias, float* state,
                 int64_t ld_state, void* out, int64_t ld_out, int64_t batch, int64_t len, int64_t C, int64_t K,
                 bool bf16, cudaStream_t s) {
  DNAMBA_CHECK(K >= 1 && K <= 16, "conv1d: kernel width " + std::to_string(K) + " outside 1..16 on CUDA");
  if (bf16)
    conv1d_silu_t(static_cast<const __nv_bfloat16*>(x), ld_x, w, ld_w, bias, state, ld_state,
                  static_cast<__nv_bfloat16*>(out), ld_out, batch, len, C, K, s);
  else
    conv1d_silu_t(static_cast<const float*>(x), ld_x, w, ld_w, bias, state, ld_state, static_cast<float*>(out),
                  ld_out, batch, len, C, K, s);
}

}  // namespace dnamba::kernels
