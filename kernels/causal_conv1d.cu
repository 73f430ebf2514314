// Depthwise causal conv1d + bias + SiLU over `batch` sequences, with the conv state in and out.
//
// Launch limits:
//   kernel width K: 1..16 (a fast instantiation for K <= 4, the Mamba width, and one for K <= 16).
//   conv kernel: blocks of 128 threads = 128 consecutive channels (256 for bf16 rows of even width
//     and stride with K <= 4: two channels a thread) x 64 time steps a thread; grid 1-D over
//     (batch, time tile, channel group), < 2^31 blocks.
//   state kernel: one thread per (batch, channel); runs after the conv kernel on the same stream,
//     so the conv reads the old state before it is replaced.
//   any length >= 0, any channel count; 64-bit offsets. x/out fp32, or bf16 (state fp32).
#include <cstdint>
#include <type_traits>

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

// V consecutive channels a thread: V = 2 for bf16 rows of even width and stride (one 4-byte load
// or store for both channels), else 1.
template <class T, int V> struct Vec;
template <class T> struct Vec<T, 1> {
  static __device__ __forceinline__ void load(const T* p, float* v) { v[0] = ld_f(p); }
  static __device__ __forceinline__ void store(T* p, const float* v) { st_f(p, v[0]); }
};
template <> struct Vec<__nv_bfloat16, 2> {
  static __device__ __forceinline__ void load(const __nv_bfloat16* p, float* v) {
    const float2 f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(p));
    v[0] = f.x, v[1] = f.y;
  }
  static __device__ __forceinline__ void store(__nv_bfloat16* p, const float* v) {
    *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(v[0], v[1]);
  }
};

template <int KMAX, class T, int V>
__global__ void __launch_bounds__(kThreads)
conv1d_silu_kernel(const T* __restrict__ x, int64_t ld_x, const float* __restrict__ w, int64_t ld_w,
                   const float* __restrict__ bias, const float* __restrict__ state, int64_t ld_state,
                   T* __restrict__ out, int64_t ld_out, int64_t len, int64_t C, int K, int64_t ncg,
                   int64_t ntiles) {
  int64_t bid = blockIdx.x;
  const int64_t cg = bid % ncg;
  bid /= ncg;
  const int64_t tile = bid % ntiles, b = bid / ntiles;
  const int64_t c = (cg * kThreads + threadIdx.x) * V;  // first of this thread's V channels (C % V == 0)
  if (c >= C) return;
  const int S = K - 1;
  // Newest input at window[KMAX-1]; wpad aligned with it, zero before the kernel's first tap.
  float wpad[V][KMAX], win[V][KMAX], bc[V];
#pragma unroll
  for (int u = 0; u < V; ++u) {
#pragma unroll
    for (int i = 0; i < KMAX; ++i) {
      const int k = i - (KMAX - K);
      wpad[u][i] = k >= 0 ? w[(c + u) * ld_w + k] : 0.0f;
    }
    bc[u] = bias ? bias[c + u] : 0.0f;
  }
  const int64_t t0 = tile * kSteps, t1 = min(len, t0 + kSteps);
  const T* xb = x + b * len * ld_x + c;
  // win[u][KMAX-1-j] = input at time t0-j for j = 1..KMAX-1 (zero where the kernel does not reach).
#pragma unroll
  for (int i = 0; i < KMAX - 1; ++i) {
    const int back = KMAX - 1 - i;  // win[.][i] holds time t0 - back
    float v[V];
#pragma unroll
    for (int u = 0; u < V; ++u) v[u] = 0.0f;
    if (back <= S) {
      const int64_t t = t0 - back;
      if (t >= 0) Vec<T, V>::load(xb + t * ld_x, v);
      else
#pragma unroll
        for (int u = 0; u < V; ++u) v[u] = state[b * ld_state + (c + u) * S + (t + S)];
    }
#pragma unroll
    for (int u = 0; u < V; ++u) win[u][i] = v[u];
  }
  // Eight steps at a time: their loads go out together (one at a time, the loop waited on each).
  for (int64_t tt = t0; tt < t1; tt += 8) {
    float xv[8][V];
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      if (tt + j < t1) Vec<T, V>::load(xb + (tt + j) * ld_x, xv[j]);
      else
#pragma unroll
        for (int u = 0; u < V; ++u) xv[j][u] = 0.0f;
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      if (tt + j >= t1) break;
      float y[V];
#pragma unroll
      for (int u = 0; u < V; ++u) {
        win[u][KMAX - 1] = xv[j][u];
        float acc = bc[u];
#pragma unroll
        for (int i = 0; i < KMAX; ++i) acc = fmaf(wpad[u][i], win[u][i], acc);
        // SiLU with MUFU ex2 and rcp (1 ulp each) instead of an IEEE division; acc < -88: -0.
        float e, r;
        asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(e) : "f"(-acc * 1.4426950408889634f));
        asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(1.0f + e));
        y[u] = acc * r;
#pragma unroll
        for (int i = 0; i < KMAX - 1; ++i) win[u][i] = win[u][i + 1];
      }
      Vec<T, V>::store(out + (b * len + tt + j) * ld_out + c, y);
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
    // Two channels a thread for bf16 with even widths and strides and 4-byte aligned rows (the model's
    // layout, K = 4): one 4-byte load and store for both.
    const bool pair = std::is_same_v<T, __nv_bfloat16> && K <= 4 && C % 2 == 0 && ld_x % 2 == 0 && ld_out % 2 == 0 &&
                      reinterpret_cast<uintptr_t>(x) % 4 == 0 && reinterpret_cast<uintptr_t>(out) % 4 == 0;
    const int64_t per_block = kThreads * (pair ? 2 : 1);
    const int64_t ncg = (C + per_block - 1) / per_block, ntiles = (len + kSteps - 1) / kSteps;
    const int64_t blocks = batch * ntiles * ncg;
    DNAMBA_CHECK(blocks < (int64_t(1) << 31), "conv1d: input too long for one call");
    if constexpr (std::is_same_v<T, __nv_bfloat16>) {
      if (pair) {
        conv1d_silu_kernel<4, T, 2><<<unsigned(blocks), kThreads, 0, s>>>(x, ld_x, w, ld_w, bias, state, ld_state, out,
                                                                         ld_out, len, C, int(K), ncg, ntiles);
        CUDA_CHECK_LAUNCH();
      }
    }
    if (!pair) {
      if (K <= 4)
        conv1d_silu_kernel<4, T, 1><<<unsigned(blocks), kThreads, 0, s>>>(x, ld_x, w, ld_w, bias, state, ld_state, out,
                                                                         ld_out, len, C, int(K), ncg, ntiles);
      else
        conv1d_silu_kernel<16, T, 1><<<unsigned(blocks), kThreads, 0, s>>>(x, ld_x, w, ld_w, bias, state, ld_state,
                                                                          out, ld_out, len, C, int(K), ncg, ntiles);
      CUDA_CHECK_LAUNCH();
    }
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
